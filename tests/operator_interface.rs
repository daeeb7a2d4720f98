//! Stories of what an operator reads and types (first written for issue 12): the help, man
//! pages and completions a package ships; the
//! access log and JSON log lines, parsed; every fatal error printed once; `STATUS=` with the
//! version and the open connections; the systemfd loop (`LISTEN_FDS` without `LISTEN_PID`);
//! host names in `--listen`.

mod common;

use std::io::ErrorKind;

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{baton_exe, http, Sandbox, DEADLINE};
use nix::sys::signal::Signal;

/// Runs `cmd` to its end and collects its output. Spawned through the harness, so that the
/// orphan reaper of a parallel test never takes its exit status.
fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null());
    if cmd.get_program() != "script" {
        cmd.stdout(Stdio::piped());
    }
    cmd.stderr(Stdio::piped());
    let child =
        common::reaper::spawn_registered(&mut cmd).unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let pid = child.id() as i32;
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {cmd:?}: {e}"));
    common::reaper::forget_leader(pid);
    out
}

/// True when `program` can be run here.
fn available(program: &str) -> bool {
    let mut cmd = Command::new(program);
    cmd.arg("--version").stdout(Stdio::null());
    common::reaper::spawn_registered(&mut cmd)
        .and_then(|mut c| {
            let pid = c.id() as i32;
            let st = c.wait();
            common::reaper::forget_leader(pid);
            st
        })
        .is_ok()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Where build.rs wrote the man pages and completions for this build of the binary.
fn assets() -> PathBuf {
    baton_exe()
        .parent()
        .expect("the binary's directory")
        .join("assets")
}

fn zcat(path: &PathBuf) -> String {
    let out = run({
        let mut c = Command::new("zcat");
        c.arg(path);
        c
    });
    assert!(out.status.success(), "zcat {}: {out:?}", path.display());
    text(&out.stdout)
}

#[test]
fn help_shows_short_flags_defaults_and_variables() {
    let out = run({
        let mut c = Command::new(baton_exe());
        c.arg("--help");
        c
    });
    assert!(out.status.success());
    let help = text(&out.stdout);
    for expected in [
        "-l, --listen <ADDR>",
        "-c, --config <FILE>",
        "[default: 30s]",
        "[default: 10s]",
        "[env: BATON_LISTEN=]",
        "--access-log",
        "[env: BATON_ACCESS_LOG=]",
        "--http2-keepalive",
        "[env: BATON_HTTP2_KEEPALIVE=]",
        "--log-format <FORMAT>",
        "[default: auto]",
        "serve",
        "reload",
        "check",
    ] {
        assert!(
            help.contains(expected),
            "--help lacks {expected:?}:\n{help}"
        );
    }
    let out = run({
        let mut c = Command::new(baton_exe());
        c.args(["reload", "--help"]);
        c
    });
    let help = text(&out.stdout);
    assert!(help.contains("-p, --pid <PID>") && help.contains("-t, --timeout"));
    // The long options and variables that existed before still parse.
    let sb = Sandbox::new();
    let out = run({
        let mut c = sb.baton();
        c.args([
            "check",
            "--listen",
            "127.0.0.1:1",
            "--shutdown-timeout",
            "5s",
        ])
        .env("BATON_CHILD_TIMEOUT", "3s");
        c
    });
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn man_pages_have_every_section_and_name_only_pages_that_exist() {
    let man_dir = assets().join("man");
    let pages = ["baton", "baton-serve", "baton-reload", "baton-check"];
    let mut names = Vec::new();
    for page in pages {
        let path = man_dir.join(format!("{page}.1.gz"));
        let roff = zcat(&path);
        println!("{page}.1: {} bytes of roff", roff.len());
        for section in [
            "NAME",
            "SYNOPSIS",
            "DESCRIPTION",
            "OPTIONS",
            "EXIT STATUS",
            "SEE ALSO",
        ] {
            assert!(
                roff.contains(&format!(".SH \"{section}\""))
                    || roff.contains(&format!(".SH {section}\n")),
                "{page}.1 has no {section} section"
            );
        }
        if page == "baton" || page == "baton-serve" {
            for section in ["SIGNALS", "ENVIRONMENT", "FILES"] {
                assert!(roff.contains(section), "{page}.1 has no {section} section");
            }
            assert!(roff.contains("BATON_LISTEN_FDS_WITHOUT_PID"));
        }
        // DESCRIPTION does not repeat NAME's one line.
        let name_line = section_text(&roff, "NAME");
        let description = section_text(&roff, "DESCRIPTION");
        let summary = name_line.split(" - ").nth(1).unwrap_or_default().trim();
        assert!(!summary.is_empty(), "{page}: NAME is {name_line:?}");
        assert!(
            !description.contains(summary),
            "{page}: DESCRIPTION repeats NAME ({summary:?})"
        );
        names.push(roff);
    }
    // Every baton page another page refers to is shipped.
    for roff in &names {
        let mut rest = roff.as_str();
        while let Some(i) = rest.find("baton-") {
            let tail = &rest[i..];
            let end = tail.find("(1)").unwrap_or(0);
            let name = &tail[..end];
            if end > 0 && name.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                assert!(pages.contains(&name), "a page refers to {name}(1)");
            }
            rest = &tail[6..];
        }
    }
    // man renders them without a warning (what lintian checks), when man is installed.
    if available("man") {
        for page in pages {
            let out = run({
                let mut c = Command::new("man");
                c.args(["--warnings", "-E", "UTF-8", "-l"])
                    .arg(man_dir.join(format!("{page}.1.gz")))
                    .env("MANWIDTH", "80")
                    .env("LC_ALL", "C.UTF-8");
                c
            });
            assert!(out.status.success(), "man {page}: {out:?}");
            assert_eq!(text(&out.stderr), "", "man warns about {page}.1");
            assert!(text(&out.stdout).contains("EXIT STATUS"));
        }
    }
}

/// The text of a roff section (up to the next `.SH`).
fn section_text(roff: &str, name: &str) -> String {
    let start = roff
        .find(&format!(".SH {name}\n"))
        .or_else(|| roff.find(&format!(".SH \"{name}\"")))
        .unwrap_or_else(|| panic!("no {name} section"));
    let body = &roff[start..];
    let body = &body[body.find('\n').map_or(0, |i| i + 1)..];
    let end = body.find(".SH").unwrap_or(body.len());
    body[..end].replace("\\-", "-")
}

#[test]
fn completions_for_bash_zsh_and_fish_are_generated() {
    let dir = assets().join("completions");
    for (file, marker, option) in [
        ("baton.bash", "complete -F", "--access-log"),
        ("_baton", "#compdef baton", "--access-log"),
        ("baton.fish", "complete -c baton", "-l access-log"),
    ] {
        let script = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()));
        println!("{file}: {} bytes", script.len());
        for expected in [marker, option, "listen", "reload", "check"] {
            assert!(script.contains(expected), "{file} lacks {expected:?}");
        }
    }
    let out = run({
        let mut c = Command::new("bash");
        c.arg("-n").arg(dir.join("baton.bash"));
        c
    });
    assert!(out.status.success(), "bash -n: {out:?}");
}

