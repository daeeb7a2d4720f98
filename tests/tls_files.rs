//! Story: the operator names certificate and key files that are not what they should be — a
//! FIFO where the key should be, a certificate whose validity begins later (an issuer whose
//! clock runs fast, or a certificate installed early). baton never hangs on a file, says in one
//! line which file is wrong, and a reload onto a certificate no verifying client accepts fails
//! while the old process serves on.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::tls::{self as tlsc, Ca, Leaf};
use common::{procs, Sandbox, DEADLINE};
use serde_json::json;

/// The bound for anything that must not hang: a FIFO read would block forever.
const NO_HANG: Duration = Duration::from_secs(10);

fn https_config(sb: &Sandbox, cert: &Path, key: &Path) -> serde_json::Value {
    json!({
        "listen": [format!("https://{}", sb.listen())],
        "handoff_socket": sb.handoff_socket(),
        "pid_file": sb.pid_file(),
        "response_body": "tls",
        "tls_cert": cert,
        "tls_key": key,
    })
}

/// Runs `cmd` to its end, killing it after [`NO_HANG`]: `(exit code, stdout + stderr, elapsed)`.
/// A run that had to be killed has code -1.
fn run_bounded(sb: &Sandbox, cmd: std::process::Command) -> (i32, String, Duration) {
    let started = Instant::now();
    let mut run = sb.spawn(cmd);
    let status = common::try_wait_until(NO_HANG, || run.try_exit());
    let elapsed = started.elapsed();
    if status.is_none() {
        run.kill();
    }
    (
        status.and_then(|s| s.code()).unwrap_or(-1),
        run.log(),
        elapsed,
    )
}

/// The lines of `log` that are not INFO/DEBUG tracing lines.
fn complaints(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| !l.contains(" INFO ") && !l.contains(" DEBUG ") && !l.trim().is_empty())
        .collect()
}

#[test]
fn a_fifo_as_key_or_certificate_is_refused_at_once_by_check_and_serve() {
    let sb = Sandbox::new();
    let ca = Ca::new();
    let (cert, key) = (sb.path("fullchain.pem"), sb.path("privkey.pem"));
    ca.leaf(1).install(&cert, &key);
    let fifo = sb.path("tls.fifo");
    common::mkfifo(&fifo);
    for (role, cert, key) in [
        ("key", cert.clone(), fifo.clone()),
        ("certificate", fifo.clone(), key.clone()),
    ] {
        let expected = format!(
            "tls {role} {}: is a FIFO, not a regular file",
            fifo.display()
        );
        // From the command line ...
        let mut check = sb.baton();
        check
            .arg("check")
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key);
        let (code, out, took) = run_bounded(&sb, check);
        assert_eq!(code, 78, "check with a FIFO as {role} ({took:?}): {out}");
        assert_eq!(complaints(&out), [format!("baton: {expected}")], "{out}");
        // ... and from the configuration, for `check` and a starting server alike.
        sb.write_config(&https_config(&sb, &cert, &key));
        let mut check = sb.baton();
        check.arg("check").arg("--config").arg(sb.config_path());
        let (code, out, _) = run_bounded(&sb, check);
        assert_eq!(code, 78, "check --config, FIFO as {role}: {out}");
        assert!(out.contains(&expected), "{out}");
        let (code, out, took) = run_bounded(&sb, sb.serve(&[]));
        assert_eq!(code, 78, "serve with a FIFO as {role} ({took:?}): {out}");
        let lines = complaints(&out);
        assert_eq!(lines.len(), 1, "one line: {out}");
        assert!(lines[0].ends_with(&expected), "{out}");
        println!("{role} as a FIFO: exit {code} after {took:?}: {}", lines[0]);
    }
    // Nobody ever wrote to the FIFO, and nothing is left listening on the port.
    assert!(
        procs::listening_inodes_on_port(sb.port).is_empty(),
        "a refused start leaves no listener"
    );
}

fn cert_key(sb: &Sandbox) -> (PathBuf, PathBuf) {
    (sb.path("fullchain.pem"), sb.path("privkey.pem"))
}

fn start(sb: &Sandbox, leaf: &Leaf) -> common::Baton {
    let (cert, key) = cert_key(sb);
    leaf.install(&cert, &key);
    sb.write_config(&https_config(sb, &cert, &key));
    let baton = sb.spawn(sb.serve(&[]));
    baton.wait_ready(&sb.notify);
    baton
}

#[test]
fn a_reload_onto_a_certificate_not_valid_yet_fails_and_the_old_one_serves_on() {
    let sb = Sandbox::new();
    let ca = Ca::new();
    let good = ca.leaf(1);
    let baton = start(&sb, &good);
    let client = ca.client_config(&[b"http/1.1"]);
    let (cert, key) = cert_key(&sb);
    // Valid from an hour from now: every verifying client refuses it until then.
    let early = ca.leaf_not_yet_valid(2, Duration::from_secs(3600));
    early.install(&cert, &key);

    let status = common::reload_expect_failure(&sb.notify, baton.pid);
    let expected = format!(
        "tls certificate {}: the leaf is not valid before ",
        cert.display()
    );
    assert!(status.contains(&expected), "{status}");
    assert!(
        status.contains("the running process keeps its certificate"),
        "{status}"
    );
    // The old process serves on, with the certificate clients accept.
    let (leaf, r) = tlsc::get_fresh(sb.addr(), &client, "/").expect("the old process serves");
    assert_eq!(r.text(), "tls");
    assert_eq!(leaf, good.der, "still the good leaf");
    // `baton check` warns about it (exit 0: at a first start it would be served, see below).
    let out = common::output(sb.baton().args(["check", "--config"]).arg(sb.config_path()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning: tls certificate") && err.contains("not valid before"),
        "{err}"
    );
    println!("reload onto a leaf valid in 1 h: {status}");

    // Once the certificate is one clients accept, the next reload takes it.
    let renewed = ca.leaf(3);
    renewed.install(&cert, &key);
    let r = common::reload(&sb.notify, baton.pid);
    let (leaf, _) = tlsc::get_fresh(sb.addr(), &client, "/").expect("after the fix");
    assert_eq!(leaf, renewed.der);
    assert!(procs::is_alive(r.new));
}

#[test]
fn a_certificate_not_valid_yet_is_served_at_a_first_start_with_a_warning() {
    // As an expired one: a certificate problem at boot (a clock set wrong) does not take the
    // plain listeners down too; the warning names the date.
    let sb = Sandbox::new();
    let ca = Ca::new();
    let early = ca.leaf_not_yet_valid(5, Duration::from_secs(3600));
    let baton = start(&sb, &early);
    assert!(
        tlsc::connect(sb.addr(), &ca.client_config(&[b"http/1.1"])).is_err(),
        "a leaf not valid yet does not verify"
    );
    let line = common::wait_until("the warning", DEADLINE, || {
        baton
            .log()
            .lines()
            .find(|l| l.contains(" WARN ") && l.contains("the leaf is not valid before"))
            .map(str::to_owned)
    });
    println!("{line}");
}
