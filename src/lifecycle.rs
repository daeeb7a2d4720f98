//! One baton process from start to exit, as explicit steps:
//! acquire listeners → serve → (become main) → wait for signals →
//! on SIGHUP hand off → on success retire (drain, exit 0) / on failure serve on →
//! on SIGTERM/SIGINT stop (drain, exit 0).
//!
//! [`Server::serve_until_exit`] reads like the sequence in `docs/handoff-protocol.md`,
//! "Notifications around a hand-off".

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::config::Config;
use crate::handoff::child;
use crate::handoff::parent::{self, HandoffError, ReadySuccessor};
use crate::handoff::protocol::{GENERATION_ENV, PREDECESSOR_ENV};
use crate::handoff::spawn::Executable;
use crate::http::HttpService;
use crate::listen::{self, activation::ActivationEnv, Acquired, ImportFrom, ListenError, Listener};
use crate::notify::{self, Event};
use crate::reload::{self, Outcome, ReloadStatus};
use crate::{exit, http, pidfile};

/// How long to wait for systemd to confirm it processed `MAINPID=`.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a baton process could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The running binary's path could not be read.
    #[error("cannot find the running executable: {0}")]
    Executable(io::Error),
    /// The listeners could not be set up.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The async runtime or a signal handler could not be set up.
    #[error("cannot start the runtime: {0}")]
    Runtime(io::Error),
    /// Serving could not start on a listener.
    #[error("cannot serve: {0}")]
    Serve(io::Error),
}

impl StartError {
    /// The sysexits code that fits.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Listen(e) => e.exit_code(),
            _ => exit::OSERR,
        }
    }
}

/// A baton process: its configuration and where it stands in the line of hand-offs.
#[derive(Debug)]
pub struct Server {
    config: Config,
    exe: Executable,
    generation: u64,
    predecessor: Option<PathBuf>,
}

/// How the signal loop ended.
enum Ending {
    /// A successor is main: drain silently and exit.
    Retire {
        /// The successor.
        successor: u32,
    },
    /// A real stop.
    Stop(&'static str),
}

impl Server {
    /// Prepare a server: record the executable path (before any upgrade can replace it) and
    /// read, without changing it, what the predecessor put in our environment.
    pub fn new(config: Config) -> Result<Server, StartError> {
        Ok(Server {
            config,
            exe: Executable::current().map_err(StartError::Executable)?,
            generation: generation_from_env(),
            predecessor: predecessor_from_env(),
        })
    }

