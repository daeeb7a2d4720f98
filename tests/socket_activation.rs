//! Story: the operator lets systemd own the port (a socket unit); the first connection starts
//! baton, which serves on the socket it was passed and binds nothing itself. A later reload hands
//! that same socket to the successor through the hand-off (the `LISTEN_*` variables are not for it).
//!
//! systemd's own activator plays the socket unit: `systemd-socket-activate -l ADDR --fdname=http`
//! listens, and on the first connection execs baton in its own process with `LISTEN_FDS=1`,
//! `LISTEN_PID=<that pid>`, `LISTEN_FDNAMES=http` and the socket at fd 3.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::signal::Signal;

use common::{baton_exe, http, procs, Options, Sandbox, Story, DEADLINE};

const BODY: &str = "served from a socket unit";

/// The service's configuration: no `listen` (systemd decides where baton listens).
fn unit_config(sb: &Sandbox) -> serde_json::Value {
    serde_json::json!({
        "handoff_socket": sb.handoff_socket(),
        "pid_file": sb.pid_file(),
        "response_body": BODY,
        "shutdown_timeout": "10s",
    })
}

/// Starts the activator with baton as its command (`--config` without any `listen`: systemd
/// decides where baton listens). Returns it once it listens, with the socket's inode.
fn activate() -> (Story, u64) {
    let s = Options::new(BODY)
        .config(unit_config)
        .command(|sb| sb.socket_activate("http"))
        .spawn();
    let pid = s.baton.pid;
    let inode = common::wait_until("the activator to listen", DEADLINE, || {
        let held = procs::listening_tcp_of(pid);
        (held.len() == 1).then(|| held[0].inode)
    });
    assert_eq!(procs::listening_inodes_on_port(s.sb.port), vec![inode]);
    (s, inode)
}

/// Nothing but the activated socket listens on the port, and `pid` holds exactly it.
fn assert_serves_on_the_activated_socket(sb: &Sandbox, pid: i32, inode: u64) {
    assert_eq!(
        procs::listening_inodes_on_port(sb.port),
        vec![inode],
        "the only listening socket on {} is the activator's",
        sb.listen()
    );
    let held: Vec<u64> = procs::listening_tcp_of(pid)
        .into_iter()
        .map(|e| e.inode)
        .collect();
    assert_eq!(
        held,
        vec![inode],
        "process {pid} listens on the passed socket and nothing else"
    );
}

#[test]
fn the_first_connection_starts_baton_on_the_socket_systemd_passed() {
    let (mut s, inode) = activate();
    let (sb, pid) = (&s.sb, s.baton.pid);
    // Before any connection nothing was started: no notification, still the activator.
    assert!(sb.notify.all().is_empty(), "{}", sb.notify.dump());
    assert!(procs::stat(pid).unwrap().comm.starts_with("systemd-socket"));

    // The first request starts baton and is answered by it.
    let r = http::get_fresh(sb.addr(), "/")
        .unwrap_or_else(|e| panic!("first request: {e}\n{}", s.baton.log()));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), BODY);

    // The activator exec'd baton in place: the same pid is now baton, and it said READY=1.
    let ready = s.baton.wait_ready(&sb.notify);
    assert!(
        ready.says_serving(),
        "READY=1 comes with STATUS=baton VERSION: serving on …: {ready:?}"
    );
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, baton_exe(), "the activated process is baton");
    assert_serves_on_the_activated_socket(sb, pid, inode);
    let log = s.baton.log();
    assert!(
        log.contains("source=systemd"),
        "baton logs that the listener came from systemd:\n{log}"
    );
    assert!(
        !log.contains("source=bind"),
        "baton bound something itself:\n{log}"
    );

    // Keep-alive and fresh connections keep being served.
    let mut keep = http::Client::new(sb.addr());
    for _ in 0..20 {
        assert_eq!(keep.get("/").unwrap().text(), BODY);
        assert_eq!(s.get(), BODY);
    }
    drop(keep);

    // SIGTERM: STOPPING=1, exit 0, the socket closed with the last process that held it.
    s.stop();
}

