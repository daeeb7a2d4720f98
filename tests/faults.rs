//! Story: everything that goes wrong around a reload, one test per fault. Whatever happens, the
//! service keeps answering, exactly one process ends up serving, nothing is left behind, and
//! every refusal is one clear line, never a panic.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::load::{body_is_one_of, Load};
use common::{baton_exe, http, procs, Baton, HeldSuccessor, Options, Sandbox, Story, DEADLINE};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

// ---------------------------------------------------------------------------------------------
// helpers

/// Waits until the parent has no child at all (a failed successor killed and reaped).
fn assert_no_children(parent: i32) {
    let ok = common::try_wait_until(DEADLINE, || {
        procs::children_of(parent).is_empty().then_some(())
    });
    assert!(
        ok.is_some(),
        "children of {parent} left: {:?}",
        procs::children_of(parent)
    );
}

/// Waits until the hand-off socket exists (a hand-off is in progress).
fn wait_handoff_socket(path: &Path) {
    common::wait_until("the hand-off socket to exist", DEADLINE, || {
        fs::symlink_metadata(path)
            .ok()
            .filter(|m| m.file_type().is_socket())
            .map(|_| ())
    });
}

/// Connects as a stranger, sends `payload`, and returns what came back before the parent closed
/// the connection (it must close it, so this returns).
fn stranger(path: &Path, payload: &[u8]) -> Vec<u8> {
    let mut s =
        UnixStream::connect(path).expect("a stranger can connect while the hand-off socket exists");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    let _ = s.write_all(payload); // the parent may already have closed it: EPIPE is fine
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("stranger read: {e} (the parent neither answered nor closed)"),
        }
    }
    got
}

/// A client that sends an endless request head, one byte at a time.
struct SlowLoris {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    pub client_port: u16,
}

impl SlowLoris {
    fn start(addr: SocketAddr, every: Duration) -> SlowLoris {
        let mut conn = http::RawConn::connect(addr);
        conn.send(b"GET / HTTP/1.1\r\nHost: baton.test\r\nX-Forever: ")
            .unwrap();
        let client_port = conn.stream.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if conn.send(b"a").is_err() {
                    break;
                }
                thread::sleep(every);
            }
        });
        SlowLoris {
            stop,
            thread: Some(thread),
            client_port,
        }
    }
}

