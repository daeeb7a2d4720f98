//! Story: baton runs where no systemd follows `MAINPID=`: as PID 1 of a container, and under a
//! supervisor that follows one pid (supervisord, runit, s6). The container mechanism is the real
//! one, a PID namespace (`unshare --pid --fork --mount-proc`, as root): baton is its PID 1, and
//! when PID 1 exits the kernel kills everything in it. The operator reloads with a signal to the
//! pid they know (the namespace's PID 1, or the supervised pid), under load, and stops it with
//! SIGTERM, as `docker kill -s HUP` and `docker stop` do. Every story runs twice: as PID 1, and
//! with `--supervise` (or `BATON_SUPERVISE=1`, or `"supervise": true`) when not PID 1, where the
//! supervisor's pid must stay, as supervisord would see it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::load::{body_is_one_of, Load};
use common::{baton_exe, http, procs, Baton, HeldSuccessor, Notification, Sandbox, DEADLINE};
use nix::sys::signal::Signal;

/// How `--supervise` is asked for when baton is not PID 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Flag,
    Env,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// PID 1 of a new PID namespace.
    Pid1,
    /// Not PID 1, supervising because asked.
    Supervise(Ask),
}

/// A running service: the spawned process group and the supervisor's pid (as seen from here).
struct Service {
    baton: Baton,
    mode: Mode,
    /// The supervisor: PID 1 of the namespace, or the process we started.
    sup: i32,
}

fn config(sb: &Sandbox, mode: Mode, body: &str, extra: &[(&str, &str)]) -> serde_json::Value {
    let mut cfg = sb.config(body);
    if mode == Mode::Supervise(Ask::File) {
        cfg["supervise"] = true.into();
    }
    for (k, v) in extra {
        cfg[*k] = (*v).into();
    }
    cfg
}

/// `baton --config …` as PID 1 of a new PID namespace, or asking to supervise.
fn command(sb: &Sandbox, mode: Mode, args: &[&str]) -> Command {
    match mode {
        Mode::Pid1 => {
            let mut cmd = sb.in_new_pid_namespace(sb.exe());
            cmd.arg("--config").arg(sb.config_path()).args(args);
            cmd
        }
        Mode::Supervise(Ask::Flag) => {
            let mut cmd = sb.serve(&["--supervise"]);
            cmd.args(args);
            cmd
        }
        Mode::Supervise(Ask::Env) => {
            let mut cmd = sb.serve(args);
            cmd.env("BATON_SUPERVISE", "1");
            cmd
        }
        Mode::Supervise(Ask::File) => sb.serve(args),
    }
}