/// The access-log events of a JSON log, as parsed objects.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON object: {l:?}: {e}\nlog:\n{log}"))
        })
        .collect()
}

fn access_events(log: &str) -> Vec<serde_json::Value> {
    json_lines(log)
        .into_iter()
        .filter(|v| v["target"] == "baton::access")
        .collect()
}

#[test]
fn json_log_lines_and_the_access_log_across_a_reload() {
    let sb = Sandbox::new();
    let mut config = sb.config("logged");
    config["access_log"] = true.into();
    sb.write_config(&config);
    let baton = sb.spawn(sb.serve(&["--log-format", "json"]));
    baton.wait_ready(&sb.notify);

    let mut client = http::Client::new(sb.addr());
    let r = client.get("/first?secret=1").unwrap();
    assert_eq!(r.text(), "logged");
    let reloaded = common::reload(&sb.notify, baton.pid);
    let r = http::get_fresh(sb.addr(), "/second").unwrap();
    assert_eq!(r.status, 200);

    let events = common::wait_until("two access-log events", DEADLINE, || {
        let events = access_events(&baton.log());
        (events.len() >= 2).then_some(events)
    });
    println!("access log: {events:#?}");
    let first = events.iter().find(|e| e["path"] == "/first").unwrap();
    assert_eq!(first["method"], "GET");
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes"], 6);
    assert_eq!(first["generation"], 0);
    assert!(first["duration_us"].is_u64());
    let peer = first["peer"].as_str().unwrap();
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    assert!(
        !first["message"].as_str().unwrap().contains("secret"),
        "the query string is not logged"
    );
    let second = events.iter().find(|e| e["path"] == "/second").unwrap();
    assert_eq!(second["generation"], 1, "served by the successor");
    assert_eq!(second["status"], 200);

    // Every line of both generations is one JSON object.
    let all = json_lines(&baton.log());
    assert!(all.iter().all(|v| v.is_object() && v["level"].is_string()));
    assert!(all.iter().any(|v| v["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("listening on 127.0.0.1:"))));
    baton.signal(reloaded.new, Signal::SIGTERM);
}

#[test]
fn the_access_log_is_off_by_default_and_one_text_line_per_request_when_on() {
    let sb = Sandbox::new();
    let mut off = sb.start("quiet", &[]);
    http::get_fresh(sb.addr(), "/a").unwrap();
    off.signal(off.pid, Signal::SIGTERM);
    off.wait_exit(DEADLINE);
    assert!(
        !off.log().contains("\"GET /a"),
        "no access line by default:\n{}",
        off.log()
    );

    let sb = Sandbox::new();
    sb.write_config(&sb.config("loud"));
    let mut cmd = sb.serve(&["--access-log"]);
    cmd.env("BATON_LOG_FORMAT", "text");
    let mut on = sb.spawn(cmd);
    on.wait_ready(&sb.notify);
    let mut client = http::Client::new(sb.addr());
    for _ in 0..3 {
        assert_eq!(client.get("/b").unwrap().text(), "loud");
    }
    let lines = common::wait_until("three access lines", DEADLINE, || {
        let log = on.log();
        let lines: Vec<String> = log
            .lines()
            .filter(|l| l.contains(" access "))
            .map(str::to_owned)
            .collect();
        (lines.len() >= 3).then_some(lines)
    });
    println!("{}", lines.join("\n"));
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert!(
            line.contains("\"GET /b HTTP/1.1\" 200 4 ") && line.contains("127.0.0.1:"),
            "{line}"
        );
    }
    on.signal(on.pid, Signal::SIGTERM);
    on.wait_exit(DEADLINE);
}

/// Runs `cmd` (a baton that must fail at start) and returns its exit code and stderr lines.
fn fails(mut cmd: Command) -> (i32, Vec<String>) {
    let out = run({
        cmd.stdout(Stdio::null());
        cmd
    });
    let lines = text(&out.stderr).lines().map(str::to_owned).collect();
    (out.status.code().unwrap_or(-1), lines)
}

/// Runs `cmd` with a terminal as its standard streams (util-linux `script`), as an operator
/// trying baton by hand does; returns the exit code and what the terminal showed.
fn on_a_terminal(sb: &Sandbox, cmd: &[&str], env: &[(&str, &str)]) -> Option<(i32, String)> {
    if !available("script") {
        common::prereq::missing("`script` (util-linux) to run a command on a terminal");
        return None;
    }
    let shell_line: Vec<String> = cmd
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let transcript = sb.path("typescript");
    let mut c = sb.command("script");
    c.args(["-q", "-e", "-c"])
        .arg(shell_line.join(" "))
        .arg(&transcript)
        .stdout(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = run(c);
    // What the terminal showed, without script's own first and last lines.
    let shown = std::fs::read_to_string(&transcript)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("Script started") && !l.starts_with("Script done"))
        .collect::<Vec<_>>()
        .join("\n");
    Some((out.status.code().unwrap_or(-1), shown))
}

#[test]
fn every_fatal_error_is_printed_once() {
    let sb = Sandbox::new();
    sb.write_config_text(r#"{"listen": ["127.0.0.1:1", "nope"]}"#);
    let (code, lines) = fails(sb.serve(&[]));
    println!("bad config: exit {code}: {lines:?}");
    assert_eq!(code, 78, "{lines:?}");
    let hits: Vec<_> = lines.iter().filter(|l| l.contains("\"nope\"")).collect();
    assert_eq!(hits.len(), 1, "the config error once: {lines:?}");
    assert!(hits[0].contains("listen[1]"), "{lines:?}");

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, lines) = fails({
        let mut c = sb.baton();
        c.args(["-l", &addr, "--handoff-socket"])
            .arg(sb.handoff_socket());
        c
    });
    assert_eq!(code, 69, "{lines:?}");
    assert_eq!(
        lines.iter().filter(|l| l.contains(&addr)).count(),
        1,
        "the bind error once: {lines:?}"
    );

    let (code, lines) = fails({
        let mut c = sb.baton();
        c.args(["-l", "127.0.0.1:0", "--handoff-socket"])
            .arg(sb.handoff_socket())
            .env("LISTEN_PID", "abc")
            .env("LISTEN_FDS", "1");
        c
    });
    assert_eq!(code, 78, "{lines:?}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("LISTEN_PID=\"abc\""))
            .count(),
        1,
        "{lines:?}"
    );

    // The same on a terminal, where stderr and stdout are one screen.
    let exe = baton_exe();
    let exe = exe.to_str().unwrap();
    let config = sb.config_path();
    /// The command line, its extra environment, the exit code, what is printed once.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a str);
    let cases: [Case; 3] = [
        (
            &[exe, "serve", "-c", config.to_str().unwrap()],
            &[],
            78,
            "\"nope\"",
        ),
        (&[exe, "-l", &addr], &[], 69, &addr),
        (
            &[exe, "-l", "127.0.0.1:0"],
            &[("LISTEN_PID", "abc"), ("LISTEN_FDS", "1")],
            78,
            "LISTEN_PID=",
        ),
    ];
    for (cmd, env, code, needle) in cases {
        let Some((got, shown)) = on_a_terminal(&sb, cmd, env) else {
            break; // skipping was allowed, and said so
        };
        println!("on a terminal, exit {got}:\n{shown}");
        assert_eq!(got, code, "{shown}");
        assert_eq!(shown.matches(needle).count(), 1, "printed once: {shown}");
    }
    drop(taken);
}

