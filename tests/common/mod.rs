//! The harness shared by the operator stories in `tests/*.rs`.
//!
//! * [`Sandbox`]: a temporary directory (hand-off socket, config, PID file, logs), a port of its own
//!   ([`ports`]) and a real notify socket ([`notify::NotifyRecorder`]).
//! * [`Baton`]: a spawned process group (the real binary, or a wrapper that execs it) that is
//!   killed and reaped when dropped, with its stderr in a log file.
//! * [`reload`]: SIGHUP to the main pid and the notify sequence of a successful hand-off.
//! * [`Story`]: all of the above as an operator's verbs: start with options, load, reload,
//!   reload that must fail, stop and check that nothing is left.
//! * [`load::Load`]: concurrent keep-alive and fresh-connection clients checking every body,
//!   over TCP or TLS ([`tls`]: a test CA, certificate files, rustls clients).
//! * [`procs`]: /proc helpers (alive, zombie, children, process group, sockets).
//!
//! The test process is a child subreaper ([`reaper`]), as systemd is for a service: successors
//! whose parent retired are reparented to it and reaped, so they vanish from /proc.
#![allow(dead_code)]

pub mod examples;
pub mod h2;
pub mod http;
pub mod load;
pub mod notify;
pub mod ports;
pub mod prereq;
pub mod procs;
pub mod reaper;
pub mod scripted_successor;
pub mod story;
pub mod tls;
pub mod tmpfs;
pub mod users;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub use notify::{Notification, NotifyRecorder};
#[allow(unused_imports)]
pub use story::{Options, Story};

/// The generous deadline for anything that should happen "soon" on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The binary under test: cargo's for the tests, `$BATON_EXE` for the benchmark (an example,
/// which cargo tells no binary path).
pub fn baton_exe() -> PathBuf {
    match (
        std::env::var_os("BATON_EXE"),
        option_env!("CARGO_BIN_EXE_baton"),
    ) {
        (Some(p), _) => PathBuf::from(p),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => panic!("set BATON_EXE to the baton binary"),
    }
}

