//! Story: a busy baton serves HTTPS while the operator reloads it again and again — each reload
//! with a renewed certificate — as certbot's deploy hook would. Clients nobody here wrote (wrk
//! over https, on kept-alive connections and with a fresh connection and handshake per request)
//! and rustls clients that verify the chain see no socket error, no failed handshake, no failed
//! request. Then the same for HTTP/2 over TLS: hyper's HTTP/2 client, connecting with ALPN `h2`
//! and following RFC 9113 on GOAWAY, loses no request across the reloads.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::h2::H2Load;
use common::load::{body_is_one_of, Load};
use common::tls::{Ca, Leaf};
use common::{procs, Sandbox, DEADLINE};
use serde_json::json;

const RELOADS: usize = 20;
const BODY: &str = "hello over tls";

/// Starts baton serving https on the sandbox port with `leaf`; returns it once READY=1.
fn start(sb: &Sandbox, leaf: &Leaf) -> (common::Baton, PathBuf, PathBuf) {
    let (cert, key) = (sb.path("fullchain.pem"), sb.path("privkey.pem"));
    leaf.install(&cert, &key);
    sb.write_config(&json!({
        "listen": [format!("https://{}", sb.listen())],
        "handoff_socket": sb.handoff_socket(),
        "pid_file": sb.pid_file(),
        "response_body": BODY,
        "shutdown_timeout": "10s",
        "tls_cert": cert,
        "tls_key": key,
    }));
    let baton = sb.spawn(sb.serve(&[]));
    baton.wait_ready(&sb.notify);
    (baton, cert, key)
}

/// A fresh handshake after reload `n` is served `leaf`, the certificate renewed before it.
fn assert_serves_leaf(sb: &Sandbox, ca: &Ca, leaf: &Leaf, n: usize) {
    let (served, r) = common::tls::get_fresh(sb.addr(), &ca.client_config(&[b"http/1.1"]), "/")
        .unwrap_or_else(|e| panic!("a fresh handshake after reload {n}: {e}"));
    assert_eq!(r.status, 200);
    assert!(
        served == leaf.der,
        "after reload {n} the renewed certificate (serial {:#x}) is served",
        leaf.serial
    );
}

/// What one wrk run reported.
#[derive(Debug, Default)]
struct Wrk {
    requests: u64,
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
    non_2xx: u64,
    text: String,
}

impl Wrk {
    fn parse(text: &str) -> Wrk {
        let mut w = Wrk {
            text: text.to_owned(),
            ..Wrk::default()
        };
        for line in text.lines().map(str::trim) {
            if let Some((n, _)) = line.split_once(" requests in ") {
                w.requests = n.trim().parse().unwrap_or(0);
            } else if let Some(rest) = line.strip_prefix("Socket errors: ") {
                for part in rest.split(", ") {
                    let (what, n) = part.split_once(' ').unwrap_or((part, "0"));
                    let n = n.parse().unwrap_or(u64::MAX);
                    match what {
                        "connect" => w.connect = n,
                        "read" => w.read = n,
                        "write" => w.write = n,
                        "timeout" => w.timeout = n,
                        _ => {}
                    }
                }
            } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses: ") {
                w.non_2xx = n.trim().parse().unwrap_or(u64::MAX);
            }
        }
        w
    }

    fn socket_errors(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }
}

/// wrk over https for `secs` seconds with `connections`, plus `extra` arguments, in a thread.
fn wrk(url: String, connections: usize, secs: u64, extra: &[&str]) -> thread::JoinHandle<Wrk> {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    thread::spawn(move || {
        let out = common::output(
            Command::new("wrk")
                .args(["-t1", "--timeout", "10s"])
                .arg(format!("-c{connections}"))
                .arg(format!("-d{secs}s"))
                .args(&extra)
                .arg(&url),
        );
        Wrk::parse(&String::from_utf8_lossy(&out.stdout))
    })
}

