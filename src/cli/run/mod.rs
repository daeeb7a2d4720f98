//! `baton run [--listen ADDR]... [options] -- COMMAND [ARG]...`: zero-downtime reloads for a
//! server written in any language.
//!
//! baton obtains the listeners as `serve` does (socket activation, the documented import from a
//! running baton, a fresh bind) and keeps them for the life of the service. It starts COMMAND
//! with them as fds 3, 4, … and `LISTEN_FDS`, `LISTEN_PID` (the child's own pid, written between
//! clone and execve), `LISTEN_FDNAMES` and a private `NOTIFY_SOCKET`; baton stays the main
//! process. Each COMMAND ("generation") leads a process group of its own and gets the stop signal
//! if baton dies (`PR_SET_PDEATHSIG`).
//!
//! * Ready: `READY=1` from the generation (its leader or any process of its group) on the private
//!   socket; or, for an application that never notifies, `--ready=delay:DURATION`: still running
//!   after DURATION. There is no probe of a URL: a probe over the shared listening socket is
//!   accepted by whichever generation calls accept(2) first, so with the old one serving it
//!   proves nothing about the new one.
//! * Reload (SIGHUP, `systemctl reload`, `kill -1`, or a request of `baton reload` on the
//!   service's control socket, bound in the runtime directory as `serve` binds it, or inherited
//!   from a `baton serve` that handed over): `RELOADING=1`; a new generation; once it
//!   is ready the old one gets `--stop-signal` and, after `--grace`, SIGKILL on its group.
//!   `READY=1` + `STATUS=`. A new generation that exits or is not ready within
//!   `--ready-timeout` is killed and reaped; the old one serves on; the reload fails (`READY=1` +
//!   `STATUS=reload failed: …`, and `baton reload` exits 1 with the reason): see [`Service::report`].
//!   A request is answered with the outcome of a reload that began after it was read: while one
//!   is in flight the control socket is not accepted on, and requests wait in its backlog.
//! * A serving generation that exits on its own ends baton with its status (128 + signal), so
//!   systemd's `Restart=` applies.
//! * SIGTERM/SIGINT: `STOPPING=1`, the stop signal to every generation, SIGKILL after the grace
//!   period, exit with the status of the generation that served last.
//! * baton's own upgrade: at a reload, if the binary at baton's path is no longer the one running
//!   (a package upgrade replaced it), baton first re-executes itself (same pid) with the state in
//!   `BATON_RUN_STATE` (see [`state`]): the listeners, the notify socket and the control socket
//!   (with the requests in its backlog) are inherited, the running generations stay its
//!   children; then the new baton starts the new generation. Requests already read are told to
//!   ask again ([`Answer::AskAgain`]); the new image answers them.

mod generation;
mod notify_socket;
mod options;
mod state;
mod upgrade;

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::args::RunArgs;
use crate::exit;
use crate::handoff::spawn::Executable;
use crate::listen::Listener;
use crate::notify::{self, Event};
use crate::reload::control::{Control, Wake};
use crate::reload::{self, Answer, Outcome, ReloadStatus};
use crate::runtime_dir::RuntimeDir;
use generation::{belongs_to, code_of, wait, Generation, Pending, Retired};
use notify_socket::{Message, NotifySocket};
use options::Options;
use options::Ready;

/// Run `baton run`; returns the exit code.
pub(crate) fn main(args: &RunArgs) -> u8 {
    super::logging::init(args.log.log_format);
    let options = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            error!("{e}");
            return exit::USAGE;
        }
    };
    // One thread: every COMMAND is started by the main thread, the one that lives as long as the
    // process (PR_SET_PDEATHSIG fires when the *thread* that started a child ends), and a
    // re-execution of baton ends no thread that started a child.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return exit::OSERR;
        }
    };
    let code = runtime.block_on(run(options));
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

