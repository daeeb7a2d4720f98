//! Story: `baton reload` asks the service on its control socket (docs/handoff-protocol.md,
//! "Reload requests and their answer") — many operators at once each get the true outcome of a
//! hand-off that began after they asked; a pid that now belongs to another process is never
//! signalled nor believed; an answer nobody but the service gave is never believed; a service of
//! its own user is reloaded by that user or root, never by another user; `ExecReload=`'s
//! `$MAINPID` is believed before the PID file.

mod common;

use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::users::OtherUser;
use common::{procs, reaper, Baton, Sandbox, DEADLINE};

/// `baton reload --config <sandbox config>` plus `extra`: (exit code, stdout + stderr).
fn baton_reload(sb: &Sandbox, extra: &[&str]) -> (i32, String) {
    let mut cmd = baton_reload_command(sb, extra);
    let out = reaper::output(&mut cmd).expect("baton reload");
    (out.status.code().unwrap_or(-1), common::text_of(&out))
}

fn baton_reload_command(sb: &Sandbox, extra: &[&str]) -> Command {
    // The built binary itself: the sandbox's copy may be a held successor's wrapper.
    reload_command(sb, common::baton_exe(), extra)
}

/// `EXE reload --config <sandbox config> --timeout 60s` plus `extra`, its output piped.
fn reload_command(sb: &Sandbox, exe: impl AsRef<std::ffi::OsStr>, extra: &[&str]) -> Command {
    let mut cmd = sb.command(exe);
    cmd.arg("reload")
        .arg("--config")
        .arg(sb.config_path())
        .args(["--timeout", "60s"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `reloaded: OLD -> NEW` → (OLD, NEW).
fn parse_reloaded(out: &str) -> (i32, i32) {
    out.lines()
        .find_map(|l| {
            let (old, new) = l.trim().strip_prefix("reloaded: ")?.split_once(" -> ")?;
            Some((old.parse().ok()?, new.parse().ok()?))
        })
        .unwrap_or_else(|| panic!("no `reloaded: OLD -> NEW` in {out:?}"))
}

fn start(sb: &Sandbox) -> Baton {
    sb.write_config(&sb.config("v1"));
    let baton = sb.spawn(sb.serve(&[]));
    baton.wait_ready(&sb.notify);
    let pid = baton.pid;
    common::wait_until("the PID file", DEADLINE, || {
        (std::fs::read_to_string(sb.pid_file()).ok()?.trim() == pid.to_string()).then_some(())
    });
    baton
}

#[test]
fn eighty_concurrent_baton_reloads_each_get_the_true_outcome_of_a_hand_off_that_began_after_them() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    let mut baton = start(&sb);
    const N: usize = 80;
    let asked: Vec<(Instant, (i32, String))> = thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|_| {
                let sb = &sb;
                s.spawn(move || {
                    let at = Instant::now();
                    (at, baton_reload(sb, &[]))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut handoffs = std::collections::BTreeSet::new();
    for (at, (code, out)) in &asked {
        assert_eq!(*code, 0, "{out}");
        let (old, new) = parse_reloaded(out);
        // True: `old` announced `new` as the main process (MAINPID=) and `new` said READY=1 ...
        let ready =
            sb.notify
                .wait_for_after(0, DEADLINE, &format!("{out}: READY=1 from {new}"), |n| {
                    n.pid == new && n.has("READY=1")
                });
        let records = sb.notify.all();
        let mainpid = records
            .iter()
            .find(|n| n.pid == old && n.mainpid() == Some(new))
            .unwrap_or_else(|| panic!("{out}: {old} never announced MAINPID={new}"));
        assert!(ready.seq > mainpid.seq, "{out}: READY=1 before MAINPID=");
        // ... in a hand-off that began (RELOADING=1) after the request was made.
        let began = records
            .iter()
            .rev()
            .find(|n| n.pid == old && n.has("RELOADING=1") && n.seq < mainpid.seq)
            .unwrap_or_else(|| panic!("{out}: no RELOADING=1 from {old}"));
        assert!(
            began.at >= *at,
            "{out}: that hand-off began {:?} before the request",
            at.duration_since(began.at)
        );
        handoffs.insert((old, new));
    }
    println!(
        "{N} concurrent `baton reload`: {N} answered 0 (all true), served by {} hand-offs",
        handoffs.len()
    );
    assert!(handoffs.len() < N, "requests share hand-offs");
    let main = common::current_main(&sb.notify, baton.pid);
    common::sigterm_and_wait_gone(&sb, &mut baton, main);
    // The control socket went from generation to generation; at the real stop its name goes
    // with the service: nothing is left for a later `baton reload` to dial.
    let left: Vec<String> = std::fs::read_dir(runtime_dir(&sb))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("control."))
        .collect();
    assert!(
        left.is_empty(),
        "control sockets left after the stop: {left:?}"
    );
}

/// Runs `sleep 600` (as `user`, or as root): a process that is not baton and would die of a
/// `SIGHUP`.
fn bystander(user: Option<&OtherUser>) -> std::process::Child {
    let mut cmd = match user {
        Some(u) => {
            let mut c = u.command("sleep");
            c.arg("600");
            c
        }
        None => {
            let mut c = Command::new("sleep");
            c.arg("600");
            c
        }
    };
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    reaper::spawn_registered(&mut cmd).expect("sleep")
}

#[test]
fn a_pid_file_naming_a_process_that_is_not_the_service_is_refused_and_nobody_is_signalled() {
    let Some(mallory) = OtherUser::create() else {
        panic!("this test needs root to create a second user");
    };
    let sb = Sandbox::new();
    let mut baton = start(&sb);
    for (who, user) in [("another user's", Some(&mallory)), ("root's", None)] {
        let mut other = bystander(user);
        let pid = other.id() as i32;
        // After a crash the pid in the PID file went to another process.
        std::fs::write(sb.pid_file(), format!("{pid}\n")).unwrap();
        let from = sb.notify.len();
        let (code, out) = baton_reload(&sb, &[]);
        println!(
            "PID file naming {who} `sleep` {pid}: exit {code}: {}",
            out.trim()
        );
        assert_ne!(code, 0, "{out}");
        assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
        assert!(
            out.contains(&format!("pid {pid}")) && out.contains("nothing was sent"),
            "{out}"
        );
        thread::sleep(Duration::from_millis(200));
        assert!(
            matches!(other.try_wait(), Ok(None)),
            "the process on the reused pid was signalled"
        );
        assert!(
            !sb.notify.all()[from..].iter().any(|n| n.has("RELOADING=1")),
            "the service was reloaded by a request that named another process"
        );
        let _ = other.kill();
        let _ = other.wait();
    }
    let main = baton.pid;
    common::sigterm_and_wait_gone(&sb, &mut baton, main);
}

/// A fake control socket that answers every connection with a forged success.
fn forger(path: &Path, successor: u32) -> thread::JoinHandle<usize> {
    let listener = UnixListener::bind(path).unwrap();
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        use std::io::{Read, Write};
        let mut served = 0;
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            match listener.accept() {
                Ok((mut s, _)) => {
                    served += 1;
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(500))).ok();
                    let mut buf = [0u8; 64];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(
                        format!(
                            "{{\"answer\":\"reloaded\",\"retired\":1,\"successor\":{successor}}}\n"
                        )
                        .as_bytes(),
                    );
                }
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
        served
    })
}

/// Queue `SIGRTMIN+5` to `to` with `value`, its siginfo naming `claimed_sender` as the sender.
fn forge_answer_signal(to: i32, claimed_sender: i32, value: usize) -> bool {
    #[repr(C)]
    struct Info {
        signo: i32,
        errno: i32,
        code: i32,
        pad: i32,
        pid: i32,
        uid: u32,
        value: usize,
        rest: [u64; 12],
    }
    let info = Info {
        signo: libc::SIGRTMIN() + 5,
        errno: 0,
        code: libc::SI_QUEUE,
        pad: 0,
        pid: claimed_sender,
        uid: nix::unistd::getuid().as_raw(),
        value,
        rest: [0; 12],
    };
    // SAFETY: rt_sigqueueinfo(2) with a pid, a valid signal and a pointer to a siginfo-sized,
    // initialised buffer that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_rt_sigqueueinfo,
            to,
            libc::SIGRTMIN() + 5,
            &info as *const Info,
        )
    };
    rc == 0
}

