//! `baton run -- COMMAND`: servers written in other languages, under the real binary, with real
//! signals, a real notify socket and real HTTP clients.
//!
//! * gunicorn (Python; `LISTEN_FDS` and `READY=1` of its own; `--preload` so that the
//!   application is imported before the arbiter says READY=1),
//! * a Go server (standard library only: fd 3 through `net.FileListener`, `READY=1` over
//!   unixgram), built once per test run,
//! * a Node server (`listen({fd: 3})`, no notify: `--ready=delay:…`).
//!
//! Each: 20 reloads under fresh, keep-alive and long (1.2 s) requests with none failed; a version
//! that fails to start or never becomes ready fails the reload visibly (`baton reload` exit code
//! and reason, `STATUS=` on the notify socket) while the old one serves on; SIGTERM ends every
//! generation within the grace period. Apps live in tests/run/; .ci/run installs
//! python3-gunicorn, golang-go and nodejs.

mod common;

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::load::{body_is_one_of, Load};
use common::{describe, http, procs, wait_until, Baton, Sandbox, DEADLINE};
use nix::sys::signal::Signal;

/// The languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum App {
    Gunicorn,
    Go,
    Node,
}

fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/run")
}

/// The Go server, built once per test run into cargo's temporary directory.
fn go_app() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
            let out = tmp.join("run-goapp");
            // Through the reaper: a plain `Command::status` races the orphan reaper for the
            // exit status (CI once saw `go build` "fail" with ECHILD).
            let built = common::reaper::output(
                std::process::Command::new("go")
                    .args(["build", "-o"])
                    .arg(&out)
                    .arg(".")
                    .current_dir(apps_dir().join("goapp"))
                    .env("GOCACHE", tmp.join("run-gocache"))
                    .env("GOFLAGS", "-mod=mod")
                    .env("GO111MODULE", "on"),
            )
            .expect("run `go build` (golang-go is installed by .ci/run)");
            assert!(
                built.status.success(),
                "go build of tests/run/goapp failed: {}",
                common::text_of(&built)
            );
            out
        })
        .clone()
}

impl App {
    fn command(self) -> Vec<OsString> {
        let dir = apps_dir();
        match self {
            App::Gunicorn => vec![
                "/usr/bin/python3".into(),
                "-m".into(),
                "gunicorn".into(),
                "--preload".into(),
                "--workers=3".into(),
                "--graceful-timeout=10".into(),
                "--chdir".into(),
                dir.into_os_string(),
                "wsgi_app:app".into(),
            ],
            App::Go => vec![go_app().into_os_string()],
            App::Node => vec!["node".into(), dir.join("node_app.js").into_os_string()],
        }
    }

    /// `--ready`: the two that notify are waited for; Node is not.
    fn ready(self) -> &'static str {
        match self {
            App::Gunicorn | App::Go => "notify",
            // Node starts in about 0.5 s on this loaded machine; a broken version exits before.
            App::Node => "delay:2s",
        }
    }
}

/// `baton run` serving one app in a sandbox, the app's version in `app.json`.
struct Run {
    sb: Sandbox,
    baton: Baton,
    app: App,
}

impl Run {
    fn start(app: App, extra: &[&str]) -> Run {
        Run::start_ready(app, app.ready(), extra)
    }

    fn start_ready(app: App, ready: &str, extra: &[&str]) -> Run {
        let sb = Sandbox::new();
        let run = Run::spawn(sb, app, ready, extra);
        run.baton.wait_ready(&run.sb.notify);
        run.sb.wait_serving();
        run
    }

    /// Under systemd's socket activator (`systemd-socket-activate --fdname=web`): the listener
    /// comes from socket activation, as under a socket unit.
    fn start_activated(app: App) -> Run {
        let sb = Sandbox::new();
        write_version(&sb, "v0", "ok");
        let mut cmd = sb.command("systemd-socket-activate");
        cmd.args(["-l", &sb.listen(), "--fdname=web"]);
        for var in [
            "NOTIFY_SOCKET",
            "RUST_LOG",
            "XDG_RUNTIME_DIR",
            "TMPDIR",
            "APP_CONF",
        ] {
            cmd.arg("-E").arg(var);
        }
        cmd.arg("--")
            .arg(sb.exe())
            .arg("run")
            .arg("--handoff-socket")
            .arg(sb.handoff_socket())
            .args(["--ready", app.ready(), "--grace", "10s", "--"])
            .args(app.command())
            .env("APP_CONF", sb.path("app.json"));
        let baton = sb.spawn(cmd);
        let run = Run { sb, baton, app };
        run.sb.wait_serving();
        run.baton.wait_ready(&run.sb.notify);
        run
    }

