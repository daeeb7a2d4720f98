//! Story: an operator sizes baton's threads as nginx's `worker_processes`. By default the
//! command runs a worker thread per CPU it may use; `"threads": 1` in the file runs everything
//! on the process's main thread (tokio's current-thread runtime: nothing to steal, no other
//! thread to wake, and glibc's system calls skip their cancellation bookkeeping); the operator
//! edits the file to 3 and reloads, and the successor serves with three workers. A count that is
//! no whole number from 1 to 1024 is refused in one line naming where it came from, exit 78,
//! by `baton check` and by a start alike.

mod common;

use common::procs::thread_names;
use common::story::Options;
use common::Sandbox;

/// How many of `names` are tokio's worker threads.
fn workers(names: &[String]) -> usize {
    names.iter().filter(|n| *n == "tokio-rt-worker").count()
}

#[test]
fn threads_from_the_file_one_then_three_after_a_reload() {
    let mut s = Options::new("v1")
        .config(|sb| {
            let mut c = sb.config("v1");
            c["threads"] = 1.into();
            c
        })
        .start();
    assert_eq!(s.get(), "v1");
    let names = thread_names(s.main);
    assert_eq!(
        names,
        ["baton"],
        "threads = 1: the main thread alone serves"
    );
    // `baton check` says what it read.
    let out = common::output(
        s.sb.baton()
            .args(["check", "--config"])
            .arg(s.sb.config_path()),
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.trim_end().ends_with("; threads 1"), "{said}");

    let mut c = s.sb.config("v2");
    c["threads"] = 3.into();
    s.sb.write_config(&c);
    s.reload();
    assert_eq!(s.get(), "v2");
    let names = thread_names(s.main);
    assert_eq!(
        workers(&names),
        3,
        "threads = 3 after the reload: {names:?}"
    );
    println!("threads 1: [baton]; after editing the file to 3 and reloading: {names:?}");
}

#[test]
fn by_default_a_worker_per_cpu_the_process_may_use() {
    let cpus = std::thread::available_parallelism()
        .map(std::num::NonZero::get)
        .expect("CPU count");
    assert!(
        cpus >= 2,
        "this story needs 2 CPUs or more (CI has 2): it tells the default from one thread"
    );
    let s = Options::new("v1").start();
    let names = thread_names(s.main);
    assert_eq!(workers(&names), cpus, "{names:?}");
    drop(s);

    // One CPU by affinity: the current-thread runtime, as `threads = 1`.
    let s = Options::new("v1")
        .command(|sb| {
            let mut cmd = sb.command("taskset");
            cmd.args(["-c", "0"])
                .arg(sb.exe())
                .arg("--config")
                .arg(sb.config_path());
            cmd
        })
        .start();
    let names = thread_names(s.main);
    assert_eq!(names, ["baton"], "on one CPU: {names:?}");
}

#[test]
fn a_thread_count_that_is_not_one_to_1024_is_refused_alike_by_check_and_serve() {
    let sb = Sandbox::new();
    for (json, problem) in [
        ("0", "0 is out of range (1 to 1024)"),
        ("1025", "1025 is out of range (1 to 1024)"),
        (r#""2""#, r#""2" is not a whole number (1 to 1024)"#),
    ] {
        sb.write_config_text(&format!(
            r#"{{"listen": ["{}"], "threads": {json}}}"#,
            sb.listen()
        ));
        let expected = format!("config {}: threads: ", sb.config_path().display());
        let (err, _, _) =
            common::refused_alike_by_check_and_serve(&sb, &expected, problem, "threads");
        println!("threads {json} in the file: {err}");
    }
    for (value, problem) in [
        ("many", "\"many\" is not a whole number (1 to 1024)"),
        ("-2", "\"-2\" is not a whole number (1 to 1024)"),
    ] {
        sb.write_config_text(&format!(r#"{{"listen": ["{}"]}}"#, sb.listen()));
        let out = common::output(
            sb.baton()
                .args(["check", "--config"])
                .arg(sb.config_path())
                .env("BATON_THREADS", value),
        );
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(78), "BATON_THREADS={value}: {err}");
        assert_eq!(
            err.trim_end(),
            format!("baton: --threads/BATON_THREADS: threads: {problem}"),
        );
        println!("BATON_THREADS={value}: {err}");
    }
    assert!(common::procs::listening_inodes_on_port(sb.port).is_empty());
}
