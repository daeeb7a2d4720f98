//! A stable parent for containers and for supervisors that follow one pid.
//!
//! A reload retires the process that received `SIGHUP`. Under systemd that is fine: systemd is
//! the stable parent and follows `MAINPID=`. As PID 1 of a container it is fatal (when PID 1
//! exits the kernel kills its whole PID namespace, successor included), and a supervisor that
//! follows one pid (supervisord, runit, s6, `docker run` without an init) sees its child exit at
//! every reload. So when baton is PID 1, or when asked (`--supervise`, `BATON_SUPERVISE=1`,
//! `"supervise": true`), the first process does not serve. It stays, for the life of the service,
//! as this small supervisor:
//!
//! * it starts generation 0 as its child: the same binary path and arguments, with
//!   [`SUPERVISOR_ENV`] set to its pid (the mark of a supervised generation, which never
//!   supervises again) and `NOTIFY_SOCKET` pointing at a private datagram socket of its own;
//! * it is the generations' service manager on that socket, as systemd is: it follows `MAINPID=`
//!   from the main generation, so it always knows which generation is main, with no new protocol
//!   (generations hand over among themselves exactly as under systemd);
//! * it forwards `SIGHUP` to the main generation and `SIGTERM`/`SIGINT` to every generation;
//! * it reaps every process that ends up its child (PID 1's duty; `PR_SET_CHILD_SUBREAPER` when
//!   it is not PID 1, so retired generations are reparented to it rather than to init);
//! * it passes on `READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=`, `WATCHDOG=1` … of the main
//!   generation to its own `NOTIFY_SOCKET`, if it has one (e.g. `podman --sdnotify=container`),
//!   from its own pid and never `MAINPID=`: to whoever started it, the supervisor is the service;
//! * when no child is left it exits with the status of the generation that was main last
//!   (128 + the signal number if a signal ended it).
//!
//! It holds no listener and serves nothing: socket-activated descriptors addressed to it are
//! passed to generation 0 and closed in the supervisor at once.
//!
//! What it does not do: its own binary is never replaced by a reload (the generations re-execute
//! the binary on disk; the supervisor keeps running the one it started from: a container is
//! upgraded by replacing it, a reload there is for configuration and certificates); it does not
//! restart a generation that crashed (the container runtime's restart policy does); it does not
//! kill a generation that overstays its drain (each generation bounds its own drain with
//! `shutdown_timeout`; the runtime's stop grace period is the last resort).
//!
//! Under systemd (`INVOCATION_ID` set and the parent process is systemd) nothing changes: systemd
//! already is the stable parent, so a request to supervise is ignored with one warning line.

use std::collections::BTreeSet;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixCredentials,
};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use crate::error::exit;
use crate::handoff::protocol::PREDECESSOR_ENV;
use crate::handoff::spawn::Executable;
use crate::listen::activation::ActivationEnv;

/// Set by the supervisor in generation 0's environment (and so inherited by every successor):
/// the supervisor's pid. A process with it is a supervised generation and never supervises.
pub const SUPERVISOR_ENV: &str = "BATON_SUPERVISOR";

/// The lines of a generation's notification that the supervisor passes on to its own manager.
/// Never `MAINPID=` (the supervisor stays the service's pid), `BARRIER=1` (answered here) or
/// anything carrying descriptors.
const FORWARDED: [&str; 9] = [
    "READY",
    "RELOADING",
    "STOPPING",
    "STATUS",
    "MONOTONIC_USEC",
    "ERRNO",
    "BUSERROR",
    "EXTEND_TIMEOUT_USEC",
    "WATCHDOG",
];

/// What this process is, decided once at start by [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Start generation 0 and stay as its stable parent.
    Supervisor(Why),
    /// A generation started (directly or through hand-offs) by a supervisor, whose pid the
    /// environment names (`None` if the mark is not a pid).
    Generation {
        /// The supervisor's pid.
        supervisor: Option<u32>,
    },
    /// Supervising was asked for under systemd: ignored, systemd is the stable parent.
    IgnoredUnderSystemd,
    /// Serve as a plain baton process.
    Alone,
}

/// Why this process supervises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It is PID 1 of its PID namespace (a container): always.
    Pid1,
    /// `--supervise`, `BATON_SUPERVISE` or `supervise` in the file.
    Asked,
}