/// Why `baton run` could not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("{0}")]
    Listen(#[from] crate::Error),
    #[error("notify socket: {0}")]
    Notify(#[from] notify_socket::CreateError),
    #[error("runtime directory: {0}")]
    RuntimeDir(crate::safe_fs::FsError),
    #[error("cannot find the running executable: {0}")]
    Executable(io::Error),
    #[error("restoring the state of the previous baton: {0}")]
    State(String),
}

impl StartError {
    fn exit_code(&self) -> u8 {
        match self {
            StartError::Listen(e) => e.exit_code(),
            StartError::State(_) => exit::PROTOCOL,
            StartError::Notify(e) => e.exit_code(),
            StartError::RuntimeDir(crate::safe_fs::FsError::Unsafe { .. }) => exit::NOPERM,
            StartError::RuntimeDir(_) | StartError::Executable(_) => exit::OSERR,
        }
    }
}

/// The service: listeners, notify socket, generations.
struct Service {
    options: Options,
    listeners: Vec<Listener>,
    notify: NotifySocket,
    exe: Executable,
    /// (device, inode) of the binary this process runs.
    running_binary: Option<(u64, u64)>,
    serving: Option<Generation>,
    pending: Option<Pending>,
    retiring: JoinSet<Retired>,
    /// The retiring generations: pid → (number, when SIGKILL is due), for a re-execution.
    retiring_pids: BTreeMap<u32, (u64, Instant)>,
    next_generation: u64,
    /// When the reload in flight was asked for (`CLOCK_MONOTONIC` µs).
    reload_requested: u64,
    /// The service's control socket (`baton reload`), when it could be made.
    control: Option<Control>,
    /// A request was read on the control socket.
    requests: mpsc::UnboundedReceiver<()>,
    /// The exit code once stopping: `Some` from the moment a stop began.
    stopping: Option<u8>,
    /// A re-executed baton going on with the reload its predecessor image began.
    continuing: bool,
    /// Requests arrived during the reload that just ended: begin the next one.
    again: bool,
    /// A running baton that handed us its listeners (the documented import): it serves until
    /// our first generation is ready, then retires.
    predecessor: Option<crate::handoff::child::Predecessor>,
}

async fn run(options: Options) -> u8 {
    let mut service = match Service::start(options).await {
        Ok(s) => s,
        Err(e) => {
            let line = e.to_string();
            notify::send(&Event::Status {
                status: format!("cannot start: {line}"),
            });
            error!("{line}");
            return e.exit_code();
        }
    };
    service.serve().await
}

impl Service {
    async fn start(options: Options) -> Result<Service, StartError> {
        let me = std::process::id();
        let exe = Executable::current().map_err(StartError::Executable)?;
        let running_binary = std::fs::metadata("/proc/self/exe")
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let (requests_tx, requests) = mpsc::unbounded_channel();
        let restored = state::take_from_env().map_err(StartError::State)?;
        let mut service = match restored {
            Some(saved) => {
                let restored = saved.restore().map_err(StartError::State)?;
                info!(
                    generation = ?restored.serving.as_ref().map(|g| g.number),
                    "baton re-executed itself: listeners, notify socket and generations kept"
                );
                let mut s = Service {
                    options,
                    predecessor: None,
                    listeners: restored.listeners,
                    notify: restored.notify,
                    exe,
                    running_binary,
                    serving: restored.serving,
                    pending: None,
                    retiring: JoinSet::new(),
                    retiring_pids: BTreeMap::new(),
                    next_generation: restored.next_generation,
                    reload_requested: restored.reload_requested,
                    control: restored
                        .control
                        .and_then(|fd| serve_control(fd, &requests_tx)),
                    requests,
                    stopping: None,
                    continuing: true,
                    again: false,
                };
                for (child, number, kill_in) in restored.retiring {
                    s.retire_adopted(child, number, kill_in, false);
                }
                s
            }
            None => {
                let activation = crate::supervisor::activation_env();
                let acquired =
                    crate::startup::acquire(&options.settings, &activation, me, None).await?;
                // Whatever else was inherited must not reach a COMMAND.
                let _ = crate::fds::close_inherited_on_exec();
                let handoff_socket = options.settings.handoff_socket_or_default();
                let runtime = RuntimeDir::open(&handoff_socket).map_err(StartError::RuntimeDir)?;
                runtime.sweep();
                let notify = NotifySocket::create(&runtime)?;
                // The control socket of the service: the one a `baton serve` that handed over
                // passed on, else a new one, as `serve` binds it.
                let control = match acquired.control {
                    Some(fd) => Some(fd),
                    None => match runtime.bind_control() {
                        Ok((listener, path)) => {
                            info!(path = %path.display(), "control socket for `baton reload`");
                            Some(std::os::fd::OwnedFd::from(listener))
                        }
                        Err(e) => {
                            error!(error = %e, "no control socket: `baton reload` cannot reach this service (kill -HUP still reloads)");
                            None
                        }
                    },
                };
                Service {
                    options,
                    predecessor: acquired.predecessor,
                    listeners: acquired.listeners,
                    notify,
                    exe,
                    running_binary,
                    serving: None,
                    pending: None,
                    retiring: JoinSet::new(),
                    retiring_pids: BTreeMap::new(),
                    next_generation: 1,
                    reload_requested: 0,
                    control: control.and_then(|fd| serve_control(fd, &requests_tx)),
                    requests,
                    stopping: None,
                    continuing: false,
                    again: false,
                }
            }
        };
        if service.serving.is_none() {
            match service.spawn() {
                Ok(generation) => service.set_pending(generation, true),
                Err(e) => {
                    // Reported by `run`, with the code that says what kind of failure it was.
                    service.stopping = Some(e.exit_code());
                    notify::send(&Event::Status {
                        status: e.to_string(),
                    });
                    error!("{e}");
                }
            }
        }
        Ok(service)
    }

    /// The main loop, until no generation is left after a stop or a crash.
    async fn serve(&mut self) -> u8 {
        let signals = (|| {
            Ok::<_, io::Error>((
                signal(SignalKind::hangup())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })();
        let (mut hup, mut term, mut int) = match signals {
            Ok(s) => s,
            Err(e) => {
                error!("cannot set up signal handling: {e}");
                return exit::OSERR;
            }
        };
        // A re-executed baton was started with these blocked (so none was lost, nor fatal,
        // during the exec): its handlers are in place now.
        state::unblock_signals();
        if self.continuing && self.stopping.is_none() {
            // Re-executed in the middle of a reload: go on with it.
            self.begin_reload().await;
        }
        let watchdog = notify::watchdog_interval();
        let mut ping = tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 2));
        loop {
            if std::mem::take(&mut self.again) {
                self.begin_reload().await;
            }
            if let Some(code) = self.stopping {
                if self.serving.is_none() && self.pending.is_none() && self.retiring.is_empty() {
                    self.close_control(true).await;
                    return code;
                }
            }
            let deadline = self.pending.as_ref().map(|p| p.deadline);
            let ready_at = self.pending.as_ref().and_then(|p| p.ready_at);
            tokio::select! {
                _ = hup.recv() => self.begin_reload().await,
                Some(()) = self.requests.recv() => self.begin_reload().await,
                _ = term.recv() => self.stop("SIGTERM"),
                _ = int.recv() => self.stop("SIGINT"),
                m = self.notify.recv() => match m {
                    Ok(m) => self.heard(m),
                    Err(e) => {
                        warn!(error = %e, "reading the notify socket failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                status = wait(self.serving.as_mut()) => self.serving_exited(status),
                status = wait(self.pending.as_mut().map(|p| &mut p.generation)) => {
                    let reason = match status {
                        Ok(st) => format!("exited with status {} before it was ready", code_of(st)),
                        Err(e) => format!("cannot be waited for: {e}"),
                    };
                    self.pending_failed(reason, false).await;
                }
                _ = sleep_until(deadline) => {
                    let hint = match self.options.ready {
                        Ready::Notify => " (no READY=1 on $NOTIFY_SOCKET; for a server that never sends it, --ready=delay:DURATION)",
                        Ready::Delay(_) => "",
                    };
                    let reason = format!("not ready within {:?}{hint}", self.options.ready_timeout);
                    self.pending_failed(reason, true).await;
                }
                _ = sleep_until(ready_at) => self.promote("still running after the ready delay"),
                Some(done) = self.retiring.join_next(), if !self.retiring.is_empty() => {
                    if let Ok(retired) = done {
                        self.retired(retired);
                    }
                }
                _ = ping.tick(), if watchdog.is_some() => notify::send(&Event::Watchdog),
            }
        }
    }

    /// A notification from some process of ours.
    fn heard(&mut self, m: Message) {
        let from_pending = self
            .pending
            .as_ref()
            .is_some_and(|p| belongs_to(m.pid, p.generation.pid));
        let from_serving = self
            .serving
            .as_ref()
            .is_some_and(|g| belongs_to(m.pid, g.pid));
        if m.get("MAINPID").is_some() {
            info!(
                pid = m.pid,
                "MAINPID= from an application ignored: baton stays the main process"
            );
        }
        if from_pending && m.has("READY=1") {
            self.promote("READY=1");
        }
        // The serving generation's own words (after baton's "serving: …" when both came in the
        // datagram that made it ready).
        let serving_now = from_serving || (from_pending && self.pending.is_none());
        match m.get("STATUS") {
            Some(status) if serving_now => notify::send(&Event::Status {
                status: status.to_owned(),
            }),
            _ => debug!(pid = m.pid, text = %m.text.trim_end(), "notification"),
        }
    }

    /// The pending generation is ready: it serves, the old one retires.
    fn promote(&mut self, why: &str) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let new = pending.generation;
        info!(
            generation = new.number,
            pid = new.pid,
            "generation {} (pid {}) is ready ({why})",
            new.number,
            new.pid
        );
        let status = format!(
            "serving: generation {} (pid {}): {}",
            new.number,
            new.pid,
            self.command_line()
        );
        let retired = self.serving.replace(new).map(|old| {
            let pid = old.pid;
            self.retire(old, false);
            pid
        });
        let successor = self.serving.as_ref().map_or(0, |g| g.pid);
        if pending.first {
            notify::send(&Event::Ready { status });
            // Serving: `baton reload` may ask now (requests so far waited in the backlog).
            if let Some(c) = &self.control {
                c.accept();
            }
            if let Some(mut predecessor) = self.predecessor.take() {
                // It promotes us (MAINPID= to its service manager), we confirm, it retires.
                let me = std::process::id();
                tokio::spawn(async move {
                    if predecessor.ready(me).await.is_ok()
                        && matches!(
                            predecessor.promotion().await,
                            Ok(crate::handoff::child::Promotion::Promoted)
                        )
                    {
                        let _ = predecessor.confirm().await;
                    }
                });
            }
        } else {
            let retired = retired.unwrap_or_else(std::process::id);
            self.report(Ok((retired, successor)), Some(status));
        }
    }

    /// The pending generation failed: kill and reap it; the serving one serves on.
    async fn pending_failed(&mut self, reason: String, kill_it: bool) {
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        let g = &mut pending.generation;
        let reason = format!("generation {} (pid {}) {reason}", g.number, g.pid);
        // Its whole group: a server that forked workers leaves none behind.
        let _ = killpg(Pid::from_raw(g.pid as i32), Signal::SIGKILL);
        if kill_it {
            let _ = g.child.start_kill();
        }
        let waited = g.child.wait().await;
        if pending.first {
            error!("{reason}");
            notify::send(&Event::Status {
                status: format!("cannot start: {reason}"),
            });
            // Its own failure code when it exited on its own, so that Restart= sees it.
            let own = waited
                .ok()
                .filter(|_| !kill_it)
                .map(code_of)
                .filter(|&c| c != 0);
            self.stopping = Some(own.unwrap_or(exit::UNAVAILABLE));
            self.close_control(false).await;
            return;
        }
        warn!("reload failed: {reason}");
        let status = format!("reload failed: {reason}");
        self.report(Err(reason), Some(status));
    }

    /// The one place a reload's outcome is told: to systemd (`READY=1` + `STATUS=`), to the
    /// status file, and to every `baton reload` whose request this reload took, on the control
    /// socket ([`Answer::Reloaded`] with the new COMMAND's pid, or [`Answer::Failed`] with the
    /// reason). `outcome`: (the retired generation's pid, the new one's) or why it failed.
    /// `status`: what systemd is told; `None` while stopping (no `READY=1` after `STOPPING=1`).
    fn report(&mut self, outcome: Result<(u32, u32), String>, status: Option<String>) {
        let stopping = status.is_none();
        if let Some(status) = status {
            notify::send(&Event::Ready { status });
        }
        let me = std::process::id();
        let record = ReloadStatus {
            parent_pid: me,
            requested_usec: self.reload_requested,
            finished_usec: reload::monotonic_usec(),
            outcome: if outcome.is_ok() {
                Outcome::Ready
            } else {
                Outcome::Failed
            },
            successor_pid: outcome.as_ref().ok().map(|&(_, successor)| successor),
            reason: outcome.as_ref().err().cloned(),
        };
        reload::publish(&self.options.settings.handoff_socket_or_default(), &record);
        let answer = match outcome {
            Ok((retired, successor)) => Answer::Reloaded { retired, successor },
            Err(reason) => Answer::Failed {
                pid: self.serving.as_ref().map_or(me, |g| g.pid),
                reason,
            },
        };
        if let Some(c) = &mut self.control {
            if stopping {
                c.close(answer);
            } else if c.finish(answer, true) {
                // Requests read meanwhile get the next reload's outcome: it begins now.
                self.again = true;
            }
        }
    }

    /// The service stops: requests waiting get [`Answer::Stopping`] and no more are taken; at
    /// the end (`last`), the control socket's name is removed.
    async fn close_control(&mut self, last: bool) {
        let Some(c) = &mut self.control else { return };
        c.close(Answer::Stopping {
            pid: std::process::id(),
        });
        if last {
            c.flush(Duration::from_secs(1)).await;
            if let Some(name) = c.name() {
                if let Ok(dir) =
                    RuntimeDir::open(&self.options.settings.handoff_socket_or_default())
                {
                    dir.remove_control(&name);
                }
            }
        }
    }

    /// SIGHUP or a request on the control socket: re-execute baton first if its binary was
    /// replaced, then start a new generation.
    async fn begin_reload(&mut self) {
        if self.stopping.is_some() {
            info!("reload requested while stopping: ignored");
            return;
        }
        if self.pending.is_some() {
            info!("reload requested while one is in flight: its outcome answers this one too");
            return;
        }
        if !std::mem::take(&mut self.continuing) {
            self.reload_requested = reload::monotonic_usec();
        }
        // The requests read so far get this reload's outcome; later ones wait in the backlog.
        if let Some(c) = &mut self.control {
            c.begin();
        }
        notify::send(&Event::Reloading {
            status: "reloading: starting a new generation".into(),
        });
        if self.binary_replaced() {
            match self.reexec().await {
                Ok(never) => match never {},
                Err(e) => {
                    warn!(error = %e, "cannot re-execute the new baton binary; this one goes on")
                }
            }
        }
        match self.spawn() {
            Ok(generation) => self.set_pending(generation, false),
            Err(e) => {
                warn!("reload failed: {e}");
                let status = format!("reload failed: {e}");
                self.report(Err(e.to_string()), Some(status));
            }
        }
    }

    /// The serving generation exited on its own: tell systemd the truth and end with its status.
    fn serving_exited(&mut self, status: io::Result<ExitStatus>) {
        let Some(g) = self.serving.take() else {
            return;
        };
        let code = status.as_ref().map_or(exit::OSERR, |st| code_of(*st));
        if self.stopping.is_some() {
            self.stopping = Some(code);
            return;
        }
        let what = match &status {
            Ok(st) => match st.signal() {
                Some(sig) => format!("killed by signal {sig}"),
                None => format!("exited with status {code}"),
            },
            Err(e) => format!("cannot be waited for: {e}"),
        };
        let line = format!("generation {} (pid {}) {what}; stopping", g.number, g.pid);
        error!("{line}");
        notify::send(&Event::Stopping {
            status: line.clone(),
        });
        if let Some(p) = self.pending.take() {
            self.retire(p.generation, false);
            self.report(Err(line), None);
        }
        self.stopping = Some(code);
        if let Some(c) = &mut self.control {
            c.close(Answer::Stopping {
                pid: std::process::id(),
            });
        }
    }

    /// SIGTERM/SIGINT: stop every generation gracefully.
    fn stop(&mut self, why: &str) {
        if self.stopping.is_some() {
            return;
        }
        info!("{why}: stopping every generation");
        notify::send(&Event::Stopping {
            status: format!("stopping ({why})"),
        });
        self.stopping = Some(exit::OK);
        if let Some(p) = self.pending.take() {
            if !p.first {
                self.report(Err(format!("baton is stopping ({why})")), None);
            }
            self.retire(p.generation, self.serving.is_none());
        }
        if let Some(g) = self.serving.take() {
            self.retire(g, true);
        }
        if let Some(c) = &mut self.control {
            c.close(Answer::Stopping {
                pid: std::process::id(),
            });
        }
        let sig = self.options.stop_signal;
        for &pid in self.retiring_pids.keys() {
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }
}

/// Serve the control socket `fd`: each request read is sent on `requests`.
fn serve_control(
    fd: std::os::fd::OwnedFd,
    requests: &mpsc::UnboundedSender<()>,
) -> Option<Control> {
    let wake = Wake {
        inputs: requests.clone(),
        input: (),
    };
    match Control::start(fd, wake) {
        Ok(c) => Some(c),
        Err(e) => {
            error!(error = %e, "cannot serve the control socket: `baton reload` cannot reach this service (kill -HUP still reloads)");
            None
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