impl Drop for SlowLoris {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until the connection from `client_port` was accepted by a process of the group.
fn owner_of(baton: &Baton, port: u16, client_port: u16) -> i32 {
    common::wait_until("the connection to be accepted", DEADLINE, || {
        procs::connection_owner(baton.pid, port, client_port)
    })
}

// ---------------------------------------------------------------------------------------------
// the successor fails

#[test]
fn a_successor_that_hangs_is_killed_after_the_child_timeout() {
    // The successor hangs at its very start (the binary on disk is a wrapper blocked on a pipe:
    // think of an exec from a stuck network filesystem). The parent must give up after
    // --child-timeout, kill and reap it, say so to systemd, and keep serving.
    let _heavy = common::heavy();
    let mut s = Story::start("v1", &["--child-timeout", "2s", "--shutdown-timeout", "5s"]);
    let main = s.main;
    s.start_load(2, 2, Duration::from_millis(2), &["v1", "v2"]);

    let mut held = HeldSuccessor::install(&s.sb);
    let t0 = Instant::now();
    let status = s.reload_expect_failure();
    let took = t0.elapsed();
    println!("hung successor: {status:?} after {took:?}");
    assert!(
        took >= Duration::from_millis(1900),
        "the reload failed before the 2 s child timeout, so the successor did not hang: {status:?}"
    );
    assert_no_children(main);
    s.load().wait_more_ok(30, DEADLINE);

    held.restore();
    s.sb.write_config(&s.sb.config("v2"));
    s.reload();
    common::wait_until("v2", DEADLINE, || (s.get() == "v2").then_some(()));
    let report = s.stop_load();
    println!("{report:?}");
    report.assert_no_failures();
    assert_eq!(s.baton.wait_exit(DEADLINE).code(), Some(0));
    s.stop();
}

/// A signal mask field of /proc/PID/status (`SigIgn`, `SigBlk`, …) as bits (bit 0: signal 1).
fn signal_mask(pid: i32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    u64::from_str_radix(hex.trim(), 16).expect("hex mask")
}

#[test]
fn a_sighup_that_reaches_a_successor_before_its_handler_exists_does_not_kill_it() {
    // The successor starts with SIGHUP ignored and nothing blocked: `pkill -HUP baton` during a
    // hand-off reaches it before it could install its handler. Hold it at its very start (the
    // binary on disk is a wrapper waiting on a FIFO), look at its dispositions, signal it, let
    // it go on: the hand-off completes. SIGPIPE, which baton ignores, is at its default there;
    // SIGQUIT, which baton was started with ignored (a shell's `&` does that), stays ignored,
    // as across an exec.
    let sb = Sandbox::new();
    sb.write_config(&sb.config("v1"));
    let mut cmd = sb.serve(&["--child-timeout", "20s"]);
    common::ignore_signals(&mut cmd, &[libc::SIGQUIT]);
    let mut baton = sb.spawn(cmd);
    baton.wait_ready(&sb.notify);
    let main = baton.pid;
    let mut held = HeldSuccessor::install(&sb);
    let from = sb.notify.len();
    assert!(procs::kill(main, Signal::SIGHUP));
    let child = procs::wait_child(main);
    // (the kernel runs the wrapper as `/bin/sh <path> <arguments>`)
    common::wait_until("the held successor to run its wrapper", DEADLINE, || {
        procs::cmdline(child)
            .first()
            .is_some_and(|a| a.ends_with("sh"))
            .then_some(())
    });
    let hup = 1u64 << (libc::SIGHUP - 1);
    let (ignored, blocked) = (signal_mask(child, "SigIgn"), signal_mask(child, "SigBlk"));
    println!("held successor {child}: SigIgn {ignored:016x}, SigBlk {blocked:016x}");
    assert_ne!(ignored & hup, 0, "SIGHUP is ignored in the successor");
    let pipe = 1u64 << (libc::SIGPIPE - 1);
    assert_eq!(
        ignored & pipe,
        0,
        "SIGPIPE is at its default in the successor"
    );
    let quit = 1u64 << (libc::SIGQUIT - 1);
    assert_ne!(ignored & quit, 0, "SIGQUIT, ignored in baton, stays so");
    assert_eq!(blocked, 0, "no signal is blocked in the successor");
    // Its environment has the two hand-off variables, the last entries (where `baton run`'s
    // application gets its LISTEN_PID placeholder replaced; a successor's are kept as they are).
    let env = procs::environ(child);
    for var in ["BATON_PREDECESSOR_SOCKET=", "BATON_GENERATION="] {
        assert!(
            env.iter().any(|e| e.starts_with(var)),
            "no {var} in the successor's environment: {env:?}"
        );
    }
    for _ in 0..3 {
        assert!(procs::kill(child, Signal::SIGHUP));
    }
    assert!(held.release(DEADLINE), "the successor was waiting");
    let m = sb.notify.wait_for_after(from, DEADLINE, "MAINPID=", |n| {
        n.pid == main && n.mainpid().is_some()
    });
    assert_eq!(
        m.mainpid(),
        Some(child),
        "the signalled successor took over"
    );
    sb.notify
        .wait_for_after(from, DEADLINE, "READY=1 from the successor", |n| {
            n.pid == child && n.has("READY=1")
        });
    assert_eq!(baton.wait_exit(DEADLINE).code(), Some(0));
    common::sigterm_and_wait_gone(&sb, &mut baton, child);
}

#[test]
fn a_binary_that_cannot_be_executed_fails_the_reload_and_the_next_one_works() {
    // The binary on disk lost its execute bit (a broken package, a bad deploy): the reload
    // fails at once with a line naming the binary, nothing is left behind, the parent serves on.
    let mut s = Story::start("v1", &["--shutdown-timeout", "5s"]);
    let main = s.main;
    let exe = s.sb.exe();
    let keep = s.sb.path("bin/.kept");
    fs::hard_link(&exe, &keep).unwrap();
    let broken = s.sb.path("bin/.broken");
    fs::write(&broken, "not a program").unwrap();
    fs::set_permissions(&broken, fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(&broken, &exe).unwrap();

    let status = s.reload_expect_failure();
    println!("unexecutable binary: {status:?}");
    assert!(
        status.contains("cannot start successor") && status.contains("bin/baton"),
        "the STATUS names the binary that could not be started: {status:?}"
    );
    assert_no_children(main);
    assert_eq!(s.get(), "v1");

    fs::rename(&keep, &exe).unwrap();
    s.sb.write_config(&s.sb.config("v2"));
    s.reload();
    assert_eq!(s.get(), "v2");
    assert_eq!(s.baton.wait_exit(DEADLINE).code(), Some(0));
    s.stop();
}

#[test]
fn a_successor_that_dies_after_taking_the_listener_leaves_the_parent_serving() {
    // The new config adds a listener the successor cannot bind. It imports the shared listener
    // first (it is at fd 3 and is offered), then fails on the new address and exits: the shared
    // socket must survive it, and the parent serves on.
    let _heavy = common::heavy();
    let mut s = Story::start("v1", &["--shutdown-timeout", "5s"]);
    let main = s.main;
    let inode = procs::listening_inodes_on_port(s.sb.port)[0];
    s.start_load(2, 2, Duration::from_millis(2), &["v1", "v2"]);

    fs::write(s.sb.path("not-a-dir"), "a regular file").unwrap();
    let unbindable = format!("unix:{}", s.sb.path("not-a-dir/api.sock").display());
    let mut cfg = s.sb.config("v2");
    cfg["listen"] = serde_json::json!([s.sb.listen(), unbindable]);
    s.sb.write_config(&cfg);
    let status = s.reload_expect_failure();
    println!("successor died after the import: {status:?}");
    println!(
        "  (its log shows the import before the failure: {})",
        s.baton
            .log()
            .contains("importing listeners from a baton predecessor")
    );
    assert!(
        status.contains("api.sock"),
        "the STATUS names the address that could not be bound: {status:?}"
    );
    assert_no_children(main);
    assert_eq!(
        procs::holders_of(s.baton.pid, inode),
        vec![main],
        "only the parent holds the listener now"
    );
    s.load().wait_more_ok(100, DEADLINE);
    assert_eq!(s.get(), "v1");

    s.sb.write_config(&s.sb.config("v2"));
    s.reload();
    s.load().wait_more_ok(30, DEADLINE);
    let report = s.stop_load();
    println!("{report:?}");
    report.assert_no_failures();
    assert_eq!(s.baton.wait_exit(DEADLINE).code(), Some(0));
    s.stop();
}

// ---------------------------------------------------------------------------------------------
// signals at the wrong time

#[test]
fn fifty_sighups_within_a_second_under_load_leave_exactly_one_server() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    let mut baton = sb.start("v1", &["--shutdown-timeout", "5s"]);
    let inode = procs::listening_inodes_on_port(sb.port)[0];
    let load = Load::start(
        sb.addr(),
        3,
        3,
        Duration::from_millis(2),
        body_is_one_of(&["v1"]),
    );
    load.wait_more_ok(50, DEADLINE);

    let t0 = Instant::now();
    let mut delivered = 0;
    for _ in 0..50 {
        // To whoever is main right now, as `systemctl reload` would (kill -HUP $MAINPID).
        if procs::kill(common::current_main(&sb.notify, baton.pid), Signal::SIGHUP) {
            delivered += 1;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let storm = t0.elapsed();

    // Settle: one process left in the group, the main one, with no successor in flight — and
    // so for 2 s without a notification: the storm's last SIGHUP may have been delivered to a
    // main process alone for a moment and not yet acted on (it then begins a hand-off).
    let mut since: Option<(Instant, i32, usize)> = None;
    let survivor = common::try_wait_until(Duration::from_secs(60), || {
        baton.try_exit();
        let main = common::current_main(&sb.notify, baton.pid);
        let members: Vec<i32> = baton.members().iter().map(|p| p.pid).collect();
        let seen = sb.notify.len();
        if members != vec![main] || !procs::children_of(main).is_empty() {
            since = None;
            return None;
        }
        match since {
            Some((at, m, n)) if m == main && n == seen => {
                (at.elapsed() >= Duration::from_secs(2)).then_some(main)
            }
            _ => {
                since = Some((Instant::now(), main, seen));
                None
            }
        }
    })
    .unwrap_or_else(|| {
        panic!(
            "never settled to one process: members {:?}, main {}\n{}",
            baton.members(),
            common::current_main(&sb.notify, baton.pid),
            sb.notify.dump()
        )
    });
    load.wait_more_ok(50, DEADLINE);
    let report = load.stop();

    let all = sb.notify.all();
    let handoffs = all.iter().filter(|n| n.mainpid().is_some()).count();
    let failed = all
        .iter()
        .filter(|n| {
            n.get("STATUS")
                .map(|s| s.starts_with("reload failed"))
                .unwrap_or(false)
        })
        .count();
    println!(
        "50 SIGHUPs in {storm:?} ({delivered} delivered): {handoffs} MAINPID=, {failed} refused/failed, survivor {survivor}"
    );
    report.assert_no_failures();
    // A hand-off or a failed reload only ever follows a delivered SIGHUP (a failure after the
    // announcement says MAINPID= twice: successor, then own).
    assert!(
        failed <= delivered && handoffs <= 2 * delivered,
        "more reloads than SIGHUPs: {delivered} delivered\n{}",
        sb.notify.dump()
    );
    // Every MAINPID= came from the main process of the moment (no retired process started a
    // hand-off of its own), and the survivor is ready.
    let mut main = baton.pid;
    for n in &all {
        if let Some(m) = n.mainpid() {
            assert_eq!(
                n.pid,
                main,
                "MAINPID= from a process that was not main: {n:?}\n{}",
                sb.notify.dump()
            );
            main = m;
        }
    }
    assert!(
        handoffs >= 1,
        "not one of 50 SIGHUPs led to a hand-off:\n{}",
        sb.notify.dump()
    );
    assert!(
        all.iter().any(|n| n.pid == survivor && n.has("READY=1")),
        "{}",
        sb.notify.dump()
    );
    assert!(
        all.iter().all(|n| !n.has("STOPPING=1")),
        "{}",
        sb.notify.dump()
    );
    assert_eq!(
        procs::holders_of(baton.pid, inode),
        vec![survivor],
        "exactly one process holds the listener"
    );
    assert!(
        baton.members().iter().all(|p| !p.is_zombie()),
        "zombies: {:?}",
        baton.members()
    );
    common::sigterm_and_wait_gone(&sb, &mut baton, survivor);
}

#[test]
fn sigterm_to_the_parent_while_its_successor_hangs_leaves_nothing_behind() {
    let sb = Sandbox::new();
    let mut baton = sb.start(
        "v1",
        &["--child-timeout", "15s", "--shutdown-timeout", "3s"],
    );
    let main = baton.pid;
    let _held = HeldSuccessor::install(&sb);
    let from = sb.notify.len();
    assert!(procs::kill(main, Signal::SIGHUP));
    sb.notify
        .wait_for_after(from, DEADLINE, "RELOADING=1", |n| {
            n.pid == main && n.has("RELOADING=1")
        });
    let child = procs::wait_child(main);

    let t0 = Instant::now();
    assert!(procs::kill(main, Signal::SIGTERM));
    sb.notify.wait_for_after(from, DEADLINE, "STOPPING=1", |n| {
        n.pid == main && n.has("STOPPING=1")
    });
    let gone = baton.wait_group_gone(Duration::from_secs(3) + DEADLINE);
    println!(
        "SIGTERM during a hand-off: everything gone after {:?} (shutdown timeout 3 s)",
        t0.elapsed()
    );
    assert!(
        gone,
        "left behind: {:?} (successor was {child})",
        baton.members()
    );
    assert!(
        !procs::exists(child),
        "the successor {child} survived its parent's stop"
    );
    assert!(
        sb.notify.all().iter().all(|n| n.mainpid().is_none()),
        "{}",
        sb.notify.dump()
    );
    assert_eq!(
        baton.try_exit().and_then(|s| s.code()),
        Some(0),
        "SIGTERM ends with exit 0"
    );
}

/// A stop during a hand-off that had gone as far as `MAINPID=<successor>`: the successor already
/// accepts connections, so the parent ends it with `SIGTERM` and lets it drain, and the parent
/// itself exits only once the successor has answered what it accepted and exited: the service
/// (the unit's main process) ends after its last request, not before.
#[test]
fn sigterm_during_a_hand_off_lets_the_successor_answer_its_request_before_the_parent_exits() {
    let sb = Sandbox::new();
    let mut baton = sb.start("v1", &["--shutdown-timeout", "20s"]);
    let main = baton.pid;
    sb.notify.gate_barriers();
    sb.write_config(&sb.config("v2"));
    let from = sb.notify.len();
    assert!(procs::kill(main, Signal::SIGHUP));
    let successor = sb
        .notify
        .wait_for_after(from, DEADLINE, "MAINPID=<successor>", |n| {
            n.pid == main && n.mainpid().is_some_and(|p| p != main)
        })
        .mainpid()
        .unwrap();
    // Both accept now: a client with a request half sent, held by the successor (one the parent
    // accepted is closed again, so that the parent holds nothing of its own).
    let mut conn = (0..200)
        .find_map(|_| {
            let mut conn = http::RawConn::connect(sb.addr());
            conn.send(b"GET / HTTP/1.1\r\nHost: baton.test\r\n")
                .unwrap();
            let port = conn.stream.local_addr().unwrap().port();
            (owner_of(&baton, sb.port, port) == successor).then_some(conn)
        })
        .expect("a connection accepted by the successor in 200 tries");

    assert!(procs::kill(main, Signal::SIGTERM));
    sb.notify.open_barriers();
    sb.notify.wait_for_after(from, DEADLINE, "STOPPING=1", |n| {
        n.pid == main && n.has("STOPPING=1")
    });
    common::wait_until("the successor to be told to stop", DEADLINE, || {
        baton
            .log()
            .lines()
            .any(|l| l.contains(&format!("pid={successor}")) && l.contains("draining"))
            .then_some(())
    });
    // The successor drains the request it holds; its parent waits for it (the shutdown timeout
    // is 20 s). Half a second is plenty for a parent that did not wait to have exited.
    thread::sleep(Duration::from_millis(500));
    assert!(
        baton.try_exit().is_none() && procs::is_alive(main),
        "the parent exited while its successor still drained a request:\n{}",
        baton.log()
    );
    assert_eq!(procs::stat(successor).map(|p| p.ppid), Some(main));

    conn.send(b"\r\n").unwrap();
    let resp = conn.response().expect("the successor answers its request");
    assert_eq!(resp.text(), "v2");
    let exit = baton.wait_exit(DEADLINE);
    assert_eq!(exit.code(), Some(0), "{}", common::describe(exit));
    assert!(
        baton.wait_group_gone(DEADLINE),
        "left behind: {:?}",
        baton.members()
    );
}

#[test]
fn sigterm_right_after_sighup_leaves_no_orphan_serving() {
    // Without any help to widen the window: SIGTERM as soon as the successor process exists (or
    // the hand-off went further already). What the protocol promises depends only on whether the
    // successor had confirmed when the parent handled the SIGTERM:
    // - not yet (at any stage, also after `MAINPID=<successor>`): the stop is honoured. The
    //   parent takes `MAINPID=` back if it had announced the successor, ends the successor, says
    //   `STOPPING=1` and exits 0; nothing is left and nothing listens.
    // - confirmed: the parent had retired. It says nothing more (neither `STOPPING=1` nor
    //   `MAINPID=` back), exits 0, and the successor serves as main.
    // Which one happened is what the parent said, read once it has exited.
    let sb = Sandbox::new();
    let mut baton = sb.start("v1", &["--shutdown-timeout", "3s"]);
    let main = baton.pid;
    let from = sb.notify.len();
    assert!(procs::kill(main, Signal::SIGHUP));
    // Spin (1 ms) until the successor exists, or the hand-off already got as far as MAINPID=.
    let deadline = Instant::now() + DEADLINE;
    let child = loop {
        if let Some(c) = procs::children_of(main).first() {
            break Some(c.pid);
        }
        if sb.notify.all()[from..]
            .iter()
            .any(|n| n.pid == main && n.mainpid().is_some())
        {
            break None;
        }
        assert!(
            Instant::now() < deadline,
            "no successor and no hand-off after SIGHUP: {}",
            sb.notify.dump()
        );
        thread::sleep(Duration::from_millis(1));
    };
    let delivered = procs::kill(main, Signal::SIGTERM);
    let exit = baton.wait_exit(Duration::from_secs(3) + DEADLINE);
    assert_eq!(exit.code(), Some(0), "{}", common::describe(exit));
    sb.notify.settle();
    let record = sb.notify.dump();
    let said: Vec<_> = sb.notify.all()[from..]
        .iter()
        .filter(|n| n.pid == main)
        .cloned()
        .collect();
    let announced = said
        .iter()
        .find(|n| n.mainpid().is_some_and(|p| p != main))
        .map(|n| (n.seq, n.mainpid().unwrap_or_default()));
    let reclaimed = said
        .iter()
        .find(|n| n.mainpid() == Some(main))
        .map(|n| n.seq);
    let stopping = said.iter().find(|n| n.has("STOPPING=1")).map(|n| n.seq);
    println!(
        "SIGTERM delivered to the parent: {delivered}, successor seen: {child:?}, \
         announced: {announced:?}, MAINPID= taken back: {reclaimed:?}, STOPPING=1: {stopping:?}"
    );
    if let Some(stopping) = stopping {
        println!("SIGTERM right after SIGHUP: the parent stopped during the hand-off");
        match announced {
            Some((at, successor)) => assert!(
                reclaimed.is_some_and(|r| at < r && r < stopping),
                "the parent announced {successor}, then stopped without MAINPID=<own> between \
                 the two:\n{record}"
            ),
            None => assert_eq!(
                reclaimed, None,
                "MAINPID=<own> without an announcement:\n{record}"
            ),
        }
        assert!(
            baton.wait_group_gone(DEADLINE),
            "left behind: {:?}\n{record}",
            baton.members()
        );
        assert!(
            procs::listening_inodes_on_port(sb.port).is_empty(),
            "something still listens"
        );
    } else {
        let (_, new) = announced.unwrap_or_else(|| {
            panic!("the parent exited without STOPPING=1 and without a hand-off:\n{record}")
        });
        println!("SIGTERM right after SIGHUP: the hand-off to {new} completed first");
        assert_eq!(
            reclaimed, None,
            "the retired parent took MAINPID= back:\n{record}"
        );
        sb.notify
            .wait_for_after(from, DEADLINE, "READY=1 from the successor", |n| {
                n.pid == new && n.has("READY=1")
            });
        assert_eq!(sb.wait_serving().status, 200);
        assert!(procs::is_alive(new), "the successor {new} is gone");
        common::sigterm_and_wait_gone(&sb, &mut baton, new);
    }
}

#[test]
fn sigkill_to_the_retired_parent_mid_drain_leaves_the_successor_serving() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    let mut baton = sb.start("v1", &["--shutdown-timeout", "30s"]);
    let old = baton.pid;
    // A request in progress keeps the old process draining.
    let slow = SlowLoris::start(sb.addr(), Duration::from_millis(200));
    assert_eq!(owner_of(&baton, sb.port, slow.client_port), old);
    let r = common::reload(&sb.notify, old);

    // The old process stops accepting (it keeps its copy of the listening socket, unused);
    // load on the successor.
    let load = Load::start(
        sb.addr(),
        2,
        2,
        Duration::from_millis(2),
        body_is_one_of(&["v1"]),
    );
    load.wait_more_ok(50, DEADLINE);
    assert!(
        procs::is_alive(old),
        "the old process is still draining the slow request"
    );
    assert_eq!(
        procs::connection_owner(baton.pid, sb.port, slow.client_port),
        Some(old)
    );

    assert!(procs::kill(old, Signal::SIGKILL));
    let st = baton.wait_exit(DEADLINE);
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{}", common::describe(st));
    drop(slow);

    load.wait_more_ok(100, DEADLINE);
    assert!(procs::is_alive(r.new));
    // The successor, orphaned now, still reloads.
    let r2 = common::reload(&sb.notify, r.new);
    load.wait_more_ok(50, DEADLINE);
    load.stop_without_failures("after SIGKILL of the draining parent");
    assert!(procs::wait_gone(r.new, DEADLINE));
    common::sigterm_and_wait_gone(&sb, &mut baton, r2.new);
}

// ---------------------------------------------------------------------------------------------
// the hand-off socket

#[test]
fn a_stranger_dialing_the_hand_off_socket_gets_nothing_and_the_hand_off_succeeds() {
    let sb = Sandbox::new();
    let mut baton = sb.start(
        "v1",
        &["--child-timeout", "20s", "--shutdown-timeout", "5s"],
    );
    let main = baton.pid;
    let path = sb.handoff_socket();
    assert!(
        !path.exists(),
        "the hand-off socket exists only during a hand-off"
    );

    let mut held = HeldSuccessor::install(&sb);
    let from = sb.notify.len();
    assert!(procs::kill(main, Signal::SIGHUP));
    let child = procs::wait_child(main);
    // Not at the configured path: in a directory made for this hand-off alone.
    let path = common::predecessor_socket_of(child);
    assert_ne!(path, sb.handoff_socket());
    wait_handoff_socket(&path);
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    let dir_mode = fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        dir_mode, 0o700,
        "the hand-off socket's directory is private"
    );
    assert_eq!(
        mode & 0o077,
        0,
        "the hand-off socket is not open to others: {mode:o}"
    );

    let payloads: Vec<Vec<u8>> = vec![
        b"get_listener".to_vec(),
        b"hello, I am not your child\n".to_vec(),
        format!("{{\"event\":\"ready\",\"pid\":{child}}}\n").into_bytes(),
        b"{\"event\":\"failed\",\"reason\":\"forged\"}\n".to_vec(),
    ];
    for p in &payloads {
        let got = stranger(&path, p);
        assert!(
            got.is_empty(),
            "a stranger sending {:?} got {:?}",
            String::from_utf8_lossy(p),
            String::from_utf8_lossy(&got)
        );
    }
    assert!(
        sb.notify.all()[from..]
            .iter()
            .all(|n| n.mainpid().is_none() && !n.has("READY=1")),
        "a stranger's message moved the hand-off: {}",
        sb.notify.dump()
    );
    assert!(
        procs::is_alive(child),
        "the real successor is still being waited for"
    );

    sb.write_config(&sb.config("v2"));
    assert!(held.release(DEADLINE), "the successor was waiting");
    let m = sb.notify.wait_for_after(from, DEADLINE, "MAINPID=", |n| {
        n.pid == main && n.mainpid().is_some()
    });
    assert_eq!(m.mainpid(), Some(child), "the real successor took over");
    sb.notify
        .wait_for_after(from, DEADLINE, "READY=1 from the successor", |n| {
            n.pid == child && n.has("READY=1")
        });
    common::wait_until("the hand-off directory to be removed", DEADLINE, || {
        (!path.parent().unwrap().exists()).then_some(())
    });
    common::wait_until("v2", DEADLINE, || {
        (http::get_fresh(sb.addr(), "/").unwrap().text() == "v2").then_some(())
    });
    assert_eq!(baton.wait_exit(DEADLINE).code(), Some(0));
    common::sigterm_and_wait_gone(&sb, &mut baton, child);
}

#[test]
fn garbage_a_megabyte_and_a_slow_drip_on_the_hand_off_socket_leave_the_parent_unaffected() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    let mut baton = sb.start(
        "v1",
        &["--child-timeout", "20s", "--shutdown-timeout", "5s"],
    );
    let main = baton.pid;
    let path = sb.handoff_socket();
    let load = Load::start(
        sb.addr(),
        2,
        2,
        Duration::from_millis(2),
        body_is_one_of(&["v1", "v2"]),
    );
    load.wait_more_ok(30, DEADLINE);
    // Outside a hand-off there is nothing to dial.
    assert!(UnixStream::connect(&path).is_err());