fn runtime_dir(sb: &Sandbox) -> PathBuf {
    sb.handoff_socket().parent().unwrap().to_owned()
}

#[test]
fn an_answer_from_a_process_that_is_not_the_service_is_never_believed() {
    let sb = Sandbox::new();
    let mut baton = start(&sb);
    // A process of the service's own user puts a control socket of its own where `baton reload`
    // looks first, and answers every request with a success naming pid 4242.
    let fake = runtime_dir(&sb).join("control.0.aaaaaa");
    let forged = forger(&fake, 4242);
    let (code, out) = baton_reload(&sb, &[]);
    println!(
        "with a forged control socket in place: exit {code}: {}",
        out.trim()
    );
    assert_eq!(code, 0, "{out}");
    let (old, new) = parse_reloaded(&out);
    assert_eq!(old, baton.pid);
    assert_ne!(new, 4242, "a forged answer was believed: {out}");
    sb.notify
        .wait_for_after(0, DEADLINE, "the real MAINPID=", |n| {
            n.pid == old && n.mainpid() == Some(new)
        });
    // And the old way to forge (an answer signal queued to `baton reload` while it waits)
    // finds nothing listening for it: no success is ever printed from it.
    let mut held = common::HeldSuccessor::install(&sb);
    let client = reaper::spawn_registered(&mut baton_reload_command(&sb, &[])).unwrap();
    let successor = common::wait_until("a held successor", DEADLINE, || {
        procs::children_of(new).first().map(|c| c.pid)
    });
    // SIGRTMIN+5 carrying 4242, as the old answer signal did, claiming to come from the main
    // process: rt_sigqueueinfo(2) lets a process of the same user write the sender's pid.
    common::wait_until("baton reload waiting", DEADLINE, || {
        procs::stat(client.id() as i32)
            .filter(|p| p.state == 'S')
            .map(|_| ())
    });
    assert!(forge_answer_signal(client.id() as i32, new, 4242));
    assert!(held.release(DEADLINE));
    let out = client.wait_with_output().unwrap();
    let text = common::text_of(&out);
    println!(
        "forged answer signal while waiting: {:?}: {}",
        out.status,
        text.trim()
    );
    assert!(!text.contains("4242"), "{text}");
    drop(forged);
    let _ = std::fs::remove_file(&fake);
    let main = common::wait_until("the successor as main", DEADLINE, || {
        let m = common::current_main(&sb.notify, baton.pid);
        (m == successor).then_some(m)
    });
    common::sigterm_and_wait_gone(&sb, &mut baton, main);
}

