//! Story: HTTP/2 clients that connect, ask once and then sit idle must not be able to take the
//! server away. With only 64 descriptors (a real `ulimit -n 64`), 60 idle h2c connections fill
//! the process; the idle bound (`--idle-timeout`, here 3 s) sends each of them GOAWAY, then the
//! final GOAWAY once the client answered the PING, then closes it — and the server serves
//! everybody again. A peer that never answers (dead, or not reading) is closed anyway.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::h2::{RawH2, FLAG_END_STREAM, FRAME_DATA};
use common::{baton_exe, http, Sandbox, DEADLINE};

const MAX_STREAM_ID: u32 = 0x7fff_ffff;

/// What one idle probe saw.
struct ProbeRun {
    answered_after: Option<Duration>,
    closed_after: Option<Duration>,
    transcript: Vec<String>,
    goaways: Vec<u32>,
}

fn end_of_response(f: &common::h2::Frame) -> bool {
    f.kind == FRAME_DATA && f.stream == 1 && f.flags & FLAG_END_STREAM != 0
}

#[test]
fn idle_h2c_connections_are_closed_by_the_idle_bound_and_free_their_descriptors() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    sb.write_config(&sb.config("hello"));
    let mut cmd = sb.command_with_fd_limit(64, &baton_exe());
    cmd.args(["--idle-timeout", "3s"]);
    let baton = sb.spawn(cmd);
    baton.wait_ready(&sb.notify);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", baton.pid)).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        nofile.split_whitespace().nth(3) == Some("64"),
        "the server runs with 64 descriptors: {nofile}"
    );

    let addr = sb.addr();
    let authority = sb.listen();
    let t0 = Instant::now();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for _ in 0..60 {
        let (runs, authority) = (runs.clone(), authority.clone());
        threads.push(thread::spawn(move || {
            let mut p = RawH2::connect(addr).expect("connect");
            p.get(1, &authority, "/").expect("send GET");
            let answered = p.read_until(DEADLINE * 2, end_of_response);
            let answered_after = answered.then(|| t0.elapsed());
            let closed = p.read_to_close(DEADLINE);
            let run = ProbeRun {
                answered_after,
                closed_after: closed.then(|| t0.elapsed()),
                transcript: p.transcript(),
                goaways: p.frames.iter().filter_map(|f| f.last_stream_id()).collect(),
            };
            runs.lock().unwrap().push(run);
        }));
        // Connect them one after the other, as clients arriving.
        thread::sleep(Duration::from_millis(5));
    }
    for t in threads {
        t.join().expect("probe thread");
    }
    let runs = std::mem::take(&mut *runs.lock().unwrap());

    let quick = runs
        .iter()
        .filter(|r| r.answered_after.is_some_and(|d| d < Duration::from_secs(2)))
        .count();
    let mut late: Vec<Duration> = runs.iter().filter_map(|r| r.answered_after).collect();
    late.sort();
    let closes: Vec<Duration> = runs.iter().filter_map(|r| r.closed_after).collect();
    let (median_close, max_close) = common::median_max(closes);
    println!(
        "60 idle h2c connections under ulimit -n 64, idle bound 3 s: {quick} answered at once, \
         all answered by {:?}; closed by the server: median {median_close:?}, max {max_close:?}",
        late.last()
    );
    assert!(
        quick < 60,
        "the descriptor limit must have held some connections back (else the test proves nothing)"
    );
    for r in &runs {
        assert!(
            r.answered_after.is_some(),
            "every connection is answered once idle ones are closed: {:?}",
            r.transcript
        );
        assert!(
            r.closed_after.is_some(),
            "every idle connection is closed: {:?}",
            r.transcript
        );
        assert_eq!(
            r.goaways,
            vec![MAX_STREAM_ID, 1],
            "GOAWAY(2^31-1), then after the PING the final GOAWAY(last stream 1), then the close: {:?}",
            r.transcript
        );
        assert!(
            r.transcript.last().is_some_and(|l| l == "closed (EOF)"),
            "closed with a FIN, not a reset: {:?}",
            r.transcript
        );
    }
    assert_eq!(http::get_fresh(addr, "/").unwrap().text(), "hello");
}

#[test]
fn an_idle_h2c_peer_that_never_answers_the_goaway_ping_is_closed_anyway() {
    let sb = Sandbox::new();
    let _baton = sb.start("hello", &["--idle-timeout", "2s"]);
    let mut p = RawH2::connect(sb.addr()).expect("connect");
    p.ack_pings = false;
    p.get(1, &sb.listen(), "/").expect("GET");
    assert!(
        p.read_until(DEADLINE, end_of_response),
        "{:?}",
        p.transcript()
    );
    let answered = Instant::now();
    assert!(
        p.read_to_close(DEADLINE),
        "never closed: {:?}",
        p.transcript()
    );
    let waited = answered.elapsed();
    println!(
        "silent h2c peer closed {waited:?} after its answer: {:?}",
        p.transcript()
    );
    let goaways: Vec<u32> = p.frames.iter().filter_map(|f| f.last_stream_id()).collect();
    assert_eq!(
        goaways.first(),
        Some(&MAX_STREAM_ID),
        "told to go away first: {:?}",
        p.transcript()
    );
    assert!(
        p.pinged(),
        "the server asked for a PING answer: {:?}",
        p.transcript()
    );
}