    let mut held = HeldSuccessor::install(&sb);
    let from = sb.notify.len();
    assert!(procs::kill(main, Signal::SIGHUP));
    let child = procs::wait_child(main);
    let path = common::predecessor_socket_of(child);
    wait_handoff_socket(&path);

    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let megabyte = vec![b'{'; 1 << 20];
    let p1 = path.clone();
    let g = thread::spawn(move || stranger(&p1, &garbage));
    let p2 = path.clone();
    let mb = thread::spawn(move || stranger(&p2, &megabyte));
    // One byte a second of the real request: the parent must not wait for it.
    let mut drip = UnixStream::connect(&path).unwrap();
    drip.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let drip_done = Arc::new(AtomicBool::new(false));
    let dd = drip_done.clone();
    let dripper = thread::spawn(move || {
        let mut got = Vec::new();
        let mut closed = false;
        for &b in b"get_listener" {
            if dd.load(Ordering::SeqCst) || drip.write_all(&[b]).is_err() {
                break;
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(1) {
                let mut buf = [0u8; 256];
                match drip.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if closed {
                break;
            }
        }
        (got, closed)
    });
    assert!(
        g.join().unwrap().is_empty(),
        "the garbage sender got an answer"
    );
    assert!(
        mb.join().unwrap().is_empty(),
        "the megabyte sender got an answer"
    );

    // While the drip goes on, the real successor gets through.
    sb.write_config(&sb.config("v2"));
    assert!(
        held.release(DEADLINE),
        "the successor was not waiting any more: the strangers made the parent give up on it?\n{}",
        sb.notify.dump()
    );
    let m = sb.notify.wait_for_after(from, DEADLINE, "MAINPID=", |n| {
        n.pid == main && n.mainpid().is_some()
    });
    assert_eq!(m.mainpid(), Some(child));
    sb.notify.wait_for_after(from, DEADLINE, "READY=1", |n| {
        n.pid == child && n.has("READY=1")
    });
    drip_done.store(true, Ordering::SeqCst);
    // Whether the parent closed the drip is not a promise; that it answered nothing is.
    let (drip_got, _closed) = dripper.join().unwrap();
    assert!(
        drip_got.is_empty(),
        "the slow stranger got an answer: {drip_got:?}"
    );

    load.wait_more_ok(50, DEADLINE);
    load.stop_without_failures("load");
    assert_eq!(baton.wait_exit(DEADLINE).code(), Some(0));
    common::sigterm_and_wait_gone(&sb, &mut baton, child);
}

/// Leaves a stale socket file at `path` (bound, then its listener closed).
fn stale_socket(path: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::set_permissions(path.parent().unwrap(), fs::Permissions::from_mode(0o700)).unwrap();
    if fs::symlink_metadata(path).is_ok() {
        fs::remove_file(path).unwrap();
    }
    drop(UnixListener::bind(path).unwrap());
    assert!(fs::symlink_metadata(path).unwrap().file_type().is_socket());
}

/// The inode of the file at `path` (not following a symlink).
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).unwrap().ino()
}

