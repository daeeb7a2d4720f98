//! Story: an app serves its API on one port and an admin router (metrics) on another, both
//! from one process (`Serve::listener`, `examples/axum.rs` with `ADMIN_LISTEN`). Both listeners
//! are handed over together on every reload: 20 reloads under load lose no request on the API
//! port, and the admin port is answered by each new generation.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::load::{Check, Load};
use common::{http, Sandbox};

fn hello() -> Check {
    Arc::new(|r: &http::Response| {
        let t = r.text();
        if r.status == 200 && t.starts_with("Hello from pid ") {
            Ok(())
        } else {
            Err(format!("status {} body {t:?}", r.status))
        }
    })
}

#[test]
fn an_admin_router_on_its_own_port_moves_with_every_reload_and_the_api_loses_nothing() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    let admin = format!("127.0.0.1:{}", sb.extra_port(0));
    let admin_addr = admin.parse().unwrap();
    let listen = format!("{},{admin}", sb.listen());
    let app = sb.spawn(sb.app(
        "axum",
        &[
            ("BATON_LISTEN", &listen),
            ("ADMIN_LISTEN", &admin),
            ("BATON_SHUTDOWN_TIMEOUT", "10s"),
        ],
    ));
    app.wait_ready(&sb.notify);
    // The admin port serves the admin router only; the API port the app only.
    let metrics = http::get_fresh(admin_addr, "/metrics").expect("metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text().contains("example_generation 0\n"),
        "{}",
        metrics.text()
    );
    assert_eq!(http::get_fresh(admin_addr, "/").expect("/").status, 404);
    assert_eq!(
        http::get_fresh(sb.addr(), "/metrics").expect("/").status,
        404
    );

    let load = Load::start(sb.addr(), 4, 4, Duration::from_millis(1), hello());
    let mut main = app.pid;
    let mut times = Vec::new();
    for generation in 1..=20 {
        let r = common::reload(&sb.notify, main);
        times.push(r.handoff_time());
        main = r.new;
        let m = http::get_fresh(admin_addr, "/metrics").expect("metrics after a reload");
        assert!(
            m.text()
                .contains(&format!("example_generation {generation}\n")),
            "after reload {generation}: {}",
            m.text()
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let (median, max) = common::median_max(times);
    load.stop_without_failures(&format!("API + admin listener, 20 reloads under load; SIGHUP->MAINPID median {median:?} max {max:?}"));
    assert!(
        !app.log().contains("Address already in use"),
        "{}",
        app.log()
    );
}

#[test]
fn an_app_for_a_listener_that_does_not_exist_fails_the_start_with_one_line() {
    let sb = Sandbox::new();
    let mut app = sb.spawn(sb.app("axum", &[("ADMIN_LISTEN", "127.0.0.1:1")]));
    let status = app.wait_exit(common::DEADLINE);
    assert_eq!(status.code(), Some(78), "{}", app.log());
    let log = app.log();
    let line = common::line_with(&log, "no listener is named", "no line names the listener");
    assert!(line.contains("\"127.0.0.1:1\""), "{line}");
}
