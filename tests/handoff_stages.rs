//! Story: the successor dies at each stage of the hand-off in turn, and each time the test proves
//! which stage the kill landed in before it kills:
//!
//! 1. **starting**: the successor has not even run baton yet (held before its exec, as a slow
//!    start from a stuck file system would hold it);
//! 2. **announcing**: the old process told systemd `MAINPID=<successor>` and waits for the
//!    `BARRIER=1` (the test's notify reader keeps it);
//! 3. **promoting**: `promoted` was sent — it waits unread in the stopped successor's hand-off
//!    connection — and the successor has not confirmed.
//!
//! Each time the old process serves on without refusing or failing one request of the clients
//! that keep opening fresh connections, reports `READY=1` + `STATUS=reload failed…`, and, once it
//! had announced the successor, says `MAINPID=<own>` again first. A last reload then succeeds.

mod common;

use std::time::Duration;

use common::{procs, HeldSuccessor, Options, Story, DEADLINE};
use nix::sys::signal::Signal;

/// Fresh-connection clients, one request in flight each.
const CLIENTS: u64 = 2;

/// With the notify reader keeping barriers: SIGHUP to the main process, `MAINPID=<successor>`
/// from it, then SIGSTOP to the successor. Returns (first notification of this reload, successor).
fn announce_and_stop_the_successor(s: &Story) -> (usize, i32) {
    let old = s.main;
    s.sb.notify.gate_barriers();
    let from = s.sb.notify.len();
    assert!(procs::kill(old, Signal::SIGHUP));
    let successor =
        s.sb.notify
            .wait_for_after(from, DEADLINE, "MAINPID=<successor>", |n| {
                n.pid == old && n.mainpid().is_some_and(|p| p != old)
            })
            .mainpid()
            .unwrap();
    assert!(procs::kill(successor, Signal::SIGSTOP));
    (from, successor)
}

/// After the successor was killed: `READY=1` + `STATUS=reload failed…` from `old` (after
/// `MAINPID=<own>` if it had announced the successor), the successor reaped, `old` alone serving.
///
/// The successor accepts connections once it said `ready` (announcing and promoting): killing it
/// loses those it had accepted and not answered, at most one per load client (`may_lose`).
fn assert_old_serves_on(
    s: &Story,
    from: usize,
    successor: i32,
    announced: bool,
    stage: &str,
    failed_before: u64,
) {
    let may_lose = if announced { CLIENTS } else { 0 };
    let old = s.main;
    let end =
        s.sb.notify
            .try_wait_for_after(from, DEADLINE, |n| {
                n.pid == old
                    && n.has("READY=1")
                    && n.get("STATUS")
                        .is_some_and(|st| st.starts_with("reload failed"))
            })
            .unwrap_or_else(|| {
                panic!(
                    "{stage}: no READY=1 + reload failed from {old}:\n{}log:\n{}",
                    s.sb.notify.dump(),
                    s.baton.log()
                )
            });
    let told = &s.sb.notify.all()[from..=end.seq];
    let said_mainpid = |pid: i32| {
        told.iter()
            .position(|n| n.pid == old && n.mainpid() == Some(pid))
    };
    assert_eq!(
        said_mainpid(successor).is_some(),
        announced,
        "{stage}: MAINPID=<successor> {}: {told:?}",
        if announced { "expected" } else { "too early" }
    );
    if announced {
        assert!(
            said_mainpid(old) > said_mainpid(successor),
            "{stage}: MAINPID=<own> again before READY=1: {told:?}"
        );
    }
    assert!(
        !told.iter().any(|n| n.pid == successor && n.has("READY=1")),
        "{stage}: the killed successor had been promoted: {told:?}"
    );
    common::wait_until("the successor reaped", DEADLINE, || {
        (!procs::exists(successor)).then_some(())
    });
    assert_eq!(s.baton.live_members(), vec![old], "{stage}");
    assert_eq!(s.get(), "steady", "{stage}");
    let lost = s.load().failed() - failed_before;
    assert!(
        lost <= may_lose,
        "{stage}: {lost} requests failed (at most {may_lose} in flight at the successor)"
    );
    let failed = s.load().failed();
    s.load().ok_since(failed, 20, DEADLINE);
}

#[test]
fn a_successor_killed_in_each_stage_of_the_hand_off_leaves_the_old_process_serving() {
    let _heavy = common::heavy();
    let mut s = Options::new("steady")
        .args(&["--child-timeout", "10s", "--shutdown-timeout", "3s"])
        .start();
    s.start_load(0, CLIENTS as usize, Duration::from_millis(2), &["steady"]);
    let old = s.main;

    // 1. starting: held before its exec.
    let mut held = HeldSuccessor::install(&s.sb);
    let failed = s.load().failed();
    let from = s.sb.notify.len();
    assert!(procs::kill(old, Signal::SIGHUP));
    let successor = procs::wait_child(old);
    // Its exec ran the wrapper (`sh`), which waits before it execs baton.
    common::wait_until(
        "the successor in the wrapper, before baton",
        DEADLINE,
        || {
            let argv = procs::cmdline(successor);
            argv.first()
                .is_some_and(|a| a.ends_with("sh"))
                .then_some(())
        },
    );
    assert!(procs::kill(successor, Signal::SIGKILL));
    held.restore();
    assert_old_serves_on(&s, from, successor, false, "starting", failed);

    // 2. announcing: MAINPID=<successor> sent, its barrier kept by the notify reader.
    // The old process waits on the kept barrier (it promotes only after it, or after 2 s): no
    // `promoted` reaches the stopped successor.
    let failed = s.load().failed();
    let (from, successor) = announce_and_stop_the_successor(&s);
    common::wait_until("the MAINPID barrier kept", DEADLINE, || {
        (s.sb.notify.gated_barriers() > 0).then_some(())
    });
    assert_eq!(
        procs::unread_unix_stream_bytes(successor),
        0,
        "announcing: nothing is sent to the successor while the barrier is kept"
    );
    assert!(procs::kill(successor, Signal::SIGKILL));
    s.sb.notify.open_barriers();
    assert_old_serves_on(&s, from, successor, true, "announcing", failed);

    // 3. promoting: the successor stopped while announced; the barrier let go; `promoted`
    // arrives and stays unread, so no `confirmed` can come.
    let failed = s.load().failed();
    let (from, successor) = announce_and_stop_the_successor(&s);
    let before = procs::unread_unix_stream_bytes(successor);
    s.sb.notify.open_barriers();
    common::wait_until(
        "`promoted` waiting unread at the successor",
        DEADLINE,
        || (procs::unread_unix_stream_bytes(successor) > before).then_some(()),
    );
    assert!(procs::kill(successor, Signal::SIGKILL));
    assert_old_serves_on(&s, from, successor, true, "promoting", failed);

    // The line still reloads.
    let r = s.reload();
    assert_eq!(r.old, old);
    assert_eq!(s.get(), "steady");
    let report = s.stop_load();
    assert!(report.ok > 0 && report.failed <= 2 * CLIENTS, "{report:?}");
    s.stop();
}