/// What the runtime directory holds besides status files: per-hand-off directories left behind.
fn leftover_handoff_dirs(runtime: &Path) -> Vec<String> {
    fs::read_dir(runtime)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with("handoff.") && n != "handoff.sock")
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_stale_or_live_socket_at_the_hand_off_path_is_never_unlinked() {
    // Left over from a crash: at start it must not be mistaken for a live predecessor.
    let options = Options::new("v1").args(&["--shutdown-timeout", "5s"]);
    let mut s = options.spawn_after(|sb| stale_socket(&sb.handoff_socket()));
    s.wait_started();
    let path = s.sb.handoff_socket();
    let stale = inode(&path);
    assert_eq!(s.get(), "v1");
    assert!(s.baton.log().contains("source=bind"), "{}", s.baton.log());

    // A reload hands off in a directory of its own: the stale file stays as it was.
    s.reload();
    assert_eq!(inode(&path), stale, "the stale socket file was replaced");
    // A live socket there (another program's) is not touched either, and keeps working.
    fs::remove_file(&path).unwrap();
    let live = UnixListener::bind(&path).unwrap();
    let live_inode = inode(&path);
    s.reload();
    assert_eq!(inode(&path), live_inode, "a live socket was unlinked");
    let _client = UnixStream::connect(&path).expect("the live socket still accepts");
    live.set_nonblocking(true).unwrap();
    assert!(
        live.accept().is_ok(),
        "the connection reached the live listener"
    );
    assert_eq!(s.get(), "v1");
    assert!(
        leftover_handoff_dirs(path.parent().unwrap()).is_empty(),
        "{:?}",
        leftover_handoff_dirs(path.parent().unwrap())
    );
    assert_eq!(s.baton.wait_exit(DEADLINE).code(), Some(0));
    s.stop();
}

