//! Story: many clients keep an HTTP/1.1 keep-alive connection open and ask nothing for a while
//! (a load balancer's pool, long-poll clients between polls). After a few milliseconds of quiet
//! baton parks such a connection: hyper's state is freed and only the socket is kept, watched
//! with every other parked socket. For the client nothing changes: its next request on the same
//! connection is answered; a reload or a stop closes the parked connection cleanly (a FIN, never
//! a reset, and a request sent in the grace is still answered); the idle timeout still closes it.

mod common;

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use common::http::{Client, RawConn};
use common::{wait_until, Options, Story, DEADLINE};

/// What baton logs (at debug level) when it parks a connection.
const PARKED: &str = "idle connection parked";

/// baton, logging at debug level, with `args`.
fn start(args: &[&str]) -> Story {
    Options::new("hello")
        .args(args)
        .env("RUST_LOG", "baton_server=debug,info")
        .start()
}

/// Waits until baton logged `n` parked connections.
fn wait_parked(s: &Story, n: usize) {
    wait_until(&format!("{n} connection(s) parked"), DEADLINE, || {
        (s.baton.log().matches(PARKED).count() >= n).then_some(())
    });
}

/// Reads until the server's end-of-file; panics on a reset or on data.
fn wait_clean_close(conn: &mut RawConn, within: Duration) -> Duration {
    let t0 = Instant::now();
    conn.stream.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 512];
    match conn.stream.read(&mut buf) {
        Ok(0) => t0.elapsed(),
        Ok(n) => panic!(
            "expected the server's FIN, got {n} bytes: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
            panic!("the parked connection was reset, not closed cleanly")
        }
        Err(e) => panic!("no FIN within {within:?}: {e}"),
    }
}

/// One GET on a new raw connection, answered; the connection stays open.
fn raw_after_one_request(s: &Story) -> RawConn {
    let mut conn = RawConn::connect(s.sb.addr());
    conn.send(b"GET / HTTP/1.1\r\nHost: story\r\n\r\n")
        .expect("send");
    let r = conn.response().expect("answer");
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    conn
}

#[test]
fn a_parked_keep_alive_connection_answers_its_next_requests_on_the_same_connection() {
    let mut s = start(&[]);
    // A strict client: a connection closed under it is a failure, never silently replaced.
    let mut client = Client::strict(s.sb.addr());
    for round in 1..=3 {
        let r = client.get("/").expect("GET on the kept-alive connection");
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));
        assert!(!r.closes(), "no Connection: close while serving");
        wait_parked(&s, round);
    }
    assert_eq!(
        client.connects, 1,
        "one connection served all three requests"
    );
    s.stop();
}

/// Clients that pause between requests for about as long as baton waits before parking: their
/// requests keep arriving just as the connection is being parked (after the task looked and
/// saw nothing, before hyper's connection is ended). Not one may be lost. (Parking used to end
/// hyper's connection on the first read that found nothing even when an earlier read of the
/// same poll had brought such a request: hyper took that for the client closing mid-request
/// and dropped the connection unanswered — "EOF before any response byte".)
#[test]
fn requests_arriving_just_as_a_connection_is_parked_are_all_answered() {
    let _heavy = common::heavy();
    let mut s = start(&[]);
    const CLIENTS: usize = 6;
    const REQUESTS: usize = 150;
    // Pauses a little longer than the park delay: the connection is looked at again soon
    // after each request (it asked once) and parked unless the next request is there already.
    const PAUSES_MS: [u64; 8] = [6, 7, 8, 9, 10, 11, 12, 14];
    let addr = s.sb.addr();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                // Strict: a connection closed under the client is a failure, never replaced.
                let mut client = Client::strict(addr);
                let mut failures = Vec::new();
                for i in 0..REQUESTS {
                    match client.get("/") {
                        Ok(r) if r.status == 200 && r.text() == "hello" => {}
                        Ok(r) => failures.push(format!("request {i}: {} {:?}", r.status, r.text())),
                        Err(e) => failures.push(format!("request {i}: {e}")),
                    }
                    let pause = PAUSES_MS[(i + c) % PAUSES_MS.len()];
                    std::thread::sleep(Duration::from_millis(pause));
                }
                (client.connects, failures)
            })
        })
        .collect();
    let mut lost = Vec::new();
    let mut connects = 0;
    for (c, client) in clients.into_iter().enumerate() {
        let (n, failures) = client.join().expect("client thread");
        connects += n;
        lost.extend(failures.into_iter().map(|f| format!("client {c}: {f}")));
    }
    let parked = s.baton.log().matches(PARKED).count();
    assert!(
        lost.is_empty(),
        "{} of {} requests lost ({parked} parkings): {lost:?}",
        lost.len(),
        CLIENTS * REQUESTS
    );
    // The story is about parking: it happened, again and again, under the clients' feet (a
    // connection asked twice within one look, by a late timer on a loaded machine, is looked at
    // only once a second from then on: hence no higher bound).
    assert!(
        parked >= CLIENTS * 2,
        "only {parked} parkings over {} requests",
        CLIENTS * REQUESTS
    );
    assert_eq!(
        connects, CLIENTS as u64,
        "each client kept its one connection throughout"
    );
    s.stop();
}

