//! Story: a developer swaps `axum::serve(listener, app)` for `baton_server::serve(app)`
//! (`examples/axum.rs`) and runs it configured only by `BATON_*` variables. Everything their app
//! does keeps working across reloads: plain requests under load, WebSockets, streamed bodies and
//! server-sent events, and state carried from one generation to the next.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::load::{Check, Load};
use common::{http, Baton, Sandbox, DEADLINE};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// The axum example, configured only by `BATON_*` variables (no file, no arguments).
fn axum_app(sb: &Sandbox, extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = sb.app("axum", extra_env);
    cmd.env("BATON_SHUTDOWN_TIMEOUT", "10s");
    cmd
}

fn start(sb: &Sandbox, extra_env: &[(&str, &str)]) -> Baton {
    let app = sb.spawn(axum_app(sb, extra_env));
    app.wait_ready(&sb.notify);
    app
}

/// `Hello from pid N (generation G)`: any pid, any generation.
fn greeting() -> Check {
    Arc::new(|r: &http::Response| {
        let t = r.text();
        if r.status == 200 && t.starts_with("Hello from pid ") && t.contains("(generation ") {
            Ok(())
        } else {
            Err(format!("status {} body {t:?}", r.status))
        }
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn the_axum_example_configured_by_environment_loses_nothing_across_20_reloads() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    let app = start(&sb, &[]);
    let first = http::get_fresh(sb.addr(), "/")
        .expect("first request")
        .text();
    assert_eq!(
        first,
        format!("Hello from pid {} (generation 0)\n", app.pid)
    );

    let load = Load::start(sb.addr(), 4, 4, Duration::from_millis(1), greeting());
    let mut main = app.pid;
    let mut times = Vec::new();
    for _ in 0..20 {
        let r = common::reload(&sb.notify, main);
        times.push(r.handoff_time());
        main = r.new;
    }
    // Traffic reaches the last generation before the load stops.
    load.wait_more_ok(50, DEADLINE);
    let (median, max) = common::median_max(times);
    load.stop_without_failures(&format!(
        "axum example, 20 reloads under load; SIGHUP->MAINPID median {median:?} max {max:?}"
    ));
    let last = http::get_fresh(sb.addr(), "/").expect("request").text();
    assert_eq!(last, format!("Hello from pid {main} (generation 20)\n"));
}

#[test]
fn visits_counted_by_the_app_survive_five_generations() {
    let sb = Sandbox::new();
    let app = start(&sb, &[]);
    let mut main = app.pid;
    let mut expected = 0;
    for generation in 0..=5 {
        for _ in 0..=generation {
            expected += 1;
            let got = http::get_fresh(sb.addr(), "/visits").expect("visit").text();
            assert_eq!(
                got.trim(),
                expected.to_string(),
                "generation {generation} (pid {main})"
            );
        }
        if generation < 5 {
            main = common::reload(&sb.notify, main).new;
        }
    }
    println!("visit counter carried across 5 hand-offs: {expected} visits, none lost");
}

#[test]
fn a_websocket_opened_before_a_reload_stays_with_the_old_process_until_it_closes_going_away() {
    let sb = Sandbox::new();
    let mut app = start(&sb, &[("EXAMPLE_WS_GRACE_MS", "1500")]);
    let old = app.pid;
    let url = format!("ws://{}/ws", sb.listen());
    runtime().block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("ws connect");
        ws.send(Message::Text("before".into())).await.expect("send");
        let echo = ws.next().await.expect("echo").expect("echo");
        assert_eq!(echo.to_text().unwrap(), format!("pid {old}: before"));

        let new = common::reload(&sb.notify, old).new;
        // Right after the reload the old process still echoes on this connection.
        ws.send(Message::Text("after".into()))
            .await
            .expect("send after reload");
        let mut seen = Vec::new();
        let close = loop {
            match tokio::time::timeout(DEADLINE, ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => break frame,
                Ok(Some(Ok(m))) => seen.push(m.to_text().unwrap_or_default().to_owned()),
                other => panic!("websocket ended without a close frame: {other:?}; saw {seen:?}"),
            }
        };
        assert!(
            seen.contains(&format!("pid {old}: after")),
            "the old process did not echo after the reload: {seen:?}"
        );
        assert!(seen.contains(&format!("pid {old}: draining")), "{seen:?}");
        let frame = close.expect("a close frame with a code");
        assert_eq!(frame.code, CloseCode::Away, "1001 Going Away");

        // A WebSocket opened now is the successor's.
        let (mut ws2, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("ws connect");
        ws2.send(Message::Text("new".into())).await.expect("send");
        let echo = ws2.next().await.expect("echo").expect("echo");
        assert_eq!(echo.to_text().unwrap(), format!("pid {new}: new"));
        ws2.close(None).await.expect("close");
    });
    let closed = Instant::now();
    let status = app.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", app.log());
    println!(
        "websocket: echoed by {old} after the reload, closed 1001 by the app, {old} exited 0 {:?} later",
        closed.elapsed()
    );
}

/// Reads a chunked body of `chunks` lines from a raw connection, calling `after_first` once the
/// first line arrived.
fn streamed_lines(sb: &Sandbox, path: &str, after_first: impl FnOnce()) -> (Vec<String>, Duration) {
    let mut s = TcpStream::connect(sb.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let started = Instant::now();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("head");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = String::new();
    let mut first = Some(after_first);
    let mut buf = [0u8; 4096];
    loop {
        let n = r.read(&mut buf).expect("body");
        if n == 0 {
            break;
        }
        body.push_str(&String::from_utf8_lossy(&buf[..n]));
        if body.contains("chunk 1 ") || body.contains("event 1") {
            if let Some(f) = first.take() {
                f();
            }
        }
    }
    let lines = body
        .lines()
        .filter(|l| l.starts_with("chunk ") || l.starts_with("data: event"))
        .map(str::to_owned)
        .collect();
    (lines, started.elapsed())
}

#[test]
fn a_stream_and_server_sent_events_started_before_a_reload_arrive_whole() {
    let sb = Sandbox::new();
    let app = start(&sb, &[]);
    let old = app.pid;
    let (lines, took) = streamed_lines(&sb, "/stream?chunks=30&ms=100", || {
        common::reload(&sb.notify, old);
    });
    assert_eq!(lines.len(), 30, "{lines:?}");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line, &format!("chunk {} of 30 from pid {old}", i + 1));
    }
    let new = common::current_main(&sb.notify, app.pid);
    let (events, _) = streamed_lines(&sb, "/events?count=20&ms=100", || {
        common::reload(&sb.notify, new);
    });
    let expected: Vec<String> = (1..=20).map(|i| format!("data: event {i}")).collect();
    assert_eq!(events, expected);
    println!("a 30-chunk body ({took:?}) and 20 server-sent events across reloads: complete");
}