#[test]
fn a_file_a_directory_or_a_symlink_at_the_hand_off_path_is_left_untouched_by_reloads() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    let mut baton = sb.start("v1", &["--shutdown-timeout", "5s"]);
    let mut main = baton.pid;
    let path = sb.handoff_socket();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::set_permissions(path.parent().unwrap(), fs::Permissions::from_mode(0o700)).unwrap();
    let load = Load::start(
        sb.addr(),
        2,
        2,
        Duration::from_millis(2),
        body_is_one_of(&["v1"]),
    );
    load.wait_more_ok(30, DEADLINE);
    let target = sb.path("symlink-target");
    fs::write(&target, "the symlink's target").unwrap();

    for kind in ["regular file", "directory", "symlink"] {
        match kind {
            "regular file" => fs::write(&path, "precious").unwrap(),
            "directory" => {
                fs::create_dir(&path).unwrap();
                fs::write(path.join("inside"), "precious").unwrap();
            }
            _ => std::os::unix::fs::symlink(&target, &path).unwrap(),
        }
        let r = common::reload(&sb.notify, main);
        println!(
            "{kind} at the hand-off path: reloaded {} -> {}",
            r.old, r.new
        );
        main = r.new;
        match kind {
            "regular file" => assert_eq!(fs::read_to_string(&path).unwrap(), "precious"),
            "directory" => assert_eq!(fs::read_to_string(path.join("inside")).unwrap(), "precious"),
            _ => {
                assert_eq!(fs::read_link(&path).unwrap(), target);
                assert_eq!(fs::read_to_string(&target).unwrap(), "the symlink's target");
            }
        }
        load.wait_more_ok(30, DEADLINE);
        if kind == "directory" {
            fs::remove_dir_all(&path).unwrap();
        } else {
            fs::remove_file(&path).unwrap();
        }
    }
    load.stop_without_failures("load");
    assert_eq!(baton.wait_exit(DEADLINE).code(), Some(0));
    common::sigterm_and_wait_gone(&sb, &mut baton, main);
}

