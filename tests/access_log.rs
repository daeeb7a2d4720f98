//! Story: a client puts terminal controls into the request path — a C1 CSI (`U+009B`) that a
//! terminal reads as an escape sequence, a C1 NEL (`U+0085`) and `U+2028` that some viewers
//! break lines at, a bidi override (`U+202E`) that shows the rest of a line reversed — and a
//! `"` that would close the quoted request field early, as a forged log line needs. The
//! operator reads the access log with `journalctl`, `less` or `jq`: every one of them arrives
//! escaped, as in every other line baton writes, in the text and the JSON log formats alike.

mod common;

use common::http::RawConn;
use common::{Sandbox, DEADLINE};
use nix::sys::signal::Signal;

/// The hostile path as the client sends it (raw UTF-8 in the request line).
const PATH: &str = "/a\u{9b}31mred\u{85}nel\u{202e}gnp.exe\u{2028}ls\"forged\\q";

/// The raw characters none of which may reach the log.
const RAW: [char; 4] = ['\u{9b}', '\u{85}', '\u{202e}', '\u{2028}'];

/// Starts baton with the access log in `format`, sends the hostile request, returns the log
/// once the request's line is in it.
fn log_of_hostile_request(format: &str, is_access_line: fn(&str) -> bool) -> (String, String) {
    let sb = Sandbox::new();
    let mut config = sb.config("seen");
    config["access_log"] = true.into();
    sb.write_config(&config);
    let mut baton = sb.spawn(sb.serve(&["--log-format", format]));
    baton.wait_ready(&sb.notify);
    let mut conn = RawConn::connect(sb.addr());
    conn.send(format!("GET {PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("send");
    let r = conn.response().expect("a response");
    assert_eq!(r.status, 200, "hyper takes the path as it is: {r:?}");
    let line = common::wait_until("the access-log line", DEADLINE, || {
        baton
            .log()
            .lines()
            .find(|l| is_access_line(l) && l.contains("forged"))
            .map(str::to_owned)
    });
    baton.signal(baton.pid, Signal::SIGTERM);
    baton.wait_exit(DEADLINE);
    (line, baton.log())
}

/// None of the [`RAW`] characters reached the log unescaped.
fn assert_no_raw_character(log: &str, line: &str) {
    for c in RAW {
        assert!(
            !log.contains(c),
            "raw U+{:04X} in the log: {line}",
            c as u32
        );
    }
}

#[test]
fn controls_bidi_marks_and_quotes_in_the_path_are_escaped_in_the_text_log() {
    let (line, log) = log_of_hostile_request("text", |l| l.contains(" access "));
    println!("{line}");
    assert_no_raw_character(&log, &line);
    // The request field is closed by the only unescaped `"` after the version.
    let expected =
        r#""GET /a\u{9b}31mred\u{85}nel\u{202e}gnp.exe\u{2028}ls\"forged\\q HTTP/1.1" 200 4 "#;
    assert!(line.contains(expected), "{line}");
    let quotes = line
        .chars()
        .zip(line.chars().skip(1))
        .filter(|(a, b)| *a != '\\' && *b == '"');
    assert_eq!(quotes.count(), 2, "one quoted field: {line}");
}

#[test]
fn controls_bidi_marks_and_quotes_in_the_path_are_escaped_in_the_json_log() {
    let (line, log) = log_of_hostile_request("json", |l| l.contains("baton::access"));
    println!("{line}");
    assert_no_raw_character(&log, &line);
    let event: serde_json::Value = serde_json::from_str(&line).expect("one JSON object");
    assert_eq!(
        event["path"],
        "/a\\u{9b}31mred\\u{85}nel\\u{202e}gnp.exe\\u{2028}ls\"forged\\q"
    );
    let message = event["message"].as_str().expect("message");
    assert!(
        message.contains(
            r#""GET /a\u{9b}31mred\u{85}nel\u{202e}gnp.exe\u{2028}ls\"forged\\q HTTP/1.1" 200 4 "#
        ),
        "{message}"
    );
}