#[test]
fn status_carries_the_version_and_the_open_connections() {
    let sb = Sandbox::new();
    let baton = sb.start("counted", &[]);
    let ready = baton.wait_ready(&sb.notify);
    let status = ready.get("STATUS").unwrap_or_default().to_string();
    println!("READY=1 STATUS={status}");
    let version = format!("baton {}: serving on ", env!("CARGO_PKG_VERSION"));
    assert!(status.starts_with(&version), "{status}");
    assert!(status.ends_with("; 0 open connections"), "{status}");

    // A connection stays open: the next refresh (every 5 s) counts it.
    let mut client = http::Client::new(sb.addr());
    client.get("/").unwrap();
    let n = sb
        .notify
        .wait_for(DEADLINE, "STATUS= with 1 open connection", |n| {
            n.pid == baton.pid
                && !n.has("READY=1")
                && n.get("STATUS")
                    .is_some_and(|s| s.ends_with("; 1 open connection"))
        });
    println!("refreshed STATUS={}", n.get("STATUS").unwrap_or_default());
    assert!(n.get("STATUS").unwrap().starts_with(&version));
    baton.signal(baton.pid, Signal::SIGTERM);
}

/// A listening socket made the way systemfd makes it, placed at fd 3 of a command that starts
/// baton as its child (as `cargo watch -x run` would), with `LISTEN_FDS=1` and no `LISTEN_PID`.
fn systemfd_like(sb: &Sandbox, opt_in: bool, extra: &[&str]) -> (common::Baton, TcpListener) {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    sb.write_config(&serde_json::json!({
        "handoff_socket": sb.handoff_socket(),
        "pid_file": sb.pid_file(),
        "response_body": "via systemfd",
    }));
    let mut cmd = sb.command("sh");
    // Not `exec`: baton is a grandchild, its pid unknown to whoever set LISTEN_FDS.
    cmd.arg("-c")
        .arg("\"$0\" \"$@\"; exit $?")
        .arg(baton_exe())
        .arg("--config")
        .arg(sb.config_path())
        .args(extra)
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID");
    if opt_in {
        cmd.env("BATON_LISTEN_FDS_WITHOUT_PID", "1");
    }
    common::place_at_fd3(&mut cmd, socket.as_raw_fd());
    (sb.spawn(cmd), socket)
}

