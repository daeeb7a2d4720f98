//! Story: a hostile or unlucky environment — an attacker on the same machine and an unlucky
//! operator (issue 8, rows 3, 4, 6 to 10).
//! Every test uses the real mechanism: a second user made with `useradd`, real symlinks, a real
//! tmpfs filled up or remounted read-only, a real `ulimit`, descriptors really inherited.
//! Whatever happens, baton never writes through a path another user controls, never touches
//! another instance's hand-off, and tells the truth about every reload.

mod common;

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use common::tmpfs::Tmpfs;
use common::users::OtherUser;
use common::{http, procs, Baton, HeldSuccessor, Sandbox, DEADLINE};
use nix::sys::signal::Signal;

// ---------------------------------------------------------------------------------------------
// helpers

/// Runs `baton <args>` (the sandbox's binary, clean environment) to completion.
fn run(sb: &Sandbox, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = sb.baton();
    cmd.args(args);
    run_cmd(cmd)
}

fn run_cmd(mut cmd: Command) -> (Option<i32>, String) {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = common::reaper::spawn_registered(&mut cmd).expect("spawn");
    let pid = child.id() as i32;
    // A hang is a failure: kill it after the deadline.
    let killer = thread::spawn(move || {
        let t = Instant::now();
        while t.elapsed() < DEADLINE * 2 {
            if !procs::exists(pid) || procs::is_zombie(pid) {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
        procs::kill(pid, Signal::SIGKILL)
    });
    let out: Output = child.wait_with_output().expect("wait");
    common::reaper::forget_leader(pid);
    assert!(
        !killer.join().unwrap(),
        "baton {:?} hung and was killed",
        cmd.get_args().collect::<Vec<_>>()
    );
    let text = common::text_of(&out);
    (out.status.code(), text)
}

/// `baton reload --pid PID` with the sandbox config and a generous timeout.
fn baton_reload(sb: &Sandbox, config: &Path, pid: i32) -> (Option<i32>, String) {
    baton_reload_with(sb, config, pid, |_| {})
}

/// The same, with the environment adjusted as the server's was.
fn baton_reload_with(
    sb: &Sandbox,
    config: &Path,
    pid: i32,
    env: impl FnOnce(&mut Command),
) -> (Option<i32>, String) {
    let mut cmd = sb.baton();
    cmd.arg("reload").arg("--config").arg(config).args([
        "--pid",
        &pid.to_string(),
        "--timeout",
        "20s",
    ]);
    env(&mut cmd);
    run_cmd(cmd)
}

/// `reloaded: OLD -> NEW` → NEW.
fn reloaded_to(out: &str) -> i32 {
    out.lines()
        .find_map(|l| {
            l.trim()
                .rsplit_once("-> ")
                .and_then(|(_, n)| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no `reloaded: OLD -> NEW` in {out:?}"))
}

/// The last `STATUS=` a process sent.
fn last_status(sb: &Sandbox, pid: i32) -> String {
    sb.notify
        .all()
        .iter()
        .rev()
        .find(|n| n.pid == pid && n.get("STATUS").is_some())
        .and_then(|n| n.get("STATUS").map(str::to_owned))
        .unwrap_or_default()
}

/// Owners and names of what a directory holds.
fn listing(dir: &Path) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::symlink_metadata(e.path()).unwrap().uid(),
            )
        })
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// row 3: no path another user controls

#[test]
fn another_users_directory_at_the_default_path_is_refused_and_nothing_is_written_through_it() {
    let Some(mallory) = OtherUser::create() else {
        return;
    };
    let sb = Sandbox::new();
    let tmp = sb.shared_tmp();
    let me = nix::unistd::getuid().as_raw();
    let dir = tmp.join(format!("baton-{me}"));
    let precious = sb.path("precious");
    fs::write(&precious, "root's file").unwrap();
    // Before baton starts, the other user takes the default directory and fills it: a listening
    // socket where a fresh baton looks for a predecessor, symlinks where baton writes.
    mallory.sh(&format!(
        "mkdir -m 1777 {d} && ln -s {p} {d}/baton.pid && ln -s {p} {d}/reload-status.json",
        d = dir.display(),
        p = precious.display()
    ));
    let fake = sb.spawn(mallory.fake_parent(&dir.join("handoff.sock")));
    common::wait_until("the fake parent to listen", DEADLINE, || {
        fake.log().contains("listening").then_some(())
    });

    // A root baton with neither RUNTIME_DIRECTORY nor XDG_RUNTIME_DIR: the default is
    // <tmp>/baton-<uid>/handoff.sock. Asked for its PID file in the same directory, it refuses
    // to start, naming the directory and its owner (a PID file it cannot write is never
    // skipped); with the PID file in a directory of its own it starts.
    let mut cfg = sb.config("v1");
    cfg.as_object_mut().unwrap().remove("handoff_socket");
    cfg["pid_file"] = dir.join("baton.pid").to_str().unwrap().into();
    sb.write_config(&cfg);
    let mut cmd = sb.serve(&[]);
    cmd.env_remove("XDG_RUNTIME_DIR").env("TMPDIR", &tmp);
    let mut refused = sb.spawn(cmd);
    assert_eq!(
        refused.wait_exit(DEADLINE).code(),
        Some(78),
        "{}",
        refused.log()
    );
    let pid_line = refused
        .log()
        .lines()
        .find(|l| l.contains("pid file "))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no line about the PID file: {}", refused.log()));
    println!("PID file: {pid_line}");
    assert!(pid_line.contains(&dir.display().to_string()) && pid_line.contains(&mallory.name));
    cfg["pid_file"] = sb.pid_file().to_str().unwrap().into();
    sb.write_config(&cfg);
    let mut cmd = sb.serve(&[]);
    cmd.env_remove("XDG_RUNTIME_DIR").env("TMPDIR", &tmp);
    let mut baton = sb.spawn(cmd);
    baton.wait_ready(&sb.notify);
    let main = baton.pid;
    assert_eq!(sb.wait_serving().text(), "v1");
    let log = baton.log();
    println!(
        "fresh start next to another user's socket: {}",
        log.lines()
            .find(|l| l.contains("not importing"))
            .unwrap_or("?")
    );
    assert!(log.contains("source=bind"), "{log}");
    // The operator hears at once, as an error, that `baton reload` cannot reach this service.
    common::wait_until("an error: no control socket", DEADLINE, || {
        baton
            .log()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("no control socket"))
            .then_some(())
    });
    assert!(
        log.contains(&format!("uid {}", mallory.uid)) && log.contains("not importing"),
        "the refusal names the other user:\n{log}"
    );
    common::wait_until(
        "the fake parent to see the connection close",
        DEADLINE,
        || fake.log().contains("got ").then_some(()),
    );
    assert!(
        fake.log()
            .lines()
            .filter(|l| l.starts_with("got "))
            .all(|l| l == "got 0"),
        "baton sent bytes to another user's socket: {}",
        fake.log()
    );

    // The other user forges a status file that says the next reload worked.
    mallory.sh(&format!(
        "printf '%s\\n' '{{\"parent_pid\":{main},\"requested_usec\":0,\"finished_usec\":99999999999999,\"outcome\":\"ready\",\"successor_pid\":1,\"reason\":null}}' > {d}/reload-status.{main}.json",
        d = dir.display()
    ));
    let before = listing(&dir);
    let same_env = |c: &mut Command| {
        c.env_remove("XDG_RUNTIME_DIR").env("TMPDIR", &tmp);
    };
    let (code, out) = baton_reload_with(&sb, &sb.config_path(), main, same_env);
    println!("baton reload with another user's runtime directory: {code:?} {out:?}");
    // The service could make no control socket there: `baton reload` says why, naming the
    // directory and its owner, and asks nothing of anybody; `kill -HUP` still tries, and fails.
    assert_eq!(code, Some(69), "{out}");
    assert!(
        out.contains(&dir.display().to_string())
            && out.contains(&format!("uid {} ({})", mallory.uid, mallory.name))
            && out.trim().lines().count() == 1,
        "{out}"
    );
    let status = common::reload_expect_failure(&sb.notify, main);
    println!("STATUS={status}");
    assert!(
        status.starts_with("reload failed: runtime directory ")
            && status.contains(&dir.display().to_string())
            && status.contains(&format!("uid {} ({})", mallory.uid, mallory.name)),
        "one line naming the path and its owner: {status:?}"
    );
    assert_eq!(fs::read_to_string(&precious).unwrap(), "root's file");
    assert_eq!(
        listing(&dir),
        before,
        "root created or changed something in the other user's directory"
    );
    assert!(listing(&dir).iter().all(|(_, uid)| *uid == mallory.uid));
    assert!(procs::is_alive(main) && baton.try_exit().is_none());

    // Once the directory is gone, root makes its own (and its control socket) and reloads.
    drop(fake);
    fs::remove_dir_all(&dir).unwrap();
    let out = common::wait_until("baton reload to work again", DEADLINE, || {
        let (code, out) = baton_reload_with(&sb, &sb.config_path(), main, same_env);
        (code == Some(0)).then_some(out)
    });
    let new = reloaded_to(&out);
    let meta = fs::metadata(&dir).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (me, 0o700));
    common::wait_until("the PID file to name the successor", DEADLINE, || {
        (fs::read_to_string(sb.pid_file()).ok()?.trim() == new.to_string()).then_some(())
    });
    assert_eq!(fs::read_to_string(&precious).unwrap(), "root's file");
    assert_eq!(baton.wait_exit(DEADLINE).code(), Some(0));
    common::sigterm_and_wait_gone(&sb, &mut baton, new);
}

