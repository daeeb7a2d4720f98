//! Story: code after `baton_server::serve(app).await` learns what happened: the process
//! retired because a successor (pid N) took over, or it was stopped, and by what
//! (`baton_server::Ended`; `examples/axum.rs` prints it).

mod common;

use common::{Sandbox, DEADLINE};

fn ended_line(log: &str, pid: i32) -> Option<String> {
    let prefix = format!("axum example (pid {pid}): serving ended: ");
    log.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
}

#[test]
fn serve_returns_handed_off_to_the_successor_or_stopped_by_sigterm() {
    let sb = Sandbox::new();
    let mut app = sb.spawn(sb.app("axum", &[]));
    app.wait_ready(&sb.notify);
    let old = app.pid;
    let new = common::reload(&sb.notify, old).new;
    let retired = common::wait_until("the old process's outcome", DEADLINE, || {
        ended_line(&app.log(), old)
    });
    assert_eq!(retired, format!("HandedOff {{ successor: {new} }}"));
    common::sigterm_and_wait_gone(&sb, &mut app, new);
    let stopped = common::wait_until("the new process's outcome", DEADLINE, || {
        ended_line(&app.log(), new)
    });
    assert_eq!(stopped, "Signal(Term)");
}
