//! Story: the supervisor (baton as PID 1 of a container, or asked with `--supervise`) never goes
//! deaf. Whatever happens below it (a hand-off that fails after the successor was announced) or
//! above it (a manager that stops reading its notify socket, a runtime directory another user
//! owns, a status too long for one datagram), it keeps knowing the main generation, passes
//! signals on, reaps, and tells its manager what it can in datagrams the manager reads whole.
//! The container is a real PID namespace (`unshare --pid`, as root, as in CI); the other user a
//! real one (`useradd`); the notify sockets real ones.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::process::Command;

use common::scripted_successor::{AfterPromoted, ScriptedSuccessor};
use common::users::OtherUser;
use common::{http, procs, Baton, Notification, Sandbox, DEADLINE};
use nix::sys::signal::Signal;

/// Where the supervisor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// PID 1 of a new PID namespace.
    Pid1,
    /// `--supervise`, not PID 1.
    Supervise,
}

/// `baton --config …` as PID 1 of a new PID namespace, or with `--supervise`.
fn command(sb: &Sandbox, mode: Mode) -> Command {
    match mode {
        Mode::Pid1 => {
            let mut cmd = sb.in_new_pid_namespace(sb.exe());
            cmd.arg("--config").arg(sb.config_path());
            cmd
        }
        Mode::Supervise => sb.serve(&["--supervise"]),
    }
}

/// The supervisor's pid as seen from here: the namespace's PID 1, or the process started.
fn supervisor_of(baton: &Baton, mode: Mode) -> i32 {
    match mode {
        Mode::Pid1 => common::wait_until("the namespace's PID 1", DEADLINE, || {
            procs::children_of(baton.pid).first().map(|p| p.pid)
        }),
        Mode::Supervise => baton.pid,
    }
}

/// Waits for `READY=1` passed on by the supervisor `sup` (from its own pid) after datagram
/// `from` whose `STATUS=` satisfies `status`.
fn ready_from(
    sb: &Sandbox,
    baton: &Baton,
    sup: i32,
    from: usize,
    what: &str,
    status: impl Fn(&str) -> bool,
) -> Notification {
    let n = sb.notify.try_wait_for_after(from, DEADLINE, |n| {
        n.pid == sup && n.has("READY=1") && n.get("STATUS").is_some_and(&status)
    });
    n.unwrap_or_else(|| {
        panic!(
            "no READY=1 from the supervisor {sup} with {what}\nnotifications:\n{}\nlog:\n{}",
            sb.notify.dump(),
            baton.log()
        )
    })
}

fn generation(g: u64) -> impl Fn(&str) -> bool {
    move |s: &str| s.contains(&format!("; generation {g};"))
}

/// SIGTERM to the supervisor: everything drains and it exits 0, no process left.
fn stop(baton: &mut Baton, sup: i32) {
    assert!(procs::kill(sup, Signal::SIGTERM), "SIGTERM {sup}");
    let status = baton.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "log:\n{}", baton.log());
    assert!(
        baton.wait_group_gone(DEADLINE),
        "left behind: {:?}",
        baton.members()
    );
}

// ---------------------------------------------------------------------------------------------
// issue 20 row 4: a hand-off that fails after MAINPID=<successor>

fn a_successor_that_dies_right_after_promotion(mode: Mode) {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    sb.write_config(&sb.config("v1"));
    let mut baton = sb.spawn(command(&sb, mode));
    let sup = supervisor_of(&baton, mode);
    ready_from(&sb, &baton, sup, 0, "generation 0", generation(0));

    // The next successor speaks the protocol up to `promoted` and dies: the old generation has
    // announced it (MAINPID=) to the supervisor, then takes it back and reports the failure.
    let mut successor = ScriptedSuccessor::install(&sb, AfterPromoted::Dies);
    sb.write_config(&sb.config("v2"));
    let from = sb.notify.len();
    assert!(procs::kill(sup, Signal::SIGHUP), "SIGHUP {sup}");
    let failed = ready_from(&sb, &baton, sup, from, "reload failed", |s| {
        s.starts_with("reload failed: ")
    });
    println!("passed on after the failed hand-off: {failed:?}");
    assert!(
        failed
            .get("STATUS")
            .is_some_and(|s| s.contains("before it was confirmed")),
        "{failed:?}"
    );
    assert_eq!(
        http::get_fresh(sb.addr(), "/").unwrap().text(),
        "v1",
        "the old generation serves on"
    );

    // The supervisor still knows its main generation: the next SIGHUP reloads.
    successor.restore();
    let from = sb.notify.len();
    assert!(procs::kill(sup, Signal::SIGHUP), "SIGHUP {sup}");
    ready_from(&sb, &baton, sup, from, "generation 1", generation(1));
    assert_eq!(http::get_fresh(sb.addr(), "/").unwrap().text(), "v2");
    assert!(
        !baton.log().contains("no main generation is running"),
        "{}",
        baton.log()
    );
    stop(&mut baton, sup);
}