    fn spawn(sb: Sandbox, app: App, ready: &str, extra: &[&str]) -> Run {
        write_version(&sb, "v0", "ok");
        let mut cmd = sb.baton();
        cmd.arg("run")
            .args(["--listen", &sb.listen()])
            .arg("--handoff-socket")
            .arg(sb.handoff_socket())
            .args(["--ready", ready, "--grace", "10s"])
            .args(extra)
            .arg("--")
            .args(app.command())
            .env("APP_CONF", sb.path("app.json"));
        let baton = sb.spawn(cmd);
        Run { sb, baton, app }
    }

    fn version(&self, body: &str, mode: &str) {
        write_version(&self.sb, body, mode);
    }

    /// `baton reload` as ExecReload= runs it: (succeeded, its output, how long it took).
    fn reload(&self) -> (bool, String, Duration) {
        let started = Instant::now();
        let out = common::output(
            self.sb
                .baton()
                .arg("reload")
                .args(["--pid", &self.baton.pid.to_string()])
                .arg("--handoff-socket")
                .arg(self.sb.handoff_socket())
                .args(["--timeout", "60s"]),
        );
        let text = common::text_of(&out);
        match out.status.code() {
            Some(0) => (true, text, started.elapsed()),
            Some(1) => (false, text, started.elapsed()),
            _ => panic!(
                "baton reload: {} ({text})\nlog:\n{}",
                describe(out.status),
                self.baton.log()
            ),
        }
    }

    /// The generations: baton's children.
    fn generations(&self) -> Vec<i32> {
        procs::children_of(self.baton.pid)
            .into_iter()
            .filter(|p| !p.is_zombie())
            .map(|p| p.pid)
            .collect()
    }

    fn body(&self) -> String {
        http::get_fresh(self.sb.addr(), "/")
            .map(|r| r.text())
            .unwrap_or_else(|e| panic!("GET /: {e}\nlog:\n{}", self.baton.log()))
    }

    /// Every process of every generation (their groups) and baton are gone.
    fn assert_all_gone(&mut self, groups: &[i32], within: Duration) {
        let gone = common::try_wait_until(within, || {
            groups
                .iter()
                .all(|&g| procs::group_members(g).is_empty())
                .then_some(())
        });
        assert!(
            gone.is_some(),
            "processes left: {:?}\nlog:\n{}",
            groups
                .iter()
                .flat_map(|&g| procs::group_members(g))
                .map(|p| p.pid)
                .collect::<Vec<_>>(),
            self.baton.log()
        );
    }
}

fn write_version(sb: &Sandbox, body: &str, mode: &str) {
    let tmp = sb.path("app.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::json!({"body": body, "mode": mode}).to_string(),
    )
    .expect("write app.json");
    std::fs::rename(&tmp, sb.path("app.json")).expect("rename app.json");
}

/// 20 reloads, each to a new version, under fresh, keep-alive and long requests: none fails, each
/// reload succeeds and the new version answers after it.
fn twenty_reloads_under_load(app: App) {
    let _heavy = common::heavy();
    // Node: a shorter delay than the failure story's (connections wait in the shared backlog
    // while it starts; nothing here tests that a broken version is caught).
    let ready = if app == App::Node {
        "delay:1s"
    } else {
        app.ready()
    };
    let run = Run::start_ready(app, ready, &[]);
    let bodies: Vec<String> = (0..=20).map(|i| format!("v{i}")).collect();
    let accepted: Vec<&str> = bodies.iter().map(String::as_str).collect();
    let load = Load::start_with_long(
        run.sb.addr(),
        2,
        2,
        (1, "/slow"),
        Duration::from_millis(5),
        body_is_one_of(&accepted),
    );
    load.wait_more_ok(20, DEADLINE);
    let mut timings = Vec::new();
    for i in 1..=20 {
        run.version(&format!("v{i}"), "ok");
        let (ok, out, took) = run.reload();
        assert!(ok, "reload {i} failed: {out}\nlog:\n{}", run.baton.log());
        timings.push(took);
        let want = format!("v{i}");
        wait_until(&format!("{want} to answer"), DEADLINE, || {
            (run.body() == want).then_some(())
        });
        load.wait_more_ok(5, DEADLINE);
    }
    // The last long requests, started before the last reload, finish.
    std::thread::sleep(Duration::from_millis(1500));
    let report = load.stop();
    timings.sort();
    eprintln!(
        "{app:?}: 20 reloads, {} requests ok, {} failed; `baton reload` min {:?} median {:?} max {:?}",
        report.ok,
        report.failed,
        timings[0],
        timings[10],
        timings[19]
    );
    report.assert_no_failures();
    assert!(
        report.ok >= 100,
        "too little load to prove anything: {report:?}"
    );
    assert!(
        timings[19] < Duration::from_secs(30),
        "a reload took {:?}",
        timings[19]
    );
    // One generation left serving, the retired ones reaped: none stays a zombie (one that has
    // just exited is one until baton reaps it, so this is waited for too).
    let settled = common::try_wait_until(DEADLINE, || {
        let children = procs::children_of(run.baton.pid);
        (children.iter().all(|p| !p.is_zombie()) && run.generations().len() == 1).then_some(())
    });
    assert!(
        settled.is_some(),
        "not one generation left with every retired one reaped: {:?}",
        procs::children_of(run.baton.pid)
    );
}