#[test]
fn reloads_after_socket_activation_hand_the_same_socket_over() {
    let (mut s, inode) = activate();
    assert_eq!(s.get(), BODY);
    s.baton.wait_ready(&s.sb.notify);

    s.start_load(2, 2, Duration::from_millis(2), &[BODY]);
    for generation in 1..=3 {
        let r = s.reload();
        println!(
            "reload {generation}: {} -> {} in {:?}",
            r.old,
            r.new,
            r.handoff_time()
        );
        // The successor is not the pid LISTEN_PID named: it must not have been given LISTEN_*.
        let env = procs::environ(r.new);
        for var in [
            "LISTEN_PID=",
            "LISTEN_FDS=",
            "LISTEN_FDNAMES=",
            "WATCHDOG_PID=",
        ] {
            assert!(
                !env.iter().any(|e| e.starts_with(var)),
                "successor {} inherited {var}: {env:?}",
                r.new
            );
        }
        assert!(
            env.iter()
                .any(|e| e.starts_with("BATON_PREDECESSOR_SOCKET=")),
            "the successor is told where its predecessor is: {env:?}"
        );
        assert!(
            env.iter()
                .any(|e| *e == format!("BATON_GENERATION={generation}")),
            "generation {generation} expected in {env:?}"
        );
        assert!(
            env.iter().any(|e| e.starts_with("NOTIFY_SOCKET=")),
            "NOTIFY_SOCKET is kept: {env:?}"
        );
        // It got the activated socket by hand-off: no fresh bind anywhere.
        assert_serves_on_the_activated_socket(&s.sb, r.new, inode);
        s.load().wait_more_ok(20, DEADLINE);
    }
    let report = s.stop_load();
    println!("socket-activated reloads under load: {report:?}");
    report.assert_no_failures();

    let log = s.baton.log();
    assert!(
        log.matches("source=import").count() >= 3,
        "each successor imported its listener:\n{log}"
    );
    assert!(
        !log.contains("source=bind"),
        "nobody bound a socket of its own:\n{log}"
    );

    // The first process (the test's child) retired and exits 0; the final SIGTERM ends the rest.
    let st = s.baton.wait_exit(DEADLINE);
    assert_eq!(
        st.code(),
        Some(0),
        "the retired first process: {}",
        common::describe(st)
    );
    s.stop();
}

/// systemd (here the test itself) keeps the socket of its socket unit open across the service's
/// stops: baton started by it with `LISTEN_PID` = its own pid, the listening socket at fd 3.
fn started_by_the_socket_unit(socket: &TcpListener) -> Options {
    let fd = socket.as_raw_fd();
    Options::new(BODY).config(unit_config).command(move |sb| {
        let mut cmd = sb.command("/bin/sh");
        cmd.arg("-c")
            .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
            .arg(baton_exe())
            .arg("--config")
            .arg(sb.config_path())
            .env_remove("BATON_LISTEN")
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "http");
        common::place_at_fd3(&mut cmd, fd);
        cmd
    })
}

/// Story: under socket activation a stop must leave the socket exactly as systemd gave it. A
/// client that comes while the service is stopped is queued by the kernel on systemd's socket
/// and answered by the next start, as with any socket unit — it is neither refused nor held
/// back (the hold a stop puts on a socket baton alone keeps would make its handshake never
/// complete, here and after every later start).
#[test]
fn a_client_arriving_while_a_socket_activated_service_is_stopped_is_served_by_the_next_start() {
    let socket = TcpListener::bind("127.0.0.1:0").expect("the socket unit's socket");
    let addr = socket.local_addr().expect("addr");
    let mut s = started_by_the_socket_unit(&socket).start();
    let r = http::get_fresh(addr, "/").expect("served on the passed socket");
    assert_eq!(r.text(), BODY);
    let log = s.baton.log();
    assert!(log.contains("source=systemd"), "{log}");

    // `systemctl stop`: baton exits 0; the socket stays open in systemd (the test).
    let first = s.baton.pid;
    s.baton.signal(first, Signal::SIGTERM);
    let st = s.baton.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(0), "{}", common::describe(st));
    assert!(procs::wait_gone(first, DEADLINE), "{first} still exists");

    // A client while nothing serves: its handshake completes at once, on systemd's backlog.
    let mut waiting =
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap_or_else(|e| {
            panic!("a client while the service is stopped was not queued on the socket: {e}")
        });
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");

    // The next start (systemd's on that connection) answers it, and serves on as before.
    s.restart();
    assert_ne!(s.baton.pid, first);
    waiting
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let mut answer = String::new();
    waiting
        .read_to_string(&mut answer)
        .expect("the queued client's answer");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with(BODY),
        "the client queued while stopped: {answer:?}\nlog:\n{}",
        s.baton.log()
    );
    for _ in 0..3 {
        let r = http::get_fresh(addr, "/").expect("a fresh client after the next start");
        assert_eq!(r.text(), BODY);
    }
    let second = s.baton.pid;
    s.baton.signal(second, Signal::SIGTERM);
    let st = s.baton.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(0), "{}", common::describe(st));
}
