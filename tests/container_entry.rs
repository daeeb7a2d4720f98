//! Story: a library app is a container's entry point (`examples/container.rs`), PID 1 of a real
//! PID namespace (`unshare --pid --fork --mount-proc`). It calls `baton_server::supervise` first,
//! so a reload (SIGHUP to PID 1) hands over between generations below it and the "container"
//! lives on; requests under load lose nothing; SIGTERM ends it with status 0.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::load::{Check, Load};
use common::{http, procs, Sandbox, DEADLINE};
use nix::sys::signal::Signal;

fn generation_of(text: &str) -> Option<u64> {
    text.strip_prefix("Hello from pid ")?
        .split("(generation ")
        .nth(1)?
        .trim_end()
        .strip_suffix(')')?
        .parse()
        .ok()
}

#[test]
fn a_library_app_as_pid_1_reloads_under_load_and_stops_cleanly() {
    let sb = Sandbox::new();
    let mut cmd = sb.in_new_pid_namespace(common::examples::example("container"));
    cmd.env("BATON_LISTEN", sb.listen())
        .env("BATON_HANDOFF_SOCKET", sb.handoff_socket())
        .env_remove("NOTIFY_SOCKET");
    let mut container = sb.spawn(cmd);
    let pid1 = common::wait_until("the namespace's PID 1", DEADLINE, || {
        procs::children_of(container.pid).first().map(|p| p.pid)
    });
    let first = common::wait_until("generation 0 serving", DEADLINE, || {
        http::get_fresh(sb.addr(), "/").ok().map(|r| r.text())
    });
    assert_eq!(generation_of(&first), Some(0), "{first}");

    let check: Check = Arc::new(|r: &http::Response| {
        if r.status == 200 && generation_of(&r.text()).is_some() {
            Ok(())
        } else {
            Err(format!("status {} body {:?}", r.status, r.text()))
        }
    });
    let load = Load::start(sb.addr(), 2, 2, Duration::from_millis(2), check);
    for g in 1..=3 {
        container.signal(pid1, Signal::SIGHUP);
        common::wait_until(&format!("generation {g} serving"), DEADLINE, || {
            let t = http::get_fresh(sb.addr(), "/").ok()?.text();
            (generation_of(&t) == Some(g)).then_some(())
        });
        // A successor serves before it is promoted, and drops a SIGHUP meant for its
        // predecessor until then: the next reload waits until this one is over, i.e. the
        // predecessor retired and exited (only once its successor confirmed) and PID 1 has
        // exactly one child left, which has no child of its own.
        common::wait_until(
            &format!("generation {g} alone under PID 1"),
            DEADLINE,
            || {
                let children = procs::children_of(pid1);
                (children.len() == 1 && procs::children_of(children[0].pid).is_empty())
                    .then_some(())
            },
        );
        assert!(
            procs::stat(pid1).is_some(),
            "PID 1 (the supervisor) lives on after reload {g}:\n{}",
            container.log()
        );
    }
    load.stop_without_failures("library app as PID 1: 3 reloads under load");
    assert!(
        !container.log().contains("this process is PID 1"),
        "{}",
        container.log()
    );

    container.signal(pid1, Signal::SIGTERM);
    let status = container.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", container.log());
}

#[test]
fn a_library_app_as_pid_1_without_supervise_is_warned_at_start() {
    let sb = Sandbox::new();
    let mut cmd = sb.in_new_pid_namespace(common::examples::example("axum"));
    cmd.env("BATON_LISTEN", sb.listen())
        .env("BATON_HANDOFF_SOCKET", sb.handoff_socket())
        .env_remove("NOTIFY_SOCKET");
    let mut container = sb.spawn(cmd);
    common::wait_until("the app serving", DEADLINE, || {
        http::get_fresh(sb.addr(), "/").ok()
    });
    let log = container.log();
    let line = common::line_with(&log, "this process is PID 1", "no PID 1 warning");
    assert!(line.contains("baton_server::supervise"), "{line}");
    let pid1 = procs::children_of(container.pid)[0].pid;
    container.signal(pid1, Signal::SIGTERM);
    container.wait_exit(DEADLINE);
}