/// One answer line read from a control connection, or why there was none.
fn read_answer(stream: &mut std::os::unix::net::UnixStream, within: Duration) -> String {
    use std::io::BufRead;
    stream.set_read_timeout(Some(within)).unwrap();
    let mut line = String::new();
    match std::io::BufReader::new(stream).read_line(&mut line) {
        Ok(0) => panic!("the control connection was closed without an answer"),
        Ok(_) => line,
        Err(e) => panic!("no answer within {within:?}: {e}"),
    }
}

/// Waits until `pid` holds a socket that is not among `before` (one it accepted).
fn wait_for_a_new_socket(pid: i32, before: &[(i32, u64)], what: &str) {
    common::wait_until(what, DEADLINE, || {
        procs::socket_fds(pid)
            .iter()
            .any(|(_, inode)| !before.iter().any(|(_, i)| i == inode))
            .then_some(())
    });
}

#[test]
fn a_request_that_reaches_a_retiring_process_late_is_told_to_ask_its_successor() {
    let sb = Sandbox::new();
    let mut cfg = sb.config("v1");
    cfg["shutdown_timeout"] = "60s".into();
    sb.write_config(&cfg);
    let mut baton = sb.spawn(sb.serve(&[]));
    baton.wait_ready(&sb.notify);
    let old = baton.pid;
    // A client whose request head is still arriving keeps the old process draining after the
    // hand-off.
    let sockets = procs::socket_fds(old);
    let mut http = common::http::RawConn::connect(sb.addr());
    http.send(b"GET / HTTP/1.1\r\nHost: baton.test\r\n")
        .unwrap();
    wait_for_a_new_socket(old, &sockets, "the connection accepted");
    // An operator's tool connects to the control socket while `old` is main, and is accepted
    // there, but its request line comes only after a hand-off made `old` retire.
    let control = common::wait_until("the control socket", DEADLINE, || {
        std::fs::read_dir(runtime_dir(&sb))
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("control."))
            .map(|e| e.path())
    });
    let sockets = procs::socket_fds(old);
    let mut late = std::os::unix::net::UnixStream::connect(&control).unwrap();
    wait_for_a_new_socket(
        old,
        &sockets,
        "the control connection accepted by the main process",
    );
    sb.write_config(&sb.config("v2"));
    let new = common::reload(&sb.notify, old).new;
    common::wait_until("the old process draining", DEADLINE, || {
        baton.log().contains("retiring: draining").then_some(())
    });
    assert!(procs::is_alive(old), "the old process left before the test");
    std::io::Write::write_all(&mut late, b"{\"request\":\"reload\"}\n").unwrap();
    let answer = read_answer(&mut late, DEADLINE);
    println!("a request read by the retiring process: {}", answer.trim());
    assert_eq!(
        answer.trim(),
        format!("{{\"answer\":\"ask_again\",\"main\":{new}}}"),
        "the retiring process must send the request on to its successor"
    );
    // Asked again on the same socket, the successor carries it out.
    let mut again = std::os::unix::net::UnixStream::connect(&control).unwrap();
    std::io::Write::write_all(&mut again, b"{\"request\":\"reload\"}\n").unwrap();
    let answer = read_answer(&mut again, DEADLINE);
    println!("asked again: {}", answer.trim());
    assert!(
        answer.contains(&format!("\"retired\":{new}")),
        "the successor must carry out the request asked again: {answer}"
    );
    // The client in the middle of its request was served by the old process all along.
    http.send(b"\r\n").unwrap();
    let response = http
        .response()
        .expect("the old process answers its last request");
    assert_eq!(response.text(), "v1");
    common::wait_until(
        "the old process to exit after its last answer",
        DEADLINE,
        || (!procs::is_alive(old)).then_some(()),
    );
    let main = common::current_main(&sb.notify, baton.pid);
    common::sigterm_and_wait_gone(&sb, &mut baton, main);
}