/// What [`decide`] looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Our pid.
    pub pid: u32,
    /// The value of [`SUPERVISOR_ENV`], if set and not empty.
    pub mark: Option<String>,
    /// Started by a predecessor's hand-off (`BATON_PREDECESSOR_SOCKET` is set).
    pub successor: bool,
    /// The configuration asks for a supervisor.
    pub asked: bool,
    /// A systemd service: `INVOCATION_ID` is set and our parent is systemd.
    pub under_systemd: bool,
}

impl Facts {
    /// The facts of this process.
    pub fn of_process(asked: bool) -> Facts {
        Facts {
            pid: std::process::id(),
            mark: std::env::var(SUPERVISOR_ENV).ok().filter(|v| !v.is_empty()),
            successor: std::env::var_os(PREDECESSOR_ENV).is_some_and(|v| !v.is_empty()),
            asked,
            under_systemd: under_systemd(),
        }
    }
}

/// Who supervises: PID 1 always; a marked generation or any successor never (whether there is a
/// supervisor is decided once, at the first start); otherwise whoever is asked to, except under
/// systemd.
pub fn decide(facts: &Facts) -> Role {
    if facts.pid == 1 {
        return Role::Supervisor(Why::Pid1);
    }
    if let Some(mark) = &facts.mark {
        return Role::Generation {
            supervisor: mark.parse().ok().filter(|&p| p > 0),
        };
    }
    if facts.successor {
        return Role::Alone;
    }
    match (facts.asked, facts.under_systemd) {
        (true, true) => Role::IgnoredUnderSystemd,
        (true, false) => Role::Supervisor(Why::Asked),
        (false, _) => Role::Alone,
    }
}

/// The one entry point, called by `main` after the configuration was read and logging set up,
/// before anything else starts (no runtime, no thread, no listener yet).
///
/// Returns `None` when this process should go on and serve (a plain process or a supervised
/// generation), or `Some(exit code)` when it was the supervisor and the service is over.
pub fn enter(asked: bool, handoff_socket: &Path) -> Option<u8> {
    match decide(&Facts::of_process(asked)) {
        Role::Alone | Role::Generation { .. } => None,
        Role::IgnoredUnderSystemd => {
            warn!("supervise ignored: under systemd, systemd is the stable parent of every generation");
            None
        }
        Role::Supervisor(why) => Some(supervise(handoff_socket, why)),
    }
}

/// The socket-activation variables as this process must read them. In generation 0 of a
/// supervisor, a `LISTEN_PID` naming the supervisor (our parent, which passed the descriptors
/// on) names us. Read only: nothing in the environment is changed.
pub fn activation_env() -> ActivationEnv {
    let mut env = ActivationEnv::from_process();
    let mark = std::env::var(SUPERVISOR_ENV).ok();
    let parent = nix::unistd::getppid().as_raw() as u32;
    if passed_on_to_us(env.listen_pid.as_deref(), mark.as_deref(), parent) {
        env.listen_pid = Some(std::process::id().to_string());
    }
    env
}

/// True when `LISTEN_PID` names the supervisor the mark names and that supervisor is our parent.
fn passed_on_to_us(listen_pid: Option<&str>, mark: Option<&str>, parent: u32) -> bool {
    let pid = |v: Option<&str>| v.and_then(|v| v.trim().parse::<u32>().ok());
    matches!((pid(listen_pid), pid(mark)), (Some(l), Some(m)) if l == m && m == parent)
}

/// A systemd service: `INVOCATION_ID` is set (systemd sets it for every unit it runs) and our
/// parent process is systemd itself (a process started by a supervisor that runs under systemd,
/// or by a shell in a terminal that inherited the variable, is not).
fn under_systemd() -> bool {
    if std::env::var_os("INVOCATION_ID")
        .filter(|v| !v.is_empty())
        .is_none()
    {
        return false;
    }
    let parent = nix::unistd::getppid();
    std::fs::read_to_string(format!("/proc/{parent}/comm")).is_ok_and(|c| c.trim_end() == "systemd")
}

/// Follows which generation is main, from the notifications the generations send, the way
/// systemd does with `NotifyAccess=main`. Pure: the caller tells it what it heard and who exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    main: Option<u32>,
    main_ended: Option<u8>,
    last_ended: Option<u8>,
}