#[test]
fn gunicorn_twenty_reloads_under_load_lose_nothing() {
    twenty_reloads_under_load(App::Gunicorn);
}

#[test]
fn go_twenty_reloads_under_load_lose_nothing() {
    twenty_reloads_under_load(App::Go);
}

#[test]
fn node_twenty_reloads_under_load_lose_nothing() {
    twenty_reloads_under_load(App::Node);
}

/// A broken version (exits at start; for the apps that notify, also one that never becomes
/// ready) fails the reload: `baton reload` exits 1 with the reason, systemd reads `READY=1` +
/// `STATUS=reload failed: …`, the old generation serves on. Then a good version reloads, and
/// SIGTERM stops everything within the grace period while a long request finishes.
fn failures_then_stop(app: App) {
    let _heavy = common::heavy();
    let mut run = Run::start(app, &["--ready-timeout", "4s"]);
    let first = run.generations();
    assert_eq!(first.len(), 1, "one generation: {first:?}");
    let mut modes = vec![("fail", "exited with status")];
    if app != App::Node {
        modes.push(("hang", "not ready within 4s"));
    }
    for (mode, reason) in modes {
        run.version("broken", mode);
        let mark = run.sb.notify.len();
        let (ok, out, _) = run.reload();
        assert!(!ok, "a {mode} version reloaded: {out}");
        assert!(
            out.contains("reload failed") && out.contains(reason),
            "{mode}: {out}"
        );
        let pid = run.baton.pid;
        let n =
            run.sb
                .notify
                .wait_for_after(mark, DEADLINE, "READY=1 + STATUS=reload failed", |n| {
                    n.pid == pid
                        && n.has("READY=1")
                        && n.get("STATUS")
                            .is_some_and(|s| s.starts_with("reload failed:"))
                });
        assert!(
            n.get("STATUS").unwrap().contains(reason),
            "{:?}",
            n.get("STATUS")
        );
        assert_eq!(run.body(), "v0", "{mode}: the old version serves on");
        assert_eq!(
            run.generations(),
            first,
            "{mode}: only the old generation is left"
        );
    }
    run.version("v1", "ok");
    let (ok, out, _) = run.reload();
    assert!(ok, "{out}");
    wait_until("v1 to answer", DEADLINE, || {
        (run.body() == "v1").then_some(())
    });
    wait_until("one generation", DEADLINE, || {
        (run.generations().len() == 1).then_some(())
    });
    let serving = run.generations()[0];

    // A long request in flight when the stop comes is answered.
    let addr = run.sb.addr();
    let slow = std::thread::spawn(move || http::get_fresh(addr, "/slow"));
    std::thread::sleep(Duration::from_millis(300));
    let stopped = Instant::now();
    run.baton.signal(run.baton.pid, Signal::SIGTERM);
    let st = run
        .baton
        .wait_exit(Duration::from_secs(10) + Duration::from_secs(5));
    let took = stopped.elapsed();
    let r = slow.join().expect("slow request thread");
    assert!(
        matches!(&r, Ok(r) if r.status == 200 && r.text() == "v1"),
        "the long request in flight: {r:?}\nlog:\n{}",
        run.baton.log()
    );
    eprintln!("{app:?}: SIGTERM to exit {took:?}, {}", describe(st));
    assert_eq!(
        st.code(),
        Some(0),
        "baton exits with the app's status: {}\n{}",
        describe(st),
        run.baton.log()
    );
    assert!(
        took < Duration::from_secs(10),
        "stop took {took:?}, longer than the grace period"
    );
    run.assert_all_gone(&[serving, run.baton.pid], DEADLINE);
    let pid = run.baton.pid;
    run.sb.notify.wait_for(DEADLINE, "STOPPING=1", |n| {
        n.pid == pid && n.has("STOPPING=1")
    });
}