#[test]
fn pid1_a_successor_that_dies_right_after_promotion_leaves_the_old_generation_main() {
    a_successor_that_dies_right_after_promotion(Mode::Pid1);
}

#[test]
fn supervised_a_successor_that_dies_right_after_promotion_leaves_the_old_generation_main() {
    a_successor_that_dies_right_after_promotion(Mode::Supervise);
}

// ---------------------------------------------------------------------------------------------
// issue 20 row 5: the private notify socket under the safe directory rules

#[test]
fn supervised_refuses_a_runtime_directory_another_user_owns() {
    let user = OtherUser::create().expect("a second user: the tests run as root, as in CI");
    let sb = Sandbox::new();
    // The default runtime directory `<tmp>/baton-<uid>`, made first by someone else.
    let foreign = sb.path(&format!("baton-{}", nix::unistd::getuid()));
    std::fs::create_dir(&foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut cfg = sb.config("v1");
    cfg.as_object_mut().unwrap().remove("handoff_socket");
    sb.write_config(&cfg);
    let mut cmd = sb.serve(&["--supervise"]);
    cmd.env_remove("XDG_RUNTIME_DIR")
        .env_remove("RUNTIME_DIRECTORY");
    let mut baton = sb.spawn(cmd);
    let status = baton.wait_exit(DEADLINE);
    let log = baton.log();
    println!("{log}");
    assert_eq!(status.code(), Some(77), "exit 77 (permission): {log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&*foreign.to_string_lossy()))
        .collect();
    assert_eq!(lines.len(), 1, "one line names the directory: {log}");
    assert!(
        lines[0].contains(&user.name),
        "the line names its owner {}: {}",
        user.name,
        lines[0]
    );
    assert_eq!(
        std::fs::read_dir(&foreign).unwrap().count(),
        0,
        "nothing created in the other user's directory"
    );
    assert!(http::get_fresh(sb.addr(), "/").is_err(), "nothing serves");
}

// ---------------------------------------------------------------------------------------------
// issue 20 row 6: a manager that does not drain its notify socket

#[test]
fn supervised_a_manager_that_stops_reading_never_blocks_the_supervisor() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    // The manager's socket, full before the service starts: nobody reads it.
    let stuck = sb.path("stuck-manager.sock");
    let manager = UnixDatagram::bind(&stuck).unwrap();
    let filler = UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    let mut queued = 0;
    while filler.send_to(b"STATUS=filler\n", &stuck).is_ok() {
        queued += 1;
        assert!(queued < 100_000, "the socket never filled");
    }
    println!("manager socket full after {queued} datagrams");
    assert!(queued > 0);

    sb.write_config(&sb.config("v1"));
    let mut cmd = sb.serve(&["--supervise"]);
    cmd.env("NOTIFY_SOCKET", &stuck);
    let mut baton = sb.spawn(cmd);
    let sup = baton.pid;
    assert_eq!(sb.wait_serving().text(), "v1");

    // A reload is passed on and the retired generation reaped, though nothing goes up.
    sb.write_config(&sb.config("v2"));
    assert!(procs::kill(sup, Signal::SIGHUP));
    common::wait_until("the reloaded generation to serve v2", DEADLINE, || {
        http::get_fresh(sb.addr(), "/")
            .ok()
            .filter(|r| r.text() == "v2")
    });
    common::wait_until("one generation left, no zombie", DEADLINE, || {
        let members = baton.members();
        let generations = members.iter().filter(|p| p.pid != sup).count();
        (generations == 1 && !members.iter().any(|p| p.is_zombie())).then_some(())
    });
    let log = baton.log();
    assert_eq!(
        log.matches("notify socket is full").count(),
        1,
        "one line when dropping begins: {log}"
    );
    // The manager reads again: said once, with how many notifications were dropped, and the
    // next notifications reach it.
    manager.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let mut drained = 0;
    while manager.recv(&mut buf).is_ok() {
        drained += 1;
    }
    assert!(drained >= queued, "read {drained} of the {queued} queued");
    manager.set_nonblocking(false).unwrap();
    manager
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    sb.write_config(&sb.config("v3"));
    assert!(procs::kill(sup, Signal::SIGHUP));
    common::wait_until(
        "READY=1 of the next generation at the manager",
        DEADLINE,
        || {
            let n = manager.recv(&mut buf).ok()?;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            text.lines().any(|l| l == "READY=1").then_some(())
        },
    );
    // The manager goes away (nobody bound to its socket): what cannot be passed on now is not
    // taken for a full socket.
    drop(manager);
    stop(&mut baton, sup);
    let log = baton.log();
    let again: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reads its notify socket again"))
        .collect();
    assert_eq!(again.len(), 1, "one line when it reads again: {log}");
    let dropped: u64 = again[0]
        .split("dropped=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no dropped= count: {}", again[0]));
    println!("the manager reads again: {dropped} notifications were dropped");
    assert!((1..1000).contains(&dropped), "{}", again[0]);
    assert_eq!(log.matches("notify socket is full").count(), 1, "{log}");
}

