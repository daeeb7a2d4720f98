//! Story: the operator asks for a PID file where baton may not safely write one — directly in
//! the sticky, world-writable `/tmp`, or in a directory that does not exist. Whoever reads that
//! file (a monitoring script, `baton reload`) would find nothing, or another user's file. baton
//! refuses to start, as nginx does, with one line naming the file and a sysexits code, before it
//! binds anything; `baton check` says the same; a library program gets the same error.

mod common;

use common::{procs, Sandbox, DEADLINE};

/// A PID file path directly in `/tmp`, unique to this run.
fn in_tmp(sb: &Sandbox) -> std::path::PathBuf {
    let unique = sb
        .dir()
        .file_name()
        .expect("sandbox name")
        .to_string_lossy()
        .into_owned();
    std::path::PathBuf::from(format!("/tmp/{unique}.pid"))
}

#[test]
fn a_pid_file_that_cannot_be_written_safely_refuses_the_start() {
    let sb = Sandbox::new();
    let tmp_pid = in_tmp(&sb);
    let missing = sb.path("no-such-dir/baton.pid");
    for (what, path, problem) in [
        (
            "in sticky /tmp",
            &tmp_pid,
            "/tmp: writable by others (mode 1777)",
        ),
        (
            "in a missing directory",
            &missing,
            "No such file or directory",
        ),
    ] {
        let mut config = sb.config("pid");
        config["pid_file"] = path.display().to_string().into();
        sb.write_config(&config);
        let expected = format!("pid file {}: ", path.display());

        let (_, log, line) = common::refused_alike_by_check_and_serve(
            &sb,
            &expected,
            problem,
            &format!("pid file {what}"),
        );
        assert!(
            !log.contains("listening on"),
            "refused before binding: {log}"
        );
        assert!(!path.exists(), "no file written");
        println!("pid file {what}: exit 78: {line}");
    }
    assert!(procs::listening_inodes_on_port(sb.port).is_empty());
}

#[test]
fn a_library_program_with_an_unwritable_pid_file_gets_the_error() {
    // The library returns the error; a program without a tracing subscriber would otherwise
    // never hear that its PID file was skipped.
    let sb = Sandbox::new();
    let tmp_pid = in_tmp(&sb);
    let mut app = sb.spawn(sb.program(
        "slow_stream",
        &[("BATON_PID_FILE", tmp_pid.to_str().expect("utf-8"))],
    ));
    let status = app.wait_exit(DEADLINE);
    let log = app.log();
    assert_eq!(status.code(), Some(78), "{log}");
    let line = format!(
        "slow_stream: pid file {}: /tmp: writable by others (mode 1777)",
        tmp_pid.display()
    );
    assert!(log.contains(&line), "{log}");
    assert!(procs::listening_inodes_on_port(sb.port).is_empty());
    assert!(!tmp_pid.exists());
}

#[test]
fn a_pid_file_in_the_runtime_directory_is_written_even_before_the_first_hand_off() {
    // The README's container configuration: hand-off socket and PID file in /tmp/baton, which
    // nothing made yet. The runtime directory is baton's own: the start creates it (0700).
    let sb = Sandbox::new();
    let rt = sb.path("rt");
    let mut config = sb.config("pid");
    config["handoff_socket"] = rt.join("handoff.sock").to_str().expect("utf-8").into();
    config["pid_file"] = rt.join("baton.pid").to_str().expect("utf-8").into();
    sb.write_config(&config);
    let out = common::output(sb.baton().args(["check", "--config"]).arg(sb.config_path()));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!rt.exists(), "check changes nothing");
    let baton = sb.spawn(sb.serve(&[]));
    baton.wait_ready(&sb.notify);
    let named = common::wait_until("the PID file", DEADLINE, || {
        std::fs::read_to_string(rt.join("baton.pid")).ok()
    });
    assert_eq!(named.trim(), baton.pid.to_string());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&rt).expect("rt").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    println!(
        "runtime directory created {mode:04o}; PID file names {}",
        named.trim()
    );
}

/// The packaged unit: root runs `baton check` for a service that runs as its own user, whose
/// runtime directory (`/run/baton`, 0700) that user owns. The check judges the directory for its
/// owner: private to it, accepted; writable by others, refused as before.
#[test]
fn check_as_root_accepts_a_pid_file_in_the_service_users_private_directory() {
    let Some(user) = common::users::OtherUser::create() else {
        return;
    };
    let sb = Sandbox::new();
    let run_dir = sb.path("run-baton");
    std::fs::create_dir(&run_dir).expect("mkdir");
    nix::unistd::chown(
        &run_dir,
        Some(nix::unistd::Uid::from_raw(user.uid)),
        Some(nix::unistd::Gid::from_raw(user.gid)),
    )
    .expect("chown to the service's user");
    for (mode, expected) in [(0o700, Some(0)), (0o777, Some(78))] {
        std::fs::set_permissions(&run_dir, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod");
        let mut config = sb.config("pid");
        config["pid_file"] = run_dir.join("baton.pid").display().to_string().into();
        sb.write_config(&config);
        let out = common::output(sb.baton().args(["check", "--config"]).arg(sb.config_path()));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), expected, "mode {mode:o}: {err}");
        if expected == Some(78) {
            assert!(err.contains("writable by others"), "mode {mode:o}: {err}");
        }
    }
}