/// What one notification meant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Heard {
    /// The lines to pass on to our own service manager.
    pub forward: Vec<String>,
    /// How the main generation changed, if it did.
    pub change: Option<Change>,
}

/// A change of the main generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The main generation announced its successor with `MAINPID=`.
    HandedOver {
        /// The old main generation.
        from: u32,
        /// The new one.
        to: u32,
    },
    /// With no main generation (it ended without a successor), a generation of ours said
    /// `READY=1`: a successor whose predecessor died before promoting it, serving on as main.
    Adopted(u32),
    /// `MAINPID=` named something that is not a process of ours: ignored.
    Refused {
        /// The main generation that sent it.
        from: u32,
        /// What it named.
        named: String,
    },
}

impl Tracker {
    /// Generation 0, just started, is main.
    pub fn new(first: u32) -> Tracker {
        Tracker {
            main: Some(first),
            main_ended: None,
            last_ended: None,
        }
    }

    /// The main generation, if one is running.
    pub fn main(&self) -> Option<u32> {
        self.main
    }

    /// A datagram from `sender`. `ours(pid)` tells whether a pid is a descendant of the
    /// supervisor. Only the main generation is heard (and, when there is none, `READY=1` of a
    /// descendant, which then becomes main).
    pub fn hear(&mut self, sender: u32, datagram: &str, ours: impl Fn(u32) -> bool) -> Heard {
        let lines: Vec<&str> = datagram.lines().filter(|l| !l.is_empty()).collect();
        let forward = || {
            lines
                .iter()
                .filter(|l| {
                    l.split_once('=')
                        .is_some_and(|(key, _)| FORWARDED.contains(&key))
                })
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
        };
        match self.main {
            Some(main) if main == sender => {
                let mut change = None;
                if let Some(named) = lines.iter().find_map(|l| l.strip_prefix("MAINPID=")) {
                    match named.parse::<u32>() {
                        Ok(to) if to == sender => {}
                        Ok(to) if to > 1 && ours(to) => {
                            self.main = Some(to);
                            change = Some(Change::HandedOver { from: sender, to });
                        }
                        _ => {
                            change = Some(Change::Refused {
                                from: sender,
                                named: named.to_owned(),
                            })
                        }
                    }
                }
                Heard {
                    forward: forward(),
                    change,
                }
            }
            None if lines.contains(&"READY=1") && ours(sender) => {
                self.main = Some(sender);
                Heard {
                    forward: forward(),
                    change: Some(Change::Adopted(sender)),
                }
            }
            _ => Heard::default(),
        }
    }

    /// A child of the supervisor was reaped with exit code `code` (128 + signal if killed).
    pub fn ended(&mut self, pid: u32, code: u8) {
        if self.main == Some(pid) {
            self.main = None;
            self.main_ended = Some(code);
        }
        self.last_ended = Some(code);
    }

    /// The supervisor's exit code once nothing is left: that of the generation that was main
    /// last, else that of the last process reaped.
    pub fn exit_code(&self) -> u8 {
        self.main_ended.or(self.last_ended).unwrap_or(exit::OK)
    }
}

/// The pid and exit code (128 + signal when a signal ended it) of a reaped process.
pub fn ended(status: WaitStatus) -> Option<(u32, u8)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw() as u32, (code & 0xff) as u8)),
        WaitStatus::Signaled(pid, sig, _) => {
            Some((pid.as_raw() as u32, 128u8.saturating_add(sig as i32 as u8)))
        }
        _ => None,
    }
}

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// A step of the set-up failed.
    #[error("supervisor: {step}: {source}")]
    Setup {
        /// What was being done.
        step: String,
        /// The OS error.
        source: io::Error,
    },
    /// Generation 0 could not be started.
    #[error("supervisor: cannot start generation 0 ({exe}): {source}")]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

fn setup(step: impl Into<String>) -> impl FnOnce(io::Error) -> SuperviseError {
    let step = step.into();
    move |source| SuperviseError::Setup { step, source }
}

