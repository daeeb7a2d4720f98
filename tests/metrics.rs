//! Story: an operator scrapes the app's admin `/metrics` (`examples/axum.rs`, feature `metrics`:
//! the app installs a recorder, baton records through the `metrics` facade) and sees a failed
//! reload counted and timed; the app's `on_reload` callback hears of the failure and of the
//! hand-off that follows.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{http, Sandbox, DEADLINE};

fn my_app(sb: &Sandbox, exe: &Path, listen: &str, admin: &str) -> Command {
    let mut cmd = sb.command(exe);
    cmd.env("BATON_LISTEN", listen)
        .env("ADMIN_LISTEN", admin)
        .env("BATON_HANDOFF_SOCKET", sb.handoff_socket())
        .env("BATON_CHILD_TIMEOUT", "5s");
    cmd
}

/// The value of the sample `name` in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

#[test]
fn a_failed_reload_is_counted_timed_and_told_and_the_next_one_moves_the_generation() {
    let sb = Sandbox::new();
    let exe = sb.path("bin/my-app");
    let built = common::examples::example("axum");
    std::fs::copy(&built, &exe).expect("copy the example");
    let admin = format!("127.0.0.1:{}", sb.extra_port(0));
    let admin_addr = admin.parse().unwrap();
    let listen = format!("{},{admin}", sb.listen());
    let app = sb.spawn(my_app(&sb, &exe, &listen, &admin));
    app.wait_ready(&sb.notify);
    let scrape = || {
        http::get_fresh(admin_addr, "/metrics")
            .expect("scrape")
            .text()
    };
    let first = scrape();
    assert_eq!(sample(&first, "baton_generation"), Some(0.0), "{first}");

    // A broken binary on disk: the reload fails, the old process serves on and says so.
    std::fs::remove_file(&exe).expect("remove");
    std::fs::write(&exe, "#!/bin/sh\necho 'my-app: broken' >&2\nexit 69\n").expect("write");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    common::reload_expect_failure(&sb.notify, app.pid);
    let after_failure = common::wait_until("the failure counted", DEADLINE, || {
        let t = scrape();
        (sample(&t, "baton_reloads_failed_total") == Some(1.0)).then_some(t)
    });
    assert_eq!(
        sample(&after_failure, "baton_reloads_requested_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(&after_failure, "baton_handoff_duration_seconds_count"),
        Some(1.0)
    );
    let took = sample(&after_failure, "baton_handoff_duration_seconds_sum").expect("sum");
    assert!(took > 0.0 && took < 10.0, "{took}");
    assert!(
        sample(&after_failure, "baton_connections_open").is_some(),
        "{after_failure}"
    );
    let told = format!("axum example (pid {}): reload: Failed {{", app.pid);
    assert!(app.log().contains(&told), "{}", app.log());

    // The binary fixed: the next reload hands off; the successor is generation 1.
    std::fs::remove_file(&exe).expect("remove");
    std::fs::copy(&built, &exe).expect("copy back");
    let new = common::reload(&sb.notify, app.pid).new;
    let told = format!(
        "axum example (pid {}): reload: HandedOff {{ successor: {new},",
        app.pid
    );
    common::wait_until("the hand-off told", DEADLINE, || {
        app.log().contains(&told).then_some(())
    });
    let t = scrape();
    assert_eq!(sample(&t, "baton_generation"), Some(1.0), "{t}");
    println!("failed reload counted after {took:.3} s; hand-off to {new} told to the callback");
}