/// Whether there is a supervisor is decided once, at the first start: a reload whose new
/// configuration asks for one starts no supervisor (the successor has no supervisor above it and
/// must not become one); it serves as the main process, as its predecessor did.
#[test]
fn a_reload_that_turns_supervise_on_starts_no_supervisor() {
    let mut s = common::Options::new("v0")
        .config(|sb| {
            serde_json::json!({
                "listen": [sb.listen()],
                "handoff_socket": sb.handoff_socket(),
                "pid_file": sb.pid_file(),
                "response_body": "v0",
                "shutdown_timeout": "10s",
            })
        })
        .start();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.sb.config_path()).unwrap()).unwrap();
    cfg["supervise"] = true.into();
    cfg["response_body"] = "v1".into();
    s.sb.write_config(&cfg);
    let r = s.reload();
    assert_eq!(s.get(), "v1");
    let env = procs::environ(r.new);
    assert!(
        !env.iter().any(|e| e.starts_with("BATON_SUPERVISOR=")),
        "the successor {} is no supervised generation: {env:?}",
        r.new
    );
    assert!(
        procs::children_of(r.new).is_empty(),
        "the successor {} started a child (a generation 0?): {:?}\n{}",
        r.new,
        procs::children_of(r.new),
        s.baton.log()
    );
    let log = s.baton.log();
    assert!(!log.contains("supervisor:"), "{log}");
    s.stop();
}

// ---------------------------------------------------------------------------------------------
// issue 20 row 7: STATUS= bounded, so READY=1 always arrives whole

/// The usual config plus `n` Unix-socket listeners with long paths: a `STATUS=` naming them all
/// would be far over the 4 KiB a manager reads whole.
fn many_listeners(sb: &Sandbox, n: usize) -> serde_json::Value {
    std::fs::create_dir(sb.path("sockets")).unwrap();
    let mut listen = vec![sb.listen()];
    for i in 0..n {
        let path = sb.path(&format!(
            "sockets/listener-with-a-long-descriptive-name-{i:03}.sock"
        ));
        listen.push(format!("unix:{}", path.display()));
    }
    let mut cfg = sb.config("v1");
    cfg["listen"] = listen.into();
    cfg
}

/// The bytes of the datagram as sent: its lines, each with its newline.
fn datagram_len(n: &Notification) -> usize {
    n.lines.iter().map(|l| l.len() + 1).sum()
}