#[test]
fn gunicorn_broken_versions_fail_the_reload_and_sigterm_stops_all() {
    failures_then_stop(App::Gunicorn);
}

#[test]
fn go_broken_versions_fail_the_reload_and_sigterm_stops_all() {
    failures_then_stop(App::Go);
}

#[test]
fn node_broken_version_fails_the_reload_and_sigterm_stops_all() {
    failures_then_stop(App::Node);
}

/// What COMMAND gets: the listeners at fds 3, 4 with LISTEN_PID = its own pid, LISTEN_FDS,
/// LISTEN_FDNAMES, a private NOTIFY_SOCKET (its MAINPID= never reaches the real one), its own
/// process group, every signal at its default (SIGHUP, and those baton itself was started with
/// ignored, as `nohup` or a shell's `&` leave them) and none blocked; and when baton is killed
/// (the OOM killer), it gets its stop signal instead of living on as an orphan.
#[test]
fn the_command_gets_the_sockets_a_private_notify_socket_and_dies_with_baton() {
    let sb = Sandbox::new();
    let report = sb.path("report.json");
    let unix = format!("unix:{}", sb.path("app.sock").display());
    let mut cmd = sb.baton();
    cmd.arg("run")
        .args(["--listen", &sb.listen(), "--listen", &unix])
        .arg("--handoff-socket")
        .arg(sb.handoff_socket())
        .args(["--", "/usr/bin/python3"])
        .arg(apps_dir().join("env_app.py"))
        .env("APP_REPORT", &report);
    let ignored = [libc::SIGQUIT, libc::SIGUSR2, libc::SIGRTMAX()];
    common::ignore_signals(&mut cmd, &ignored);
    let mut baton = sb.spawn(cmd);
    baton.wait_ready(&sb.notify);
    let text = std::fs::read_to_string(&report).expect("the app's report");
    let info: serde_json::Value = serde_json::from_str(&text).expect("json");
    let pid = info["pid"].as_i64().unwrap() as i32;
    assert_eq!(info["LISTEN_PID"], pid.to_string(), "{text}");
    assert_eq!(info["LISTEN_FDS"], "2", "{text}");
    assert_eq!(
        info["LISTEN_FDNAMES"],
        format!("127.0.0.1_{}:{}", sb.port, unix.replace(':', "_")),
        "{text}"
    );
    assert_eq!(info["listening"], true, "fds 3 and 4 listen: {text}");
    assert_eq!(
        info["pgid"].as_i64(),
        Some(pid as i64),
        "its own process group: {text}"
    );
    assert_eq!(info["sighup_ignored"], false, "{text}");
    assert_eq!(
        info["ignored"],
        serde_json::json!([]),
        "no signal ignored, though baton was started with {ignored:?} ignored: {text}"
    );
    assert_eq!(info["blocked"], 0, "no signal blocked: {text}");
    let private = info["NOTIFY_SOCKET"].as_str().unwrap();
    assert_ne!(Path::new(private), sb.notify.path(), "{text}");
    // The app said MAINPID=1 + STATUS= + READY=1: the real socket hears only baton, never MAINPID=.
    let baton_pid = baton.pid;
    sb.notify
        .wait_for(DEADLINE, "the app's STATUS= passed on by baton", |n| {
            n.pid == baton_pid && n.get("STATUS") == Some("env_app up")
        });
    for n in sb.notify.all() {
        assert_eq!(n.pid, baton_pid, "a datagram not from baton: {:?}", n.lines);
        assert!(
            n.get("MAINPID").is_none(),
            "MAINPID= reached the real socket: {:?}",
            n.lines
        );
    }
    // baton killed outright: the app gets its stop signal (PR_SET_PDEATHSIG).
    baton.signal(baton.pid, Signal::SIGKILL);
    baton.wait_exit(DEADLINE);
    let stopped = sb.path("report.json.stopped");
    wait_until("the app to get SIGTERM", DEADLINE, || {
        stopped.exists().then_some(())
    });
    assert_eq!(std::fs::read_to_string(&stopped).unwrap(), "15");
    assert!(procs::wait_gone(pid, DEADLINE), "the app outlived baton");
}

