//! Story: the operator reloads a busy baton again and again (as `systemctl reload` would) while
//! clients keep coming, some on kept-alive connections, some on fresh ones. Not one request may
//! fail, systemd must see exactly the documented notify sequence, and every retired process must
//! go away. Then: an edited config, reloaded, changes what new requests get.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{http, procs, Story, DEADLINE};
use nix::sys::wait::WaitStatus;

const RELOADS: usize = 20;

#[test]
fn twenty_reloads_under_load_lose_no_request() {
    let _heavy = common::heavy();
    let body = "hello from baton";
    let mut s = Story::start(body, &["--shutdown-timeout", "10s"]);
    let first = s.sb.notify.all()[0].clone();
    assert_eq!(
        first.pid, s.baton.pid,
        "the first notification comes from the started process: {first:?}"
    );
    assert!(
        first.has("READY=1"),
        "the first notification is READY=1: {first:?}"
    );
    assert!(
        first.says_serving(),
        "READY=1 at start carries STATUS=baton VERSION: serving on …: {first:?}"
    );

    s.start_load(4, 4, Duration::from_millis(1), &[body]);
    for i in 0..RELOADS {
        s.reload();
        // Traffic reaches the new generation before the next reload.
        s.load().wait_more_ok(100, DEADLINE);
        if s.load().failed() > 0 {
            panic!("failed requests after reload {}: stopping early", i + 1);
        }
    }
    let report = s.stop_load();

    let times: Vec<Duration> = s.reloads.iter().map(|r| r.handoff_time()).collect();
    let (median, max) = common::median_max(times);
    println!(
        "reload under load: {RELOADS} reloads, {} requests ok, {} failed",
        report.ok, report.failed
    );
    println!(
        "  keep-alive connections opened {}, idle ones replaced before writing {}, load time {:?}",
        report.keepalive_connects, report.replaced_idle, report.elapsed
    );
    println!("  hand-off time SIGHUP -> MAINPID: median {median:?}, max {max:?}");
    report.assert_no_failures();
    // A retiring process ends each kept-alive connection after a response (`Connection: close`)
    // so its clients move on: the 4 busy keep-alive clients open new connections across the
    // reloads (4 connections only, for the whole run, if they were never told to leave).
    assert!(
        report.keepalive_connects >= (4 + RELOADS) as u64,
        "keep-alive clients were never moved to a successor: {report:?}"
    );

    // The notify record: no STOPPING=1 during hand-offs, and a retired process says nothing after
    // MAINPID= (a barrier is not a message).
    let all = s.sb.notify.all();
    assert!(
        all.iter().all(|n| !n.has("STOPPING=1")),
        "STOPPING=1 during hand-offs:\n{}",
        s.sb.notify.dump()
    );
    for r in &s.reloads {
        let after: Vec<_> = all
            .iter()
            .filter(|n| n.pid == r.old && n.seq > r.mainpid.seq && !n.is_barrier_only())
            .collect();
        assert!(
            after.is_empty(),
            "retired {} spoke after MAINPID={}: {after:?}",
            r.old,
            r.new
        );
    }

    // The PID file and the reload status name the final main process. The PID file is written
    // right after `READY=1` (lifecycle: main in full), so it is waited for, as in
    // tests/control_socket.rs.
    let main = s.main;
    common::wait_until(
        "the PID file to name the current main process",
        DEADLINE,
        || {
            (std::fs::read_to_string(s.sb.pid_file()).ok()?.trim() == main.to_string())
                .then_some(())
        },
    );
    let status_path = s.sb.handoff_socket().with_file_name(format!(
        "reload-status.{}.json",
        s.reloads.last().unwrap().old
    ));
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&status_path).expect("reload-status.<pid>.json"),
    )
    .unwrap();
    assert_eq!(status["outcome"], "ready", "{status}");
    assert_eq!(status["successor_pid"], main, "{status}");
    assert_eq!(
        status["parent_pid"],
        s.reloads.last().unwrap().old,
        "{status}"
    );

    // Retired processes exit: the first one (our child) with 0, the others vanish from /proc.
    let st = s.baton.wait_exit(DEADLINE);
    assert_eq!(
        st.code(),
        Some(0),
        "the first process retires with exit 0: {}",
        common::describe(st)
    );
    let mut exit_codes = BTreeMap::new();
    for r in &s.reloads[1..] {
        assert!(
            procs::wait_gone(r.old, DEADLINE),
            "retired {} still exists: {:?}",
            r.old,
            procs::stat(r.old)
        );
        // Collected by the test's reaper when it was an orphan; its own parent reaped it otherwise.
        let seen = match common::reaper::orphan_exit(r.old) {
            Some(WaitStatus::Exited(_, c)) => format!("exit {c}"),
            Some(other) => format!("{other:?}"),
            None => "reaped by its parent".into(),
        };
        *exit_codes.entry(seen).or_insert(0) += 1;
    }
    println!("  retired successors: {exit_codes:?}");
    assert!(
        exit_codes
            .keys()
            .all(|k| k == "exit 0" || k == "reaped by its parent"),
        "{exit_codes:?}"
    );

    // Exactly one live process remains, holding the listener; no zombie anywhere in the group.
    let members = s.baton.members();
    assert_eq!(
        members.iter().map(|p| p.pid).collect::<Vec<_>>(),
        vec![main],
        "{members:?}"
    );

    // SIGTERM: STOPPING=1 from the main process, then nothing of baton is left, nothing listens.
    s.stop();
    assert!(
        matches!(
            common::reaper::orphan_exit(main),
            Some(WaitStatus::Exited(_, 0))
        ),
        "the last main process exits 0 on SIGTERM: {:?}",
        common::reaper::orphan_exit(main)
    );
}

#[test]
fn an_edited_config_applies_to_new_requests_after_reload() {
    let mut s = Story::start("before the edit", &["--shutdown-timeout", "10s"]);
    assert_eq!(s.sb.wait_serving().text(), "before the edit");
    // A keep-alive connection to the old process, busy through the reload.
    let mut keep = http::Client::new(s.sb.addr());
    assert_eq!(keep.get("/").unwrap().text(), "before the edit");

    let mut cfg = s.sb.config("after the edit");
    cfg["shutdown_timeout"] = "10s".into();
    s.sb.write_config(&cfg);
    let r = s.reload();

    // From READY=1 of the successor on (when `systemctl reload` returns), the reload is done:
    // every new connection gets the edited body. The old process must have stopped accepting
    // before its successor announced itself, so none of these can land on it.
    let bodies: Vec<String> = (0..30).map(|_| s.get()).collect();
    let old_after_ready = bodies.iter().filter(|b| *b != "after the edit").count();
    println!(
        "edited config: {} -> {}, fresh requests answered with the old body after READY=1: {old_after_ready} of 30",
        r.old, r.new
    );
    assert_eq!(
        old_after_ready, 0,
        "new connections made after the successor's READY=1 were still served the old config: {bodies:?}"
    );
    let mut fresh_keep = http::Client::new(s.sb.addr());
    for _ in 0..5 {
        assert_eq!(fresh_keep.get("/").unwrap().text(), "after the edit");
    }
    // The old keep-alive connection is answered (by the old process, which then closes it, or
    // by the new one on a new connection): never an error.
    for _ in 0..5 {
        let t = keep
            .get("/")
            .expect("keep-alive request across the reload")
            .text();
        assert!(t == "before the edit" || t == "after the edit", "{t:?}");
    }
    drop((keep, fresh_keep));
    s.stop();
}
