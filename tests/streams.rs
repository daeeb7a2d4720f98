//! Story: an application streams long responses (downloads, server-sent events) through baton
//! (`tests/programs/slow_stream.rs`, a real program). A request counts as in flight until its body has
//! ended, so the idle bound never cuts a stream: with a 2 s bound, a 5 s body arrives whole over
//! HTTP/1 and HTTP/2 (the same logic keeps a 40 s body under the default 30 s bound), while an
//! idle keep-alive connection beside it is closed at the bound. A stream started before a reload
//! arrives whole from the old process, which exits after it. An HTTP/2 peer that stops answering
//! in the middle of a stream is found out by keep-alive PINGs and closed; with the PINGs turned
//! off it is not pinged, and its stream arrives whole.

mod common;

use std::io::BufReader;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::h2::{Frame, RawH2, FLAG_END_STREAM, FRAME_DATA, FRAME_GOAWAY, FRAME_RST_STREAM};
use common::{http, procs, Baton, Sandbox, DEADLINE};

/// Starts `tests/programs/slow_stream` with the sandbox settings plus `env`.
fn start_app(sb: &Sandbox, env: &[(&str, &str)]) -> Baton {
    let app = sb.spawn(sb.program("slow_stream", env));
    app.wait_ready(&sb.notify);
    app
}

fn expected_body(lines: u32, pid: i32) -> String {
    let mut s: String = (1..=lines)
        .map(|i| format!("line {i} of {lines} from pid {pid}\n"))
        .collect();
    s.push_str("end\n");
    s
}

/// GET over a fresh HTTP/1.1 connection; the whole (chunked) body.
fn get_h1(sb: &Sandbox, path: &str) -> Result<http::Response, http::HttpError> {
    http::get_fresh(sb.addr(), path)
}

/// GET over a fresh h2c connection (answering PINGs): the body and whether END_STREAM came.
fn get_h2(sb: &Sandbox, path: &str) -> (String, bool, Vec<String>) {
    let mut p = RawH2::connect(sb.addr()).expect("connect");
    p.get(1, &sb.listen(), path).expect("GET");
    let ended = p.read_to_end_of(1, DEADLINE * 3);
    (p.body(1), ended, p.transcript())
}

#[test]
fn a_stream_longer_than_the_idle_bound_is_not_cut_while_an_idle_connection_is() {
    let sb = Sandbox::new();
    let app = start_app(&sb, &[("BATON_IDLE_TIMEOUT", "2s")]);
    let path = "/stream?lines=10&every_ms=500";
    let want = expected_body(10, app.pid);

    // Beside the streams: a keep-alive connection that asks once and then stays idle.
    let mut idle = TcpStream::connect(sb.addr()).unwrap();
    idle.write_all(http::get_request("/", false).as_bytes())
        .unwrap();
    let mut idle_reader = BufReader::new(idle.try_clone().unwrap());
    let r = http::read_response(&mut idle_reader).expect("first answer");
    assert_eq!(r.text(), format!("pid {}", app.pid));
    let idle_since = Instant::now();
    let idle_thread = thread::spawn(move || {
        idle.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut buf = [0u8; 16];
        let n = idle_reader.read(&mut buf).unwrap_or(usize::MAX);
        (n, idle_since.elapsed())
    });

    let h2 = {
        let sb_addr = sb.addr();
        let listen = sb.listen();
        thread::spawn(move || {
            let mut p = RawH2::connect(sb_addr).expect("connect");
            p.get(1, &listen, "/stream?lines=10&every_ms=500")
                .expect("GET");
            let t = Instant::now();
            let ended = p.read_to_end_of(1, DEADLINE * 3);
            (p.body(1), ended, t.elapsed(), p.transcript())
        })
    };
    let t = Instant::now();
    let h1 = get_h1(&sb, path).expect("HTTP/1 stream");
    let h1_took = t.elapsed();
    let (h2_body, h2_ended, h2_took, h2_transcript) = h2.join().unwrap();
    let (idle_read, idle_closed_after) = idle_thread.join().unwrap();

    println!(
        "idle bound 2 s: HTTP/1 stream of 5 s took {h1_took:?}, HTTP/2 stream {h2_took:?}; \
         the idle keep-alive connection beside them was closed after {idle_closed_after:?}"
    );
    assert_eq!(h1.text(), want, "the HTTP/1 stream arrives whole");
    assert!(h2_ended, "the HTTP/2 stream ends: {h2_transcript:?}");
    assert_eq!(h2_body, want, "the HTTP/2 stream arrives whole");
    assert!(
        h1_took > Duration::from_secs(4),
        "the stream really outlasted the bound: {h1_took:?}"
    );
    assert_eq!(idle_read, 0, "the idle connection gets EOF");
    assert!(
        idle_closed_after < h1_took,
        "the idle connection was closed at the bound while the streams went on"
    );
}