/// The pid a process has in its own (innermost) PID namespace.
fn ns_pid(host_pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

impl Service {
    fn start(sb: &Sandbox, mode: Mode, body: &str, cfg_extra: &[(&str, &str)]) -> Service {
        sb.write_config(&config(sb, mode, body, cfg_extra));
        Service::launch(sb, mode, command(sb, mode, &[]))
    }

    /// Spawns `cmd` (made by [`command`]) and waits for generation 0.
    fn launch(sb: &Sandbox, mode: Mode, cmd: Command) -> Service {
        let baton = sb.spawn(cmd);
        let sup = match mode {
            Mode::Pid1 => common::wait_until("the namespace's PID 1", DEADLINE, || {
                procs::children_of(baton.pid).first().map(|p| p.pid)
            }),
            Mode::Supervise(_) => baton.pid,
        };
        if mode == Mode::Pid1 {
            assert_eq!(ns_pid(sup), Some(1), "baton is PID 1 of its namespace");
        }
        let s = Service { baton, mode, sup };
        s.wait_generation_ready(sb, 0, 0);
        // The process we know is not the one serving: generation 0 is its child.
        let generation0 = s.wait_settled();
        assert_eq!(procs::stat(generation0).map(|p| p.ppid), Some(sup));
        s
    }

    /// `READY=1` passed on by the supervisor (from its own pid) with the status of generation `g`.
    fn wait_generation_ready(&self, sb: &Sandbox, from: usize, g: u64) -> Notification {
        let sup = self.sup;
        let generation = format!("; generation {g};");
        let n = sb.notify.try_wait_for_after(from, DEADLINE, |n| {
            n.pid == sup
                && n.has("READY=1")
                && n.get("STATUS")
                    .is_some_and(|s| s.contains(&generation) || s.starts_with("reload failed"))
        });
        match n {
            Some(n) if n.get("STATUS").is_some_and(|s| s.contains(&generation)) => n,
            other => panic!(
                "no READY=1 of generation {g} from the supervisor {sup}: {other:?}\nnotifications:\n{}\nlog:\n{}",
                sb.notify.dump(),
                self.baton.log()
            ),
        }
    }

    /// Live processes of the service other than the supervisor (and `unshare`): the generations.
    fn generations(&self) -> Vec<i32> {
        self.baton
            .live_members()
            .into_iter()
            .filter(|&p| p != self.sup && p != self.baton.pid)
            .collect()
    }

    fn zombies(&self) -> Vec<procs::ProcStat> {
        self.baton
            .members()
            .into_iter()
            .filter(|p| p.is_zombie())
            .collect()
    }

    /// The main generation as seen from here: the PID file names it in its own namespace.
    fn main_pid(&self, sb: &Sandbox) -> Option<i32> {
        let named: i32 = std::fs::read_to_string(sb.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        match self.mode {
            Mode::Pid1 => self
                .generations()
                .into_iter()
                .find(|&p| ns_pid(p) == Some(named)),
            Mode::Supervise(_) => Some(named).filter(|&p| procs::is_alive(p)),
        }
    }

    /// Waits until the PID file names a live generation other than `not`.
    fn wait_main_other_than(&self, sb: &Sandbox, not: Option<i32>) -> i32 {
        common::wait_until(
            "the PID file to name a new main generation",
            DEADLINE,
            || self.main_pid(sb).filter(|&p| Some(p) != not),
        )
    }

    /// SIGHUP to `target`; waits for the next generation's `READY=1`. Returns the time it took.
    fn reload(&self, sb: &Sandbox, target: i32, g: u64) -> Duration {
        let from = sb.notify.len();
        let t0 = Instant::now();
        assert!(procs::kill(target, Signal::SIGHUP), "SIGHUP {target}");
        let n = self.wait_generation_ready(sb, from, g);
        n.at.saturating_duration_since(t0)
    }

    /// Exactly one live generation, no zombie anywhere in the service: waits for it (retired
    /// generations drain, then are reaped), then returns the generation.
    fn wait_settled(&self) -> i32 {
        let settled = common::try_wait_until(DEADLINE, || {
            let g = self.generations();
            (g.len() == 1 && self.zombies().is_empty()).then(|| g[0])
        });
        settled.unwrap_or_else(|| {
            panic!(
                "not settled to one generation without zombies: members {:?}\nlog:\n{}",
                self.baton.members(),
                self.baton.log()
            )
        })
    }

    /// The supervisor holds no listening socket.
    fn assert_supervisor_holds_no_listener(&self, port: u16) {
        let held = procs::listening_tcp_of(self.sup);
        assert!(
            held.is_empty(),
            "the supervisor {} holds listeners: {held:?}",
            self.sup
        );
        let on_port = procs::listening_inodes_on_port(port);
        let sup_sockets: Vec<u64> = procs::socket_fds(self.sup)
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        assert!(
            on_port.iter().all(|i| !sup_sockets.contains(i)),
            "the supervisor holds the listener of port {port}"
        );
    }

    /// SIGTERM to the supervisor; waits for everything to exit. Returns the time and the status.
    fn stop(&mut self, sb: &Sandbox) -> (Duration, i32) {
        let from = sb.notify.len();
        let t0 = Instant::now();
        assert!(procs::kill(self.sup, Signal::SIGTERM));
        let sup = self.sup;
        sb.notify
            .wait_for_after(from, DEADLINE, "STOPPING=1 passed on", |n| {
                n.pid == sup && n.has("STOPPING=1")
            });
        let st = self.baton.wait_exit(DEADLINE);
        let took = t0.elapsed();
        assert!(
            self.baton.wait_group_gone(DEADLINE),
            "left after the stop: {:?}",
            self.baton.members()
        );
        (took, st.code().unwrap_or(-1))
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Pid1 => "PID 1",
        Mode::Supervise(Ask::Flag) => "--supervise",
        Mode::Supervise(Ask::Env) => "BATON_SUPERVISE=1",
        Mode::Supervise(Ask::File) => "\"supervise\": true",
    }
}

// ---------------------------------------------------------------------------------------------
// 20 reloads under load

const RELOADS: u64 = 20;

fn reloads_under_load(mode: Mode) {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    let body = "hello from a container";
    let mut svc = Service::start(&sb, mode, body, &[("shutdown_timeout", "10s")]);
    svc.assert_supervisor_holds_no_listener(sb.port);
    let mut main = svc.wait_main_other_than(&sb, None);
    let mut mains = vec![main];

    let load = Load::start(
        sb.addr(),
        4,
        4,
        Duration::from_millis(1),
        body_is_one_of(&[body]),
    );
    load.wait_more_ok(100, DEADLINE);

    let mut times = Vec::new();
    for g in 1..=RELOADS {
        times.push(svc.reload(&sb, svc.sup, g));
        main = svc.wait_main_other_than(&sb, Some(main));
        assert!(!mains.contains(&main), "generation {g} reuses pid {main}");
        mains.push(main);
        load.wait_more_ok(100, DEADLINE);
        if load.failed() > 0 {
            panic!("failed requests after reload {g}: stopping early");
        }
    }
    let report = load.stop();
    let (median, max) = common::median_max(times);
    println!(
        "{}: {RELOADS} reloads by SIGHUP to the supervisor under load: {} requests ok, {} failed, {:?}",
        mode_name(mode),
        report.ok,
        report.failed,
        report.elapsed
    );
    println!(
        "  SIGHUP -> READY=1 of the new generation (passed on): median {median:?}, max {max:?}"
    );
    report.assert_no_failures();

    // One serving generation, the last one; no zombie in the namespace; the supervisor stayed.
    let last = svc.wait_settled();
    assert_eq!(last, main, "the remaining generation is the last main one");
    assert!(procs::is_alive(svc.sup), "the supervisor is still there");
    let inodes = procs::listening_inodes_on_port(sb.port);
    assert_eq!(inodes.len(), 1, "{inodes:?}");
    assert_eq!(
        procs::holders_of(svc.baton.pid, inodes[0]),
        vec![main],
        "exactly the last generation holds the listener"
    );
    svc.assert_supervisor_holds_no_listener(sb.port);
    // Nobody else was told about generations: never MAINPID= upward.
    assert!(
        sb.notify
            .all()
            .iter()
            .all(|n| n.pid == svc.sup && n.mainpid().is_none()),
        "only the supervisor speaks upward, and never MAINPID=:\n{}",
        sb.notify.dump()
    );

    let (took, code) = svc.stop(&sb);
    println!("  SIGTERM to the supervisor after the reloads: exit {code} after {took:?}");
    assert_eq!(code, 0, "{}", svc.baton.log());
    assert!(procs::listening_inodes_on_port(sb.port).is_empty());
    assert!(!svc.baton.log().contains("panicked"), "{}", svc.baton.log());
}

#[test]
fn pid1_twenty_reloads_under_load_lose_no_request() {
    reloads_under_load(Mode::Pid1);
}

#[test]
fn supervised_twenty_reloads_under_load_lose_no_request() {
    reloads_under_load(Mode::Supervise(Ask::Flag));
}

// ---------------------------------------------------------------------------------------------
// a failing successor

fn failing_successor(mode: Mode) {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    let svc = Service::start(&sb, mode, "v1", &[("shutdown_timeout", "5s")]);
    let main = svc.wait_main_other_than(&sb, None);
    let load = Load::start(
        sb.addr(),
        2,
        2,
        Duration::from_millis(2),
        body_is_one_of(&["v1", "v2"]),
    );
    load.wait_more_ok(50, DEADLINE);

    sb.write_config_text(r#"{"listen": ["not an address"]}"#);
    let from = sb.notify.len();
    assert!(procs::kill(svc.sup, Signal::SIGHUP));
    let sup = svc.sup;
    let n = sb
        .notify
        .wait_for_after(from, DEADLINE, "READY=1 after the failed reload", |n| {
            n.pid == sup && n.has("READY=1")
        });
    let status = n.get("STATUS").unwrap_or_default().to_string();
    println!("{}: failed reload: {status}", mode_name(mode));
    assert!(
        status.starts_with("reload failed: ") && status.contains("not an address"),
        "{status}"
    );
    load.wait_more_ok(50, DEADLINE);
    assert!(procs::is_alive(svc.sup), "the supervisor serves on");
    assert_eq!(
        svc.wait_settled(),
        main,
        "the old generation serves on, and the failed successor is gone"
    );
    assert_eq!(svc.main_pid(&sb), Some(main));

    // Fixed: the next reload works, and reaches the same main generation.
    sb.write_config(&config(&sb, mode, "v2", &[("shutdown_timeout", "5s")]));
    svc.reload(&sb, svc.sup, 1);
    let new = svc.wait_main_other_than(&sb, Some(main));
    load.wait_more_ok(50, DEADLINE);
    load.stop_without_failures("under load");
    assert_eq!(svc.wait_settled(), new);
    assert_eq!(http::get_fresh(sb.addr(), "/").unwrap().text(), "v2");
    let mut svc = svc;
    let (_, code) = svc.stop(&sb);
    assert_eq!(code, 0);
}

#[test]
fn pid1_a_failing_successor_leaves_pid1_and_the_old_generation_serving() {
    failing_successor(Mode::Pid1);
}

#[test]
fn supervised_a_failing_successor_leaves_the_old_generation_serving() {
    failing_successor(Mode::Supervise(Ask::File));
}

// ---------------------------------------------------------------------------------------------
// stop

const SHUTDOWN: Duration = Duration::from_secs(3);

fn stop_while_serving(mode: Mode) {
    let sb = Sandbox::new();
    let mut svc = Service::start(&sb, mode, "v1", &[("shutdown_timeout", "3s")]);
    let main = svc.wait_main_other_than(&sb, None);
    // A request in flight: its head is not complete when the stop comes.
    let mut conn = http::RawConn::connect(sb.addr());
    conn.send(b"GET / HTTP/1.1\r\nHost: baton.test\r\n")
        .unwrap();
    let client_port = conn.stream.local_addr().unwrap().port();
    common::wait_until("the request to be accepted", DEADLINE, || {
        procs::connection_owner(svc.baton.pid, sb.port, client_port).filter(|&p| p == main)
    });

    let from = sb.notify.len();
    let t0 = Instant::now();
    assert!(procs::kill(svc.sup, Signal::SIGTERM));
    let sup = svc.sup;
    sb.notify
        .wait_for_after(from, DEADLINE, "STOPPING=1 passed on", |n| {
            n.pid == sup && n.has("STOPPING=1")
        });
    // Draining: the request in flight is finished and answered.
    conn.send(b"\r\n").unwrap();
    let resp = conn.response().expect("the request in flight is answered");
    assert_eq!(resp.status, 200);
    let st = svc.baton.wait_exit(SHUTDOWN + DEADLINE);
    let took = t0.elapsed();
    println!(
        "{}: SIGTERM while serving (a request in flight, answered{}): {} after {took:?} (shutdown_timeout 3s)",
        mode_name(mode),
        if resp.closes() { " with Connection: close" } else { "" },
        common::describe(st)
    );
    assert_eq!(st.code(), Some(0), "{}", svc.baton.log());
    assert!(
        svc.baton.wait_group_gone(DEADLINE),
        "{:?}",
        svc.baton.members()
    );
    assert!(procs::listening_inodes_on_port(sb.port).is_empty());
}

#[test]
fn pid1_sigterm_while_serving_drains_and_exits_0() {
    stop_while_serving(Mode::Pid1);
}

#[test]
fn supervised_sigterm_while_serving_drains_and_exits_0() {
    stop_while_serving(Mode::Supervise(Ask::Env));
}

fn stop_during_handoff(mode: Mode) {
    let sb = Sandbox::new();
    let mut svc = Service::start(
        &sb,
        mode,
        "v1",
        &[("shutdown_timeout", "3s"), ("child_timeout", "15s")],
    );
    let main = svc.wait_main_other_than(&sb, None);
    let mut keep = http::Client::new(sb.addr());
    assert_eq!(keep.get("/").unwrap().text(), "v1");

    // The successor hangs at its very start: the hand-off stays in flight.
    let _held = HeldSuccessor::install(&sb);
    let from = sb.notify.len();
    assert!(procs::kill(svc.sup, Signal::SIGHUP));
    let sup = svc.sup;
    sb.notify
        .wait_for_after(from, DEADLINE, "RELOADING=1 passed on", |n| {
            n.pid == sup && n.has("RELOADING=1")
        });
    let successor = common::wait_until("the successor process", DEADLINE, || {
        procs::children_of(main).first().map(|p| p.pid)
    });

    let t0 = Instant::now();
    assert!(procs::kill(svc.sup, Signal::SIGTERM));
    let st = svc.baton.wait_exit(SHUTDOWN + DEADLINE);
    let took = t0.elapsed();
    println!(
        "{}: SIGTERM during a hand-off: {} after {took:?} (shutdown_timeout 3s)",
        mode_name(mode),
        common::describe(st)
    );
    assert_eq!(st.code(), Some(0), "{}", svc.baton.log());
    assert!(
        svc.baton.wait_group_gone(DEADLINE),
        "{:?}",
        svc.baton.members()
    );
    assert!(
        !procs::exists(successor),
        "the successor {successor} survived"
    );
    assert!(
        sb.notify
            .all()
            .iter()
            .any(|n| n.pid == sup && n.has("STOPPING=1")),
        "{}",
        sb.notify.dump()
    );
    assert!(procs::listening_inodes_on_port(sb.port).is_empty());
}

#[test]
fn pid1_sigterm_during_a_handoff_stops_everything_with_exit_0() {
    stop_during_handoff(Mode::Pid1);
}

#[test]
fn supervised_sigterm_during_a_handoff_stops_everything_with_exit_0() {
    stop_during_handoff(Mode::Supervise(Ask::Flag));
}

// ---------------------------------------------------------------------------------------------
// other ways to reload

/// `baton reload` as an operator runs it where the service runs (inside the namespace for PID 1).
fn baton_reload(sb: &Sandbox, svc: &Service, extra: &[&str]) -> (i32, String) {
    let mut cmd = match svc.mode {
        Mode::Pid1 => {
            let mut cmd = sb.command("nsenter");
            cmd.arg("-t")
                .arg(svc.sup.to_string())
                .args(["--pid", "--mount", "--"])
                .arg(baton_exe());
            cmd
        }
        Mode::Supervise(_) => sb.baton(),
    };
    cmd.args(["reload", "--config"])
        .arg(sb.config_path())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = common::reaper::output(&mut cmd).expect("baton reload");
    let text = common::text_of(&out);
    (out.status.code().unwrap_or(-1), text)
}

fn other_ways_to_reload(mode: Mode) {
    let sb = Sandbox::new();
    let mut svc = Service::start(&sb, mode, "v1", &[("shutdown_timeout", "5s")]);
    let mut main = svc.wait_main_other_than(&sb, None);

    // kill -1 to the main generation itself: it hands over, the supervisor follows.
    svc.reload(&sb, main, 1);
    main = svc.wait_main_other_than(&sb, Some(main));
    // So that the next SIGHUP to the supervisor reaches the new main generation.
    svc.reload(&sb, svc.sup, 2);
    main = svc.wait_main_other_than(&sb, Some(main));

    // `baton reload`: the PID file names the main generation, as without a supervisor.
    let (code, out) = baton_reload(&sb, &svc, &[]);
    println!("{}: baton reload: {}", mode_name(mode), out.trim());
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("reloaded: "), "{out}");
    main = svc.wait_main_other_than(&sb, Some(main));
    // `baton reload --pid <supervisor>` waits for the outcome of the generation it reached.
    let sup_pid = match mode {
        Mode::Pid1 => 1,
        Mode::Supervise(_) => svc.sup,
    };
    let (code, out) = baton_reload(&sb, &svc, &["--pid", &sup_pid.to_string()]);
    println!(
        "{}: baton reload --pid {sup_pid}: {}",
        mode_name(mode),
        out.trim()
    );
    assert_eq!(code, 0, "{out}");
    // The retired process it reports is the main generation, never the supervisor.
    let retired = out
        .trim()
        .strip_prefix("reloaded: ")
        .and_then(|r| r.split_once(" -> "))
        .map(|(old, _)| old.to_owned());
    assert_ne!(retired.as_deref(), Some(&*sup_pid.to_string()), "{out}");
    main = svc.wait_main_other_than(&sb, Some(main));
    svc.wait_generation_ready(&sb, 0, 4);
    assert_eq!(svc.wait_settled(), main);
    assert!(procs::is_alive(svc.sup));
    let (_, code) = svc.stop(&sb);
    assert_eq!(code, 0);
}

#[test]
fn pid1_baton_reload_from_outside_the_namespace_is_carried_out_and_answered() {
    // What a host-side script or `docker exec`-style tooling does: the supervisor's host pid.
    let sb = Sandbox::new();
    let mut svc = Service::start(&sb, Mode::Pid1, "v1", &[("shutdown_timeout", "5s")]);
    let main = svc.wait_main_other_than(&sb, None);
    let mut cmd = sb.baton();
    cmd.args(["reload", "--config"])
        .arg(sb.config_path())
        .args(["--pid", &svc.sup.to_string(), "--timeout", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = common::reaper::output(&mut cmd).expect("baton reload");
    let text = common::text_of(&out);
    println!(
        "from the host: baton reload --pid {}: {}",
        svc.sup,
        text.trim()
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    let next = svc.wait_main_other_than(&sb, Some(main));
    assert_eq!(
        text.trim(),
        format!("reloaded: {main} -> {next}"),
        "answered with the host's pids"
    );
    let (_, code) = svc.stop(&sb);
    assert_eq!(code, 0);
}

#[test]
fn pid1_kill_1_of_the_main_generation_and_baton_reload_work() {
    other_ways_to_reload(Mode::Pid1);
}

#[test]
fn supervised_kill_1_of_the_main_generation_and_baton_reload_work() {
    other_ways_to_reload(Mode::Supervise(Ask::Env));
}

// ---------------------------------------------------------------------------------------------
// socket activation into a container (podman, crun: LISTEN_PID=1)

#[test]
fn pid1_socket_activated_listener_goes_to_generation_0_not_the_supervisor() {
    use std::os::fd::AsRawFd;
    let sb = Sandbox::new();
    let listener = std::net::TcpListener::bind(sb.addr()).expect("bind");
    let inode = procs::listening_inodes_on_port(sb.port)[0];
    sb.write_config(&serde_json::json!({
        "handoff_socket": sb.handoff_socket(),
        "pid_file": sb.pid_file(),
        "response_body": "activated",
    }));
    let mut cmd = command(&sb, Mode::Pid1, &[]);
    cmd.env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "web");
    common::place_at_fd3(&mut cmd, listener.as_raw_fd());
    let baton = sb.spawn(cmd);
    drop(listener);
    let sup = common::wait_until("the namespace's PID 1", DEADLINE, || {
        procs::children_of(baton.pid).first().map(|p| p.pid)
    });
    let mut svc = Service {
        baton,
        mode: Mode::Pid1,
        sup,
    };
    let ready = svc.wait_generation_ready(&sb, 0, 0);
    let status = ready.get("STATUS").unwrap_or_default().to_string();
    println!("socket-activated PID 1: {status}");
    assert!(status.contains("(systemd)"), "{status}");
    svc.assert_supervisor_holds_no_listener(sb.port);
    assert_eq!(http::get_fresh(sb.addr(), "/").unwrap().text(), "activated");
    svc.reload(&sb, sup, 1);
    let main = svc.wait_settled();
    let holders: Vec<i32> = procs::holders_of(svc.baton.pid, inode)
        .into_iter()
        .filter(|&p| p != svc.baton.pid) // unshare itself keeps what it was given
        .collect();
    assert_eq!(
        holders,
        vec![main],
        "the passed socket, now in generation 1"
    );
    let (_, code) = svc.stop(&sb);
    assert_eq!(code, 0);
}

/// PID 1 started with socket activation for itself (`LISTEN_PID=1`, `LISTEN_FDS=count`,
/// `LISTEN_FDNAMES=names`, `fds` placed at 3, 4, …) that baton cannot serve: it must refuse to
/// start, as without a supervisor, with exit code 78 and exactly one error line, returned.
fn pid1_refuses_activation(
    sb: &Sandbox,
    count: usize,
    names: &str,
    fds: &[std::os::fd::RawFd],
    what: &str,
) -> String {
    sb.write_config(&serde_json::json!({
        "handoff_socket": sb.handoff_socket(),
        "pid_file": sb.pid_file(),
    }));
    let mut cmd = command(sb, Mode::Pid1, &[]);
    cmd.env("LISTEN_PID", "1")
        .env("LISTEN_FDS", count.to_string())
        .env("LISTEN_FDNAMES", names);
    common::place_at_fds(&mut cmd, fds);
    let mut baton = sb.spawn(cmd);
    let st = baton.wait_exit(DEADLINE);
    let log = baton.log();
    println!("PID 1 {what}: {}", common::describe(st));
    assert_eq!(st.code(), Some(78), "{log}");
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(refusals.len(), 1, "{log}");
    assert!(baton.wait_group_gone(DEADLINE));
    refusals[0].to_owned()
}

/// A runtime that passes PID 1 a descriptor baton cannot serve beside the listener (here a UDP
/// socket, as a socket unit with `ListenDatagram=` would): the start fails as it does without a
/// supervisor, with one line naming the descriptor and exit code 78 (a bad configuration), and
/// the container ends with that code instead of serving without the socket it was given.
#[test]
fn pid1_given_a_datagram_socket_beside_its_listener_refuses_to_start_with_exit_78() {
    use std::os::fd::AsRawFd;
    let sb = Sandbox::new();
    let listener = std::net::TcpListener::bind(sb.addr()).expect("bind");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let refusal = pid1_refuses_activation(
        &sb,
        2,
        "web:dgram",
        &[listener.as_raw_fd(), udp.as_raw_fd()],
        "given a listener and a UDP socket",
    );
    assert!(
        refusal.contains("fd 4 (dgram)") && refusal.contains("not a stream socket"),
        "{refusal}"
    );
}

/// `LISTEN_FDS` counting one descriptor more than the runtime passed: refused as without a
/// supervisor, one line naming the missing descriptor, exit code 78.
#[test]
fn pid1_told_of_a_descriptor_it_was_not_given_refuses_to_start_with_exit_78() {
    use std::os::fd::AsRawFd;
    let sb = Sandbox::new();
    let listener = std::net::TcpListener::bind(sb.addr()).expect("bind");
    let refusal = pid1_refuses_activation(
        &sb,
        2,
        "web:missing",
        &[listener.as_raw_fd()],
        "told of fd 4, given only fd 3",
    );
    assert!(
        refusal.contains("fd 4 (missing)") && refusal.contains("not open"),
        "{refusal}"
    );
}

/// The same runtime mistake (`LISTEN_FDS=2`, only fd 3 passed) with a library app as PID 1
/// (`examples/container.rs`: `baton_server::supervise` first, and no check of the passed numbers
/// by the command before it). The supervisor hands generation 0 only what it was passed and is
/// listening, never a descriptor of its own that took the free number after it looked (its
/// signalfd is the next it opens). Generation 0 cannot serve with fd 4 missing and refuses with
/// one line and exit code 78, which the container ends with; PID 1 itself does not crash.
#[test]
fn pid1_a_library_app_told_of_a_descriptor_it_was_not_given_ends_with_generation_0s_failure() {
    use std::os::fd::AsRawFd;
    let sb = Sandbox::new();
    let listener = std::net::TcpListener::bind(sb.addr()).expect("bind");
    let mut cmd = sb.in_new_pid_namespace(common::examples::example("container"));
    cmd.env("BATON_HANDOFF_SOCKET", sb.handoff_socket())
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "web:missing");
    common::place_at_fds(&mut cmd, &[listener.as_raw_fd()]);
    let mut container = sb.spawn(cmd);
    drop(listener);
    let st = container.wait_exit(DEADLINE);
    let log = container.log();
    println!(
        "library app as PID 1, told of fd 4, given only fd 3: {}",
        common::describe(st)
    );
    // Generation 0's refusal names the descriptor: in the app, number 4 is its runtime's own
    // descriptor, refused as not a socket and left alone (not closed under the runtime).
    assert!(
        log.lines()
            .any(|l| l.contains("fd 4 (missing)") && l.contains("not a socket")),
        "{log}"
    );
    assert_eq!(
        st.code(),
        Some(78),
        "the container must end with generation 0's refusal (a bad configuration), not with \
         PID 1 killed or an abort: {}\n{log}",
        common::describe(st)
    );
    assert!(container.wait_group_gone(DEADLINE));
}

// ---------------------------------------------------------------------------------------------
// under systemd

/// A script named `systemd` that runs its arguments as a child: to baton, its parent is systemd.
fn fake_manager(dir: &Path, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, "#!/bin/sh\n\"$@\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn supervise_is_ignored_under_systemd_and_honoured_under_another_supervisor() {
    let sb = Sandbox::new();
    sb.write_config(&sb.config("v1"));
    let systemd = fake_manager(sb.dir(), "systemd");
    let mut cmd = sb.command(&systemd);
    cmd.arg(baton_exe())
        .args(["--supervise", "--config"])
        .arg(sb.config_path())
        .env("INVOCATION_ID", "6f1c1d0e0c3b4b6e9b2f0a1d2c3e4f50");
    let baton = sb.spawn(cmd);
    let server = common::wait_until("baton under the fake systemd", DEADLINE, || {
        procs::children_of(baton.pid).first().map(|p| p.pid)
    });
    // It serves itself: READY=1 from its own pid, and it hands over with MAINPID= as always.
    sb.notify
        .wait_for(DEADLINE, "READY=1 from baton itself", |n| {
            n.pid == server && n.has("READY=1")
        });
    assert!(
        procs::children_of(server).is_empty(),
        "no generation under a supervisor"
    );
    let r = common::reload(&sb.notify, server);
    println!("under systemd: {} -> {}", r.old, r.new);
    assert!(
        baton.log().contains("supervise ignored"),
        "one warning line: {}",
        baton.log()
    );
    drop(baton);

    // Under supervisord that itself runs as a systemd service: INVOCATION_ID is inherited, the
    // parent is not systemd: supervised.
    let sb = Sandbox::new();
    sb.write_config(&sb.config("v1"));
    let supervisord = fake_manager(sb.dir(), "supervisord");
    let mut cmd = sb.command(&supervisord);
    cmd.arg(baton_exe())
        .args(["--supervise", "--config"])
        .arg(sb.config_path())
        .env("INVOCATION_ID", "6f1c1d0e0c3b4b6e9b2f0a1d2c3e4f50");
    let baton = sb.spawn(cmd);
    let sup = common::wait_until("baton under the fake supervisord", DEADLINE, || {
        procs::children_of(baton.pid).first().map(|p| p.pid)
    });
    let svc = Service {
        baton,
        mode: Mode::Supervise(Ask::Flag),
        sup,
    };
    svc.wait_generation_ready(&sb, 0, 0);
    let generation0 = svc.wait_settled();
    assert_ne!(generation0, sup);
    assert!(!svc.baton.log().contains("supervise ignored"));
    // A SIGTERM to the supervisor stops the service and only it: the manager above it, in the
    // same process group, sees it exit 0.
    let mut svc = svc;
    assert!(procs::kill(sup, Signal::SIGTERM));
    let st = svc.baton.wait_exit(DEADLINE);
    assert_eq!(
        st.code(),
        Some(0),
        "the manager: {}\n{}",
        common::describe(st),
        svc.baton.log()
    );
    assert!(
        svc.baton.wait_group_gone(DEADLINE),
        "{:?}",
        svc.baton.members()
    );
}

// ---------------------------------------------------------------------------------------------
// plain `docker run`: no NOTIFY_SOCKET at all

#[test]
fn pid1_without_a_notify_socket_reloads_and_stops() {
    let sb = Sandbox::new();
    sb.write_config(&config(
        &sb,
        Mode::Pid1,
        "v1",
        &[("shutdown_timeout", "3s")],
    ));
    let mut cmd = command(&sb, Mode::Pid1, &[]);
    cmd.env_remove("NOTIFY_SOCKET");
    let baton = sb.spawn(cmd);
    let sup = common::wait_until("the namespace's PID 1", DEADLINE, || {
        procs::children_of(baton.pid).first().map(|p| p.pid)
    });
    let mut svc = Service {
        baton,
        mode: Mode::Pid1,
        sup,
    };
    assert_eq!(sb.wait_serving().text(), "v1");
    let mut main = svc.wait_main_other_than(&sb, None);
    for (g, body) in [(1, "v2"), (2, "v3")] {
        sb.write_config(&config(
            &sb,
            Mode::Pid1,
            body,
            &[("shutdown_timeout", "3s")],
        ));
        let t0 = Instant::now();
        assert!(procs::kill(sup, Signal::SIGHUP));
        main = svc.wait_main_other_than(&sb, Some(main));
        common::wait_until(&format!("{body} to be served"), DEADLINE, || {
            http::get_fresh(sb.addr(), "/")
                .ok()
                .filter(|r| r.text() == body)
        });
        println!(
            "PID 1 without NOTIFY_SOCKET: reload {g} served after {:?}",
            t0.elapsed()
        );
        assert_eq!(svc.wait_settled(), main);
    }
    assert!(sb.notify.all().is_empty(), "{}", sb.notify.dump());
    let t0 = Instant::now();
    assert!(procs::kill(sup, Signal::SIGTERM));
    let st = svc.baton.wait_exit(SHUTDOWN + DEADLINE);
    println!(
        "PID 1 without NOTIFY_SOCKET: SIGTERM: {} after {:?}",
        common::describe(st),
        t0.elapsed()
    );
    assert_eq!(st.code(), Some(0), "{}", svc.baton.log());
    assert!(svc.baton.wait_group_gone(DEADLINE));
}

/// A container whose `/proc` is the host's (a PID namespace without its own `/proc` mounted): the
/// supervisor cannot read parent links there, so it follows the generations it learned from
/// their notifications, and still forwards a SIGHUP to the main generation and a stop to all.
#[test]
fn pid1_without_a_proc_of_its_own_reloads_and_stops() {
    let sb = Sandbox::new();
    let timeouts = [("shutdown_timeout", "3s")];
    sb.write_config(&config(&sb, Mode::Pid1, "v1", &timeouts));
    let mut cmd = sb.command("unshare");
    cmd.args(["--pid", "--fork", "--kill-child"])
        .arg(sb.exe())
        .arg("--config")
        .arg(sb.config_path());
    let mut svc = Service::launch(&sb, Mode::Pid1, cmd);
    let sup = svc.sup;
    let mut main = svc.wait_main_other_than(&sb, None);
    for g in 1..=2u64 {
        let body = format!("v{}", g + 1);
        sb.write_config(&config(&sb, Mode::Pid1, &body, &timeouts));
        svc.reload(&sb, sup, g);
        main = svc.wait_main_other_than(&sb, Some(main));
        assert_eq!(http::get_fresh(sb.addr(), "/").unwrap().text(), body);
        assert_eq!(svc.wait_settled(), main);
    }
    assert!(
        svc.baton
            .log()
            .contains("SIGHUP: forwarded to the main generation"),
        "{}",
        svc.baton.log()
    );
    let (_, code) = svc.stop(&sb);
    assert_eq!(code, 0, "{}", svc.baton.log());
}

// ---------------------------------------------------------------------------------------------
// a line of generations still draining

/// Every retired generation keeps a request in flight, so each new main generation is the child
/// of one that is still running: the supervisor must follow `MAINPID=` down the whole line.
fn a_line_of_draining_generations(mode: Mode) {
    let sb = Sandbox::new();
    let timeouts = [("shutdown_timeout", "20s")];
    let mut svc = Service::start(&sb, mode, "v0", &timeouts);
    let mut main = svc.wait_main_other_than(&sb, None);
    let mut in_flight = Vec::new();
    for g in 1..=5u64 {
        let mut conn = http::RawConn::connect(sb.addr());
        conn.send(b"GET / HTTP/1.1\r\nHost: baton.test\r\n")
            .unwrap();
        let port = conn.stream.local_addr().unwrap().port();
        common::wait_until("the request to reach the main generation", DEADLINE, || {
            procs::connection_owner(svc.baton.pid, sb.port, port).filter(|&p| p == main)
        });
        in_flight.push((g - 1, conn));
        sb.write_config(&config(&sb, mode, &format!("v{g}"), &timeouts));
        svc.reload(&sb, svc.sup, g);
        main = svc.wait_main_other_than(&sb, Some(main));
    }
    let line = svc.generations();
    assert_eq!(
        line.len(),
        6,
        "five retired generations still draining: {line:?}"
    );
    let mut depth = 0;
    let mut p = main;
    while p != svc.sup {
        p = procs::stat(p).expect("an ancestor").ppid;
        depth += 1;
    }
    println!(
        "{}: the main generation is {depth} levels below the supervisor",
        mode_name(mode)
    );
    assert!(depth > 3, "the line is deep: {depth}");
    // The supervisor still reaches the main generation.
    sb.write_config(&config(&sb, mode, "v6", &timeouts));
    svc.reload(&sb, svc.sup, 6);
    main = svc.wait_main_other_than(&sb, Some(main));

    // Each request in flight is answered by the generation that accepted it, which then exits.
    for (g, mut conn) in in_flight {
        conn.send(b"\r\n").unwrap();
        let resp = conn.response().expect("the request in flight is answered");
        assert_eq!(resp.text(), format!("v{g}"));
    }
    assert_eq!(svc.wait_settled(), main);
    let (_, code) = svc.stop(&sb);
    assert_eq!(code, 0);
}

#[test]
fn pid1_follows_the_main_generation_down_a_line_of_draining_ones() {
    a_line_of_draining_generations(Mode::Pid1);
}

#[test]
fn supervised_follows_the_main_generation_down_a_line_of_draining_ones() {
    a_line_of_draining_generations(Mode::Supervise(Ask::Flag));
}

// ---------------------------------------------------------------------------------------------
// watchdog and crash

#[test]
fn watchdog_pings_of_the_main_generation_are_passed_on() {
    let sb = Sandbox::new();
    let mode = Mode::Supervise(Ask::Flag);
    sb.write_config(&config(&sb, mode, "v1", &[]));
    let mut cmd = command(&sb, mode, &[]);
    cmd.env("WATCHDOG_USEC", "400000");
    let svc = Service::launch(&sb, mode, cmd);
    let sup = svc.sup;
    let watchdog_after = |from| {
        sb.notify
            .wait_for_after(from, DEADLINE, "WATCHDOG=1 passed on", |n| {
                n.pid == sup && n.has("WATCHDOG=1")
            })
    };
    watchdog_after(0);
    let from = sb.notify.len();
    svc.reload(&sb, sup, 1);
    let ready = sb
        .notify
        .all()
        .into_iter()
        .skip(from)
        .find(|n| n.has("READY=1"))
        .expect("READY=1 of generation 1");
    watchdog_after(ready.seq + 1);
    let environ = procs::environ(svc.wait_settled());
    assert!(
        environ.iter().any(|v| v == "WATCHDOG_USEC=400000")
            && !environ.iter().any(|v| v.starts_with("WATCHDOG_PID=")),
        "{environ:?}"
    );
}

fn a_crash_ends_the_service(mode: Mode) {
    let sb = Sandbox::new();
    let mut svc = Service::start(&sb, mode, "v1", &[]);
    let main = svc.wait_main_other_than(&sb, None);
    assert!(procs::kill(main, Signal::SIGKILL));
    let st = svc.baton.wait_exit(DEADLINE);
    println!(
        "{}: the main generation killed: {}",
        mode_name(mode),
        common::describe(st)
    );
    assert_eq!(st.code(), Some(128 + 9), "{}", svc.baton.log());
    assert!(svc.baton.wait_group_gone(DEADLINE));
}

/// The main generation crashes while its predecessor (its parent) still drains a request: the
/// predecessor must not reap it, or its status is lost and the service ends with the
/// predecessor's 0. It stays a zombie until the predecessor exits, then the supervisor inherits
/// it, reaps it and ends with its status, so the container's restart policy sees the crash.
fn a_crash_while_the_predecessor_drains_ends_the_service_with_its_status(mode: Mode) {
    let sb = Sandbox::new();
    let timeouts = [("shutdown_timeout", "20s")];
    let mut svc = Service::start(&sb, mode, "v1", &timeouts);
    let old = svc.wait_main_other_than(&sb, None);
    let mut conn = http::RawConn::connect(sb.addr());
    conn.send(b"GET / HTTP/1.1\r\nHost: baton.test\r\n")
        .unwrap();
    let port = conn.stream.local_addr().unwrap().port();
    common::wait_until("the request to reach generation 0", DEADLINE, || {
        procs::connection_owner(svc.baton.pid, sb.port, port).filter(|&p| p == old)
    });
    sb.write_config(&config(&sb, mode, "v2", &timeouts));
    svc.reload(&sb, svc.sup, 1);
    let main = svc.wait_main_other_than(&sb, Some(old));
    assert_eq!(
        procs::stat(main).map(|p| p.ppid),
        Some(old),
        "a child of the drainer"
    );

    assert!(procs::kill(main, Signal::SIGKILL), "SIGKILL {main}");
    common::wait_until(
        "the killed main generation to exit, a zombie its draining predecessor does not reap",
        DEADLINE,
        || procs::stat(main).filter(|p| p.is_zombie() && p.ppid == old),
    );
    // A reload asked for now has no main generation to go to: said, not sent into the void.
    let generations = svc.generations();
    let forwarded = |log: String| log.matches("SIGHUP: forwarded").count();
    let forwarded_before = forwarded(svc.baton.log());
    assert!(procs::kill(svc.sup, Signal::SIGHUP), "SIGHUP {}", svc.sup);
    common::wait_until(
        "the supervisor to say the SIGHUP was dropped",
        DEADLINE,
        || {
            svc.baton
                .log()
                .contains("SIGHUP: the main generation has exited")
                .then_some(())
        },
    );
    assert_eq!(
        forwarded(svc.baton.log()),
        forwarded_before,
        "{}",
        svc.baton.log()
    );
    assert_eq!(svc.generations(), generations, "no generation started");
    conn.send(b"\r\n").unwrap();
    let resp = conn.response().expect("the request in flight is answered");
    assert_eq!(resp.text(), "v1");

    let st = svc.baton.wait_exit(DEADLINE);
    println!(
        "{}: the main generation killed while its predecessor drained: {}",
        mode_name(mode),
        common::describe(st)
    );
    assert_eq!(st.code(), Some(128 + 9), "{}", svc.baton.log());
    assert!(
        svc.baton.log().contains("the main generation exited"),
        "{}",
        svc.baton.log()
    );
    assert!(svc.baton.wait_group_gone(DEADLINE));
}

#[test]
fn pid1_a_main_generation_killed_while_its_predecessor_drains_ends_the_container_with_its_status() {
    a_crash_while_the_predecessor_drains_ends_the_service_with_its_status(Mode::Pid1);
}

#[test]
fn supervised_a_main_generation_killed_while_its_predecessor_drains_ends_the_supervisor_with_its_status(
) {
    a_crash_while_the_predecessor_drains_ends_the_service_with_its_status(Mode::Supervise(
        Ask::Flag,
    ));
}

#[test]
fn pid1_a_crashed_main_generation_ends_the_container_with_its_status() {
    a_crash_ends_the_service(Mode::Pid1);
}

#[test]
fn supervised_a_crashed_main_generation_ends_the_supervisor_with_its_status() {
    a_crash_ends_the_service(Mode::Supervise(Ask::Env));
}

// ---------------------------------------------------------------------------------------------
// what generation 0 inherits

/// Generation 0 gets the supervisor's environment less what was meant for the supervisor itself
/// (`WATCHDOG_PID` naming it, as systemd sets it; socket activation for another process), plus
/// its mark and the private notify socket: so its watchdog pings, passed on, keep the service
/// alive.
#[test]
fn supervised_generation_0_gets_the_environment_less_what_was_meant_for_the_supervisor() {
    let sb = Sandbox::new();
    let mode = Mode::Supervise(Ask::Flag);
    sb.write_config(&config(&sb, mode, "v1", &[]));
    // WATCHDOG_PID names the supervisor: sh learns its own pid, then becomes baton.
    let mut cmd = sb.command("sh");
    cmd.args(["-c", "WATCHDOG_PID=$$ exec \"$@\"", "sh"])
        .arg(sb.exe())
        .arg("--config")
        .arg(sb.config_path())
        .arg("--supervise")
        .env("WATCHDOG_USEC", "400000")
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "meant-for-another-process")
        .env("BATON_TEST_PASSED_ON", "yes");
    let svc = Service::launch(&sb, mode, cmd);
    let sup = svc.sup;
    let environ = procs::environ(svc.wait_settled());
    let has = |v: &str| environ.iter().any(|e| e == v);
    assert!(
        has("WATCHDOG_USEC=400000")
            && has("BATON_TEST_PASSED_ON=yes")
            && has(&format!("BATON_SUPERVISOR={sup}")),
        "{environ:?}"
    );
    for gone in [
        "WATCHDOG_PID=",
        "LISTEN_PID=",
        "LISTEN_FDS=",
        "LISTEN_FDNAMES=",
    ] {
        assert!(
            !environ.iter().any(|e| e.starts_with(gone)),
            "{gone} passed on to generation 0: {environ:?}"
        );
    }
    sb.notify.wait_for(DEADLINE, "WATCHDOG=1 passed on", |n| {
        n.pid == sup && n.has("WATCHDOG=1")
    });
}

// ---------------------------------------------------------------------------------------------
// the private notify socket's path

/// The supervisor's notify socket path may be as long as a Unix socket address holds, 107
/// bytes, and no longer. As PID 1 its directory is `supervisor.1.<6 random>`, so with the
/// hand-off socket in a shared sticky directory (where baton's own `baton-<uid>/` comes on top)
/// the length is known before it starts: a shared directory of 67 bytes makes it exactly 107,
/// and works; one of 68 makes it 108 (the settings accept both) and is refused with one line,
/// exit 71.
#[test]
fn pid1_a_notify_socket_path_of_107_bytes_is_used_and_of_108_refused() {
    use std::os::unix::fs::PermissionsExt;
    for (shared_len, works) in [(67, true), (68, false)] {
        let sb = Sandbox::new();
        let base = sb.dir().as_os_str().len();
        assert!(
            shared_len > base + 1,
            "the sandbox path {:?} is too long",
            sb.dir()
        );
        let shared = sb.dir().join("s".repeat(shared_len - base - 1));
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let mut cfg = config(&sb, Mode::Pid1, "v1", &[("shutdown_timeout", "3s")]);
        cfg["handoff_socket"] = shared.join("api.sock").to_string_lossy().into();
        sb.write_config(&cfg);
        if works {
            let mut svc = Service::launch(&sb, Mode::Pid1, command(&sb, Mode::Pid1, &[]));
            let socket = procs::environ(svc.wait_settled())
                .into_iter()
                .find_map(|v| v.strip_prefix("NOTIFY_SOCKET=").map(str::to_owned))
                .expect("generation 0's NOTIFY_SOCKET");
            println!(
                "PID 1: a notify socket path of {} bytes: {socket}",
                socket.len()
            );
            assert_eq!(socket.len(), 107, "{socket}");
            let (_, code) = svc.stop(&sb);
            assert_eq!(code, 0);
        } else {
            let mut baton = sb.spawn(command(&sb, Mode::Pid1, &[]));
            let st = baton.wait_exit(DEADLINE);
            let log = baton.log();
            println!("PID 1: a notify socket path of 108 bytes: {}", log.trim());
            assert_eq!(st.code(), Some(71), "{log}");
            assert!(log.contains("longer than the 107 bytes"), "{log}");
        }
    }
}