fn supervise(handoff_socket: &Path, why: Why) -> u8 {
    let span = tracing::info_span!("supervisor", pid = std::process::id());
    let _entered = span.enter();
    match Supervisor::start(handoff_socket, why) {
        Ok(mut supervisor) => {
            let code = supervisor.run();
            info!(code, "no generation left; exiting");
            code
        }
        Err(e) => {
            error!(error = %e, "cannot supervise");
            exit::OSERR
        }
    }
}

/// The supervisor's private notify socket, in a fresh `0700` directory beside the hand-off
/// socket; both removed when dropped.
struct PrivateSocket {
    dir: PathBuf,
    path: PathBuf,
    socket: UnixDatagram,
}

impl PrivateSocket {
    fn open(base: &Path) -> Result<PrivateSocket, SuperviseError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(base)
            .map_err(setup(format!("cannot create {}", base.display())))?;
        // mkdtemp: a new directory (never an existing one, never through a symlink), mode 0700.
        let dir = nix::unistd::mkdtemp(&base.join("supervisor.XXXXXX")).map_err(|e| {
            setup(format!("cannot create a directory in {}", base.display()))(e.into())
        })?;
        let path = dir.join("notify.sock");
        let cleanup = |e: SuperviseError| {
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir(&dir);
            e
        };
        let socket = UnixDatagram::bind(&path)
            .map_err(setup(format!("cannot bind {}", path.display())))
            .map_err(cleanup)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(setup(format!("cannot chmod {}", path.display())))
            .map_err(cleanup)?;
        setsockopt(&socket, sockopt::PassCred, &true)
            .map_err(|e| setup("SO_PASSCRED")(e.into()))
            .map_err(cleanup)?;
        socket
            .set_nonblocking(true)
            .map_err(setup("O_NONBLOCK"))
            .map_err(cleanup)?;
        Ok(PrivateSocket { dir, path, socket })
    }
}

impl Drop for PrivateSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Whether children are left after reaping.
#[derive(Debug, PartialEq, Eq)]
enum Left {
    Some,
    None,
}

struct Supervisor {
    me: u32,
    tracker: Tracker,
    signals: SignalFd,
    notify: PrivateSocket,
    /// Every generation pid we learned (generation 0, `MAINPID=` targets, adopted), until reaped.
    known: BTreeSet<u32>,
    /// `/proc` shows our PID namespace (so parent links can be checked).
    proc_is_ours: bool,
    /// A stop was forwarded: no more reloads.
    stopping: bool,
    upward: bool,
}