#[test]
fn a_body_streaming_longer_than_the_idle_bound_is_not_cut() {
    let sb = Sandbox::new();
    let _app = start(&sb, &[("BATON_IDLE_TIMEOUT", "2s")]);
    // 50 chunks 100 ms apart: 5 s of body, 2.5 times the idle bound.
    let (lines, took) = streamed_lines(&sb, "/stream?chunks=50&ms=100", || {});
    assert_eq!(lines.len(), 50, "cut after {took:?}: {lines:?}");
    assert!(took >= Duration::from_secs(4), "{took:?}");
    println!("a {took:?} body with a 2 s idle bound: all 50 chunks");
}

#[test]
fn a_forty_second_body_with_the_default_idle_bound_is_not_cut() {
    let sb = Sandbox::new();
    let _app = start(&sb, &[]);
    let (lines, took) = streamed_lines(&sb, "/stream?chunks=41&ms=1000", || {});
    assert_eq!(lines.len(), 41, "cut after {took:?}");
    assert!(took >= Duration::from_secs(40), "{took:?}");
    println!("a {took:?} body with the default 30 s idle bound: all 41 chunks");
}

/// A unit (or a wrapper such as `systemfd`) that says `LISTEN_FDS=2` but passes only fd 3: in
/// the app, number 4 already belongs to its tokio runtime (`#[tokio::main]` built it before
/// `Server::from_env` read the variables). baton refuses it as "not a socket", leaves it to the
/// runtime, and the app ends with one line naming fd 4 and exit code 78, as the command does —
/// not with an abort for a descriptor closed under its owner.
#[test]
fn an_app_told_of_a_descriptor_it_was_not_given_refuses_to_start_with_exit_78() {
    use std::os::fd::AsRawFd;
    let sb = Sandbox::new();
    let listener = std::net::TcpListener::bind(sb.addr()).expect("bind");
    let app = axum_app(
        &sb,
        &[("LISTEN_FDS", "2"), ("LISTEN_FDNAMES", "web:missing")],
    );
    // `LISTEN_PID` is the app's own pid: a shell that execs it sets it.
    let mut shell = sb.command("/bin/sh");
    shell
        .arg("-c")
        .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
        .arg(app.get_program())
        .envs(app.get_envs().filter_map(|(k, v)| Some((k, v?))));
    common::place_at_fd3(&mut shell, listener.as_raw_fd());
    let mut app = sb.spawn(shell);
    let st = app.wait_exit(DEADLINE);
    let log = app.log();
    println!("told of fd 4, given only fd 3: {}", common::describe(st));
    assert_eq!(st.code(), Some(78), "{log}");
    let refusal: Vec<&str> = log.lines().filter(|l| l.contains("fd 4")).collect();
    assert_eq!(refusal.len(), 1, "{log}");
    assert!(refusal[0].contains("not a socket"), "{log}");
    assert!(!log.contains("IO Safety"), "{log}");
}