#[test]
fn listen_fds_without_listen_pid_is_ignored_with_one_warning() {
    let sb = Sandbox::new();
    let own = sb.listen();
    let (baton, socket) = systemfd_like(&sb, false, &["-l", &own]);
    // It serves what it was configured with...
    let r = sb.wait_serving();
    assert_eq!(r.text(), "via systemfd");
    // ...says once why the passed socket is not served, and what to do...
    let log = baton.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("LISTEN_FDS=\"1\" without LISTEN_PID"))
        .collect();
    println!("{warnings:?}");
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("BATON_LISTEN_FDS_WITHOUT_PID=1"));
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    // ...and does not serve it.
    let mut conn = std::net::TcpStream::connect(socket.local_addr().unwrap()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    conn.write_all(http::get_request("/", true).as_bytes())
        .unwrap();
    let mut buf = [0u8; 1];
    // Nobody answers, and nobody closes: the read times out (a reset or an end of file would
    // mean the socket was closed or served).
    match std::io::Read::read(&mut conn, &mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("nobody answers on the ignored socket, nor closes it: {other:?}"),
    }
}

#[test]
fn the_opt_in_serves_the_socket_systemfd_passed_and_reloads_on_it() {
    let sb = Sandbox::new();
    let (baton, socket) = systemfd_like(&sb, true, &[]);
    let addr = socket.local_addr().unwrap();
    let r = common::wait_until("the systemfd socket to answer", DEADLINE, || {
        http::get_fresh(addr, "/").ok()
    });
    assert_eq!(r.text(), "via systemfd");
    let ready = sb
        .notify
        .wait_for(DEADLINE, "READY=1", |n| n.has("READY=1"));
    let status = ready.get("STATUS").unwrap_or_default();
    assert!(status.contains("(systemd)"), "{status}");
    let log = baton.log();
    assert!(!log.contains("without LISTEN_PID"), "{log}");
    assert!(log.contains("source=systemd"), "{log}");
    // The development loop: kill -1, and the successor serves the same socket.
    let reloaded = common::reload(&sb.notify, ready.pid);
    assert_eq!(http::get_fresh(addr, "/").unwrap().text(), "via systemfd");
    baton.signal(reloaded.new, Signal::SIGTERM);
}