#[test]
fn a_symlink_another_user_planted_on_the_way_is_refused_and_roots_own_is_followed() {
    let Some(mallory) = OtherUser::create() else {
        return;
    };
    let sb = Sandbox::new();
    let tmp = sb.shared_tmp();
    let private = sb.path("private");
    fs::create_dir(&private).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    // Both links point at root's private directory; only who owns the link differs.
    mallory.sh(&format!(
        "ln -s {} {}/theirs",
        private.display(),
        tmp.display()
    ));
    std::os::unix::fs::symlink(&private, tmp.join("ours")).unwrap();

    for (link, works) in [("theirs", false), ("ours", true)] {
        let mut cfg = sb.config("v1");
        cfg["handoff_socket"] = tmp.join(link).join("handoff.sock").to_str().unwrap().into();
        sb.write_config(&cfg);
        let mut baton = sb.spawn(sb.serve(&[]));
        baton.wait_ready(&sb.notify);
        let main = baton.pid;
        if works {
            let r = common::reload(&sb.notify, main);
            let socket = procs::environ(r.new)
                .into_iter()
                .find_map(|v| {
                    v.strip_prefix("BATON_PREDECESSOR_SOCKET=")
                        .map(PathBuf::from)
                })
                .unwrap();
            println!(
                "root's symlink followed: hand-off socket was {}",
                socket.display()
            );
            assert!(socket.starts_with(&private), "{}", socket.display());
            assert_eq!(baton.wait_exit(DEADLINE).code(), Some(0));
            common::sigterm_and_wait_gone(&sb, &mut baton, r.new);
        } else {
            let status = common::reload_expect_failure(&sb.notify, main);
            println!("symlink of another user on the way: {status:?}");
            assert!(
                status.contains(&tmp.join(link).display().to_string())
                    && status.contains("symlink owned by")
                    && status.contains(&mallory.name),
                "{status:?}"
            );
            assert_eq!(
                fs::read_dir(&private).unwrap().count(),
                0,
                "nothing made through it"
            );
            common::sigterm_and_wait_gone(&sb, &mut baton, main);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// row 4: instances never collide

#[test]
fn two_instances_with_default_settings_reloaded_at_once_never_touch_each_other() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    const RELOADS: usize = 20;
    // Same user, same XDG_RUNTIME_DIR, no handoff_socket: both default to the same path.
    let mut instances = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let port = sb.extra_port(i);
        let config = sb.path(&format!("{name}.json"));
        fs::write(
            &config,
            serde_json::json!({
                "listen": [format!("127.0.0.1:{port}")],
                "response_body": name,
                "pid_file": sb.path(&format!("{name}.pid")),
            })
            .to_string(),
        )
        .unwrap();
        let mut cmd = sb.baton();
        cmd.arg("--config").arg(&config);
        let baton = sb.spawn(cmd);
        baton.wait_ready(&sb.notify);
        instances.push((name, port, config, baton));
    }
    let runtime = sb.path("xdg/baton");

    let t0 = Instant::now();
    let results: Vec<(usize, Vec<String>, i32)> = thread::scope(|s| {
        let handles: Vec<_> = instances
            .iter()
            .map(|(name, port, config, baton)| {
                let sb = &sb;
                s.spawn(move || {
                    let mut main = baton.pid;
                    let mut failures = Vec::new();
                    let mut ok = 0;
                    for _ in 0..RELOADS {
                        let (code, out) = baton_reload(sb, config, main);
                        if code == Some(0) {
                            main = reloaded_to(&out);
                            ok += 1;
                        } else {
                            failures.push(out);
                        }
                        let addr = format!("127.0.0.1:{port}").parse().unwrap();
                        assert_eq!(http::get_fresh(addr, "/").unwrap().text(), *name);
                    }
                    (ok, failures, main)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    println!(
        "2 instances x {RELOADS} concurrent reloads in {:?}: ok {} and {}, failed {:?} and {:?}",
        t0.elapsed(),
        results[0].0,
        results[1].0,
        results[0].1,
        results[1].1
    );
    for (ok, failures, _) in &results {
        assert_eq!(*ok, RELOADS, "{failures:?}");
    }
    for (name, _, _, baton) in &instances {
        let log = baton.log();
        assert!(
            !log.contains("removed a hand-off directory") && !log.contains("stale"),
            "{name} touched a hand-off it did not make:\n{log}"
        );
    }
    common::wait_until("no hand-off directory left", DEADLINE, || {
        fs::read_dir(&runtime)
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("handoff."))
            .then_some(())
    });

    // A third instance started while the first is in the middle of a hand-off starts normally.
    let main_a = results[0].2;
    let mut held = HeldSuccessor::install(&sb);
    let from = sb.notify.len();
    assert!(procs::kill(main_a, Signal::SIGHUP));
    let child = common::wait_until("a's successor", DEADLINE, || {
        procs::children_of(main_a).first().map(|c| c.pid)
    });
    common::predecessor_socket_of(child);
    let port_c = sb.extra_port(2);
    let mut cmd = sb.command(common::baton_exe());
    cmd.args(["--listen", &format!("127.0.0.1:{port_c}")]);
    let mut c = sb.spawn(cmd);
    c.wait_ready(&sb.notify);
    assert!(c.log().contains("source=bind"), "{}", c.log());
    println!("third instance started during a hand-off of the first: ready");
    assert!(held.release(DEADLINE));
    sb.notify
        .wait_for_after(from, DEADLINE, "a's MAINPID=", |n| {
            n.pid == main_a && n.mainpid() == Some(child)
        });
    let c_pid = c.pid;
    common::sigterm_and_wait_gone(&sb, &mut c, c_pid);
    for ((_, _, _, mut baton), (_, _, main)) in instances.into_iter().zip(results) {
        let main = if main == main_a { child } else { main };
        let from = sb.notify.len();
        assert!(procs::kill(main, Signal::SIGTERM));
        sb.notify.wait_for_after(from, DEADLINE, "STOPPING=1", |n| {
            n.pid == main && n.has("STOPPING=1")
        });
        assert!(baton.wait_group_gone(DEADLINE));
    }
}

// ---------------------------------------------------------------------------------------------
// row 6: descriptor hygiene

#[test]
fn descriptors_inherited_by_the_first_process_never_reach_a_successor() {
    let sb = Sandbox::new();
    sb.write_config(&sb.config("v1"));
    let file = fs::File::create(sb.path("inherited.txt")).unwrap();
    // A launcher's pipe, as `$(baton …)` or an ssh session would leave it (not close-on-exec).
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    let (f, w) = (file.as_raw_fd(), write_end.as_raw_fd());
    let mut cmd = sb.serve(&[]);
    // SAFETY: only fcntl and dup2 between fork and exec. Both are first moved above 100 so that
    // placing one cannot overwrite the other; dup2 onto another number clears FD_CLOEXEC.
    unsafe {
        cmd.pre_exec(move || {
            let (f, w) = (
                libc::fcntl(f, libc::F_DUPFD, 100),
                libc::fcntl(w, libc::F_DUPFD, 100),
            );
            if f < 0 || w < 0 || libc::dup2(f, 7) < 0 || libc::dup2(w, 8) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(f);
            libc::close(w);
            Ok(())
        });
    }
    let mut baton = sb.spawn(cmd);
    drop(write_end);
    drop(file);
    baton.wait_ready(&sb.notify);
    let pipe = fs::read_link(format!("/proc/self/fd/{}", read_end.as_raw_fd())).unwrap();
    let targets = |pid: i32| -> Vec<PathBuf> {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| fs::read_link(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = targets(baton.pid);
    assert!(first.contains(&pipe) && first.contains(&sb.path("inherited.txt")));

    let mut main = baton.pid;
    for _ in 0..2 {
        let r = common::reload(&sb.notify, main);
        main = r.new;
        let held = targets(main);
        println!("generation pid {main} holds {} descriptors", held.len());
        assert!(held.len() > 3, "{main} already gone? {held:?}");
        assert!(
            !held.contains(&pipe) && !held.contains(&sb.path("inherited.txt")),
            "{main} inherited the launcher's descriptors: {held:?}"
        );
    }
    assert_eq!(baton.wait_exit(DEADLINE).code(), Some(0));
    // The first process was the last holder of the write end: whoever reads the pipe sees EOF.
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&read_end),
        nix::poll::PollFlags::POLLIN,
    )];
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).unwrap();
    let mut buf = [0u8; 8];
    let n = if ready > 0 {
        fs::File::from(read_end).read(&mut buf).unwrap()
    } else {
        usize::MAX
    };
    assert_eq!(
        n, 0,
        "the launcher's pipe is still held open by a later generation"
    );
    println!("launcher's pipe at EOF once the first process exited; successors never had it");
    common::sigterm_and_wait_gone(&sb, &mut baton, main);
}

// ---------------------------------------------------------------------------------------------
// row 7: a config path that is not a regular file

#[test]
fn a_config_that_is_a_fifo_a_directory_or_a_device_is_refused_at_once_with_exit_78() {
    let sb = Sandbox::new();
    let fifo = sb.path("fifo.json");
    common::mkfifo(&fifo);
    let dir = sb.path("xdg");
    for (path, what) in [
        (fifo.as_path(), "is a FIFO"),
        (dir.as_path(), "is a directory"),
        (Path::new("/dev/null"), "is a character device"),
    ] {
        let p = path.to_str().unwrap();
        for args in [
            vec!["check", "--config", p],
            vec!["serve", "--config", p],
            vec!["reload", "--config", p, "--pid", "1"],
        ] {
            let t = Instant::now();
            let (code, out) = run(&sb, &args);
            let line = out.lines().find(|l| l.contains(p)).unwrap_or_default();
            println!("{args:?}: exit {code:?} after {:?}: {line}", t.elapsed());
            assert_eq!(code, Some(78), "{out}");
            assert!(
                line.contains(&format!("{p}: {what}, not a regular file")),
                "{out}"
            );
            assert!(!out.contains("panicked"), "{out}");
        }
    }
    assert!(sb.notify.all().iter().all(|n| !n.has("READY=1")));
}

// ---------------------------------------------------------------------------------------------
// row 8: a full, inode-less or read-only runtime directory

/// A baton whose runtime directory (hand-off, status, PID file) is the tmpfs at `rt`.
fn start_on(sb: &Sandbox, rt: &Path, pid_file: &Path) -> Baton {
    let mut cfg = sb.config("v1");
    cfg["handoff_socket"] = rt.join("handoff.sock").to_str().unwrap().into();
    cfg["pid_file"] = pid_file.to_str().unwrap().into();
    sb.write_config(&cfg);
    let baton = sb.spawn(sb.serve(&[]));
    baton.wait_ready(&sb.notify);
    common::wait_until("the PID file", DEADLINE, || {
        (fs::read_to_string(pid_file).ok()?.trim() == baton.pid.to_string()).then_some(())
    });
    baton
}

/// `baton reload --config` (the target comes from the PID file, as for an operator).
fn reload_by_pid_file(sb: &Sandbox) -> (Option<i32>, String) {
    let config = sb.config_path();
    run(
        sb,
        &[
            "reload",
            "--config",
            config.to_str().unwrap(),
            "--timeout",
            "20s",
        ],
    )
}

#[test]
fn a_full_runtime_directory_still_reports_a_good_reload_and_keeps_the_pid_file_true() {
    let sb = Sandbox::new();
    let Some(rt) = Tmpfs::mount(&sb.path("rt"), "size=256k,nr_inodes=256,mode=0700") else {
        return;
    };
    let pid_file = rt.path.join("baton.pid");
    let mut baton = start_on(&sb, &rt.path, &pid_file);
    let filled = rt.fill_blocks();
    println!("tmpfs full after {filled} bytes");

    let mut main = baton.pid;
    for round in 1..=2 {
        let (code, out) = reload_by_pid_file(&sb);
        println!(
            "reload {round} on a full tmpfs: exit {code:?}: {}",
            out.trim()
        );
        assert_eq!(code, Some(0), "the reload worked and is reported so: {out}");
        let new = reloaded_to(&out);
        assert!(
            out.contains(&format!("reloaded: {main} -> {new}")) || round > 1,
            "{out}"
        );
        common::wait_until("the PID file to name the successor", DEADLINE, || {
            (fs::read_to_string(&pid_file).ok()?.trim() == new.to_string()).then_some(())
        });
        assert_eq!(sb.wait_serving().status, 200);
        main = new;
    }
    let log = baton.log();
    let status_line = common::line_with(
        &log,
        "cannot write the reload status",
        "the status file failure is not logged",
    );
    println!("logged: {status_line}");
    assert!(status_line.contains("No space left on device (os error 28)"));
    assert!(status_line.contains(rt.path.to_str().unwrap()));
    assert!(log.contains("pid file rewritten in place"), "{log}");
    assert_eq!(baton.wait_exit(DEADLINE).code(), Some(0));
    common::sigterm_and_wait_gone(&sb, &mut baton, main);
}

#[test]
fn no_inodes_or_a_read_only_runtime_directory_fail_the_reload_with_path_and_errno() {
    let sb = Sandbox::new();
    let Some(rt) = Tmpfs::mount(&sb.path("rt"), "size=1m,nr_inodes=64,mode=0700") else {
        return;
    };
    let pid_file = rt.path.join("baton.pid");
    let mut baton = start_on(&sb, &rt.path, &pid_file);
    let main = baton.pid;
    let made = rt.fill_inodes();
    println!("tmpfs out of inodes after {made} files");

    for (case, errno) in [
        ("no inodes", "No space left on device (os error 28)"),
        ("read-only", "Read-only file system (os error 30)"),
    ] {
        if case == "read-only" {
            fs::remove_dir_all(rt.path.join("inodes")).unwrap();
            rt.remount("ro");
        }
        let t = Instant::now();
        let (code, out) = reload_by_pid_file(&sb);
        println!(
            "{case}: exit {code:?} after {:?}: {}",
            t.elapsed(),
            out.trim()
        );
        assert_eq!(
            code,
            Some(1),
            "a failed reload, reported (not a timeout): {out}"
        );
        assert!(
            out.contains("reload failed")
                && out.contains(rt.path.to_str().unwrap())
                && out.contains(errno)
                && out.contains(&format!("pid {main} keeps serving")),
            "names the path and the errno: {out}"
        );
        // The reply comes over the control socket, the STATUS= over the notify socket: the
        // notify reader may see it a moment after `baton reload` returned.
        let status = common::wait_until("STATUS= naming the errno", DEADLINE, || {
            let status = last_status(&sb, main);
            status.contains(errno).then_some(status)
        });
        println!("  STATUS={status}");
        assert_eq!(
            fs::read_to_string(&pid_file).unwrap().trim(),
            main.to_string()
        );
        assert_eq!(sb.wait_serving().text(), "v1");
    }
    rt.remount("rw");
    let (code, out) = reload_by_pid_file(&sb);
    assert_eq!(code, Some(0), "{out}");
    let new = reloaded_to(&out);
    assert_eq!(baton.wait_exit(DEADLINE).code(), Some(0));
    common::sigterm_and_wait_gone(&sb, &mut baton, new);
}

#[test]
fn a_pid_file_that_cannot_be_updated_is_never_silently_stale() {
    let sb = Sandbox::new();
    let Some(pidfs) = Tmpfs::mount(&sb.path("pidfs"), "size=64k,mode=0700") else {
        return;
    };
    let pid_file = pidfs.path.join("baton.pid");
    let mut baton = start_on(&sb, &sb.path("run"), &pid_file);
    let old = baton.pid;
    pidfs.remount("ro");
    // A successor that could not write the PID file would leave it naming a process about to
    // exit: it refuses to take over, the reload fails naming the file and the errno, and the
    // old process serves on — the file stays true.
    let (code, out) = reload_by_pid_file(&sb);
    println!(
        "reload with a read-only PID file: exit {code:?}: {}",
        out.trim()
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("pid file {}", pid_file.display()))
            && out.contains("Read-only file system (os error 30)")
            && out.contains(&format!("pid {old} keeps serving")),
        "{out}"
    );
    assert_eq!(
        fs::read_to_string(&pid_file).unwrap().trim(),
        old.to_string()
    );
    assert_eq!(sb.wait_serving().text(), "v1");
    // Writable again: the next reload takes over and the file names the successor.
    pidfs.remount("rw");
    let (code, out) = reload_by_pid_file(&sb);
    assert_eq!(code, Some(0), "{out}");
    let new = reloaded_to(&out);
    common::wait_until("the PID file to name the successor", DEADLINE, || {
        (fs::read_to_string(&pid_file).ok()?.trim() == new.to_string()).then_some(())
    });
    assert_eq!(baton.wait_exit(DEADLINE).code(), Some(0));
    common::sigterm_and_wait_gone(&sb, &mut baton, new);
}

// ---------------------------------------------------------------------------------------------
// row 8, continued: the answer survives a process that hands over

#[test]
fn a_reload_sent_to_a_retiring_process_is_passed_on_to_its_successor() {
    let sb = Sandbox::new();
    let mut baton = sb.start("v1", &["--shutdown-timeout", "20s"]);
    let old = baton.pid;
    // A request in progress keeps the old process draining after the hand-off.
    let mut slow = http::RawConn::connect(sb.addr());
    slow.send(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let client_port = slow.stream.local_addr().unwrap().port();
    common::wait_until("the slow request to be accepted", DEADLINE, || {
        (procs::connection_owner(baton.pid, sb.port, client_port)? == old).then_some(())
    });
    let r = common::reload(&sb.notify, old);
    // The old process retires once its successor confirmed (just after the successor's READY=1):
    // it records the outcome, then drains. A request before that joins the hand-off in progress.
    let status = sb
        .handoff_socket()
        .with_file_name(format!("reload-status.{old}.json"));
    common::wait_until("the old process to record its hand-off", DEADLINE, || {
        fs::read_to_string(&status)
            .ok()
            .filter(|t| t.contains("\"ready\""))
    });
    assert!(procs::is_alive(old), "the old process is draining");
    // An operator (or a stale PID file) asks the old process.
    let (code, out) = baton_reload(&sb, &sb.config_path(), old);
    println!(
        "baton reload --pid <retiring>: exit {code:?}: {}",
        out.trim()
    );
    assert_eq!(code, Some(0), "{out}");
    let newest = reloaded_to(&out);
    assert_ne!(newest, r.new, "the successor itself was reloaded");
    sb.notify
        .wait_for_after(0, DEADLINE, "MAINPID= from the successor", |n| {
            n.pid == r.new && n.mainpid() == Some(newest)
        });
    slow.send(b"\r\n").unwrap();
    assert_eq!(slow.response().unwrap().status, 200);
    drop(slow);
    assert_eq!(baton.wait_exit(DEADLINE).code(), Some(0));
    common::sigterm_and_wait_gone(&sb, &mut baton, newest);
}

// ---------------------------------------------------------------------------------------------
// row 9: socket paths that cannot fit a sockaddr_un

#[test]
fn check_refuses_socket_paths_longer_than_a_sockaddr_un_with_exit_78() {
    let sb = Sandbox::new();
    let long = format!("/run/{}/handoff.sock", "x".repeat(100));
    let deep_dir = format!("/run/{}", "y".repeat(75));
    let cases = [
        vec!["check".to_owned(), "--handoff-socket".into(), long.clone()],
        vec![
            "check".into(),
            "--handoff-socket".into(),
            format!("{deep_dir}/h.sock"),
        ],
        vec!["check".into(), "--listen".into(), format!("unix:{long}")],
        vec!["serve".into(), "--handoff-socket".into(), long.clone()],
    ];
    for args in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out) = run(&sb, &args);
        println!("{:?}: exit {code:?}: {}", &args[..2], out.trim());
        assert_eq!(code, Some(78), "{out}");
        if args[0] == "check" {
            assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
        }
        assert!(out.lines().all(|l| l.contains("107")), "{out}");
    }
    assert!(sb.notify.all().iter().all(|n| !n.has("READY=1")));
}

// ---------------------------------------------------------------------------------------------
// row 10: a persistent accept error on the hand-off socket

#[test]
fn a_persistent_accept_error_on_the_hand_off_socket_backs_off_instead_of_spinning() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    sb.write_config(&sb.config("v1"));
    // A real `ulimit -n`: the parent can run out of descriptors.
    let mut cmd = sb.command_with_fd_limit(64, &sb.exe());
    cmd.args(["--child-timeout", "60s"]);
    let mut baton = sb.spawn(cmd);
    baton.wait_ready(&sb.notify);
    let main = baton.pid;

    let mut held = HeldSuccessor::install(&sb);
    let from = sb.notify.len();
    assert!(procs::kill(main, Signal::SIGHUP));
    let child = common::wait_until("the successor", DEADLINE, || {
        procs::children_of(main).first().map(|c| c.pid)
    });
    let socket = common::predecessor_socket_of(child);
    // Use up the parent's descriptors with idle HTTP connections, until its HTTP accept loop
    // reports EMFILE (descriptors it inherited above the limit do not count, hence the log).
    let mut conns = Vec::new();
    while !baton.log().contains("Too many open files") {
        assert!(
            conns.len() < 200,
            "never ran out of descriptors:\n{}",
            baton.log()
        );
        conns.push(std::net::TcpStream::connect(sb.addr()).unwrap());
        thread::sleep(Duration::from_millis(5));
    }
    // A connection waits on the hand-off socket: every accept fails with EMFILE.
    let _waiting = UnixStream::connect(&socket).unwrap();
    thread::sleep(Duration::from_millis(300));
    let c0 = procs::cpu_time(main);
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(2));
    let used = procs::cpu_time(main) - c0;
    let wall = t0.elapsed();
    println!(
        "parent out of descriptors with a connection pending on the hand-off socket: {used:?} CPU in {wall:?} ({} HTTP connections)",
        conns.len()
    );
    // Backing off costs a few milliseconds a second; spinning costs a good part of a core.
    assert!(
        used < wall / 8,
        "the parent spins on accept: {used:?} of CPU in {wall:?}"
    );
    let log = baton.log();
    assert!(
        log.contains("cannot accept on the hand-off socket") && log.contains("Too many open files"),
        "{log}"
    );
    // Descriptors come back: the hand-off goes on and completes.
    drop(conns);
    sb.write_config(&sb.config("v2"));
    assert!(held.release(DEADLINE));
    let m = sb.notify.wait_for_after(from, DEADLINE, "MAINPID=", |n| {
        n.pid == main && n.mainpid().is_some()
    });
    assert_eq!(m.mainpid(), Some(child));
    common::wait_until("v2", DEADLINE, || {
        (http::get_fresh(sb.addr(), "/").ok()?.text() == "v2").then_some(())
    });
    assert_eq!(baton.wait_exit(DEADLINE).code(), Some(0));
    common::sigterm_and_wait_gone(&sb, &mut baton, child);
}

/// A hand-off socket configured below a regular file (a file where a directory was meant):
/// baton cannot ask whether a predecessor serves there, so it refuses to start, naming the path,
/// rather than bind beside a predecessor it never asked. Only "nothing there" (no file, nothing
/// listening, not a socket) means a fresh start.
#[test]
fn a_hand_off_socket_below_a_regular_file_refuses_the_start() {
    let sb = Sandbox::new();
    let file = sb.path("not-a-directory");
    fs::write(&file, "").unwrap();
    let path = file.join("handoff.sock");
    let mut cfg = sb.config("never served");
    cfg["handoff_socket"] = path.to_str().unwrap().into();
    sb.write_config(&cfg);
    let mut baton = sb.spawn(sb.serve(&[]));
    let code = baton.wait_exit(DEADLINE).code();
    let log = baton.log();
    println!("hand-off socket below a file: exit {code:?}: {log}");
    assert_eq!(code, Some(76), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("cannot connect"))
        .unwrap_or_else(|| panic!("no line about the hand-off socket: {log}"));
    assert!(
        line.contains(&path.display().to_string()) && line.contains("Not a directory"),
        "{line}"
    );
    assert!(
        http::get_fresh(sb.addr(), "/").is_err(),
        "nothing serves the port"
    );
}
