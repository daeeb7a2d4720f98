//! Story: a client pipelines more than the server will read — a request with
//! `Connection: close` followed at once by more bytes (a second request, a body the server does
//! not want) — and reads the answer only a little later, as a busy client does. When the server
//! closes such a connection it must not destroy the answer: closing a socket with unread data
//! makes the kernel send a reset, and a reset discards what the client has received but not read
//! yet. baton closes lingering: its FIN first, then it reads and drops what the client still
//! sends until the client's FIN.

mod common;

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{http, procs, Options, DEADLINE};
use nix::sys::socket::{setsockopt, sockopt};

#[test]
fn an_answer_before_a_close_survives_bytes_the_server_never_read() {
    // Large enough to be still in the server's send buffer when it closes (the config file
    // takes up to 1 MiB).
    let body = "0123456789abcdef".repeat(56 * 1024);
    let mut s = Options::new(&body).start();
    for round in 0..5 {
        let conn = TcpStream::connect(s.sb.addr()).unwrap();
        // A small receive window, as a slow client's: the answer waits at the server.
        setsockopt(&conn, sockopt::RcvBuf, &16384).unwrap();
        conn.set_read_timeout(Some(http::REQUEST_TIMEOUT)).unwrap();
        let mut bytes = http::get_request("/", true).into_bytes();
        // What follows the request is never read by the server as a request.
        bytes.extend(std::iter::repeat_n(b'x', 256 * 1024));
        let mut writer = conn.try_clone().unwrap();
        let sender = thread::spawn(move || {
            let sent = writer.write_all(&bytes);
            let _ = writer.shutdown(Shutdown::Write);
            sent
        });
        // The answer arrives and waits; the server closes meanwhile.
        thread::sleep(Duration::from_millis(300));
        let answer = http::read_response(&mut BufReader::new(&conn));
        let answer = answer.unwrap_or_else(|e| {
            panic!("round {round}: the answer was destroyed by the close: {e}")
        });
        assert!(
            answer.text() == body,
            "round {round}: {} bytes",
            answer.body.len()
        );
        assert!(answer.closes(), "round {round}: {answer:?}");
        drop(conn);
        let _ = sender.join();
    }
    s.stop();
}

/// Story: a client asks for a large answer with `Connection: close`, then hangs: it reads
/// nothing and never closes. baton closes lingering (its FIN, then up to 2 s for the
/// client's) and then lets the connection go: a process that is not exiting leaves what is
/// still queued to the kernel, which goes on sending it, rather than wait for a client that
/// reads nothing, so hung clients do not pile up descriptors. (Only a process about to exit
/// waits until its peers have everything: tests/stop.rs.)
#[test]
fn a_hung_client_of_a_closing_answer_is_let_go_after_the_linger() {
    let body = "0123456789abcdef".repeat(56 * 1024);
    let mut s = Options::new(&body).start();
    let (main, server_port) = (s.main, s.sb.addr().port());
    let conn = TcpStream::connect(s.sb.addr()).unwrap();
    // A small receive window: most of the answer stays queued at the server.
    setsockopt(&conn, sockopt::RcvBuf, &16384).unwrap();
    let client_port = conn.local_addr().unwrap().port();
    (&conn)
        .write_all(http::get_request("/", true).as_bytes())
        .unwrap();
    let asked = Instant::now();
    let holds = || procs::connection_owner(main, server_port, client_port).is_some();
    common::wait_until("baton to accept the connection", DEADLINE, || {
        holds().then_some(())
    });
    common::wait_until("baton to let the hung client go", DEADLINE, || {
        (!holds()).then_some(())
    });
    let held = asked.elapsed();
    println!("a hung client's connection was held {held:?}");
    // The linger is 2 s; waiting for the client to read as well would add 5 s more.
    assert!(
        held < Duration::from_secs(6),
        "baton held the hung client's connection for {held:?}"
    );
    drop(conn);
    s.stop();
}