#[test]
fn host_names_resolve_at_start_and_an_unknown_one_is_one_line() {
    let sb = Sandbox::new();
    let name = format!("localhost:{}", sb.port);
    let out = run({
        let mut c = sb.baton();
        c.args(["check", "-l", &name]);
        c
    });
    let said = text(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        said.contains(&format!("listen {name} (resolved: 127.0.0.1:{}", sb.port)),
        "{said}"
    );

    let baton = sb.spawn({
        let mut c = sb.baton();
        c.args(["-l", &name, "--handoff-socket"])
            .arg(sb.handoff_socket());
        c
    });
    baton.wait_ready(&sb.notify);
    assert_eq!(sb.wait_serving().status, 200);
    assert!(baton.log().contains("resolved"), "{}", baton.log());
    baton.signal(baton.pid, Signal::SIGTERM);

    for mut cmd in [
        {
            let mut c = sb.baton();
            c.args(["-l", "nothing.invalid:80", "--handoff-socket"])
                .arg(sb.handoff_socket());
            c
        },
        {
            let mut c = sb.baton();
            c.args(["check", "-l", "nothing.invalid:80"]);
            c
        },
    ] {
        cmd.stdout(Stdio::piped());
        let out = run(cmd);
        let err = text(&out.stderr);
        println!("{err}");
        assert_eq!(out.status.code(), Some(78), "{out:?}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(
            lines[0].contains("cannot resolve \"nothing.invalid\""),
            "{err}"
        );
    }
}

/// Outside systemd (`NOTIFY_SOCKET` unset, or set empty as some launchers leave it) talking to
/// systemd is a silent no-op: a reload done with `baton reload` works and the log holds no
/// warning at all (none about a notify socket or a barrier that cannot be there).
#[test]
fn without_systemd_a_reload_is_quiet_about_it() {
    for empty in [false, true] {
        let options = common::Options::new("v1").args(&["--shutdown-timeout", "5s"]);
        let mut s = if empty {
            options.env("NOTIFY_SOCKET", "")
        } else {
            options.env_remove("NOTIFY_SOCKET")
        }
        .start();
        s.sb.write_config(&s.sb.config("v2"));
        // Without a notify socket the story knows the start by a 200, which may come just
        // before the control socket `baton reload` asks is made.
        let control = format!("control.{}.", s.main);
        common::wait_until("the control socket", DEADLINE, || {
            std::fs::read_dir(s.sb.path("run"))
                .ok()?
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&control))
                .then_some(())
        });
        let out = common::output(
            s.sb.baton()
                .args(["reload", "--timeout", "20s", "--pid", &s.main.to_string()])
                .arg("--config")
                .arg(s.sb.config_path()),
        );
        assert!(
            out.status.success(),
            "baton reload: {out:?}\n{}",
            s.baton.log()
        );
        assert_eq!(s.get(), "v2");
        // The successor writes the PID file once it is main, which may be just after `baton
        // reload` returned.
        let old = s.main;
        s.main = common::wait_until("the PID file names the successor", DEADLINE, || {
            std::fs::read_to_string(s.sb.pid_file())
                .ok()?
                .trim()
                .parse()
                .ok()
                .filter(|pid| *pid != old)
        });
        let log = s.baton.log();
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
        assert!(
            warnings.is_empty(),
            "NOTIFY_SOCKET empty: {empty}: {warnings:#?}"
        );
        s.stop();
    }
}