impl Supervisor {
    fn start(handoff_socket: &Path, why: Why) -> Result<Supervisor, SuperviseError> {
        let me = std::process::id();
        if why != Why::Pid1 {
            nix::sys::prctl::set_child_subreaper(true)
                .map_err(|e| setup("PR_SET_CHILD_SUBREAPER")(e.into()))?;
        }
        let exe = Executable::current().map_err(setup("cannot find the running executable"))?;

        // Descriptors a service manager or container runtime passed to us go to generation 0.
        // Only listening sockets are taken, before the supervisor opens descriptors of its own:
        // it must never hand over, or close, one of those.
        let activation = ActivationEnv::from_process();
        let for_us = activation
            .listen_pid
            .as_deref()
            .and_then(|p| p.trim().parse::<u32>().ok())
            == Some(me);
        let passed: Vec<RawFd> = if for_us {
            activation
                .parse(me)
                .map(|fds| {
                    fds.into_iter()
                        .map(|f| f.fd)
                        .filter(|&fd| is_listening(fd))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };

        // SIGCHLD must not be ignored, or children would be reaped by the kernel behind our back.
        // SAFETY: installs the default disposition, no handler; nothing else runs yet.
        unsafe { signal::signal(Signal::SIGCHLD, signal::SigHandler::SigDfl) }
            .map_err(|e| setup("SIGCHLD")(e.into()))?;
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGHUP,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGCHLD,
        ] {
            mask.add(s);
        }
        let mut old_mask = SigSet::empty();
        signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old_mask))
            .map_err(|e| setup("sigprocmask")(e.into()))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| setup("signalfd")(e.into()))?;

        let notify = PrivateSocket::open(&crate::runtime_dir::configured(handoff_socket))?;

        let mut cmd = std::process::Command::new(&exe.path);
        cmd.args(&exe.args)
            .env(SUPERVISOR_ENV, me.to_string())
            .env("NOTIFY_SOCKET", &notify.path)
            .env_remove("WATCHDOG_PID");
        if sd_notify::watchdog_enabled().is_none() {
            cmd.env_remove("WATCHDOG_USEC");
        }
        if !for_us {
            for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
                cmd.env_remove(var);
            }
        }
        let child_mask = *old_mask.as_ref();
        let keep = passed.clone();
        // SAFETY: the closure runs in the forked child before exec and only calls
        // async-signal-safe functions (sigprocmask, signal, fcntl); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // The child starts with the signal mask we were started with, not ours.
                if libc::sigprocmask(libc::SIG_SETMASK, &child_mask, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // A SIGHUP forwarded before generation 0 installed its handler must not kill
                // it (as for every successor).
                if libc::signal(libc::SIGHUP, libc::SIG_IGN) == libc::SIG_ERR {
                    return Err(io::Error::last_os_error());
                }
                for &fd in &keep {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| SuperviseError::Spawn {
            exe: exe.path.clone(),
            source,
        })?;
        // The supervisor holds no listener.
        for fd in passed {
            let _ = nix::unistd::close(fd);
        }
        let first = child.id();
        // Reaped through waitpid(-1) below, never through this handle.
        drop(child);
        info!(
            generation0 = first,
            exe = %exe.path.display(),
            notify_socket = %notify.path.display(),
            why = match why { Why::Pid1 => "PID 1", Why::Asked => "asked" },
            "supervising: generation 0 started"
        );
        Ok(Supervisor {
            me,
            tracker: Tracker::new(first),
            signals,
            notify,
            known: BTreeSet::from([first]),
            proc_is_ours: proc_is_ours(me),
            stopping: false,
            upward: crate::notify::enabled(),
        })
    }

    fn run(&mut self) -> u8 {
        loop {
            self.read_notifications();
            self.read_signals();
            // MAINPID= of a generation is heard before the exit of the one that sent it.
            self.read_notifications();
            if self.reap() == Left::None {
                return self.tracker.exit_code();
            }
            let mut fds = [
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.notify.socket.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    // Should never happen; do not spin.
                    error!(error = %e, "poll failed");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
    }

    fn read_signals(&mut self) {
        loop {
            let info = match self.signals.read_signal() {
                Ok(Some(info)) => info,
                Ok(None) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    error!(error = %e, "reading signals failed");
                    return;
                }
            };
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGHUP) => self.reload(),
                Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) => self.stop(sig),
                _ => {} // SIGCHLD: reaped after this
            }
        }
    }

    fn reload(&self) {
        if self.stopping {
            info!("SIGHUP while stopping: dropped");
            return;
        }
        match self.tracker.main() {
            Some(main) if self.ours(main) => {
                match signal::kill(Pid::from_raw(main as i32), Signal::SIGHUP) {
                    Ok(()) => info!(main, "SIGHUP: forwarded to the main generation"),
                    Err(e) => {
                        warn!(main, error = %e, "SIGHUP: cannot forward to the main generation")
                    }
                }
            }
            _ => warn!("SIGHUP: no main generation is running; dropped"),
        }
    }

    fn stop(&mut self, sig: Signal) {
        self.stopping = true;
        let targets = self.generations();
        for &pid in &targets {
            if let Err(e) = signal::kill(Pid::from_raw(pid as i32), sig) {
                debug!(pid, error = %e, "cannot forward the stop signal");
            }
        }
        info!(signal = %sig, generations = ?targets, "stopping: forwarded to every generation");
    }

    /// Every process below us, as systemd's `KillMode=control-group` reaches every process of the
    /// unit: the main generation, retired ones still draining, a successor in flight (its parent
    /// stops the hand-off anyway). Without a `/proc` of our own: the generations we know.
    fn generations(&self) -> BTreeSet<u32> {
        if self.proc_is_ours {
            descendants(self.me, &process_table())
        } else {
            self.known.clone()
        }
    }

    fn ours(&self, pid: u32) -> bool {
        !self.proc_is_ours || is_descendant(pid, self.me)
    }

    fn read_notifications(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            let received = {
                let mut iov = [IoSliceMut::new(&mut buf)];
                let mut cmsg = nix::cmsg_space!(UnixCredentials, [RawFd; 16]);
                match recvmsg::<()>(
                    self.notify.socket.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Ok(msg) => {
                        let mut sender = None;
                        if let Ok(cmsgs) = msg.cmsgs() {
                            for c in cmsgs {
                                match c {
                                    ControlMessageOwned::ScmCredentials(cred) => {
                                        sender = Some((cred.pid() as u32, cred.uid()));
                                    }
                                    // BARRIER=1 sends a pipe: closing it is the answer.
                                    ControlMessageOwned::ScmRights(fds) => {
                                        for fd in fds {
                                            let _ = nix::unistd::close(fd);
                                        }
                                    }
                                    _ => {}
                                }
                            }
                        }
                        let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
                        Some((msg.bytes, sender, truncated))
                    }
                    Err(Errno::EAGAIN) => None,
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        warn!(error = %e, "reading the notify socket failed");
                        None
                    }
                }
            };
            let Some((bytes, sender, truncated)) = received else {
                return;
            };
            let me_uid = nix::unistd::geteuid().as_raw();
            let Some((pid, _)) = sender.filter(|&(_, uid)| uid == me_uid || uid == 0) else {
                debug!("notification without acceptable credentials: ignored");
                continue;
            };
            if truncated {
                debug!(pid, "oversized notification: ignored");
                continue;
            }
            let text = String::from_utf8_lossy(&buf[..bytes]).into_owned();
            self.heard(pid, &text);
        }
    }

    fn heard(&mut self, pid: u32, text: &str) {
        let me = self.me;
        let proc_is_ours = self.proc_is_ours;
        let heard = self
            .tracker
            .hear(pid, text, |p| !proc_is_ours || is_descendant(p, me));
        match &heard.change {
            Some(Change::HandedOver { from, to }) => {
                self.known.insert(*to);
                info!(from, to, "main generation handed over");
            }
            Some(Change::Adopted(to)) => {
                self.known.insert(*to);
                info!(
                    main = to,
                    "a generation serving on without a predecessor is now main"
                );
            }
            Some(Change::Refused { from, named }) => {
                warn!(from, named = %named, "MAINPID= does not name a process of ours: ignored");
            }
            None => {}
        }
        if heard.forward.is_empty() {
            if heard.change.is_none() && self.tracker.main() != Some(pid) {
                debug!(pid, text = %text.trim_end(), "notification from a process that is not main: ignored");
            }
            return;
        }
        if self.upward {
            let states: Vec<sd_notify::NotifyState<'_>> = heard
                .forward
                .iter()
                .map(|l| sd_notify::NotifyState::Custom(l))
                .collect();
            if let Err(e) = sd_notify::notify(&states) {
                debug!(error = %e, "cannot pass a notification on");
            }
        }
    }

    /// Reap every child that ended.
    fn reap(&mut self) -> Left {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return Left::Some,
                Ok(status) => {
                    let Some((pid, code)) = ended(status) else {
                        continue;
                    };
                    let was_main = self.tracker.main() == Some(pid);
                    let generation = self.known.remove(&pid);
                    self.tracker.ended(pid, code);
                    if was_main {
                        info!(pid, code, "the main generation exited");
                    } else if generation {
                        info!(pid, code, "a generation exited");
                    } else {
                        debug!(pid, code, "reaped");
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return Left::None,
                Err(e) => {
                    error!(error = %e, "waitpid failed");
                    return Left::None;
                }
            }
        }
    }
}