/// Polls `f` every 20 ms until it returns `Some`, or `timeout` passes.
pub fn try_wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Like [`try_wait_until`] but panics, naming `what`, on timeout.
pub fn wait_until<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    try_wait_until(timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Tests that put real load on the machine take this lock, so that at most one of them runs at a
/// time in one test binary (the machine has 2 shared cores).
pub fn heavy() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary world for one test.
pub struct Sandbox {
    dir: tempfile::TempDir,
    pub notify: NotifyRecorder,
    pub port: u16,
    /// Its own port, then the extra ones it reserved ([`Sandbox::extra_port`]).
    ports: Mutex<Vec<ports::Port>>,
    logs: AtomicUsize,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        reaper::init();
        let dir = tempfile::Builder::new()
            .prefix("baton-test-")
            .tempdir()
            .expect("tempdir");
        let notify = NotifyRecorder::bind(&dir.path().join("notify.sock"));
        fs::create_dir(dir.path().join("xdg")).expect("mkdir xdg");
        fs::create_dir(dir.path().join("bin")).expect("mkdir bin");
        link_or_copy(&baton_exe(), &dir.path().join("bin/baton"));
        let own = ports::reserve();
        Sandbox {
            dir,
            notify,
            port: own.port,
            ports: Mutex::new(vec![own]),
            logs: AtomicUsize::new(0),
        }
    }

    /// The `i`-th extra port on 127.0.0.1 (from 0), reserved for this sandbox at the first ask
    /// and the same on every later one, for as long as the sandbox lives.
    pub fn extra_port(&self, i: usize) -> u16 {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        while ports.len() < i + 2 {
            ports.push(ports::reserve());
        }
        ports[i + 1].port
    }

    /// The sandbox opened to another user: its root traversable, `tmp/` like /tmp (1777).
    pub fn shared_tmp(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(self.dir(), fs::Permissions::from_mode(0o711)).unwrap();
        let tmp = self.path("tmp");
        fs::create_dir(&tmp).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
        tmp
    }

    /// A path inside the sandbox.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The binary the sandbox runs: a hard link of the one under test at `bin/baton`, so that a
    /// test can replace "the binary on disk" as a package upgrade would ([`HeldSuccessor`]).
    pub fn exe(&self) -> PathBuf {
        self.path("bin/baton")
    }

    /// `exe --config <the sandbox's config>` under a real `ulimit -n nofile` (a shell sets it,
    /// then execs `exe`: same pid): a process that can run out of descriptors.
    pub fn command_with_fd_limit(&self, nofile: u32, exe: &Path) -> Command {
        let mut cmd = self.command("/bin/sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(exe)
            .arg("--config")
            .arg(self.config_path());
        cmd
    }

    /// `127.0.0.1:PORT` as a string, as configured.
    pub fn listen(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.listen().parse().expect("addr")
    }

    /// The hand-off socket path the tests configure (its directory does not exist at first).
    pub fn handoff_socket(&self) -> PathBuf {
        self.path("run/handoff.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("baton.json")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.path("baton.pid")
    }

    /// Writes the config file atomically (temporary file + rename), as an editor would.
    pub fn write_config_text(&self, text: &str) {
        let tmp = self.path("baton.json.tmp");
        fs::write(&tmp, text).expect("write config");
        fs::rename(&tmp, self.config_path()).expect("rename config");
    }

    /// The usual config: listen on the sandbox port, hand-off socket and PID file in the sandbox.
    pub fn config(&self, body: &str) -> serde_json::Value {
        serde_json::json!({
            "listen": [self.listen()],
            "handoff_socket": self.handoff_socket(),
            "pid_file": self.pid_file(),
            "response_body": body,
        })
    }

    pub fn write_config(&self, v: &serde_json::Value) {
        self.write_config_text(&serde_json::to_string_pretty(v).expect("json"));
    }

    /// `program` as PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`), as a
    /// container runtime starts its entry point; the namespace ends with the command. Root only,
    /// as in CI.
    pub fn in_new_pid_namespace(&self, program: impl AsRef<OsStr>) -> Command {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the PID-namespace stories run as root (unshare --pid), as in CI"
        );
        let mut cmd = self.command("unshare");
        cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(program);
        cmd
    }

    /// A command with a clean, minimal environment: `NOTIFY_SOCKET` pointing at the recorder,
    /// `XDG_RUNTIME_DIR` and `TMPDIR` inside the sandbox, `RUST_LOG=info`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", self.dir())
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", self.notify.path())
            .env("XDG_RUNTIME_DIR", self.path("xdg"))
            .env("TMPDIR", self.dir())
            .current_dir(self.dir())
            .stdin(Stdio::null());
        cmd
    }

    /// systemd's activator listening on the sandbox address (`--fdname=NAME`), with the real
    /// binary and the sandbox config as its command.
    pub fn socket_activate(&self, fdname: &str) -> Command {
        self.socket_activate_named(&[(&self.listen(), fdname)])
    }

    /// systemd's activator listening on each `(address, name)` in order (fds 3, 4, …, named in
    /// `LISTEN_FDNAMES` as a socket unit's `FileDescriptorName=` would), with the real binary and
    /// the sandbox config as its command.
    pub fn socket_activate_named(&self, sockets: &[(&str, &str)]) -> Command {
        let mut cmd = self.command("systemd-socket-activate");
        for (addr, _) in sockets {
            cmd.arg("-l").arg(addr);
        }
        let names: Vec<&str> = sockets.iter().map(|(_, name)| *name).collect();
        cmd.arg(format!("--fdname={}", names.join(":")));
        // The activator hands its children only the variables named with -E (and PATH, HOME, …).
        for var in ["NOTIFY_SOCKET", "RUST_LOG", "XDG_RUNTIME_DIR", "TMPDIR"] {
            cmd.arg("-E").arg(var);
        }
        cmd.arg("--")
            .arg(baton_exe())
            .arg("--config")
            .arg(self.config_path());
        cmd
    }

    /// The sandbox's binary ([`Sandbox::exe`]) with the clean environment and no arguments.
    pub fn baton(&self) -> Command {
        self.command(self.exe())
    }

    /// `baton --config <sandbox config>` plus `extra` arguments.
    pub fn serve(&self, extra: &[&str]) -> Command {
        let mut cmd = self.baton();
        cmd.arg("--config").arg(self.config_path()).args(extra);
        cmd
    }

    /// Spawns `cmd` in a new process group, stdout and stderr into a log file of the sandbox.
    pub fn spawn(&self, mut cmd: Command) -> Baton {
        let n = self.logs.fetch_add(1, Ordering::SeqCst);
        let log = self.path(&format!("baton-{n}.log"));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        cmd.stdout(out).stderr(err).process_group(0);
        let child = reaper::spawn_registered(&mut cmd).expect("spawn baton");
        let pid = child.id() as i32;
        Baton {
            child,
            pid,
            log,
            status: None,
        }
    }

    /// An example program (a library user) with the usual settings as `BATON_*` variables
    /// (listen on the sandbox port, hand-off socket and PID file in the sandbox) plus `env`.
    pub fn app(&self, example: &str, env: &[(&str, &str)]) -> Command {
        self.library_program(examples::example(example), env)
    }

    /// [`Sandbox::app`] for a test program (`tests/programs/<name>.rs`) instead of an example.
    pub fn program(&self, name: &str, env: &[(&str, &str)]) -> Command {
        self.library_program(examples::program(name), env)
    }

    fn library_program(&self, exe: PathBuf, env: &[(&str, &str)]) -> Command {
        let mut cmd = self.command(exe);
        cmd.env("BATON_LISTEN", self.listen())
            .env("BATON_HANDOFF_SOCKET", self.handoff_socket())
            .env("BATON_PID_FILE", self.pid_file());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `baton --config …` with the usual config and waits for its `READY=1`.
    pub fn start(&self, body: &str, extra: &[&str]) -> Baton {
        self.write_config(&self.config(body));
        let b = self.spawn(self.serve(extra));
        b.wait_ready(&self.notify);
        b
    }

    /// Waits until `addr` answers 200 on a fresh connection.
    pub fn wait_serving(&self) -> http::Response {
        let addr = self.addr();
        wait_until(&format!("{addr} to answer 200"), DEADLINE, || {
            http::get_fresh(addr, "/").ok().filter(|r| r.status == 200)
        })
    }
}

/// A spawned process group: the leader is the test's child; successors are its descendants.
/// Dropping it SIGKILLs the whole group and reaps what it can.
pub struct Baton {
    child: Child,
    /// The leader's pid (also the process group id).
    pub pid: i32,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Baton {
    /// Everything the group wrote to stdout/stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Waits for `READY=1` from the leader.
    pub fn wait_ready(&self, notify: &NotifyRecorder) -> Notification {
        let pid = self.pid;
        match notify.try_wait_for_after(0, DEADLINE, |n| n.pid == pid && n.has("READY=1")) {
            Some(n) => n,
            None => panic!(
                "no READY=1 from {pid} within {DEADLINE:?}\nnotifications:\n{}log:\n{}",
                notify.dump(),
                self.log()
            ),
        }
    }

    /// The leader's exit status, if it exited (reaps it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
                reaper::forget_leader(self.pid);
            }
        }
        self.status
    }

    /// Waits for the leader to exit and reaps it; panics (with the log) after `timeout`.
    /// Waits (up to [`DEADLINE`]) for the process to exit with `code`, and returns its log;
    /// `why` says what the code means (`EX_CONFIG on an address mismatch`).
    pub fn expect_exit_code(&mut self, code: i32, why: &str) -> String {
        let st = self.wait_exit(DEADLINE);
        let log = self.log();
        assert_eq!(
            st.code(),
            Some(code),
            "{why}, got {}; log:\n{log}",
            describe(st)
        );
        log
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match try_wait_until(timeout, || self.try_exit()) {
            Some(st) => st,
            None => panic!(
                "process {} did not exit within {timeout:?}; log:\n{}",
                self.pid,
                self.log()
            ),
        }
    }

    /// Members of the process group that still exist (zombies included).
    pub fn members(&self) -> Vec<procs::ProcStat> {
        procs::group_members(self.pid)
    }

    /// Members that are alive (not zombies).
    pub fn live_members(&self) -> Vec<i32> {
        self.members()
            .into_iter()
            .filter(|p| !p.is_zombie())
            .map(|p| p.pid)
            .collect()
    }

    /// Waits until no process of the group exists any more (the leader reaped by us, orphans by
    /// the reaper). Returns false on timeout.
    pub fn wait_group_gone(&mut self, timeout: Duration) -> bool {
        try_wait_until(timeout, || {
            self.try_exit();
            self.members().is_empty().then_some(())
        })
        .is_some()
    }

    /// Sends a signal to one process (usually the current main pid).
    pub fn signal(&self, pid: i32, sig: Signal) {
        assert!(
            procs::kill(pid, sig),
            "kill({pid}, {sig:?}) failed: no such process"
        );
    }
}