#[test]
fn a_stop_closes_a_parked_connection_cleanly_and_waits_for_it() {
    let mut s = start(&["--shutdown-timeout", "10s"]);
    let mut idle = raw_after_one_request(&s);
    wait_parked(&s, 1);
    // The stop drains: the parked connection gets the drain's grace, then our FIN.
    let main = s.main;
    let stopping = std::thread::spawn(move || {
        let closed = wait_clean_close(&mut idle, DEADLINE);
        (closed, idle)
    });
    s.stop();
    let (closed, _idle) = stopping.join().expect("reader");
    assert!(closed < DEADLINE, "{main} closed the parked connection");
}

#[test]
fn a_request_on_a_parked_connection_during_a_reload_is_answered_with_connection_close() {
    let mut s = start(&["--shutdown-timeout", "10s"]);
    let mut client = Client::strict(s.sb.addr());
    assert_eq!(client.get("/").expect("first GET").status, 200);
    wait_parked(&s, 1);
    let old = s.main;
    s.reload();
    // The parked connection's next request is answered, by the old process; once its drain
    // began (it may begin just after the successor's READY=1), with `Connection: close`. A
    // client that keeps asking is never cut off.
    let t0 = Instant::now();
    loop {
        let r = client
            .get("/")
            .expect("GET on the parked connection after the reload");
        assert_eq!(r.status, 200);
        if r.closes() {
            break;
        }
        assert!(t0.elapsed() < DEADLINE, "never told to close");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(client.connects, 1, "all on the connection that was parked");
    assert!(s.wait_drained(DEADLINE), "{old} drained and exited");
    assert_eq!(s.get(), "hello", "the successor serves");
    s.stop();
}

#[test]
fn a_reload_closes_an_idle_parked_connection_cleanly() {
    let mut s = start(&["--shutdown-timeout", "10s"]);
    let mut idle = raw_after_one_request(&s);
    wait_parked(&s, 1);
    let old = s.main;
    s.reload();
    wait_clean_close(&mut idle, DEADLINE);
    assert!(s.wait_drained(DEADLINE), "{old} drained and exited");
    s.stop();
}

#[test]
fn the_idle_timeout_still_closes_a_parked_connection() {
    let mut s = start(&["--idle-timeout", "4s"]);
    let opened = Instant::now();
    let mut idle = raw_after_one_request(&s);
    wait_parked(&s, 1);
    wait_clean_close(&mut idle, DEADLINE);
    let after = opened.elapsed();
    // Closed by the idle bound (checked once a second), not by the park.
    assert!(
        after >= Duration::from_secs(4),
        "closed after {after:?}, before the idle timeout"
    );
    assert_eq!(s.get(), "hello", "still serving");
    s.stop();
}