/// `fd` is an open, listening socket.
fn is_listening(fd: RawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt on a plain descriptor number writes at most `len` bytes into `value`;
    // a number that is not an open socket only yields EBADF or ENOTSOCK.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0 && value != 0
}

/// `/proc` belongs to our PID namespace (a container that mounted its own, or none at all).
fn proc_is_ours(me: u32) -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<u32>().ok()))
        == Some(me)
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat)
}

/// The parent pid in the text of `/proc/PID/stat` (the command name, in parentheses, may hold
/// anything: split at the last `)`).
fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// How deep a line of generations may be (each one the child of the one it took over from, all
/// still draining) before we stop following parent links.
const MAX_DEPTH: usize = 4096;

/// `pid` is below `me`: our child, or the child of a generation that is still draining, and so on.
fn is_descendant(pid: u32, me: u32) -> bool {
    let mut p = pid;
    for _ in 0..MAX_DEPTH {
        match parent_of(p) {
            Some(parent) if parent == me => return true,
            Some(parent) if parent > 1 => p = parent,
            _ => return false,
        }
    }
    false
}

/// `(pid, parent pid)` of every process `/proc` shows.
fn process_table() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, parent_of(pid)?))
        })
        .collect()
}

/// Every process below `root` in `table`.
fn descendants(root: u32, table: &[(u32, u32)]) -> BTreeSet<u32> {
    let mut found = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in table {
            if ppid == parent && pid != root && found.insert(pid) {
                frontier.push(pid);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pid: u32, mark: Option<&str>, asked: bool, under_systemd: bool) -> Facts {
        Facts {
            pid,
            mark: mark.map(str::to_owned),
            successor: false,
            asked,
            under_systemd,
        }
    }

    #[test]
    fn pid_1_always_supervises_a_marked_generation_never() {
        for asked in [false, true] {
            for systemd in [false, true] {
                assert_eq!(
                    decide(&facts(1, None, asked, systemd)),
                    Role::Supervisor(Why::Pid1)
                );
                assert_eq!(
                    decide(&facts(1, Some("7"), asked, systemd)),
                    Role::Supervisor(Why::Pid1)
                );
                assert_eq!(
                    decide(&facts(40, Some("7"), asked, systemd)),
                    Role::Generation {
                        supervisor: Some(7)
                    }
                );
            }
        }
        assert_eq!(
            decide(&facts(40, Some("garbage"), true, false)),
            Role::Generation { supervisor: None },
            "a garbled mark still prevents a nested supervisor"
        );
    }

    #[test]
    fn asked_supervises_except_under_systemd() {
        assert_eq!(
            decide(&facts(40, None, true, false)),
            Role::Supervisor(Why::Asked)
        );
        assert_eq!(
            decide(&facts(40, None, true, true)),
            Role::IgnoredUnderSystemd
        );
        assert_eq!(decide(&facts(40, None, false, false)), Role::Alone);
        assert_eq!(decide(&facts(40, None, false, true)), Role::Alone);
        let successor = Facts {
            successor: true,
            ..facts(40, None, true, false)
        };
        assert_eq!(
            decide(&successor),
            Role::Alone,
            "the successor of a process that did not supervise never does"
        );
    }

    #[test]
    fn activation_passed_on_only_from_our_supervisor_parent() {
        assert!(passed_on_to_us(Some("7"), Some("7"), 7));
        assert!(passed_on_to_us(Some("1"), Some("1"), 1));
        assert!(!passed_on_to_us(Some("7"), Some("7"), 8), "not our parent");
        assert!(
            !passed_on_to_us(Some("8"), Some("7"), 7),
            "meant for another"
        );
        assert!(!passed_on_to_us(None, Some("7"), 7));
        assert!(!passed_on_to_us(Some("7"), None, 7));
        assert!(!passed_on_to_us(Some("x"), Some("x"), 7));
    }

    #[test]
    fn main_follows_mainpid_from_the_main_generation_only() {
        let ours = |p: u32| (10..100).contains(&p);
        let mut t = Tracker::new(10);
        let h = t.hear(10, "READY=1\nSTATUS=serving; generation 0\n", ours);
        assert_eq!(h.forward, ["READY=1", "STATUS=serving; generation 0"]);
        assert_eq!(h.change, None);

        let h = t.hear(
            10,
            "RELOADING=1\nMONOTONIC_USEC=5\nSTATUS=reloading\n",
            ours,
        );
        assert_eq!(
            h.forward,
            ["RELOADING=1", "MONOTONIC_USEC=5", "STATUS=reloading"]
        );
        // Someone else claiming to hand over is not heard.
        let h = t.hear(11, "MAINPID=12\nREADY=1\n", ours);
        assert_eq!(h, Heard::default());
        assert_eq!(t.main(), Some(10));

        let h = t.hear(10, "MAINPID=11\n", ours);
        assert_eq!(h.change, Some(Change::HandedOver { from: 10, to: 11 }));
        assert!(h.forward.is_empty(), "MAINPID= is never passed on");
        assert_eq!(t.main(), Some(11));
        // The barrier and anything from the retired generation: nothing.
        assert_eq!(t.hear(10, "BARRIER=1\n", ours), Heard::default());
        assert_eq!(t.hear(10, "STOPPING=1\n", ours), Heard::default());
        let h = t.hear(
            11,
            "READY=1\nSTATUS=serving; generation 1\nWATCHDOG=1\nFDSTORE=1\n",
            ours,
        );
        assert_eq!(
            h.forward,
            ["READY=1", "STATUS=serving; generation 1", "WATCHDOG=1"]
        );
    }

    #[test]
    fn mainpid_naming_a_stranger_or_init_is_refused() {
        let ours = |p: u32| p == 10 || p == 11;
        let mut t = Tracker::new(10);
        for named in ["500", "1", "0", "-3", "x"] {
            let h = t.hear(10, &format!("MAINPID={named}\n"), ours);
            assert_eq!(
                h.change,
                Some(Change::Refused {
                    from: 10,
                    named: named.into()
                })
            );
            assert_eq!(t.main(), Some(10));
        }
        assert_eq!(t.hear(10, "MAINPID=10\n", ours).change, None);
    }

    #[test]
    fn without_a_main_a_ready_descendant_is_adopted() {
        let ours = |p: u32| p != 99;
        let mut t = Tracker::new(10);
        t.ended(10, 70);
        assert_eq!(t.main(), None);
        assert_eq!(t.hear(99, "READY=1\n", ours), Heard::default(), "not ours");
        assert_eq!(
            t.hear(12, "STATUS=x\n", ours),
            Heard::default(),
            "not READY=1"
        );
        let h = t.hear(12, "READY=1\nSTATUS=serving\n", ours);
        assert_eq!(h.change, Some(Change::Adopted(12)));
        assert_eq!(t.main(), Some(12));
        t.ended(12, 0);
        assert_eq!(t.exit_code(), 0, "the last main generation's status");
    }

    #[test]
    fn exit_code_is_the_last_main_generations() {
        let ours = |_| true;
        let mut t = Tracker::new(10);
        t.hear(10, "MAINPID=11\n", ours);
        t.ended(10, 0); // retired
        t.hear(11, "MAINPID=12\n", ours);
        t.ended(12, 143); // the main generation was killed by SIGTERM before its handler
        t.ended(11, 0); // its predecessor drained after it
        assert_eq!(t.exit_code(), 143);

        let mut t = Tracker::new(10);
        t.ended(10, 69);
        assert_eq!(t.exit_code(), 69);
        let mut t = Tracker::new(10);
        t.hear(10, "MAINPID=11\n", ours);
        t.ended(10, 0);
        assert_eq!(t.exit_code(), 0, "nothing else reaped: the last status");
    }

    #[test]
    fn wait_statuses_map_to_shell_exit_codes() {
        let pid = Pid::from_raw(42);
        assert_eq!(ended(WaitStatus::Exited(pid, 0)), Some((42, 0)));
        assert_eq!(ended(WaitStatus::Exited(pid, 78)), Some((42, 78)));
        assert_eq!(
            ended(WaitStatus::Signaled(pid, Signal::SIGTERM, false)),
            Some((42, 143))
        );
        assert_eq!(
            ended(WaitStatus::Signaled(pid, Signal::SIGKILL, true)),
            Some((42, 137))
        );
        assert_eq!(ended(WaitStatus::StillAlive), None);
    }

    #[test]
    fn descendants_follow_a_line_of_draining_generations() {
        // 5 supervises 6 (retired, draining) -> 7 (draining) -> 8 (main) -> 9 (in flight).
        let table = [
            (1, 0),
            (5, 1),
            (6, 5),
            (7, 6),
            (8, 7),
            (9, 8),
            (20, 1),
            (21, 20),
        ];
        assert_eq!(descendants(5, &table), BTreeSet::from([6, 7, 8, 9]));
        assert_eq!(descendants(1, &table).len(), 7, "as PID 1: everything");
        assert!(descendants(9, &table).is_empty());
        // A cycle (pids reused while reading /proc) ends.
        assert_eq!(descendants(5, &[(6, 5), (5, 6)]), BTreeSet::from([6]));
    }

    #[test]
    fn ppid_is_read_past_odd_command_names() {
        assert_eq!(parse_ppid("42 (baton) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("42 (a) b) (c) R 9 1 1"), Some(9));
        assert_eq!(parse_ppid("garbage"), None);
    }
}