/// A serving COMMAND that crashes is not hidden: baton says so in STATUS= and exits with its
/// status (128 + signal), so systemd's Restart= applies.
#[test]
fn a_crashed_command_ends_baton_with_its_status() {
    let mut run = Run::start(App::Go, &[]);
    let serving = run.generations()[0];
    procs::kill(serving, Signal::SIGKILL);
    let st = run.baton.wait_exit(DEADLINE);
    assert_eq!(
        st.code(),
        Some(128 + 9),
        "{}\n{}",
        describe(st),
        run.baton.log()
    );
    let pid = run.baton.pid;
    let n = run
        .sb
        .notify
        .wait_for(DEADLINE, "STATUS= of the crash", |n| {
            n.pid == pid
                && n.get("STATUS")
                    .is_some_and(|s| s.contains("killed by signal 9"))
        });
    assert!(n.has("STOPPING=1"), "{:?}", n.lines);
    let _ = run.app;
}

/// A package upgrade of baton itself while an app runs: the binary at baton's path is replaced
/// (a new inode, as dpkg does); the next reload re-executes baton first (same pid, the listeners,
/// the notify socket, the control socket and the running generation kept), then starts the new
/// generation. Under load, nothing fails, and `baton reload` gets its answer from the new image. The listener came
/// from socket activation (named `web`): the new generation gets it under the same name.
#[test]
fn baton_upgrade_keeps_the_app_serving_and_the_reload_starts_the_new_baton() {
    let _heavy = common::heavy();
    let run = Run::start_activated(App::Go);
    let old_inode = std::fs::metadata(format!("/proc/{}/exe", run.baton.pid))
        .unwrap()
        .ino();
    let gen1 = run.generations();
    let load = Load::start_with_long(
        run.sb.addr(),
        2,
        2,
        (1, "/slow"),
        Duration::from_millis(5),
        body_is_one_of(&["v0", "v1", "v2"]),
    );
    load.wait_more_ok(20, DEADLINE);
    // "dpkg -i": a new file renamed over the old path.
    let exe = run.sb.exe();
    let staged = run.sb.path("bin/baton.dpkg-new");
    std::fs::copy(common::baton_exe(), &staged).expect("copy the new binary");
    std::fs::rename(&staged, &exe).expect("replace the binary");
    let new_inode = std::fs::metadata(&exe).unwrap().ino();
    assert_ne!(old_inode, new_inode);

    let fdnames = |pid: i32| {
        procs::environ(pid)
            .into_iter()
            .find(|v| v.starts_with("LISTEN_FDNAMES="))
    };
    let names1 = fdnames(gen1[0]);
    run.version("v1", "ok");
    let (ok, out, took) = run.reload();
    assert!(ok, "{out}\nlog:\n{}", run.baton.log());
    // The request was read by the old image, which re-executed itself: it was told to ask
    // again, and the new image answered it with the outcome of a reload that began after it
    // asked again (the one after the reload the re-execution went on with). Both are
    // generations of this baton: the successor serves.
    let (retired, successor) = out
        .trim()
        .strip_prefix("reloaded: ")
        .and_then(|r| r.split_once(" -> "))
        .map(|(a, b)| (a.parse::<i32>().unwrap(), b.parse::<i32>().unwrap()))
        .unwrap_or_else(|| panic!("not a reload answer: {out}"));
    assert!(
        retired != run.baton.pid && successor != run.baton.pid,
        "{out}"
    );
    wait_until("v1 to answer", DEADLINE, || {
        (run.body() == "v1").then_some(())
    });
    assert_eq!(
        std::fs::metadata(format!("/proc/{}/exe", run.baton.pid))
            .unwrap()
            .ino(),
        new_inode,
        "baton (same pid) runs the new binary\nlog:\n{}",
        run.baton.log()
    );
    assert!(
        run.baton.log().contains("re-executed itself"),
        "{}",
        run.baton.log()
    );
    // The new generation got the same sockets under the same names.
    assert!(run.generations().contains(&successor), "{out}");
    assert_eq!(fdnames(successor), names1);
    assert_eq!(names1.as_deref(), Some("LISTEN_FDNAMES=web"));
    // The generation that served through the upgrade was retired by the new image and reaped.
    wait_until("generation 1 reaped", DEADLINE, || {
        (!procs::exists(gen1[0])).then_some(())
    });
    // And the new image reloads as usual.
    run.version("v2", "ok");
    let (ok, out, _) = run.reload();
    assert!(ok, "{out}");
    wait_until("v2 to answer", DEADLINE, || {
        (run.body() == "v2").then_some(())
    });
    load.wait_more_ok(20, DEADLINE);
    load.stop_without_failures(&format!(
        "baton upgrade under load: reload with re-exec {took:?}"
    ));
}