// ---------------------------------------------------------------------------------------------
// garbage socket activation

#[derive(Debug, PartialEq)]
enum Activation {
    Served,
    /// A clean exit with this code.
    Refused(i32),
}

/// Starts baton `--listen <port>` with activation variables; `LISTEN_PID` is baton's own pid
/// when `own_pid` (set by a shell that execs baton), else the given value. `fd3` is placed at
/// descriptor 3.
fn garbage_activation(
    sb: &Sandbox,
    vars: &[(&str, &str)],
    own_pid: bool,
    fd3: Option<i32>,
) -> Activation {
    let mut cmd = if own_pid {
        let mut c = sb.command("/bin/sh");
        c.arg("-c")
            .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
            .arg(baton_exe());
        c
    } else {
        sb.baton()
    };
    cmd.arg("--listen")
        .arg(sb.listen())
        .arg("--handoff-socket")
        .arg(sb.handoff_socket());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    if let Some(fd) = fd3 {
        common::place_at_fd3(&mut cmd, fd);
    }
    let mut baton = sb.spawn(cmd);
    let pid = baton.pid;
    let outcome = common::wait_until("READY=1 or an exit", DEADLINE, || {
        if let Some(st) = baton.try_exit() {
            return Some(Err(st));
        }
        sb.notify
            .all()
            .iter()
            .any(|n| n.pid == pid && n.has("READY=1"))
            .then_some(Ok(()))
    });
    let log = baton.log();
    assert!(
        !log.contains("panicked"),
        "baton panicked on {vars:?}:\n{log}"
    );
    match outcome {
        Ok(()) => {
            let r = http::get_fresh(sb.addr(), "/")
                .unwrap_or_else(|e| panic!("ready but not serving: {e}\n{log}"));
            assert_eq!(r.status, 200);
            common::sigterm_and_wait_gone(sb, &mut baton, pid);
            assert_eq!(baton.try_exit().and_then(|s| s.code()), Some(0));
            println!("{vars:?}: ignored, served on {}", sb.listen());
            Activation::Served
        }
        Err(st) => {
            let code = st.code().unwrap_or(-1);
            assert!(
                code > 0 && code != 101,
                "refusal must be a clean non-zero exit: {}\n{log}",
                common::describe(st)
            );
            let line = log
                .lines()
                .find(|l| {
                    l.contains("LISTEN_") || l.contains("socket activation") || l.contains("fd 3")
                })
                .unwrap_or_else(|| panic!("no error line naming the activation problem:\n{log}"))
                .to_string();
            println!("{vars:?}: refused with exit {code}: {line}");
            Activation::Refused(code)
        }
    }
}