#[test]
fn ready_with_180_listeners_fits_one_datagram_alone_and_under_a_supervisor() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    sb.write_config(&many_listeners(&sb, 180));

    let mut alone = sb.spawn(sb.serve(&[]));
    let ready = alone.wait_ready(&sb.notify);
    let status = ready.get("STATUS").unwrap_or_default().to_owned();
    println!(
        "READY=1 of a process with 181 listeners: {} bytes, STATUS= {} bytes",
        datagram_len(&ready),
        status.len()
    );
    assert!(datagram_len(&ready) <= 4096, "{ready:?}");
    assert!(
        status.contains("… and ") && status.contains(" more"),
        "{status}"
    );
    assert!(
        status.ends_with("; generation 0; 0 open connections"),
        "{status}"
    );
    let from = sb.notify.len();
    let r = common::reload(&sb.notify, alone.pid);
    let promoted = sb
        .notify
        .all()
        .into_iter()
        .skip(from)
        .find(|n| n.pid == r.new && n.has("READY=1"))
        .expect("the successor's READY=1");
    assert!(datagram_len(&promoted) <= 4096, "{promoted:?}");
    common::sigterm_and_wait_gone(&sb, &mut alone, r.new);

    // Under a supervisor, whose own socket reads at most 4 KiB: READY=1 is passed on.
    let sb = Sandbox::new();
    sb.write_config(&many_listeners(&sb, 180));
    let mut baton = sb.spawn(command(&sb, Mode::Supervise));
    let sup = baton.pid;
    let ready = ready_from(&sb, &baton, sup, 0, "generation 0", generation(0));
    assert!(datagram_len(&ready) <= 4096, "{ready:?}");
    stop(&mut baton, sup);
}

// ---------------------------------------------------------------------------------------------
// the safe rules do not shut out the documented path: a hand-off socket in a shared /tmp
// (`/tmp/api.sock`): the supervisor's socket goes into baton's own `baton-<uid>/` there

#[test]
fn supervised_with_a_hand_off_socket_in_a_shared_sticky_directory_starts_in_a_private_one() {
    let sb = Sandbox::new();
    // Like /tmp with the article's /tmp/api.sock: sticky, writable by everyone.
    let shared = sb.path("shared-tmp");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let with_socket = |body: &str| {
        let mut cfg = sb.config(body);
        cfg["handoff_socket"] = shared.join("api.sock").to_string_lossy().into();
        cfg
    };
    sb.write_config(&with_socket("v1"));
    let mut baton = sb.spawn(command(&sb, Mode::Supervise));
    let sup = baton.pid;
    ready_from(&sb, &baton, sup, 0, "generation 0", generation(0));
    let private = shared.join(format!("baton-{}", nix::unistd::geteuid()));
    let names: Vec<String> = std::fs::read_dir(&shared)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [private.file_name().unwrap().to_string_lossy()],
        "only baton's private directory is made in the shared one"
    );
    assert_eq!(
        std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // (The hand-offs' own use of a shared directory is the runtime directory's module's.)
    assert_eq!(http::get_fresh(sb.addr(), "/").unwrap().text(), "v1");
    stop(&mut baton, sup);
    let left: Vec<String> = std::fs::read_dir(&private)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("supervisor."))
        .collect();
    assert!(
        left.is_empty(),
        "the supervisor's private directory is removed: {left:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// what the private socket hears: our user or root, and a MAINPID= only naming a process below

/// Sends `text` to the notify socket `path` with the credentials `pid`, `uid` stated explicitly
/// (root may state any: the kernel then shows the supervisor these as the sender's).
fn send_as(path: &str, pid: i32, uid: u32, text: &str) {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr, UnixCredentials};
    use std::os::fd::AsRawFd;
    let sock = UnixDatagram::unbound().unwrap();
    let creds = UnixCredentials::from(libc::ucred { pid, uid, gid: uid });
    let addr = UnixAddr::new(path).unwrap();
    sendmsg(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(text.as_bytes())],
        &[ControlMessage::ScmCredentials(&creds)],
        MsgFlags::empty(),
        Some(&addr),
    )
    .unwrap_or_else(|e| panic!("sending {text:?} to {path} as pid {pid}, uid {uid}: {e}"));
}

