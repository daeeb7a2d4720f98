//! Story: a flood of idle connections uses up baton's descriptors (a real `ulimit -n`). Its HTTP
//! accept loop then fails with `EMFILE` on every try while a client waits in the backlog: it
//! backs off between tries (about 50 ms, see docs/handoff-protocol.md) instead of spinning on
//! the error, and the waiting client is served once descriptors come back.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{procs, Sandbox, DEADLINE};
use nix::sys::signal::Signal;

/// The descriptor limit baton runs with (`ulimit -n`).
const NOFILE: u32 = 64;

#[test]
fn out_of_descriptors_the_accept_loop_backs_off_and_serves_the_waiting_client_once_they_return() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    sb.write_config(&sb.config("v1"));
    let mut baton = sb.spawn(sb.command_with_fd_limit(NOFILE, &sb.exe()));
    baton.wait_ready(&sb.notify);
    let pid = baton.pid;

    // Idle connections until every descriptor below the limit is taken (descriptors inherited
    // above it do not count): from then on each accept fails with EMFILE.
    let mut idle = Vec::new();
    while !(0..NOFILE).all(|fd| Path::new(&format!("/proc/{pid}/fd/{fd}")).exists()) {
        assert!(
            idle.len() < 200,
            "never ran out of descriptors:\n{}",
            baton.log()
        );
        idle.push(TcpStream::connect(sb.addr()).expect("an idle connection"));
        thread::sleep(Duration::from_millis(5));
    }
    // A client with a request waits in the backlog: every accept fails with EMFILE meanwhile.
    let mut waiting = TcpStream::connect(sb.addr()).expect("the waiting client");
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    thread::sleep(Duration::from_millis(300));
    let c0 = procs::cpu_time(pid);
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(2));
    let used = procs::cpu_time(pid) - c0;
    let wall = t0.elapsed();
    println!(
        "out of descriptors ({} idle connections) with a client waiting: {used:?} CPU in {wall:?}",
        idle.len()
    );
    // Backing off costs a few milliseconds a second; spinning costs a good part of a core.
    assert!(
        used < wall / 8,
        "the accept loop spins on EMFILE: {used:?} of CPU in {wall:?}"
    );
    // And the operator is told why.
    let log = baton.log();
    assert!(
        log.contains("accept failed") && log.contains("Too many open files"),
        "{log}"
    );

    // Descriptors come back: the waiting client is answered.
    drop(idle);
    waiting
        .set_read_timeout(Some(DEADLINE))
        .expect("read timeout");
    let mut answer = String::new();
    waiting
        .read_to_string(&mut answer)
        .expect("the waiting client's answer");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("v1"),
        "{answer:?}"
    );
    baton.signal(pid, Signal::SIGTERM);
    assert_eq!(baton.wait_exit(DEADLINE).code(), Some(0));
}
