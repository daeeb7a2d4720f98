//! Story: a parent that speaks only the documented base exchange (docs/handoff-protocol.md, "Base
//! exchange") hands its listener to baton.
//!
//! The test plays that parent, byte for byte: it binds a TCP listener, listens on a Unix socket at
//! the hand-off path, starts baton with NO arguments and the listener at fd 3, accepts baton's
//! connection, reads exactly `get_listener`, answers one JSON object and closes. baton must then
//! serve on that very socket and bind nothing of its own.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use common::{http, procs, Baton, Sandbox, DEADLINE};
use nix::sys::signal::Signal;
use nix::sys::socket::{getsockopt, sockopt, MsgFlags};

/// Accepts the first connection on `l` within the deadline.
fn accept(l: &UnixListener, baton: &Baton) -> UnixStream {
    l.set_nonblocking(true).unwrap();
    let s =
        common::try_wait_until(DEADLINE, || l.accept().ok().map(|(s, _)| s)).unwrap_or_else(|| {
            panic!(
                "baton never dialed the hand-off socket; log:\n{}",
                baton.log()
            )
        });
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Reads exactly the 12-byte request and checks nothing else was sent with it.
fn expect_get_listener(s: &mut UnixStream, baton: &Baton) {
    let mut req = [0u8; 12];
    s.read_exact(&mut req)
        .unwrap_or_else(|e| panic!("reading get_listener: {e}; log:\n{}", baton.log()));
    assert_eq!(
        &req, b"get_listener",
        "the base request is exactly the 12 bytes `get_listener`"
    );
    // Nothing more is pending right now (no newline, no length prefix, no extension traffic).
    let mut more = [0u8; 16];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    match nix::sys::socket::recv(s.as_raw_fd(), &mut more, flags) {
        Err(nix::errno::Errno::EAGAIN) => {}
        other => panic!("baton sent more than `get_listener`: {other:?}"),
    }
}

/// The socket inode of one of our own descriptors.
fn inode_of_own_fd(fd: i32) -> u64 {
    procs::socket_fds(std::process::id() as i32)
        .into_iter()
        .find(|&(f, _)| f == fd)
        .map(|(_, i)| i)
        .expect("our listener in /proc/self/fd")
}

/// Starts baton as the base parent would, with `extra` arguments.
fn spawn_child(
    sb: &Sandbox,
    listener: &TcpListener,
    handoff: Option<&Path>,
    extra: &[&str],
) -> Baton {
    let mut cmd = sb.baton();
    cmd.args(extra).env_remove("BATON_LISTEN");
    if let Some(p) = handoff {
        cmd.env("BATON_HANDOFF_SOCKET", p);
    }
    common::place_at_fd3(&mut cmd, listener.as_raw_fd());
    sb.spawn(cmd)
}

fn offer(port: u16) -> String {
    format!("{{\"addr\":\"127.0.0.1:{port}\",\"fd\":3,\"filename\":\"http\"}}\n")
}

/// The whole story, through `path` (explicit variable or default location).
fn base_parent_hands_over(
    sb: &Sandbox,
    handoff_path: &Path,
    via_env: bool,
    close_after_answer: bool,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let our_inode = inode_of_own_fd(listener.as_raw_fd());
    let unix = UnixListener::bind(handoff_path).unwrap();

    let mut baton = spawn_child(sb, &listener, via_env.then_some(handoff_path), &[]);
    let mut conn = accept(&unix, &baton);
    let peer = getsockopt(&conn, sockopt::PeerCredentials).unwrap();
    assert_eq!(
        peer.pid(),
        baton.pid,
        "the process dialing the hand-off socket is the one we started"
    );
    expect_get_listener(&mut conn, &baton);
    let answer = offer(port);
    let answer = if close_after_answer {
        answer
    } else {
        answer.trim_end().to_string()
    };
    conn.write_all(answer.as_bytes()).unwrap();
    let kept_open = if close_after_answer {
        drop(conn);
        None
    } else {
        Some(conn)
    };

    let ready = baton.wait_ready(&sb.notify);
    println!("baton {} ready: {ready:?}", baton.pid);

    // Served by baton on our socket (we never accept on our copy).
    let addr = listener.local_addr().unwrap();
    let mut keep = http::Client::new(addr);
    for i in 0..20 {
        for r in [http::get_fresh(addr, "/"), keep.get("/")] {
            let r = r.unwrap_or_else(|e| panic!("request {i}: {e}; log:\n{}", baton.log()));
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.text(), "Hello, world!", "the default handler's body");
        }
    }
    listener.set_nonblocking(true).unwrap();
    assert!(
        matches!(listener.accept(), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "connections were left in the queue for the test process: baton does not accept on the socket"
    );

    // No fresh bind: the only listening socket on the port is ours, and baton listens on nothing else.
    assert_eq!(
        procs::listening_inodes_on_port(port),
        vec![our_inode],
        "one listening socket on port {port}"
    );
    let bats: Vec<u64> = procs::listening_tcp_of(baton.pid)
        .into_iter()
        .map(|e| e.inode)
        .collect();
    assert_eq!(
        bats,
        vec![our_inode],
        "baton listens on exactly the socket it was handed (no default 127.0.0.1:8000)"
    );
    let log = baton.log();
    assert!(
        log.contains("source=import"),
        "the log says where the listener came from:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    drop(kept_open);
    let from = sb.notify.len();
    baton.signal(baton.pid, Signal::SIGTERM);
    let st = baton.wait_exit(DEADLINE);
    assert_eq!(
        st.code(),
        Some(0),
        "baton exits 0 on SIGTERM: {}",
        common::describe(st)
    );
    sb.notify
        .wait_for_after(from, Duration::ZERO, "STOPPING=1", |n| {
            n.pid == baton.pid && n.has("STOPPING=1")
        });
    // Our copy of the socket is untouched: still listening.
    assert_eq!(procs::listening_inodes_on_port(port), vec![our_inode]);
}

#[test]
fn a_base_parent_hands_its_listener_to_baton_started_without_arguments() {
    let sb = Sandbox::new();
    let path = sb.path("parent-handoff.sock");
    base_parent_hands_over(&sb, &path, true, true);
}

#[test]
fn the_default_hand_off_path_under_xdg_runtime_dir_is_dialed() {
    // Neither option nor variable: the default `$XDG_RUNTIME_DIR/baton/handoff.sock` (no
    // RUNTIME_DIRECTORY is set in the sandbox environment).
    let sb = Sandbox::new();
    let dir = sb.path("xdg/baton");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    base_parent_hands_over(&sb, &dir.join("handoff.sock"), false, true);
}

#[test]
fn an_answer_without_newline_on_a_connection_left_open_is_accepted() {
    // "A child … accepts it with or without the trailing newline and with or without the parent
    // closing the connection: it parses as soon as one complete JSON object has arrived."
    let sb = Sandbox::new();
    let path = sb.path("parent-handoff.sock");
    base_parent_hands_over(&sb, &path, true, false);
}

#[test]
fn an_explicit_listen_that_differs_from_the_offer_is_refused_with_exit_78() {
    let sb = Sandbox::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let other = format!("127.0.0.1:{}", sb.extra_port(0));
    let path = sb.path("parent-handoff.sock");
    let unix = UnixListener::bind(&path).unwrap();

    let mut baton = spawn_child(&sb, &listener, Some(&path), &["--listen", &other]);
    let mut conn = accept(&unix, &baton);
    expect_get_listener(&mut conn, &baton);
    conn.write_all(offer(port).as_bytes()).unwrap();
    drop(conn);

    let log = baton.expect_exit_code(78, "EX_CONFIG on an address mismatch");
    let offered = format!("127.0.0.1:{port}");
    assert!(
        log.lines()
            .any(|l| l.contains(&offered) && l.contains(&other)),
        "one error line naming both {offered} and {other}; log:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        sb.notify.all().iter().all(|n| !n.has("READY=1")),
        "a refused import never says READY=1: {}",
        sb.notify.dump()
    );
    assert!(
        procs::listening_inodes_on_port(other.rsplit(':').next().unwrap().parse().unwrap())
            .is_empty()
    );
}

#[test]
fn a_garbage_answer_is_refused_with_exit_76_and_nothing_is_bound() {
    let sb = Sandbox::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let our_inode = inode_of_own_fd(listener.as_raw_fd());
    let path = sb.path("parent-handoff.sock");
    let unix = UnixListener::bind(&path).unwrap();

    let mut baton = spawn_child(&sb, &listener, Some(&path), &[]);
    let mut conn = accept(&unix, &baton);
    expect_get_listener(&mut conn, &baton);
    conn.write_all(b"{\"addr\": 8000, \"fd\": \"three\" oops\n")
        .unwrap();
    drop(conn);

    // Until it exits, baton must never hold a listening socket other than the one it was given.
    let mut foreign = Vec::new();
    let st = common::wait_until("baton to exit after a garbage answer", DEADLINE, || {
        foreign.extend(
            procs::listening_tcp_of(baton.pid)
                .into_iter()
                .filter(|e| e.inode != our_inode)
                .map(|e| e.addr),
        );
        baton.try_exit()
    });
    let log = baton.log();
    assert_eq!(
        st.code(),
        Some(76),
        "EX_PROTOCOL on a garbage answer, got {}; log:\n{log}",
        common::describe(st)
    );
    assert!(
        foreign.is_empty(),
        "baton bound {foreign:?} after a failed import"
    );
    assert!(
        log.lines()
            .any(|l| l.to_lowercase().contains("hand-off") || l.contains(path.to_str().unwrap())),
        "a clear error naming the hand-off; log:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        sb.notify.all().iter().all(|n| !n.has("READY=1")),
        "{}",
        sb.notify.dump()
    );
}

#[test]
fn a_socket_activated_baton_also_imports_a_configured_listener_from_a_base_parent() {
    // systemd passes one socket (fd 3, LISTEN_PID = baton's own pid); the configuration names
    // another address explicitly, and a base-protocol parent at the configured hand-off path
    // offers that one at fd 4. baton serves both: the activated socket from systemd, the other
    // imported. An offered fd is refused only when it IS an activated listener, not because some
    // other activated listener exists.
    let sb = Sandbox::new();
    let activated = TcpListener::bind("127.0.0.1:0").unwrap();
    let activated_inode = inode_of_own_fd(activated.as_raw_fd());
    let handed = TcpListener::bind("127.0.0.1:0").unwrap();
    let handed_inode = inode_of_own_fd(handed.as_raw_fd());
    let handed_port = handed.local_addr().unwrap().port();
    let path = sb.path("parent-handoff.sock");
    let unix = UnixListener::bind(&path).unwrap();

    let mut cmd = sb.command("/bin/sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
        .arg(common::baton_exe())
        .arg("--listen")
        .arg(format!("127.0.0.1:{handed_port}"))
        .arg("--handoff-socket")
        .arg(&path)
        .env_remove("BATON_LISTEN")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "http");
    common::place_at_fds(&mut cmd, &[activated.as_raw_fd(), handed.as_raw_fd()]);
    let mut baton = sb.spawn(cmd);

    let mut conn = accept(&unix, &baton);
    expect_get_listener(&mut conn, &baton);
    conn.write_all(
        format!("{{\"addr\":\"127.0.0.1:{handed_port}\",\"fd\":4,\"filename\":\"http\"}}\n")
            .as_bytes(),
    )
    .unwrap();
    drop(conn);

    let ready = baton.wait_ready(&sb.notify);
    println!("baton {} ready: {ready:?}", baton.pid);
    for l in [&activated, &handed] {
        let addr = l.local_addr().unwrap();
        let r = http::get_fresh(addr, "/")
            .unwrap_or_else(|e| panic!("request to {addr}: {e}; log:\n{}", baton.log()));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.text(), "Hello, world!", "the default handler's body");
    }
    let mut held: Vec<u64> = procs::listening_tcp_of(baton.pid)
        .into_iter()
        .map(|e| e.inode)
        .collect();
    held.sort_unstable();
    let mut expected = vec![activated_inode, handed_inode];
    expected.sort_unstable();
    assert_eq!(
        held,
        expected,
        "baton listens on the activated and the handed socket, and nothing else; log:\n{}",
        baton.log()
    );
    let log = baton.log();
    assert!(log.contains("source=systemd"), "{log}");
    assert!(log.contains("source=import"), "{log}");
    assert!(!log.contains("panicked"), "{log}");

    let pid = baton.pid;
    baton.signal(pid, Signal::SIGTERM);
    let st = baton.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(0), "{}", common::describe(st));
}