#[test]
fn a_stream_started_before_a_reload_arrives_whole_from_the_old_process() {
    let sb = Sandbox::new();
    let mut app = start_app(&sb, &[("BATON_SHUTDOWN_TIMEOUT", "30s")]);
    let old = app.pid;
    let path = "/stream?lines=12&every_ms=250";
    // Both streams have begun at the old process before the reload: the HTTP/1 connection is
    // its, and the HTTP/2 stream's first DATA frame arrived.
    let mut h1_conn = http::RawConn::connect(sb.addr());
    let h1_port = h1_conn.stream.local_addr().unwrap().port();
    h1_conn
        .send(http::get_request(path, true).as_bytes())
        .unwrap();
    common::wait_until("the old process to own the HTTP/1 stream", DEADLINE, || {
        (procs::connection_owner(app.pid, sb.port, h1_port)? == old).then_some(())
    });
    let h1 = thread::spawn(move || h1_conn.response());
    let mut p = RawH2::connect(sb.addr()).expect("connect");
    p.get(1, &sb.listen(), path).expect("GET");
    assert!(
        p.read_until(DEADLINE, |f| f.kind == FRAME_DATA && f.stream == 1),
        "the HTTP/2 stream begins: {:?}",
        p.transcript()
    );
    let h2 = thread::spawn(move || {
        let ended = p.read_to_end_of(1, DEADLINE * 3);
        let body = p.body(1);
        // After the stream, the old process closes the connection.
        p.read_to_close(DEADLINE);
        (body, ended, p.transcript())
    });
    let r = common::reload(&sb.notify, old);
    assert_eq!(
        http::get_fresh(sb.addr(), "/").unwrap().text(),
        format!("pid {}", r.new),
        "new requests go to the successor"
    );
    assert!(
        procs::is_alive(old),
        "the old process serves its streams on"
    );
    let want = expected_body(12, old);
    let h1 = h1.join().unwrap().expect("HTTP/1 stream");
    assert_eq!(
        h1.text(),
        want,
        "the HTTP/1 stream arrives whole from the old pid"
    );
    let (h2_body, h2_ended, transcript) = h2.join().unwrap();
    println!("HTTP/2 stream across a reload: {transcript:?}");
    assert!(h2_ended, "{transcript:?}");
    assert_eq!(
        h2_body, want,
        "the HTTP/2 stream arrives whole from the old pid"
    );
    let goaway_at = transcript.iter().position(|t| t.starts_with("GOAWAY"));
    let end_at = transcript.iter().position(|t| t.ends_with("end)"));
    assert!(
        goaway_at.is_some() && goaway_at < end_at,
        "the GOAWAY came during the stream, the stream went on: {transcript:?}"
    );
    let st = app.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(0), "{}", app.log());
}