/// `baton reload` reaches `baton run` over the service's control socket, bound in the runtime
/// directory as `serve` binds it (`control.<baton's pid>.<random>`), and `kill -1` still reloads.
/// A request that arrives while a reload is in flight waits in the socket's backlog and is
/// answered with the outcome of the next reload, never the one that began before it: here
/// `kill -1` starts a reload of a version that never becomes ready; `baton reload`, asked
/// meanwhile, reports the failure of generation 3 (the reload that began after it), not of 2.
/// At the stop the socket's name is removed.
#[test]
fn a_request_during_a_reload_gets_the_next_reloads_outcome_over_the_control_socket() {
    let _heavy = common::heavy();
    let mut run = Run::start(App::Go, &["--ready-timeout", "3s"]);
    let first = run.generations();
    assert_eq!(first.len(), 1, "{first:?}");
    let dir = run.sb.handoff_socket().parent().unwrap().to_owned();
    let prefix = format!("control.{}.", run.baton.pid);
    let controls = || -> Vec<String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(&prefix))
            .collect()
    };
    assert_eq!(controls().len(), 1, "{:?}", controls());

    run.version("hung", "hang");
    let mark = run.sb.notify.len();
    run.baton.signal(run.baton.pid, Signal::SIGHUP);
    let second = wait_until("generation 2", DEADLINE, || {
        run.generations().into_iter().find(|p| !first.contains(p))
    });
    let started = Instant::now();
    let reload = {
        let mut cmd = run.sb.baton();
        cmd.arg("reload")
            .args(["--pid", &run.baton.pid.to_string()])
            .arg("--handoff-socket")
            .arg(run.sb.handoff_socket())
            .args(["--timeout", "60s"]);
        std::thread::spawn(move || common::output(&mut cmd))
    };
    let pid = run.baton.pid;
    let n = run
        .sb
        .notify
        .wait_for_after(mark, DEADLINE, "the SIGHUP reload fails", |n| {
            n.pid == pid
                && n.get("STATUS")
                    .is_some_and(|s| s.starts_with("reload failed:"))
        });
    let status = n.get("STATUS").unwrap().to_owned();
    assert!(
        status.contains(&format!("generation 2 (pid {second})")),
        "{status}"
    );
    let out = reload.join().expect("baton reload thread");
    let text = common::text_of(&out);
    eprintln!(
        "a request during a reload: answered after {:?}: {text}",
        started.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}\nlog:\n{}",
        run.baton.log()
    );
    assert!(
        text.contains("reload failed") && text.contains("generation 3 ("),
        "{text}\nlog:\n{}",
        run.baton.log()
    );
    assert!(!text.contains("generation 2 "), "{text}");
    assert!(
        text.contains(&format!("pid {} keeps serving", first[0])),
        "{text}"
    );
    assert_eq!(run.generations(), first, "only the old generation is left");
    assert_eq!(run.body(), "v0");

    run.baton.signal(run.baton.pid, Signal::SIGTERM);
    let st = run.baton.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(0), "{}\n{}", describe(st), run.baton.log());
    assert!(controls().is_empty(), "{:?}", controls());
    run.assert_all_gone(&first, DEADLINE);
}

/// The private notify socket is made in the runtime directory only if that directory is baton's
/// and private (as the hand-off directories): one that others can write is refused, with one line
/// naming it, exit 77, before any COMMAND runs.
#[test]
fn a_runtime_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let shared = sb.path("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let marker = sb.path("ran");
    let mut cmd = sb.baton();
    cmd.arg("run")
        .args(["--listen", &sb.listen()])
        .arg("--handoff-socket")
        .arg(shared.join("handoff.sock"))
        .args(["--", "/usr/bin/touch"])
        .arg(&marker);
    let mut baton = sb.spawn(cmd);
    let st = baton.wait_exit(DEADLINE);
    let log = baton.log();
    assert_eq!(st.code(), Some(77), "{}\n{log}", describe(st));
    assert!(log.contains(&shared.display().to_string()), "{log}");
    assert_eq!(
        log.lines().filter(|l| l.contains("ERROR")).count(),
        1,
        "{log}"
    );
    assert!(!marker.exists(), "the command ran");
}
