//! Story: the operator breaks the config file and reloads. The running process must keep serving
//! as the main process, tell systemd `READY=1` with `STATUS=reload failed: …` naming the problem,
//! reap the successor that failed, and take the next reload once the config is fixed.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{procs, Sandbox, Story, DEADLINE};

/// Records every child of `pid` seen while it runs (a failed successor lives only briefly).
struct ChildWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<i32>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ChildWatch {
    fn start(pid: i32) -> ChildWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                for c in procs::children_of(pid) {
                    v.lock().unwrap().insert(c.pid);
                }
                thread::sleep(Duration::from_millis(1));
            }
        });
        ChildWatch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> BTreeSet<i32> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.seen.lock().unwrap().clone()
    }
}

/// After a failed hand-off the parent has no child left: not running, not a zombie.
fn assert_failed_children_reaped(parent: i32, seen: &BTreeSet<i32>) {
    let gone = common::try_wait_until(DEADLINE, || {
        (procs::children_of(parent).is_empty() && seen.iter().all(|&c| !procs::exists(c)))
            .then_some(())
    });
    assert!(
        gone.is_some(),
        "children of {parent} left after a failed reload: {:?} (seen during the hand-off: {seen:?})",
        procs::children_of(parent)
    );
}

/// The status file of the process `pid` (`reload-status.<pid>.json` in the runtime directory).
fn read_reload_status(sb: &Sandbox, pid: i32) -> serde_json::Value {
    let path = sb
        .handoff_socket()
        .with_file_name(format!("reload-status.{pid}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("reload-status.<pid>.json"))
        .expect("status JSON")
}

/// Breaks the config with `broken`, reloads (fails), fixes it, reloads (works), all under load.
fn broken_config_story(
    broken: &dyn Fn(&Sandbox) -> String,
    names_the_problem: &dyn Fn(&str) -> bool,
) {
    let _heavy = common::heavy();
    let mut s = Story::start("version 1", &["--shutdown-timeout", "5s"]);
    let main = s.main;
    s.start_load(3, 3, Duration::from_millis(2), &["version 1", "version 2"]);

    s.sb.write_config_text(&broken(&s.sb));
    let watch = ChildWatch::start(main);
    // RELOADING=1, then READY=1 + STATUS=reload failed: …, and the main process lives on.
    let status = s.reload_expect_failure();
    let seen = watch.stop();
    println!("failed reload of {main}: STATUS={status:?}, successors seen: {seen:?}");
    assert!(
        names_the_problem(&status),
        "the STATUS names the config problem: {status:?}"
    );
    // (A successor that fails on its config lives a few milliseconds: the watch may miss it; the
    // check below still sees any child, zombie or not, the parent failed to reap.)
    assert_failed_children_reaped(main, &seen);
    let st = read_reload_status(&s.sb, main);
    assert_eq!(st["outcome"], "failed", "{st}");
    assert!(
        st["reason"]
            .as_str()
            .map(|r| !r.is_empty())
            .unwrap_or(false),
        "{st}"
    );

    // Still the main process, still serving the old config.
    assert_eq!(s.main, main);
    assert!(
        s.baton.try_exit().is_none(),
        "the parent exited after a failed reload"
    );
    s.load().wait_more_ok(50, DEADLINE);
    assert_eq!(s.get(), "version 1");
    assert!(procs::holders_of(main, procs::listening_inodes_on_port(s.sb.port)[0]) == vec![main]);

    // Fixed config: the next reload works and new requests get the new body.
    s.sb.write_config(&s.sb.config("version 2"));
    s.reload();
    common::wait_until("version 2 on a fresh connection", DEADLINE, || {
        (s.get() == "version 2").then_some(())
    });
    s.load().wait_more_ok(50, DEADLINE);
    let report = s.stop_load();
    println!("failed then fixed reload under load: {report:?}");
    report.assert_no_failures();
    assert!(
        s.sb.notify.all().iter().all(|n| !n.has("STOPPING=1")),
        "{}",
        s.sb.notify.dump()
    );
    // The old process records the outcome when its successor confirms, which the successor does
    // after its READY=1: only once the old process has retired and exited is the record sure to
    // be there (until then it may still hold the failed attempt's).
    let st = s.baton.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(0), "{}", common::describe(st));
    let st = read_reload_status(&s.sb, main);
    assert_eq!(st["outcome"], "ready", "{st}");
    s.stop();
}

#[test]
fn a_config_with_a_misspelt_field_keeps_the_old_process_serving() {
    // `respnse_body` is not a field: unknown fields are rejected.
    broken_config_story(
        &|sb: &Sandbox| {
            let mut v = sb.config("version 2");
            let body = v.as_object_mut().unwrap().remove("response_body").unwrap();
            v["respnse_body"] = body;
            serde_json::to_string_pretty(&v).unwrap()
        },
        &|status: &str| status.contains("respnse_body"),
    );
}

#[test]
fn a_truncated_config_file_keeps_the_old_process_serving() {
    broken_config_story(
        &|sb: &Sandbox| {
            let text = serde_json::to_string_pretty(&sb.config("version 2")).unwrap();
            text[..text.len() / 2].to_string()
        },
        // The file, where it ends, and why: `config …/baton.json: line L column C: EOF while …`.
        &|status: &str| {
            status.contains("baton.json: line ") && status.contains("EOF while parsing")
        },
    );
}

#[test]
fn baton_reload_reports_the_failure_then_the_success() {
    // The operator's command (what ExecReload= runs): `baton reload` sends SIGHUP to the main pid,
    // waits for the answer (a signal queued back to it) and tells the outcome, with the reason
    // from the status file.
    let mut s = Story::start("version 1", &["--shutdown-timeout", "5s"]);
    let (sb, main) = (&s.sb, s.main);
    let run_reload = |args: &[&str]| {
        let mut cmd = sb.baton();
        cmd.arg("reload").args(args).arg("--timeout").arg("20s");
        let mut p = sb.spawn(cmd);
        let st = p.wait_exit(DEADLINE);
        (st, p.log())
    };
    let pid = main.to_string();
    let handoff = sb.handoff_socket();
    let by_pid = [
        "--pid",
        pid.as_str(),
        "--handoff-socket",
        handoff.to_str().unwrap(),
    ];
    let config = sb.config_path();
    let by_config = ["--config", config.to_str().unwrap()];

    sb.write_config_text("{\"listen\": [");
    // As systemd runs it with the PID it knows (`--pid $MAINPID`): the reload is attempted and fails.
    let (st, out) = run_reload(&by_pid);
    println!(
        "baton reload --pid with a broken config: {} {out:?}",
        common::describe(st)
    );
    assert_eq!(st.code(), Some(1), "a failed reload exits 1: {out}");
    assert!(
        out.contains("reload failed:"),
        "prints `reload failed: <why>`: {out}"
    );
    assert!(
        out.contains("baton.json"),
        "the reason names the config file: {out}"
    );
    // As the shipped unit runs it (`--config FILE`): it cannot succeed either; whatever it does,
    // it says why, exits non-zero, and the main process serves on.
    let (st, out) = run_reload(&by_config);
    println!(
        "baton reload --config with a broken config: {} {out:?}",
        common::describe(st)
    );
    assert!(!st.success(), "{out}");
    assert!(out.contains("baton.json"), "names the config file: {out}");
    assert!(procs::is_alive(main));
    assert_eq!(s.get(), "version 1");
    assert!(
        sb.notify.all().iter().all(|n| n.mainpid().is_none()),
        "{}",
        sb.notify.dump()
    );

    sb.write_config(&sb.config("version 2"));
    let (st, out) = run_reload(&by_config);
    println!(
        "baton reload with a fixed config: {} {out:?}",
        common::describe(st)
    );
    assert_eq!(st.code(), Some(0), "a good reload exits 0: {out}");
    let new = sb
        .notify
        .all()
        .iter()
        .rev()
        .find_map(|n| (n.pid == main).then(|| n.mainpid()).flatten())
        .expect("MAINPID= after the good reload");
    assert!(
        out.contains(&format!("reloaded: {main} -> {new}")),
        "prints `reloaded: <old> -> <new>`: {out}"
    );
    assert_eq!(s.baton.wait_exit(DEADLINE).code(), Some(0));
    s.main = new;
    s.stop();
}

#[test]
fn a_failure_quoting_a_newline_never_adds_a_line_to_what_systemd_reads() {
    // The binary lives in a directory whose name has a newline in it, followed by what would be
    // a notify assignment. A reload that cannot start it names it in `STATUS=`: escaped, on one
    // line — or systemd would read `MAINPID=1` as an assignment of its own.
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let dir = sb.path("bin\nMAINPID=1");
    std::fs::create_dir(&dir).unwrap();
    let exe = dir.join("baton");
    std::fs::copy(sb.exe(), &exe).unwrap();
    sb.write_config(&sb.config("version 1"));
    let mut cmd = sb.command(&exe);
    cmd.arg("--config").arg(sb.config_path());
    let mut baton = sb.spawn(cmd);
    baton.wait_ready(&sb.notify);
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();
    let status = common::reload_expect_failure(&sb.notify, baton.pid);
    println!("STATUS={status:?}");
    assert!(
        status.contains("cannot start successor") && status.contains("bin\\nMAINPID=1/baton"),
        "{status:?}"
    );
    let stray: Vec<_> = sb
        .notify
        .all()
        .into_iter()
        .filter(|n| n.mainpid().is_some() || n.lines.iter().any(|l| !l.contains('=')))
        .collect();
    assert!(stray.is_empty(), "{stray:?}\n{}", sb.notify.dump());
    assert!(procs::kill(baton.pid, nix::sys::signal::Signal::SIGTERM));
    assert_eq!(baton.wait_exit(DEADLINE).code(), Some(0));
}