/// The supervisor hears the main generation only with our user's (or root's) credentials, and
/// follows a `MAINPID=` only to a process below it: a datagram bearing the main generation's pid
/// with another user's uid is dropped, and a `MAINPID=` naming a process outside the service is
/// refused, so the next `SIGHUP` still reloads the service and the named process is left alone.
#[test]
fn supervised_hears_no_other_user_and_follows_no_mainpid_outside_the_service() {
    let sb = Sandbox::new();
    sb.write_config(&sb.config("v1"));
    let mut baton = sb.spawn(command(&sb, Mode::Supervise));
    let sup = baton.pid;
    ready_from(&sb, &baton, sup, 0, "generation 0", generation(0));
    let main = common::wait_until("generation 0", DEADLINE, || {
        procs::children_of(sup).first().map(|p| p.pid)
    });
    let private = procs::environ(main)
        .into_iter()
        .find_map(|v| v.strip_prefix("NOTIFY_SOCKET=").map(str::to_owned))
        .expect("generation 0's NOTIFY_SOCKET");
    let me = nix::unistd::geteuid().as_raw();
    let nobody = 65534;
    assert_ne!(me, nobody);
    // A process of ours, outside the service.
    let mut stranger =
        common::reaper::spawn_registered(Command::new("sleep").arg("600")).expect("sleep");
    let stranger_pid = stranger.id() as i32;

    let from = sb.notify.len();
    send_as(&private, main, nobody, "STATUS=sent by another user\n");
    send_as(&private, main, me, &format!("MAINPID={stranger_pid}\n"));
    send_as(&private, main, me, "STATUS=the last one\n");
    sb.notify
        .wait_for_after(from, DEADLINE, "the last STATUS= passed on", |n| {
            n.pid == sup && n.get("STATUS") == Some("the last one")
        });
    assert!(
        !sb.notify
            .all()
            .iter()
            .any(|n| n.get("STATUS") == Some("sent by another user")),
        "another user's datagram was passed on:\n{}",
        sb.notify.dump()
    );

    sb.write_config(&sb.config("v2"));
    let from = sb.notify.len();
    assert!(procs::kill(sup, Signal::SIGHUP), "SIGHUP {sup}");
    ready_from(&sb, &baton, sup, from, "generation 1", generation(1));
    assert_eq!(http::get_fresh(sb.addr(), "/").unwrap().text(), "v2");
    let left_alone = stranger.try_wait().expect("the stranger").is_none();
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert!(left_alone, "the process MAINPID= named was signalled");
    let log = baton.log();
    assert!(
        log.contains("MAINPID= does not name a process of ours"),
        "{log}"
    );
    stop(&mut baton, sup);
}

/// The supervisor runs as the unprivileged user of its service, as packaged (`User=baton`): it
/// hears its generations (processes of its own user, not root) and passes their notifications
/// on, so a reload by `SIGHUP` is followed as under root.
#[test]
fn supervised_as_the_services_own_unprivileged_user_hears_its_generations() {
    use std::os::unix::process::CommandExt;
    let user = OtherUser::create().expect("a second user: the tests run as root, as in CI");
    let sb = Sandbox::new();
    sb.write_config(&sb.config("v1"));
    // The service user owns its directories, as systemd's RuntimeDirectory= would give it.
    for dir in [sb.dir().to_owned(), sb.path("xdg")] {
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
    }
    std::fs::set_permissions(sb.notify.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = sb.serve(&["--supervise"]);
    cmd.uid(user.uid).gid(user.gid);
    let mut baton = sb.spawn(cmd);
    let sup = baton.pid;
    ready_from(&sb, &baton, sup, 0, "generation 0", generation(0));
    sb.write_config(&sb.config("v2"));
    let from = sb.notify.len();
    assert!(procs::kill(sup, Signal::SIGHUP), "SIGHUP {sup}");
    ready_from(&sb, &baton, sup, from, "generation 1", generation(1));
    assert_eq!(http::get_fresh(sb.addr(), "/").unwrap().text(), "v2");
    stop(&mut baton, sup);
}
