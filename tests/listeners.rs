//! Story: one baton listens on several sockets at once — two plain TCP ports, a Unix socket and an
//! HTTPS port named in its configuration, or an HTTP and an HTTPS socket that systemd's socket
//! unit passes under two names — and every reload hands every one of them to the successor: after
//! each reload each socket answers with the new configuration, from the very sockets the first
//! process listened on (same inodes: nothing rebound, nothing dropped, nothing left behind).

mod common;

use std::io::{BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::http::{self, Response};
use common::tls::Ca;
use common::{procs, Options, Sandbox, Story};
use serde_json::json;

const RELOADS: usize = 3;

/// A GET with `Connection: close` on a fresh connection to a Unix socket.
fn get_unix(path: &Path) -> Response {
    let mut s =
        UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
    s.set_read_timeout(Some(http::REQUEST_TIMEOUT)).unwrap();
    s.write_all(http::get_request("/", true).as_bytes())
        .unwrap();
    http::read_response(&mut BufReader::new(s))
        .unwrap_or_else(|e| panic!("GET on {}: {e}", path.display()))
}

/// Where one story's baton listens, and how to reach each socket.
struct Sockets {
    plain: Vec<SocketAddr>,
    https: Vec<SocketAddr>,
    unix: Vec<PathBuf>,
    tls: Arc<rustls::ClientConfig>,
}

impl Sockets {
    /// Every socket answers 200 with `body` on a fresh connection.
    fn assert_all_answer(&self, s: &Story, body: &str) {
        let mut seen = Vec::new();
        for a in &self.plain {
            let r = http::get_fresh(*a, "/")
                .unwrap_or_else(|e| panic!("GET on {a}: {e}\n{}", s.baton.log()));
            seen.push((a.to_string(), r.status, r.text()));
        }
        for a in &self.https {
            let (_, r) = common::tls::get_fresh(*a, &self.tls, "/")
                .unwrap_or_else(|e| panic!("GET on https://{a}: {e}\n{}", s.baton.log()));
            seen.push((format!("https://{a}"), r.status, r.text()));
        }
        for p in &self.unix {
            let r = get_unix(p);
            seen.push((p.display().to_string(), r.status, r.text()));
        }
        assert_eq!(
            seen.len(),
            self.plain.len() + self.https.len() + self.unix.len()
        );
        for (socket, status, text) in &seen {
            assert_eq!(
                (*status, text.as_str()),
                (200, body),
                "{socket} after {} reloads: {seen:?}",
                s.reloads.len()
            );
        }
    }
}

/// The TCP listening sockets (inodes) the main process holds, sorted.
fn tcp_inodes(pid: i32) -> Vec<u64> {
    let mut v: Vec<u64> = procs::listening_tcp_of(pid)
        .into_iter()
        .map(|e| e.inode)
        .collect();
    v.sort_unstable();
    v
}

/// The config file's `response_body` changed to `body` (everything else kept), then a reload.
fn reload_with_body(s: &mut Story, body: &str) {
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.sb.config_path()).unwrap()).unwrap();
    cfg["response_body"] = body.into();
    s.sb.write_config(&cfg);
    s.reload();
}

/// Reloads `RELOADS` times; after each one every socket answers with the new body, from the same
/// listening sockets as before.
fn reload_and_check_every_socket(s: &mut Story, sockets: &Sockets, tcp_listeners: usize) {
    sockets.assert_all_answer(s, "v0");
    let first = tcp_inodes(s.main);
    assert_eq!(first.len(), tcp_listeners, "{first:?}");
    for i in 1..=RELOADS {
        let body = format!("v{i}");
        reload_with_body(s, &body);
        sockets.assert_all_answer(s, &body);
        assert_eq!(
            tcp_inodes(s.main),
            first,
            "reload {i}: the successor {} listens on the sockets it was handed",
            s.main
        );
    }
    assert!(
        s.wait_drained(common::DEADLINE),
        "retired processes left: {:?}",
        s.baton.members()
    );
}

/// Socket activation as systemd does it: once the activator listens on its `sockets`, the first
/// connection starts baton (the activator execs it in place), which answers it.
fn first_request_starts_baton(s: &mut Story, sockets: usize) {
    let activator = s.baton.pid;
    common::wait_until("the activator to listen", common::DEADLINE, || {
        (procs::listening_tcp_of(activator).len() == sockets).then_some(())
    });
    let r = http::get_fresh(s.sb.addr(), "/")
        .unwrap_or_else(|e| panic!("first request: {e}\n{}", s.baton.log()));
    assert_eq!((r.status, r.text().as_str()), (200, "v0"));
    s.wait_started();
}

/// The config answering "v0" with a certificate from `ca` installed, listening on `listen`
/// (none: systemd decides).
fn config(sb: &Sandbox, ca: &Ca, listen: Option<Vec<String>>) -> serde_json::Value {
    let (cert, key) = (sb.path("fullchain.pem"), sb.path("privkey.pem"));
    ca.leaf(1).install(&cert, &key);
    let mut cfg = json!({
        "handoff_socket": sb.handoff_socket(),
        "pid_file": sb.pid_file(),
        "response_body": "v0",
        "shutdown_timeout": "10s",
        "tls_cert": cert,
        "tls_key": key,
    });
    if let Some(listen) = listen {
        cfg["listen"] = listen.into();
    }
    cfg
}