impl Drop for Baton {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Baton {
    /// SIGKILLs the whole group and reaps what it can (what dropping it does).
    pub fn kill(&mut self) {
        // SAFETY: kill(2) on our own process group; ESRCH is fine.
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
        reaper::forget_leader(self.pid);
        let pgid = self.pid;
        let _ = try_wait_until(Duration::from_secs(5), || {
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            procs::group_members(pgid).is_empty().then_some(())
        });
    }
}

/// [`reaper::output`], panicking when the command cannot be run.
pub fn output(cmd: &mut Command) -> std::process::Output {
    reaper::output(cmd.stdin(Stdio::null())).expect("run the command")
}

/// The first line of `log` that contains `needle`; panics (showing the log) when none does.
pub fn line_with<'a>(log: &'a str, needle: &str, what: &str) -> &'a str {
    log.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{what}:\n{log}"))
}

/// The lines of a log that complain (neither INFO nor DEBUG, not blank).
pub fn complaints(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| !l.contains(" INFO ") && !l.contains(" DEBUG ") && !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Bad input in the sandbox's configuration, refused alike by `baton check` and by `serve`:
/// each exits 78 with one complaint line, naming `expected` (what and where) and `problem`.
/// Returns `check`'s standard error and `serve`'s log with its complaint line.
pub fn refused_alike_by_check_and_serve(
    sb: &Sandbox,
    expected: &str,
    problem: &str,
    what: &str,
) -> (String, String, String) {
    let out = output(sb.baton().args(["check", "--config"]).arg(sb.config_path()));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(78), "check, {what}: {err}");
    assert_eq!(complaints(&err).len(), 1, "one line: {err}");
    assert!(
        err.starts_with(&format!("baton: {expected}")),
        "{what}: {err}"
    );
    assert!(err.contains(problem), "{what}: {err}");

    let mut serve = sb.spawn(sb.serve(&[]));
    let status = serve.wait_exit(DEADLINE);
    let log = serve.log();
    assert_eq!(status.code(), Some(78), "serve, {what}: {log}");
    let lines = complaints(&log);
    assert_eq!(lines.len(), 1, "one line: {log}");
    assert!(
        lines[0].contains(expected) && lines[0].contains(problem),
        "{log}"
    );
    let line = lines[0].clone();
    (err, log, line)
}