/// Garbage activation for this very process is a configuration error: exit 78 (EX_CONFIG).
fn refused_as_config_error(sb: &Sandbox, vars: &[(&str, &str)], fd3: Option<i32>) {
    let outcome = garbage_activation(sb, vars, true, fd3);
    assert_eq!(outcome, Activation::Refused(78), "{vars:?}");
}

#[test]
fn listen_fds_that_is_not_a_number_is_refused_with_exit_78() {
    let sb = Sandbox::new();
    refused_as_config_error(&sb, &[("LISTEN_FDS", "abc")], None);
}

#[test]
fn listen_pid_of_another_process_is_ignored() {
    // The variables are for someone else (pid 1 here): sd_listen_fds semantics say ignore them.
    let sb = Sandbox::new();
    let outcome = garbage_activation(
        &sb,
        &[
            ("LISTEN_FDS", "1"),
            ("LISTEN_PID", "1"),
            ("LISTEN_FDNAMES", "http"),
        ],
        false,
        None,
    );
    assert_eq!(
        outcome,
        Activation::Served,
        "activation for another pid must be ignored"
    );
}

#[test]
fn listen_fds_with_fd_3_not_a_socket_is_refused_with_exit_78() {
    let sb = Sandbox::new();
    let file = fs::File::create(sb.path("not-a-socket")).unwrap();
    let vars = [("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "http")];
    refused_as_config_error(&sb, &vars, Some(file.as_raw_fd()));
}

#[test]
fn listen_fdnames_count_mismatch_is_refused_with_exit_78() {
    let sb = Sandbox::new();
    let listener = TcpListener::bind(sb.addr()).unwrap();
    let vars = [("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "http:admin")];
    refused_as_config_error(&sb, &vars, Some(listener.as_raw_fd()));
}

// ---------------------------------------------------------------------------------------------
// slow clients

#[test]
fn a_slow_client_across_a_reload_is_answered_by_the_old_process() {
    let mut s = Story::start("old", &["--shutdown-timeout", "20s"]);
    let old = s.main;
    let t0 = Instant::now();
    let mut conn = http::RawConn::connect(s.sb.addr());
    conn.send(b"GET / HTTP/1.1\r\n").unwrap();
    let client_port = conn.stream.local_addr().unwrap().port();
    assert_eq!(owner_of(&s.baton, s.sb.port, client_port), old);

    let mut cfg = s.sb.config("new");
    cfg["shutdown_timeout"] = "20s".into();
    s.sb.write_config(&cfg);
    s.reload();
    // The rest of the head, a byte at a time, well past 5 s in all.
    let rest = b"Host: baton.test\r\nX-Slow: 0123456789012345678901234567890123456789\r\n";
    for &b in rest.iter() {
        conn.send(&[b]).unwrap_or_else(|e| {
            panic!(
                "the old process dropped the slow request after {:?}: {e}",
                t0.elapsed()
            )
        });
        thread::sleep(Duration::from_millis(80));
    }
    while t0.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        s.baton.try_exit().is_none(),
        "the old process exited with a request half received"
    );
    conn.send(b"\r\n").unwrap();
    let resp = conn.response().unwrap_or_else(|e| {
        panic!(
            "slow request after {:?}: {e}\n{}",
            t0.elapsed(),
            s.baton.log()
        )
    });
    println!(
        "slow request over {:?} across the reload: {resp:?}",
        t0.elapsed()
    );
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.text(),
        "old",
        "answered by the process that accepted it"
    );
    let st = s.baton.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(0), "{}", common::describe(st));
    assert_eq!(s.get(), "new");
    s.stop();
}

#[test]
fn a_request_that_never_ends_does_not_keep_a_process_past_the_shutdown_timeout() {
    let sb = Sandbox::new();
    let mut baton = sb.start("v1", &["--shutdown-timeout", "2s"]);
    let old = baton.pid;

    // Retired by a reload, draining a request whose head never ends.
    let a = SlowLoris::start(sb.addr(), Duration::from_millis(200));
    assert_eq!(owner_of(&baton, sb.port, a.client_port), old);
    let r = common::reload(&sb.notify, old);
    let t = Instant::now();
    let st = baton.wait_exit(Duration::from_secs(2) + DEADLINE);
    println!(
        "retired process with an endless request exited after {:?} ({})",
        t.elapsed(),
        common::describe(st)
    );
    assert_eq!(st.code(), Some(0));
    drop(a);

    // Stopped by SIGTERM, the same.
    let b = common::wait_until("a slow connection held by the new main", DEADLINE, || {
        let s = SlowLoris::start(sb.addr(), Duration::from_millis(200));
        (owner_of(&baton, sb.port, s.client_port) == r.new).then_some(s)
    });
    let from = sb.notify.len();
    let t = Instant::now();
    assert!(procs::kill(r.new, Signal::SIGTERM));
    sb.notify.wait_for_after(from, DEADLINE, "STOPPING=1", |n| {
        n.pid == r.new && n.has("STOPPING=1")
    });
    assert!(
        procs::wait_gone(r.new, Duration::from_secs(2) + DEADLINE),
        "still running with an endless request"
    );
    println!(
        "main process with an endless request exited after {:?} on SIGTERM",
        t.elapsed()
    );
    assert!(
        matches!(
            common::reaper::orphan_exit(r.new),
            Some(WaitStatus::Exited(_, 0))
        ),
        "{:?}",
        common::reaper::orphan_exit(r.new)
    );
    drop(b);
    assert!(baton.wait_group_gone(DEADLINE));
}

// ---------------------------------------------------------------------------------------------
// start-up

#[test]
fn a_port_already_taken_at_first_start_is_one_line_and_exit_69() {
    let sb = Sandbox::new();
    let _taken = TcpListener::bind(sb.addr()).unwrap();
    let mut cmd = sb.baton();
    cmd.arg("--listen")
        .arg(sb.listen())
        .arg("--handoff-socket")
        .arg(sb.handoff_socket());
    let mut baton = sb.spawn(cmd);
    let log = baton.expect_exit_code(69, "EX_UNAVAILABLE when the address is in use");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&sb.listen())).collect();
    assert!(!lines.is_empty(), "a line names {}:\n{log}", sb.listen());
    println!("port taken: {}", lines[0]);
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        sb.notify.all().iter().all(|n| !n.has("READY=1")),
        "{}",
        sb.notify.dump()
    );
}

