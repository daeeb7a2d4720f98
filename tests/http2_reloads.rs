//! Story: clients speak HTTP/2 (h2c, prior knowledge) to a busy baton, many streams at once on
//! each connection, while the operator reloads it again and again. An HTTP/2 client that follows
//! RFC 9113 — it stops using a connection that got GOAWAY, reconnects, and sends again what the
//! server refused or never received — loses no request. nghttp2's h2load, a client nobody here
//! wrote (it does not retry), loses no stream the server accepted: each of its errors is
//! classified, and the only ones allowed are requests it never put on the wire.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::h2::H2Load;
use common::load::body_is_one_of;
use common::{procs, Sandbox, DEADLINE};

const RELOADS: usize = 20;

#[test]
fn twenty_reloads_under_multiplexed_http2_load_lose_no_request() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    let body = "hello over h2";
    let _baton = sb.start(body, &["--shutdown-timeout", "10s"]);
    let mut main = _baton.pid;

    // 4 connections × 16 concurrent streams.
    let load = H2Load::start(sb.addr(), 4, 16, body_is_one_of(&[body]));
    load.wait_more_ok(200, DEADLINE);

    let mut retired = Vec::new();
    for i in 0..RELOADS {
        let r = common::reload(&sb.notify, main);
        retired.push(r.old);
        main = r.new;
        load.wait_after_reload(i + 1);
    }
    let report = load.stop();
    println!("HTTP/2 under {}", report.assert_across_reloads(RELOADS));
    for pid in retired {
        assert!(
            procs::wait_gone(pid, DEADLINE) || procs::is_zombie(pid),
            "retired {pid} still runs"
        );
    }
}

/// h2load's summary line: `requests: T total, S started, D done, K succeeded, F failed, ...`.
#[derive(Debug, Default, Clone, Copy)]
struct H2loadFigures {
    total: u64,
    started: u64,
    done: u64,
    succeeded: u64,
    failed: u64,
    errored: u64,
    timeout: u64,
}

impl H2loadFigures {
    fn parse(out: &str) -> Option<H2loadFigures> {
        let line = out.lines().find(|l| l.starts_with("requests: "))?;
        let mut f = H2loadFigures::default();
        for part in line["requests: ".len()..].split(", ") {
            let (n, what) = part.split_once(' ')?;
            let n: u64 = n.parse().ok()?;
            match what {
                "total" => f.total = n,
                "started" => f.started = n,
                "done" => f.done = n,
                "succeeded" => f.succeeded = n,
                "failed" => f.failed = n,
                "errored" => f.errored = n,
                "timeout" => f.timeout = n,
                _ => {}
            }
        }
        Some(f)
    }

    fn add(&mut self, o: &H2loadFigures) {
        self.total += o.total;
        self.started += o.started;
        self.done += o.done;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.errored += o.errored;
        self.timeout += o.timeout;
    }
}

/// h2load's per-request log (`--log-file`): `start_us \t status \t duration_us`; a failed stream
/// has status -1, and one that h2load never put on the wire has no send time (start 0).
#[derive(Debug, Default)]
struct LogCounts {
    ok: u64,
    failed_never_sent: u64,
    failed_after_sending: u64,
}

fn count_log(path: &Path) -> LogCounts {
    let mut c = LogCounts::default();
    for line in fs::read_to_string(path).unwrap_or_default().lines() {
        let mut f = line.split('\t');
        let (Some(start), Some(status)) = (f.next(), f.next()) else {
            continue;
        };
        match (start == "0", status == "-1") {
            (_, false) => c.ok += 1,
            (true, true) => c.failed_never_sent += 1,
            (false, true) => c.failed_after_sending += 1,
        }
    }
    c
}

/// h2load (Debian's nghttp2-client, installed by .ci/run) must be there.
fn ensure_h2load() {
    let have = common::reaper::output(Command::new("h2load").arg("--version"))
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        have,
        "h2load is needed: apt-get install nghttp2-client (.ci/run installs it)"
    );
}

#[test]
fn h2load_across_twenty_reloads_loses_no_accepted_stream() {
    ensure_h2load();
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    let body = "hello over h2";
    let _baton = sb.start(body, &["--shutdown-timeout", "10s"]);
    let mut main = _baton.pid;
    let url = format!("http://{}/", sb.addr());

    // h2load does not reconnect after GOAWAY (its clients end), so it runs again and again,
    // one short run after the other, for as long as the reloads go on.
    let stop = Arc::new(AtomicBool::new(false));
    let logs = sb.path("h2load-logs");
    fs::create_dir(&logs).expect("mkdir");
    let runner = {
        let (stop, logs) = (stop.clone(), logs.clone());
        thread::spawn(move || {
            let mut runs = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let log = logs.join(format!("run-{i}.log"));
                let out = common::reaper::output(
                    Command::new("h2load")
                        .args(["-D", "1", "-c", "4", "-m", "10", "--log-file"])
                        .arg(&log)
                        .arg(&url),
                )
                .expect("run h2load");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let figures = H2loadFigures::parse(&text)
                    .unwrap_or_else(|| panic!("no summary from h2load:\n{text}"));
                runs.push((figures, count_log(&log), text));
                i += 1;
            }
            runs
        })
    };
    thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    for _ in 0..RELOADS {
        let r = common::reload(&sb.notify, main);
        main = r.new;
        thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::SeqCst);
    let runs = runner.join().expect("h2load runner");

    let mut sum = H2loadFigures::default();
    let mut log = LogCounts::default();
    let mut submit_refusals = 0;
    for (f, l, text) in &runs {
        sum.add(f);
        log.ok += l.ok;
        log.failed_never_sent += l.failed_never_sent;
        log.failed_after_sending += l.failed_after_sending;
        // h2load prints this each time nghttp2 refused a new request (after a GOAWAY); it adds
        // the client's remaining quota to the failures, which in a timed run has been 0 here.
        submit_refusals += text
            .lines()
            .filter(|l| l.starts_with("Process Request Failure"))
            .count() as u64;
    }
    // Failures without a line in the log: streams h2load gave up while in flight because the
    // connection closed under them (or quota it gave up after a refused submission): counted
    // against baton.
    let unlogged = sum
        .failed
        .saturating_sub(log.failed_never_sent + log.failed_after_sending);
    println!(
        "h2load across {RELOADS} reloads ({} runs of -D 1 -c 4 -m 10, {:?}): {} total, {} \
         succeeded, {} failed, {} errored, {} timeout",
        runs.len(),
        started.elapsed(),
        sum.total,
        sum.succeeded,
        sum.failed,
        sum.errored,
        sum.timeout
    );
    println!(
        "  errors classified: {} opened by h2load after it got GOAWAY and never sent, {} sent \
         and then failed, {} not in its log (abandoned in flight at a close); {} submissions \
         refused by nghttp2 after GOAWAY",
        log.failed_never_sent, log.failed_after_sending, unlogged, submit_refusals
    );
    assert!(sum.succeeded > 0, "h2load made no request: {runs:#?}");
    let accepted_then_lost = log.failed_after_sending + unlogged + sum.timeout;
    assert_eq!(
        accepted_then_lost,
        0,
        "streams h2load sent that were not answered:\n{}",
        runs.iter()
            .filter(|(f, l, _)| l.failed_after_sending > 0 || f.failed > 0 || f.timeout > 0)
            .map(|(_, _, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        sum.succeeded, log.ok,
        "every success h2load counted is in its log"
    );
}