#[test]
fn twenty_reloads_with_renewed_certificates_under_tls_load_fail_no_handshake() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    let ca = Ca::new();
    let leaves: Vec<Leaf> = (0..2).map(|i| ca.leaf(0x2000 + i)).collect();
    let (baton, cert, key) = start(&sb, &leaves[0]);
    let url = format!("https://{}/", sb.listen());

    let secs = RELOADS as u64 + 6;
    let keepalive = wrk(url.clone(), 8, secs, &[]);
    let fresh = wrk(url, 4, secs, &["-H", "Connection: close"]);
    let load = Load::start_tls(
        sb.addr(),
        ca.client_config(&[b"http/1.1"]),
        2,
        2,
        Duration::from_millis(2),
        body_is_one_of(&[BODY]),
    );
    load.wait_more_ok(50, DEADLINE);
    thread::sleep(Duration::from_secs(1));

    let started = Instant::now();
    let mut main = baton.pid;
    let mut retired = Vec::new();
    let mut handoffs = Vec::new();
    for i in 0..RELOADS {
        leaves[(i + 1) % 2].install(&cert, &key);
        let r = common::reload(&sb.notify, main);
        retired.push(r.old);
        handoffs.push(r.handoff_time());
        main = r.new;
        assert_serves_leaf(&sb, &ca, &leaves[(i + 1) % 2], i + 1);
        load.wait_more_ok(20, DEADLINE);
        assert_eq!(load.failed(), 0, "failed after reload {}", i + 1);
        thread::sleep(Duration::from_millis(700));
    }
    let reloads_took = started.elapsed();
    let keepalive = keepalive.join().expect("wrk keep-alive");
    let fresh = fresh.join().expect("wrk fresh connections");
    let report = load.stop();
    let (median, max) = common::median_max(handoffs);

    println!(
        "{RELOADS} reloads in {reloads_took:?} (each with the other of two certificates), hand-off \
         SIGHUP -> MAINPID= median {median:?}, max {max:?}"
    );
    for (what, w) in [
        ("keep-alive, 8 connections", &keepalive),
        ("Connection: close, 4 connections", &fresh),
    ] {
        println!(
            "wrk over https ({what}): {} requests, socket errors connect {} read {} write {} \
             timeout {}, non-2xx {}",
            w.requests, w.connect, w.read, w.write, w.timeout, w.non_2xx
        );
    }
    println!(
        "rustls clients (2 keep-alive, 2 with a handshake per request): {} ok, {} failed, {} \
         keep-alive connections, {:?}",
        report.ok, report.failed, report.keepalive_connects, report.elapsed
    );
    report.assert_no_failures();
    for (what, w) in [("keep-alive", &keepalive), ("fresh", &fresh)] {
        assert!(w.requests > 0, "wrk {what} made no request:\n{}", w.text);
        assert_eq!(
            (w.socket_errors(), w.non_2xx),
            (0, 0),
            "wrk {what}: a failed handshake counts as a connect error:\n{}",
            w.text
        );
    }
    assert!(
        report.keepalive_connects > RELOADS as u64,
        "each reload moves the keep-alive clients to a new connection: {report:?}"
    );
    for pid in retired {
        assert!(
            common::try_wait_until(DEADLINE, || (!procs::is_alive(pid)).then_some(())).is_some(),
            "retired {pid} still runs"
        );
    }
}

#[test]
fn twenty_reloads_under_http2_over_tls_lose_no_request() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    let ca = Ca::new();
    let leaves: Vec<Leaf> = (0..2).map(|i| ca.leaf(0x3000 + i)).collect();
    let (baton, cert, key) = start(&sb, &leaves[0]);
    let mut main = baton.pid;

    // 4 connections × 16 concurrent streams, each connection a handshake choosing h2 by ALPN.
    let load = H2Load::start_tls(
        sb.addr(),
        ca.client_config(&[b"h2"]),
        4,
        16,
        body_is_one_of(&[BODY]),
    );
    load.wait_more_ok(200, DEADLINE);
    for i in 0..RELOADS {
        leaves[(i + 1) % 2].install(&cert, &key);
        let r = common::reload(&sb.notify, main);
        main = r.new;
        assert_serves_leaf(&sb, &ca, &leaves[(i + 1) % 2], i + 1);
        load.wait_after_reload(i + 1);
    }
    let report = load.stop();
    println!(
        "HTTP/2 over TLS under {}",
        report.assert_across_reloads(RELOADS)
    );
}