/// `baton reload --pid PID` run as `user` (real and effective ids; as root, std also drops the
/// supplementary groups): (exit code, stdout + stderr).
fn baton_reload_as(sb: &Sandbox, user: &OtherUser, pid: i32) -> (i32, String) {
    // The sandbox's link of the binary (no successor is held here): the built one may lie below
    // a directory only root may enter (a checkout in a `mktemp -d` directory, as CI's).
    let mut cmd = reload_command(sb, sb.exe(), &["--pid", &pid.to_string()]);
    cmd.uid(user.uid).gid(user.gid);
    let out = reaper::output(&mut cmd).expect("baton reload");
    (out.status.code().unwrap_or(-1), common::text_of(&out))
}

#[test]
fn a_service_of_its_own_user_is_reloaded_by_that_user_or_root_and_refused_to_anyone_else() {
    let (Some(svc), Some(mallory)) = (OtherUser::create(), OtherUser::create()) else {
        panic!("this test needs root to create two users");
    };
    let sb = Sandbox::new();
    sb.write_config(&sb.config("v1"));
    // As packaged: the service runs as its own user, which owns its directories; anybody may
    // read the configuration (and so find where the service keeps its control socket).
    for dir in [sb.dir().to_owned(), sb.path("xdg")] {
        chown(&dir, Some(svc.uid), Some(svc.gid)).unwrap();
    }
    std::fs::set_permissions(sb.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(sb.notify.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = sb.serve(&[]);
    cmd.uid(svc.uid).gid(svc.gid);
    let mut baton = sb.spawn(cmd);
    baton.wait_ready(&sb.notify);

    // root (what `systemctl reload` runs ExecReload= as) ...
    let (code, out) = baton_reload(&sb, &["--pid", &baton.pid.to_string()]);
    println!(
        "root reloads {}'s service: exit {code}: {}",
        svc.name,
        out.trim()
    );
    assert_eq!(code, 0, "{out}\n{}", baton.log());
    let (old, first) = parse_reloaded(&out);
    assert_eq!(old, baton.pid);
    // ... and the service's own user may reload it ...
    let (code, out) = baton_reload_as(&sb, &svc, first);
    println!(
        "{} reloads its own service: exit {code}: {}",
        svc.name,
        out.trim()
    );
    assert_eq!(code, 0, "{out}\n{}", baton.log());
    let (old, second) = parse_reloaded(&out);
    assert_eq!(old, first);

    // ... another user may not: exit 77 (permission), one line naming the service's user, and
    // nothing was asked of the service.
    let from = sb.notify.len();
    let (code, out) = baton_reload_as(&sb, &mallory, second);
    println!(
        "{} asks to reload it: exit {code}: {}",
        mallory.name,
        out.trim()
    );
    assert_eq!(code, 77, "{out}");
    assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    assert!(
        out.contains(&format!("pid {second}")) && out.contains("only that user or root"),
        "{out}"
    );
    thread::sleep(Duration::from_millis(200));
    assert!(
        !sb.notify.all()[from..].iter().any(|n| n.has("RELOADING=1")),
        "another user's request reloaded the service"
    );
    common::sigterm_and_wait_gone(&sb, &mut baton, second);
}

/// `baton reload` as systemd's `ExecReload=` runs it, with `$MAINPID` in its environment.
fn baton_reload_with_mainpid(sb: &Sandbox, mainpid: &str) -> (i32, String) {
    let mut cmd = baton_reload_command(sb, &[]);
    cmd.env("MAINPID", mainpid);
    let out = reaper::output(&mut cmd).expect("baton reload");
    (out.status.code().unwrap_or(-1), common::text_of(&out))
}

#[test]
fn exec_reload_believes_mainpid_before_the_pid_file_and_an_empty_one_is_no_pid() {
    let sb = Sandbox::new();
    let mut baton = start(&sb);
    // The PID file names another process (edited by hand, say); systemd's $MAINPID names the
    // service, and it is what `baton reload` asks.
    let mut other = bystander(None);
    std::fs::write(sb.pid_file(), format!("{}\n", other.id())).unwrap();
    let (code, out) = baton_reload_with_mainpid(&sb, &baton.pid.to_string());
    println!(
        "MAINPID={} and a PID file naming `sleep`: exit {code}: {}",
        baton.pid,
        out.trim()
    );
    assert_eq!(code, 0, "{out}");
    let (old, new) = parse_reloaded(&out);
    assert_eq!(old, baton.pid);
    let _ = other.kill();
    let _ = other.wait();

    // An empty $MAINPID (systemd has no main process to name) is no pid: the PID file, which the
    // successor rewrote, is read.
    common::wait_until("the successor's PID file", DEADLINE, || {
        (std::fs::read_to_string(sb.pid_file()).ok()?.trim() == new.to_string()).then_some(())
    });
    let (code, out) = baton_reload_with_mainpid(&sb, "");
    println!("MAINPID= (empty): exit {code}: {}", out.trim());
    assert_eq!(code, 0, "{out}");
    let (old, newer) = parse_reloaded(&out);
    assert_eq!(old, new);

    // A $MAINPID that is not a pid: exit 64 (usage), one line naming it; nothing is asked.
    let from = sb.notify.len();
    let (code, out) = baton_reload_with_mainpid(&sb, "12x");
    println!("MAINPID=12x: exit {code}: {}", out.trim());
    assert_eq!(code, 64, "{out}");
    assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    assert!(out.contains("MAINPID=\"12x\""), "{out}");
    assert!(
        !sb.notify.all()[from..].iter().any(|n| n.has("RELOADING=1")),
        "reloaded by a request without a pid"
    );
    common::sigterm_and_wait_gone(&sb, &mut baton, newer);
}