#[test]
fn two_tcp_ports_a_unix_socket_and_https_from_the_config_are_all_handed_over() {
    let ca = Arc::new(Ca::new());
    let tls = ca.client_config(&[b"http/1.1"]);
    let mut s = Options::new("v0")
        .config(move |sb| {
            let listen = vec![
                sb.listen(),
                format!("127.0.0.1:{}", sb.extra_port(0)),
                format!("unix:{}", sb.path("api.sock").display()),
                format!("https://127.0.0.1:{}", sb.extra_port(1)),
            ];
            config(sb, &ca, Some(listen))
        })
        .start();
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let sockets = Sockets {
        plain: vec![s.sb.addr(), at(s.sb.extra_port(0))],
        https: vec![at(s.sb.extra_port(1))],
        unix: vec![s.sb.path("api.sock")],
        tls,
    };
    reload_and_check_every_socket(&mut s, &sockets, 3);
    s.stop();
    for port in [s.sb.extra_port(0), s.sb.extra_port(1)] {
        assert!(
            procs::listening_inodes_on_port(port).is_empty(),
            "still listening on {port} after the stop"
        );
    }
}

/// As a socket unit with `ListenStream=` twice and `FileDescriptorName=http` / `https`: the
/// first connection starts baton on both; the reloads hand both over.
#[test]
fn two_sockets_systemd_passed_under_two_names_are_all_handed_over() {
    let ca = Arc::new(Ca::new());
    let tls = ca.client_config(&[b"http/1.1"]);
    let mut s = Options::new("v0")
        .config(move |sb| config(sb, &ca, None))
        .command(|sb| {
            let https = format!("127.0.0.1:{}", sb.extra_port(0));
            sb.socket_activate_named(&[(&sb.listen(), "http"), (&https, "https")])
        })
        .spawn();
    first_request_starts_baton(&mut s, 2);
    let sockets = Sockets {
        plain: vec![s.sb.addr()],
        https: vec![SocketAddr::from(([127, 0, 0, 1], s.sb.extra_port(0)))],
        unix: vec![],
        tls,
    };
    reload_and_check_every_socket(&mut s, &sockets, 2);
    s.stop();
    assert!(procs::listening_inodes_on_port(s.sb.extra_port(0)).is_empty());
}

/// The operator removes a listener from the configuration: the reload's successor serves the
/// others on the very sockets it was handed and closes the one no longer configured, which is gone
/// once the old process has drained.
#[test]
fn a_listener_dropped_from_the_config_is_closed_by_the_successor() {
    let ca = Arc::new(Ca::new());
    let mut s = Options::new("v0")
        .config(move |sb| {
            let listen = vec![sb.listen(), format!("127.0.0.1:{}", sb.extra_port(0))];
            config(sb, &ca, Some(listen))
        })
        .start();
    let dropped = SocketAddr::from(([127, 0, 0, 1], s.sb.extra_port(0)));
    for a in [s.sb.addr(), dropped] {
        let r = http::get_fresh(a, "/").unwrap_or_else(|e| panic!("GET on {a}: {e}"));
        assert_eq!((r.status, r.text().as_str()), (200, "v0"), "{a}");
    }
    let kept = procs::listening_inodes_on_port(s.sb.port);
    assert_eq!(kept.len(), 1, "{kept:?}");

    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.sb.config_path()).unwrap()).unwrap();
    cfg["listen"] = json!([s.sb.listen()]);
    cfg["response_body"] = "v1".into();
    s.sb.write_config(&cfg);
    let r = s.reload();
    println!("reload {} -> {}", r.old, r.new);

    let answer = http::get_fresh(s.sb.addr(), "/")
        .unwrap_or_else(|e| panic!("GET on {}: {e}\n{}", s.sb.addr(), s.baton.log()));
    assert_eq!((answer.status, answer.text().as_str()), (200, "v1"));
    assert_eq!(
        tcp_inodes(s.main),
        kept,
        "the successor {} listens on the kept socket it was handed, and on nothing else; log:\n{}",
        s.main,
        s.baton.log()
    );
    assert!(
        s.wait_drained(common::DEADLINE),
        "retired processes left: {:?}",
        s.baton.members()
    );
    assert!(
        procs::listening_inodes_on_port(dropped.port()).is_empty(),
        "{dropped} still listens after the reload that dropped it; log:\n{}",
        s.baton.log()
    );
    let log = s.baton.log();
    assert!(
        log.lines()
            .any(|l| l.contains("no longer configured") && l.contains(&dropped.to_string())),
        "the successor says which listener it closed:\n{log}"
    );
    s.stop();
}

/// A socket unit passes one socket and the configuration names another address: baton serves
/// both, and every reload hands both over — systemd's socket is kept although the configuration
/// does not name it (systemd decides about it, not the configuration).
#[test]
fn a_socket_systemd_passed_and_an_address_of_the_config_are_both_handed_over() {
    let ca = Arc::new(Ca::new());
    let tls = ca.client_config(&[b"http/1.1"]);
    let mut s = Options::new("v0")
        .config(move |sb| {
            let listen = vec![format!("127.0.0.1:{}", sb.extra_port(0))];
            config(sb, &ca, Some(listen))
        })
        .command(|sb| sb.socket_activate("http"))
        .spawn();
    first_request_starts_baton(&mut s, 1);
    let sockets = Sockets {
        plain: vec![
            s.sb.addr(),
            SocketAddr::from(([127, 0, 0, 1], s.sb.extra_port(0))),
        ],
        https: vec![],
        unix: vec![],
        tls,
    };
    reload_and_check_every_socket(&mut s, &sockets, 2);
    s.stop();
    assert!(procs::listening_inodes_on_port(s.sb.extra_port(0)).is_empty());
}