#[test]
fn keep_alive_pings_close_an_h2_connection_whose_peer_stopped_answering_mid_stream() {
    let sb = Sandbox::new();
    let app = start_app(&sb, &[("BATON_IDLE_TIMEOUT", "2s")]);
    let mut p = RawH2::connect(sb.addr()).expect("connect");
    p.ack_pings = false;
    // A minute of stream; the peer will read but never answer a PING.
    p.get(1, &sb.listen(), "/stream?lines=120&every_ms=500")
        .expect("GET");
    let t = Instant::now();
    assert!(
        p.read_to_close(DEADLINE * 2),
        "never closed: {:?}",
        p.transcript()
    );
    let took = t.elapsed();
    let lines = p
        .frames
        .iter()
        .filter(|f| f.kind == FRAME_DATA && f.stream == 1)
        .count();
    println!("silent peer mid-stream closed after {took:?}, {lines} lines in");
    assert!(
        p.pinged(),
        "the server sent keep-alive PINGs: {:?}",
        p.transcript()
    );
    assert!(
        lines > 0 && lines < 120,
        "closed in the middle of the stream: {:?}",
        p.transcript()
    );
    // The same stream to a peer that answers goes on (a few lines are enough to see it).
    let (body, _, _) = get_h2(&sb, "/stream?lines=8&every_ms=500");
    assert_eq!(body, expected_body(8, app.pid));
}

/// The operator who lets something else watch the clients turns the PINGs off
/// (`BATON_HTTP2_KEEPALIVE=0`): the same silent peer gets a stream three times the idle bound
/// long, whole, and is never pinged.
#[test]
fn with_keep_alive_pings_off_a_silent_peer_is_not_pinged_and_its_stream_arrives_whole() {
    let sb = Sandbox::new();
    let app = start_app(
        &sb,
        &[("BATON_IDLE_TIMEOUT", "2s"), ("BATON_HTTP2_KEEPALIVE", "0")],
    );
    let mut p = RawH2::connect(sb.addr()).expect("connect");
    p.ack_pings = false;
    // 6 s of stream: with the PINGs on, one would come after 2 s and the close 2 s later.
    p.get(1, &sb.listen(), "/stream?lines=12&every_ms=500")
        .expect("GET");
    let ended = p.read_to_end_of(1, DEADLINE * 2);
    let transcript = p.transcript();
    assert!(ended, "the stream ended: {transcript:?}");
    assert!(!p.pinged(), "no keep-alive PING: {transcript:?}");
    assert_eq!(p.body(1), expected_body(12, app.pid));
}

/// A handler's panic costs its own request, not its neighbours': an HTTP/2 stream whose handler
/// panics is reset, the other streams of the same connection are answered, and the connection
/// serves on (HTTP/2 streams start on their connection's task, src/http/exec.rs).
#[test]
fn an_h2_handler_that_panics_resets_its_stream_and_the_connection_serves_on() {
    let sb = Sandbox::new();
    let app = start_app(&sb, &[]);
    let mut p = RawH2::connect(sb.addr()).expect("connect");
    let authority = sb.listen();
    p.get(1, &authority, "/stream?lines=3&every_ms=100")
        .expect("GET 1");
    p.get(3, &authority, "/panic").expect("GET 3");
    p.get(5, &authority, "/").expect("GET 5");
    let ended = |id: u32| move |f: &Frame| f.stream == id && f.flags & FLAG_END_STREAM != 0;
    assert!(
        p.read_until(DEADLINE, ended(1)),
        "the stream beside the panic ended: {:?}",
        p.transcript()
    );
    p.get(7, &authority, "/")
        .expect("GET 7 on the same connection");
    assert!(
        p.read_until(DEADLINE, ended(7)),
        "a request after the panic is answered on the same connection: {:?}",
        p.transcript()
    );
    let transcript = p.transcript();
    assert!(
        p.frames
            .iter()
            .any(|f| f.kind == FRAME_RST_STREAM && f.stream == 3),
        "the panicking stream was reset: {transcript:?}"
    );
    assert_eq!(p.body(1), expected_body(3, app.pid), "{transcript:?}");
    assert_eq!(p.body(5), format!("pid {}", app.pid), "{transcript:?}");
    assert!(
        !p.frames.iter().any(|f| f.kind == FRAME_GOAWAY) && p.closed.is_none(),
        "the connection was not closed: {transcript:?}"
    );
}