#[test]
fn a_client_that_never_finishes_its_request_head_is_disconnected_while_others_are_served() {
    let sb = Sandbox::new();
    let mut baton = sb.start("Hello, world!", &[]);
    let mut slow = std::net::TcpStream::connect(sb.addr()).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: slowloris\r\n")
        .unwrap();
    let started = Instant::now();
    slow.set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    // Meanwhile the server answers everybody else.
    for _ in 0..5 {
        assert_eq!(
            http::get_fresh(sb.addr(), "/").unwrap().body,
            b"Hello, world!"
        );
        thread::sleep(Duration::from_secs(2));
    }
    let mut buf = [0u8; 64];
    // An orderly close (EOF): a reset, or a timeout, is not the promised close.
    let n = slow
        .read(&mut buf)
        .unwrap_or_else(|e| panic!("the stalled client sees an orderly close, not {e}"));
    let waited = started.elapsed();
    assert_eq!(n, 0, "the stalled client gets no response, only the close");
    assert!(
        waited >= Duration::from_secs(29) && waited <= Duration::from_secs(60),
        "closed after {waited:?}; the bound is 30 s (checked once a second)"
    );
    println!("stalled request head closed after {waited:?}");
    assert!(baton.try_exit().is_none(), "{}", baton.log());
}
