//! Story: the operator gives the `baton` command an admin listener (`admin_listen` in the JSON
//! file) and points Prometheus at its `/metrics`. The admin listener serves baton's metrics in
//! Prometheus text format and nothing else; the main port never shows them. Three reloads under
//! load: not one request fails, the admin listener is handed over with the others (no AddrInUse),
//! and the next scrape, answered by the newest process, shows exactly three more reloads asked
//! and done, none failed, three more hand-off durations, and a generation three higher.
//! Socket-activated, the admin listener is the socket named on `--admin-listen`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{http, Options, DEADLINE};

/// The value of the unlabelled sample `name` in Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

/// One reload, then the admin port, served by the successor, shows generation 1 and one
/// successful reload.
fn reload_and_see_it_on_the_admin_port(s: &mut common::Story, admin: SocketAddr) {
    s.reload();
    let after = common::wait_until("the successor answers the admin port", DEADLINE, || {
        let text = scrape(admin);
        (sample(&text, "baton_generation") == 1.0).then_some(text)
    });
    assert_eq!(
        sample(&after, "baton_reloads_succeeded_total"),
        1.0,
        "{after}"
    );
}

fn scrape(admin: SocketAddr) -> String {
    let r = http::get_fresh(admin, "/metrics").expect("scrape /metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let content_type = r
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str());
    assert_eq!(
        content_type,
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "the Prometheus text format's content type"
    );
    r.text()
}

const RELOADS: u32 = 3;

#[test]
fn the_admin_listener_counts_three_reloads_under_load_and_the_main_port_never_shows_metrics() {
    let _heavy = common::heavy();
    let mut s = Options::new("v1")
        .config(|sb| {
            let mut config = sb.config("v1");
            config["admin_listen"] = format!("127.0.0.1:{}", sb.extra_port(0)).into();
            config
        })
        .args(&["--shutdown-timeout", "10s"])
        .start();
    let admin: SocketAddr = format!("127.0.0.1:{}", s.sb.extra_port(0)).parse().unwrap();

    let before = scrape(admin);
    for name in [
        "# TYPE baton_reloads_requested_total counter",
        "# TYPE baton_handoff_duration_seconds histogram",
        "# TYPE baton_generation gauge",
    ] {
        assert!(before.contains(name), "{name} in:\n{before}");
    }
    // The admin listener serves only /metrics; the main port only the app.
    let other = http::get_fresh(admin, "/").expect("GET / on the admin port");
    assert_eq!(other.status, 404, "{}", other.text());
    let main = http::get_fresh(s.sb.addr(), "/metrics").expect("GET /metrics on the main port");
    assert_eq!(
        main.text(),
        "v1",
        "the main port serves the app, not the metrics"
    );

    s.start_load(4, 4, Duration::from_millis(1), &["v1"]);
    for _ in 0..RELOADS {
        s.reload();
        s.load().wait_more_ok(100, DEADLINE);
    }
    // The newest process answers the admin port once the retired ones stopped accepting (a
    // retiring process accepts until systemd knows its successor as main).
    let generation = sample(&before, "baton_generation") + f64::from(RELOADS);
    let after = common::wait_until(
        "the newest process answers the admin port",
        DEADLINE,
        || {
            let text = scrape(admin);
            (sample(&text, "baton_generation") == generation).then_some(text)
        },
    );
    let report = s.stop_load();

    let up = |name: &str| sample(&after, name) - sample(&before, name);
    assert_eq!(
        up("baton_reloads_requested_total"),
        f64::from(RELOADS),
        "{after}"
    );
    assert_eq!(
        up("baton_reloads_succeeded_total"),
        f64::from(RELOADS),
        "{after}"
    );
    assert_eq!(up("baton_reloads_failed_total"), 0.0, "{after}");
    assert_eq!(
        up("baton_handoff_duration_seconds_count"),
        f64::from(RELOADS),
        "{after}"
    );
    assert_eq!(up("baton_generation"), f64::from(RELOADS), "{after}");
    let took = up("baton_handoff_duration_seconds_sum");
    assert!(
        took > 0.0 && took < 3.0 * 30.0,
        "{took} s for {RELOADS} hand-offs"
    );
    let main = http::get_fresh(s.sb.addr(), "/metrics").expect("GET /metrics on the main port");
    assert_eq!(main.text(), "v1", "after the reloads too");
    println!(
        "admin metrics: {RELOADS} reloads under load, {} requests ok, {} failed; hand-offs took {took:.3} s in all (as counted by the successors)",
        report.ok, report.failed
    );
    report.assert_no_failures();
    s.stop();
}

#[test]
fn socket_activated_the_admin_listener_is_the_socket_named_on_admin_listen() {
    let mut s = Options::new("v1")
        .command(|sb| {
            let admin = format!("127.0.0.1:{}", sb.extra_port(0));
            sb.socket_activate_named(&[(&sb.listen(), "http"), (&admin, "admin")])
        })
        .config(|sb| {
            let mut config = sb.config("v1");
            config.as_object_mut().unwrap().remove("listen");
            config
        })
        .args(&["--admin-listen", "admin"])
        .spawn();
    let admin: SocketAddr = format!("127.0.0.1:{}", s.sb.extra_port(0)).parse().unwrap();
    // The activator starts baton at the first connection.
    let first = common::wait_until("the admin socket answers", DEADLINE, || {
        http::get_fresh(admin, "/metrics").ok()
    });
    assert!(
        first.text().contains("baton_generation 0\n"),
        "{}",
        first.text()
    );
    s.wait_started();
    assert_eq!(s.get(), "v1");
    reload_and_see_it_on_the_admin_port(&mut s, admin);
    let main = http::get_fresh(s.sb.addr(), "/metrics").expect("GET /metrics on the main port");
    assert_eq!(main.text(), "v1");
    s.stop();
}

#[test]
fn socket_activated_without_listen_an_admin_address_is_bound_by_baton_and_handed_over() {
    // The packages' set-up: systemd passes the main socket, the file has no `listen`.
    let mut s = Options::new("v1")
        .command(|sb| sb.socket_activate("http"))
        .config(|sb| {
            let mut config = sb.config("v1");
            config.as_object_mut().unwrap().remove("listen");
            config["admin_listen"] = format!("127.0.0.1:{}", sb.extra_port(0)).into();
            config
        })
        .spawn();
    let admin: SocketAddr = format!("127.0.0.1:{}", s.sb.extra_port(0)).parse().unwrap();
    // The activator starts baton at the first connection to the main socket.
    common::wait_until("the main socket answers", DEADLINE, || {
        http::get_fresh(s.sb.addr(), "/").ok()
    });
    s.wait_started();
    assert_eq!(s.get(), "v1");
    assert!(scrape(admin).contains("baton_generation 0\n"));
    reload_and_see_it_on_the_admin_port(&mut s, admin);
    assert_eq!(
        s.get(),
        "v1",
        "the main socket, from systemd, serves the app"
    );
    s.stop();
}