    /// The hand-off generation of this process (0 for a first start).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Acquire the listeners, serve `make_service(config)` on them until a successor takes over
    /// or a stop is requested, then drain. Returns when the process should exit 0.
    pub fn run<F, S>(self, make_service: F) -> Result<(), StartError>
    where
        F: FnOnce(&Config) -> S,
        S: HttpService,
    {
        let import_from = match &self.predecessor {
            Some(path) => ImportFrom::Required(path.clone()),
            None => ImportFrom::IfPresent(self.config.handoff_socket.clone()),
        };
        let span = tracing::info_span!(
            "baton",
            pid = std::process::id(),
            generation = self.generation
        );
        let entered = span.enter();
        let acquired = listen::acquire(
            &self.config,
            &ActivationEnv::from_process(),
            std::process::id(),
            import_from,
        )
        .inspect_err(|e| self.report_failure(&e.to_string()))?;
        // Only stdio and the listeners may reach a successor (issue 8, row 6).
        match crate::fds::close_inherited_on_exec() {
            Ok(how) => tracing::debug!(how, "inherited descriptors marked close-on-exec"),
            Err(e) => warn!(error = %e, "cannot mark inherited descriptors close-on-exec"),
        }
        let service = make_service(&self.config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        drop(entered);
        let result = runtime.block_on(self.serve_until_exit(acquired, service).instrument(span));
        runtime.shutdown_timeout(Duration::from_millis(200));
        result
    }

    /// Tell a waiting predecessor why we cannot serve (best effort).
    pub fn report_failure(&self, reason: &str) {
        if let Some(path) = &self.predecessor {
            child::report_failure(path, reason);
        }
    }

    async fn serve_until_exit<S: HttpService>(
        self,
        acquired: Acquired,
        service: S,
    ) -> Result<(), StartError> {
        let pid = std::process::id();
        // Before tokio's SIGHUP handler, so a request is recorded before it is seen.
        reload::accept_requests().map_err(StartError::Runtime)?;
        let mut hup = signal(SignalKind::hangup()).map_err(StartError::Runtime)?;
        let mut term = signal(SignalKind::terminate()).map_err(StartError::Runtime)?;
        let mut int = signal(SignalKind::interrupt()).map_err(StartError::Runtime)?;

        let Acquired {
            listeners,
            predecessor,
        } = acquired;
        let sockets = listeners
            .iter()
            .map(|l| l.socket.try_clone())
            .collect::<io::Result<Vec<_>>>()
            .map_err(StartError::Serve)?;
        let serving = http::start(sockets, service)
            .inspect_err(|e| self.report_failure(&format!("cannot serve: {e}")))
            .map_err(StartError::Serve)?;
        let serving_on = describe(&listeners, self.generation);

        // Become the main process: a baton predecessor promotes us once systemd knows our pid.
        if let Some(predecessor) = predecessor {
            tokio::select! {
                promoted = predecessor.ready_then_promoted(pid) => {
                    if let Err(e) = promoted {
                        warn!(error = %e, "hand-off connection failed before promotion; serving on as main");
                    }
                }
                _ = term.recv() => return self.stop(&serving, "SIGTERM before promotion").await,
                _ = int.recv() => return self.stop(&serving, "SIGINT before promotion").await,
            }
            // A reload request that reached us before we were main was meant for our predecessor.
            if tokio::time::timeout(Duration::ZERO, hup.recv())
                .await
                .is_ok()
            {
                info!("dropping a SIGHUP received before this process became main");
            }
        }
        notify::send(&Event::Ready {
            status: &serving_on,
        });
        if let Some(path) = &self.config.pid_file {
            if let Err(e) = pidfile::update(path, pid) {
                error!(error = %e, "cannot write the pid file");
            }
        }
        info!(status = %serving_on, "ready");

        let ending = self
            .signal_loop(&listeners, &serving, &mut hup, &mut term, &mut int)
            .await;
        match ending {
            Ending::Retire { successor } => {
                info!("successor is main; draining and retiring");
                let _forward = reload::forward_requests(successor);
                serving.drain(self.config.shutdown_timeout).await;
                info!("retired");
                Ok(())
            }
            Ending::Stop(why) => self.stop(&serving, why).await,
        }
    }

    /// Wait for signals; run at most one hand-off at a time.
    async fn signal_loop(
        &self,
        listeners: &[Listener],
        serving: &http::Serving,
        hup: &mut tokio::signal::unix::Signal,
        term: &mut tokio::signal::unix::Signal,
        int: &mut tokio::signal::unix::Signal,
    ) -> Ending {
        type HandOff<'a> =
            Pin<Box<dyn Future<Output = Result<ReadySuccessor, HandoffError>> + Send + 'a>>;
        let mut handoff: Option<HandOff<'_>> = None;
        let mut cancel = CancellationToken::new();
        let mut requested_usec = 0;
        let mut watchdog =
            notify::watchdog_interval().map(|every| tokio::time::interval(every / 2));
        // `baton reload` requests that arrived before we were main are not dropped: serve them.
        let mut queued = reload::has_pending_requests();

        let stop = loop {
            tokio::select! {
                _ = next_hup(hup, &mut queued) => {
                    if handoff.is_some() {
                        warn!("SIGHUP during a hand-off: ignored, one hand-off at a time");
                        continue;
                    }
                    info!(exe = %self.exe.path.display(), "SIGHUP: handing off to a successor");
                    requested_usec = reload::monotonic_usec();
                    notify::send(&Event::Reloading { status: "reloading: starting successor" });
                    cancel = CancellationToken::new();
                    handoff = Some(Box::pin(parent::hand_off(
                        &self.exe,
                        &self.config.handoff_socket,
                        listeners,
                        self.generation,
                        self.config.child_timeout,
                        cancel.clone(),
                    )));
                }
                result = poll_some(&mut handoff) => {
                    handoff = None;
                    match result {
                        Ok(successor) => {
                            // The successor accepts on every listener: from now on every new
                            // connection is its, so what a client sees after READY=1 is new.
                            serving.stop_accepting().await;
                            let successor_pid = successor.pid;
                            notify::send(&Event::MainPid(successor_pid));
                            if !notify::barrier(BARRIER_TIMEOUT).await {
                                warn!("systemd did not confirm MAINPID= in time; promoting anyway");
                            }
                            self.write_status(requested_usec, Outcome::Ready, Some(successor_pid), None);
                            if let Err(e) = successor.promote().await {
                                warn!(successor = successor_pid, error = %e, "could not tell the successor it is main");
                            }
                            info!(successor = successor_pid, "hand-off done");
                            return Ending::Retire { successor: successor_pid };
                        }
                        Err(e) => {
                            error!(error = %e, "reload failed; serving on");
                            // The status file first: whoever sees READY=1 finds the outcome.
                            self.write_status(requested_usec, Outcome::Failed, None, Some(e.to_string()));
                            let status = format!("reload failed: {e}");
                            notify::send(&Event::Ready { status: &status });
                        }
                    }
                }
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
                _ = tick(&mut watchdog) => notify::send(&Event::Watchdog),
            }
        };
        if let Some(running) = handoff.take() {
            cancel.cancel();
            if let Ok(mut successor) = running.await {
                parent::kill_and_reap(&mut successor.child).await;
            }
            self.write_status(
                requested_usec,
                Outcome::Failed,
                None,
                Some(format!("{stop} during the hand-off")),
            );
        }
        Ending::Stop(stop)
    }

    async fn stop(&self, serving: &http::Serving, why: &str) -> Result<(), StartError> {
        info!(
            reason = why,
            open = serving.open_connections(),
            "stopping: draining"
        );
        notify::send(&Event::Stopping {
            status: "stopping: draining",
        });
        serving.drain(self.config.shutdown_timeout).await;
        if let Some(path) = &self.config.pid_file {
            pidfile::remove_if_ours(path, std::process::id());
        }
        info!("stopped");
        Ok(())
    }

    fn write_status(
        &self,
        requested_usec: u64,
        outcome: Outcome,
        successor_pid: Option<u32>,
        reason: Option<String>,
    ) {
        reload::publish(
            &self.config.handoff_socket,
            &ReloadStatus {
                parent_pid: std::process::id(),
                requested_usec,
                finished_usec: reload::monotonic_usec(),
                outcome,
                successor_pid,
                reason,
            },
        );
    }
}

/// The next SIGHUP, or at once when a reload request is queued.
async fn next_hup(hup: &mut tokio::signal::unix::Signal, queued: &mut bool) {
    if std::mem::take(queued) {
        return;
    }
    hup.recv().await;
}

/// Await the future if there is one; otherwise never resolve.
async fn poll_some<F: Future + Unpin>(fut: &mut Option<F>) -> F::Output {
    match fut {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn describe(listeners: &[Listener], generation: u64) -> String {
    let list: Vec<String> = listeners
        .iter()
        .map(|l| format!("{} ({})", l.spec, l.source))
        .collect();
    format!("serving on {}; generation {generation}", list.join(", "))
}

fn generation_from_env() -> u64 {
    std::env::var(GENERATION_ENV)
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

/// For a successor that fails before it has a [`Server`] (a bad configuration): tell the
/// predecessor that spawned it why, so the reload's failure names the cause (best effort).
pub fn report_startup_failure(reason: &str) {
    if let Some(path) = predecessor_from_env() {
        child::report_failure(&path, reason);
    }
}

fn predecessor_from_env() -> Option<PathBuf> {
    std::env::var_os(PREDECESSOR_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}
