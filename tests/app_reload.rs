//! Story: a developer's own binary runs under systemd with `ExecReload=/usr/local/bin/my-app
//! reload` (`examples/systemd/my-app.service`): the program's `reload` subcommand calls
//! `baton_server::request_reload`, so `systemctl reload` succeeds when the successor serves and
//! fails, saying why, when it does not — without the `baton` package installed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{Sandbox, DEADLINE};

/// The axum example copied into the sandbox (so that the test may replace it on disk), with the
/// sandbox's settings.
fn my_app(sb: &Sandbox, exe: &Path) -> Command {
    let mut cmd = sb.command(exe);
    cmd.env("BATON_LISTEN", sb.listen())
        .env("BATON_HANDOFF_SOCKET", sb.handoff_socket())
        .env("BATON_PID_FILE", sb.pid_file());
    cmd
}

#[test]
fn the_apps_own_reload_subcommand_reports_the_successor_or_the_failure() {
    let sb = Sandbox::new();
    let exe = sb.path("bin/my-app");
    std::fs::copy(common::examples::example("axum"), &exe).expect("copy the example");
    let app = sb.spawn(my_app(&sb, &exe));
    app.wait_ready(&sb.notify);
    common::wait_until("the PID file", DEADLINE, || {
        std::fs::read_to_string(sb.pid_file())
            .ok()
            .filter(|s| !s.is_empty())
    });

    // A reload that works: exit 0, naming the successor that now serves.
    let from = sb.notify.len();
    let out = common::output(my_app(&sb, &exe).arg("reload"));
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let successor: i32 = said
        .trim()
        .strip_prefix("reloaded: pid ")
        .and_then(|s| s.split_once(" -> "))
        .filter(|(retired, _)| retired.parse::<i32>().is_ok())
        .and_then(|(_, successor)| successor.parse().ok())
        .unwrap_or_else(|| panic!("stdout {said:?}"));
    sb.notify
        .wait_for_after(from, DEADLINE, "MAINPID of the successor", |n| {
            n.has(&format!("MAINPID={successor}"))
        });
    assert_served_by(&sb, successor);

    // A reload that fails (the binary on disk is broken): a non-zero exit with the reason, and
    // the old process serves on.
    let broken = "#!/bin/sh\necho 'my-app: database unreachable' >&2\nexit 69\n";
    std::fs::remove_file(&exe).expect("remove");
    std::fs::write(&exe, broken).expect("write");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // The reload client is the program itself: run the intact build of it.
    let mut cmd = my_app(&sb, &common::examples::example("axum"));
    let out = common::output(cmd.arg("reload"));
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("reload failed"), "{err}");
    assert!(
        err.contains(&format!("pid {successor} keeps serving")),
        "{err}"
    );
    assert_served_by(&sb, successor);
}

/// The example app answers `/` from process `pid`.
fn assert_served_by(sb: &Sandbox, pid: i32) {
    let body = common::http::get_fresh(sb.addr(), "/")
        .expect("request")
        .text();
    assert!(
        body.starts_with(&format!("Hello from pid {pid} ")),
        "{body}"
    );
}