/// What a finished command wrote: its standard output, then its standard error.
pub fn text_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// How a process ended, readable in assertions.
pub fn describe(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{st:?}"),
    }
}

/// Starts the child with `signals` ignored (as `nohup` or a shell's `&` start a program with
/// some signals ignored, and as an exec keeps them).
pub fn ignore_signals(cmd: &mut Command, signals: &[libc::c_int]) {
    let signals = signals.to_vec();
    // SAFETY: only signal(2), async-signal-safe, between fork and exec; `signals` was allocated
    // before the fork and is only read.
    unsafe {
        cmd.pre_exec(move || {
            for &s in &signals {
                if libc::signal(s, libc::SIG_IGN) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Places `fd` at descriptor 3 in the child, without `FD_CLOEXEC` (as a parent hands a listener).
pub fn place_at_fd3(cmd: &mut Command, fd: RawFd) {
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = libc::fcntl(3, libc::F_GETFD);
            if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Places `fds` at descriptors 3, 4, … in the child, in order, without `FD_CLOEXEC` (as systemd
/// passes several sockets, or a parent hands several listeners). Each is first copied above 100, so
/// that placing one never overwrites another that happens to sit at a low number.
pub fn place_at_fds(cmd: &mut Command, fds: &[RawFd]) {
    let fds = fds.to_vec();
    // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec; `fds` was
    // allocated before the fork and is only read.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0 as RawFd; 16];
            if fds.len() > high.len() {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            for (i, &fd) in fds.iter().enumerate() {
                high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &copy) in high[..fds.len()].iter().enumerate() {
                // dup2 clears FD_CLOEXEC on the new descriptor.
                if libc::dup2(copy, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// The main pid as systemd would track it: the leader, then each `MAINPID=` sent by the main.
pub fn current_main(notify: &NotifyRecorder, leader: i32) -> i32 {
    let mut main = leader;
    for n in notify.all() {
        if n.pid == main {
            if let Some(m) = n.mainpid() {
                main = m;
            }
        }
    }
    main
}

/// One successful hand-off as systemd sees it.
#[derive(Debug, Clone)]
pub struct Reload {
    pub old: i32,
    pub new: i32,
    pub sighup_at: Instant,
    pub reloading: Notification,
    pub mainpid: Notification,
    pub ready: Notification,
}

impl Reload {
    /// SIGHUP sent → `MAINPID=` received.
    pub fn handoff_time(&self) -> Duration {
        self.mainpid.at.saturating_duration_since(self.sighup_at)
    }
}

/// SIGHUP to `old` and waits for the documented sequence: `RELOADING=1` (+`MONOTONIC_USEC=`)
/// from `old`, then `MAINPID=<new>` from `old`, then `READY=1` from `new`, in that order.
/// Panics on a failed reload (`STATUS=reload failed: …`) or a timeout, with the record.
pub fn reload(notify: &NotifyRecorder, old: i32) -> Reload {
    try_reload(notify, old, DEADLINE).unwrap_or_else(|e| panic!("{e}"))
}

/// [`reload`] that reports a failed reload, a timeout or a broken sequence as `Err(what)`
/// (with the record) instead of panicking: the benchmark counts them.
pub fn try_reload(notify: &NotifyRecorder, old: i32, timeout: Duration) -> Result<Reload, String> {
    let from = notify.len();
    let sighup_at = Instant::now();
    if !procs::kill(old, Signal::SIGHUP) {
        return Err(format!("SIGHUP to {old}: no such process"));
    }
    let wait = |timeout, what: &str, pred: &dyn Fn(&Notification) -> bool| {
        notify
            .try_wait_for_after(from, timeout, pred)
            .ok_or_else(|| format!("no {what} within {timeout:?}:\n{}", notify.dump()))
    };
    let end = wait(
        timeout,
        &format!("MAINPID= or reload failed from {old}"),
        &|n| {
            n.pid == old
                && (n.mainpid().is_some()
                    || n.get("STATUS")
                        .is_some_and(|s| s.starts_with("reload failed")))
        },
    )?;
    let Some(new) = end.mainpid() else {
        return Err(format!(
            "reload of {old} failed: {end:?}\n{}",
            notify.dump()
        ));
    };
    let reloading = wait(Duration::ZERO, &format!("RELOADING=1 from {old}"), &|n| {
        n.pid == old && n.has("RELOADING=1")
    })?;
    let ready = wait(
        timeout,
        &format!("READY=1 from the successor {new}"),
        &|n| n.pid == new && n.has("READY=1"),
    )?;
    let problem = if reloading.seq > end.seq {
        "RELOADING=1 must precede MAINPID="
    } else if reloading
        .get("MONOTONIC_USEC")
        .and_then(|v| v.parse::<u64>().ok())
        .is_none()
    {
        "RELOADING=1 without MONOTONIC_USEC="
    } else if new == old {
        "MAINPID= names the old process itself"
    } else if end.seq > ready.seq {
        "the successor said READY=1 before its predecessor announced MAINPID="
    } else {
        return Ok(Reload {
            old,
            new,
            sighup_at,
            reloading,
            mainpid: end,
            ready,
        });
    };
    Err(format!("{problem}:\n{}", notify.dump()))
}

/// SIGTERM to `main` (the main process of `baton`'s line), its `STOPPING=1`, then every process
/// of the line gone, and no panic in its log.
pub fn sigterm_and_wait_gone(sb: &Sandbox, baton: &mut Baton, main: i32) {
    let from = sb.notify.len();
    assert!(procs::kill(main, Signal::SIGTERM), "SIGTERM {main}");
    sb.notify.wait_for_after(from, DEADLINE, "STOPPING=1", |n| {
        n.pid == main && n.has("STOPPING=1")
    });
    assert!(
        baton.wait_group_gone(DEADLINE),
        "processes left: {:?}",
        baton.members()
    );
    assert!(!baton.log().contains("panicked"), "{}", baton.log());
}

/// SIGHUP to `old` and waits for a failed reload: `RELOADING=1`, then `READY=1` with
/// `STATUS=reload failed: …` from `old` (and no `MAINPID=`). Returns the status text.
pub fn reload_expect_failure(notify: &NotifyRecorder, old: i32) -> String {
    let from = notify.len();
    assert!(
        procs::kill(old, Signal::SIGHUP),
        "SIGHUP to {old}: no such process"
    );
    let end = notify.wait_for_after(
        from,
        DEADLINE,
        &format!("MAINPID= or READY=1 from {old}"),
        |n| n.pid == old && (n.mainpid().is_some() || n.has("READY=1")),
    );
    assert!(
        end.mainpid().is_none(),
        "the reload was expected to fail but succeeded: {}",
        notify.dump()
    );
    let status = end.get("STATUS").unwrap_or_default().to_string();
    assert!(
        status.starts_with("reload failed: "),
        "READY=1 after a failed reload must carry STATUS=reload failed: …, got {end:?}"
    );
    notify.wait_for_after(
        from,
        Duration::ZERO,
        "RELOADING=1 before the failure",
        |n| n.pid == old && n.has("RELOADING=1") && n.seq < end.seq,
    );
    status
}

/// Percentiles of durations (median, max), for the printed figures.
pub fn median_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    v.sort();
    (v[v.len() / 2], v[v.len() - 1])
}

/// A hard link of `from` at `to` (same file system), else a copy.
pub fn link_or_copy(from: &Path, to: &Path) {
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to).expect("copy the binary");
    }
}

/// A FIFO (named pipe): whoever opens it for reading blocks until a writer comes.
pub fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

/// Feeds `content` once to a reader of the FIFO at `path` that is already waiting (or comes
/// within `timeout`). Returns false if nobody opened it for reading in time.
pub fn feed_fifo(path: &Path, content: &str, timeout: Duration) -> bool {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file: Option<File> = try_wait_until(timeout, || {
        // O_NONBLOCK write-open fails with ENXIO while no reader has it open.
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .ok()
    });
    match file {
        Some(mut f) => {
            let _ = f.write_all(content.as_bytes());
            true
        }
        None => false,
    }
}

/// The binary on disk ([`Sandbox::exe`]) replaced, as an upgrade replaces it, by a wrapper that
/// waits on a FIFO before it execs the real binary at the same path: the next successor a reload
/// starts hangs at its very start (think of an exec from a stuck network file system) until
/// [`HeldSuccessor::release`]. A real way to keep a successor mid-start for as long as a test
/// needs, with no test hook in the product. The process is the successor itself (same pid,
/// environment and descriptors), so the parent sees exactly a slow successor.
pub struct HeldSuccessor {
    exe: PathBuf,
    real: PathBuf,
    fifo: PathBuf,
    held: bool,
}

impl HeldSuccessor {
    pub fn install(sb: &Sandbox) -> HeldSuccessor {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let exe = sb.exe();
        let real = sb.path(&format!("bin/.real-{n}"));
        let fifo = sb.path(&format!("held-{n}.fifo"));
        mkfifo(&fifo);
        fs::hard_link(&exe, &real).expect("keep the real binary");
        let script = sb.path(&format!("bin/.held-{n}"));
        fs::write(
            &script,
            format!(
                "#!/bin/sh\n# held by the test until it writes to the FIFO\nread _ < '{}'\nexec \"$0\" \"$@\"\n",
                fifo.display()
            ),
        )
        .expect("write the wrapper");
        fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod the wrapper");
        fs::rename(&script, &exe).expect("replace the binary by the wrapper");
        HeldSuccessor {
            exe,
            real,
            fifo,
            held: true,
        }
    }

    /// Puts the real binary back (the held successor, if any, keeps waiting).
    pub fn restore(&mut self) {
        if std::mem::take(&mut self.held) {
            let tmp = self.exe.with_extension("restore");
            fs::hard_link(&self.real, &tmp).expect("link the real binary");
            fs::rename(&tmp, &self.exe).expect("put the real binary back");
        }
    }

    /// Puts the real binary back, then lets the held successor go on: it execs it. Returns false
    /// if no successor was (or came within `timeout`) waiting.
    pub fn release(&mut self, timeout: Duration) -> bool {
        self.restore();
        feed_fifo(&self.fifo, "go\n", timeout)
    }
}

impl Drop for HeldSuccessor {
    fn drop(&mut self) {
        if self.held {
            let tmp = self.exe.with_extension("restore");
            if fs::hard_link(&self.real, &tmp).is_ok() {
                let _ = fs::rename(&tmp, &self.exe);
            }
        }
        let _ = fs::remove_file(&self.real);
    }
}

/// The hand-off socket a successor was told to dial (`BATON_PREDECESSOR_SOCKET` in its
/// environment): where its parent listens during this hand-off.
pub fn predecessor_socket_of(child: i32) -> PathBuf {
    wait_until("the successor's BATON_PREDECESSOR_SOCKET", DEADLINE, || {
        procs::environ(child).into_iter().find_map(|v| {
            v.strip_prefix("BATON_PREDECESSOR_SOCKET=")
                .map(PathBuf::from)
        })
    })
}

/// An exclusive `flock(2)` on a lock file, held until dropped: tests that use a fixed path (such
/// as the Go article's `/tmp/api.sock`) take `/tmp/baton-apisock.lock` so that two test runs
/// never use it at once.
pub struct PathLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl PathLock {
    /// Waits for the lock on `path` (created if missing).
    pub fn take(path: &str) -> PathLock {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
        PathLock(
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                .unwrap_or_else(|(_, e)| panic!("flock {path}: {e}")),
        )
    }
}
