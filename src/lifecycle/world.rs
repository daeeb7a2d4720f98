//! The real [`World`]: what a serving process owns (listeners, the serving connections, the
//! control socket, the link to its predecessor) and how it carries out the machine's actions.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

use super::handoff_task::{follow_predecessor, HandoffTask};
use super::{
    Action, Input, Outcome, ShutdownFuture, Stage, Step, StopReason, World, BARRIER_TIMEOUT,
    CONTROL_FLUSH, CONTROL_RETRY, DEADLINE_MARGIN, PASS_STOP_ON_TIMEOUT, STATUS_EVERY,
};
use crate::drain::DrainSignal;
use crate::handoff::child::Predecessor;
use crate::handoff::parent::StateFn;
use crate::handoff::spawn::Executable;
use crate::http::Serving;
use crate::listen::Listener;
use crate::notify::{self, Event};
use crate::pidfile;
use crate::reload::control::Control;
use crate::reload::{self, Answer, ReloadStatus};
use crate::settings::Settings;

/// Everything a serving process owns.
pub(crate) struct ProcessWorld {
    /// What the process is (carried from the `Server`).
    process: Process,
    /// What serving added to it.
    parts: Parts,
    watchdog: Option<tokio::time::Interval>,
    status_tick: Option<tokio::time::Interval>,
    /// The last `READY=1` status, and the connection count last told with it.
    status: (String, usize),
    inputs: mpsc::UnboundedReceiver<Input>,
    inputs_tx: mpsc::UnboundedSender<Input>,
    handoff: Option<mpsc::UnboundedSender<Command>>,
    ending: Vec<JoinHandle<()>>,
    /// (Successor, until it is main) what to tell the predecessor.
    to_predecessor: Option<oneshot::Sender<ToPredecessor>>,
    /// (Successor) the task that follows the predecessor.
    following: Option<JoinHandle<()>>,
    requested_usec: u64,
    /// A `baton reload` request arrived before this world existed.
    queued: bool,
    /// The successor this process retires for.
    retiring_for: Option<u32>,
    /// The current (or last) hand-off's number, whose stage deadlines are armed.
    attempt: u64,
    /// The service's control socket (`baton reload`), when there is one.
    control: Option<Control>,
    /// This process has been main (it owns the control socket's name at a real stop).
    was_main: bool,
    /// A hand-off is running (the control socket is not accepted on).
    handing_off: bool,
    /// Without a control socket (its directory was unusable): try to make one now and then.
    control_retry: Option<tokio::time::Interval>,
    /// The first stop asked for, and whether the drain was a stop (`Some(true)`) or a retirement.
    last_stop: Option<StopReason>,
    drained: Option<bool>,
}

/// The signals a baton process handles, installed as early as possible.
pub(crate) struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Install the handlers (`SIGHUP`'s default action would kill the process).
    pub(crate) fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// What a baton process is once its listeners are acquired: the `Server` holds it, and the
/// [`ProcessWorld`] it becomes keeps it whole (a field added here is added once).
pub(crate) struct Process {
    pub(crate) settings: Settings,
    pub(crate) exe: Executable,
    pub(crate) generation: u64,
    pub(crate) handoff_socket: PathBuf,
    pub(crate) signals: Signals,
}

/// What serving adds to a [`Process`] to make a [`ProcessWorld`]; the world keeps it whole.
pub(crate) struct Parts {
    pub(crate) listeners: Arc<Vec<Listener>>,
    pub(crate) serving: Serving,
    pub(crate) state: Option<StateFn>,
    pub(crate) drain: DrainSignal,
    pub(crate) shutdown: Option<ShutdownFuture>,
    /// The control socket a predecessor passed on; `None`: bind a new one (taken when the
    /// world starts).
    pub(crate) control: Option<std::os::fd::OwnedFd>,
    /// The application's reload callback.
    pub(crate) on_reload: Option<crate::observe::ReloadHook>,
}

/// What a successor's driver has the task that follows its predecessor say.
pub(super) enum ToPredecessor {
    /// `confirmed`: we serve as main.
    Confirm,
    /// `stopping`: we were stopped before we were main.
    Stopping,
}

/// What the driver tells a hand-off task.
pub(super) enum Command {
    Promote,
    Abort,
    /// A deadline passed: `SIGKILL`, no drain.
    Kill,
}

impl ProcessWorld {
    /// Install the signal handlers and, for a successor, start listening to the predecessor.
    pub(crate) fn new(
        process: Process,
        mut parts: Parts,
        predecessor: Option<Predecessor>,
    ) -> Self {
        let (inputs_tx, inputs) = mpsc::unbounded_channel();
        let control = open_control(
            parts.control.take(),
            &process.handoff_socket,
            &inputs_tx,
            true,
        );
        let control_retry = control.is_none().then(|| {
            let mut every = tokio::time::interval_at(
                tokio::time::Instant::now() + CONTROL_RETRY,
                CONTROL_RETRY,
            );
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every
        });
        let (mut to_predecessor, mut following) = (None, None);
        if let Some(predecessor) = predecessor {
            let (tx, rx) = oneshot::channel();
            to_predecessor = Some(tx);
            following = Some(tokio::spawn(
                follow_predecessor(predecessor, rx, inputs_tx.clone()).in_current_span(),
            ));
        }
        crate::observe::generation(process.generation);
        ProcessWorld {
            process,
            parts,
            watchdog: notify::watchdog_interval().map(|every| tokio::time::interval(every / 2)),
            status_tick: notify::enabled().then(|| {
                let mut every = tokio::time::interval_at(
                    tokio::time::Instant::now() + STATUS_EVERY,
                    STATUS_EVERY,
                );
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every
            }),
            status: (String::new(), 0),
            inputs,
            inputs_tx,
            handoff: None,
            ending: Vec::new(),
            to_predecessor,
            following,
            requested_usec: 0,
            queued: false,
            retiring_for: None,
            attempt: 0,
            control,
            was_main: false,
            handing_off: false,
            control_retry,
            last_stop: None,
            drained: None,
        }
    }

    /// Record the outcome and answer every `baton reload` that waits for it.
    fn write_status(&mut self, outcome: Outcome) {
        let took = std::time::Duration::from_micros(
            reload::monotonic_usec().saturating_sub(self.requested_usec),
        );
        let observed = match &outcome {
            Outcome::Ready { successor } => crate::ReloadOutcome::HandedOff {
                successor: *successor,
                took,
            },
            Outcome::Failed { reason } => crate::ReloadOutcome::Failed {
                reason: reason.clone(),
                took,
            },
        };
        crate::observe::reload_ended(&observed);
        if let Some(hook) = &self.parts.on_reload {
            hook(&observed);
        }
        let me = std::process::id();
        self.handing_off = false;
        let (outcome, successor_pid, reason) = match outcome {
            Outcome::Ready { successor } => {
                self.retiring_for = Some(successor);
                if let Some(c) = &mut self.control {
                    c.finish(
                        Answer::Reloaded {
                            retired: me,
                            successor,
                        },
                        false,
                    );
                }
                (reload::Outcome::Ready, Some(successor), None)
            }
            Outcome::Failed { reason } => {
                let answer = Answer::Failed {
                    pid: me,
                    reason: reason.clone(),
                };
                // Requests that came during the failed hand-off get one of their own.
                if self
                    .control
                    .as_mut()
                    .is_some_and(|c| c.finish(answer, true))
                {
                    let _ = self.inputs_tx.send(Input::ReloadRequest);
                }
                (reload::Outcome::Failed, None, Some(reason))
            }
        };
        reload::publish(
            &self.process.handoff_socket,
            &ReloadStatus {
                parent_pid: std::process::id(),
                requested_usec: self.requested_usec,
                finished_usec: reload::monotonic_usec(),
                outcome,
                successor_pid,
                reason,
            },
        );
    }

    /// How long `stage` of a hand-off may take.
    fn deadline(&self, stage: Stage) -> Duration {
        match stage {
            Stage::Starting => self.process.settings.child_timeout + DEADLINE_MARGIN,
            Stage::Announcing => BARRIER_TIMEOUT + DEADLINE_MARGIN,
            Stage::Promoting => self.process.settings.child_timeout,
        }
    }

    /// Arm the deadline of `stage` of the current hand-off: the machine ignores it once the
    /// stage has ended.
    fn arm(&self, stage: Stage) {
        let (attempt, after) = (self.attempt, self.deadline(stage));
        let inputs = self.inputs_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = inputs.send(Input::Handoff {
                attempt,
                step: Step::TimedOut { stage, after },
            });
        });
    }

    fn begin_handoff(&mut self, attempt: u64) {
        info!(exe = %self.process.exe.path.display(), "SIGHUP: handing off to a successor");
        self.requested_usec = reload::monotonic_usec();
        crate::observe::reload_requested();
        let (tx, rx) = mpsc::unbounded_channel();
        self.handoff = Some(tx);
        self.handing_off = true;
        if let Some(c) = &mut self.control {
            c.begin();
        }
        let task = HandoffTask {
            control: self.control.as_ref().and_then(|c| c.fd().try_clone().ok()),
            exe: self.process.exe.clone(),
            socket: self.process.handoff_socket.clone(),
            listeners: self.parts.listeners.clone(),
            generation: self.process.generation,
            child_timeout: self.process.settings.child_timeout,
            grace: self.process.settings.shutdown_timeout,
            state: self.parts.state.clone(),
        };
        let handle = tokio::spawn(
            task.run(attempt, rx, self.inputs_tx.clone())
                .in_current_span(),
        );
        self.ending.push(handle);
    }

    async fn drain(&mut self, stop: bool) {
        info!(
            open = self.parts.serving.open_connections(),
            "{}: draining",
            if stop { "stopping" } else { "retiring" }
        );
        self.parts.drain.trigger();
        // A process that retires or stops makes no control socket any more: it would take
        // requests it cannot carry out, and leave its name behind.
        self.control_retry = None;
        let me = std::process::id();
        if let Some(c) = &mut self.control {
            c.close(match self.retiring_for {
                Some(main) if !stop => Answer::AskAgain { main },
                _ => Answer::Stopping { pid: me },
            });
        }
        if stop && self.was_main {
            if let Some(c) = &self.control {
                remove_control_socket(&self.process.handoff_socket, c);
            }
        }
        let deadline = tokio::time::Instant::now() + self.process.settings.shutdown_timeout;
        if stop {
            // Answer the clients already queued, then let go of the listening sockets at once:
            // our own copies first, so that each accept loop's copy is the last one and closes
            // right after its sweep finds the backlog empty.
            self.parts.listeners = Arc::new(Vec::new());
            self.parts.serving.stop_accepting_for_stop().await;
        }
        self.parts
            .serving
            .drain(self.process.settings.shutdown_timeout)
            .await;
        // A successor of a called-off hand-off drains too; wait for it within the same budget.
        for task in self.ending.drain(..) {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                warn!("a successor did not end within the shutdown timeout");
            }
        }
        // Every control connection this process accepted gets its answer (`ask_again`,
        // `stopping`) written before it exits: closed unanswered, a client would read a reset.
        if let Some(c) = &mut self.control {
            c.flush(CONTROL_FLUSH).await;
        }
        if stop {
            if let Some(path) = &self.process.settings.pid_file {
                pidfile::remove_if_ours(path, std::process::id());
            }
        }
        info!("{}", if stop { "stopped" } else { "retired" });
    }
}

impl World for ProcessWorld {
    async fn next(&mut self) -> Input {
        let input = self.next_or_retry().await;
        if let Input::Stop(reason) = &input {
            self.last_stop.get_or_insert(*reason);
        }
        input
    }

    async fn perform(&mut self, action: Action) {
        if let Action::Drain { stop } = &action {
            self.drained = Some(*stop);
        }
        self.perform_action(action).await
    }
}

/// How a process's serving ended, as [`ProcessWorld::finish`] tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Drained after handing its listeners to this successor.
    HandedOff {
        /// The successor's pid.
        successor: u32,
    },
    /// Stopped; the reason the machine recorded (none: not reached by the machine).
    Stopped(Option<StopReason>),
}

impl ProcessWorld {
    /// How this process's serving ended (once [`drive`](super::drive) returned): handed off to
    /// a successor, or stopped for the last recorded reason (the façade turns it into its
    /// `Ended`).
    pub(crate) fn finish(&self) -> Finish {
        match (self.drained, self.retiring_for) {
            (Some(false), Some(successor)) => Finish::HandedOff { successor },
            _ => Finish::Stopped(self.last_stop),
        }
    }

    /// The next input, retrying the control socket meanwhile when there is none.
    async fn next_or_retry(&mut self) -> Input {
        if std::mem::take(&mut self.queued) {
            return Input::ReloadRequest;
        }
        loop {
            let mut retry = self.control_retry.take();
            let input = tokio::select! {
                _ = tick(&mut retry) => None,
                input = self.next_input() => Some(input),
            };
            self.control_retry = retry;
            match input {
                Some(input) => return input,
                None => self.retry_control(),
            }
        }
    }

    async fn perform_action(&mut self, action: Action) {
        match action {
            Action::Notify(Event::Ready { status }) => {
                let open = self.parts.serving.open_connections();
                notify::send(&Event::Ready {
                    status: with_connections(&status, open),
                });
                self.status = (status, open);
            }
            Action::Notify(event) => notify::send(&event),
            Action::RefreshStatus => {
                let open = self.parts.serving.open_connections();
                if open != self.status.1 {
                    self.status.1 = open;
                    notify::send(&Event::Status {
                        status: with_connections(&self.status.0, open),
                    });
                }
            }
            Action::BeginHandoff { attempt } => {
                self.attempt = attempt;
                self.arm(Stage::Starting);
                self.begin_handoff(attempt);
            }
            Action::Announce { attempt, successor } => {
                self.arm(Stage::Announcing);
                notify::send(&Event::MainPid(successor));
                let inputs = self.inputs_tx.clone();
                tokio::spawn(async move {
                    if !notify::barrier(BARRIER_TIMEOUT).await {
                        warn!("systemd did not confirm MAINPID= in time; promoting anyway");
                    }
                    let _ = inputs.send(Input::Handoff {
                        attempt,
                        step: Step::Announced,
                    });
                });
            }
            Action::Promote => {
                self.arm(Stage::Promoting);
                self.command(Command::Promote);
            }
            Action::AbortHandoff => {
                self.command(Command::Abort);
                self.handoff = None;
            }
            Action::KillHandoff => {
                self.command(Command::Kill);
                self.handoff = None;
            }
            Action::ConfirmPromotion => self.tell_predecessor(ToPredecessor::Confirm),
            Action::PassStopOn => {
                self.tell_predecessor(ToPredecessor::Stopping);
                // Said before this process can end (a quick drain would exit first).
                if let Some(task) = self.following.take() {
                    if tokio::time::timeout(PASS_STOP_ON_TIMEOUT, task)
                        .await
                        .is_err()
                    {
                        warn!("could not pass the stop on to the predecessor in time");
                    }
                }
            }
            Action::WriteStatus(outcome) => self.write_status(outcome),
            Action::WritePidFile => {
                // Main now: `baton reload` is served here.
                self.was_main = true;
                if let Some(c) = &self.control {
                    c.accept();
                }
                if let Some(path) = &self.process.settings.pid_file {
                    if let Err(e) = pidfile::update(path, std::process::id()) {
                        tracing::error!(error = %e, "cannot write the pid file");
                    }
                }
            }
            Action::PauseAccepting => self.parts.serving.pause_accepting().await,
            Action::ResumeAccepting => self.parts.serving.resume_accepting(),
            Action::Drain { stop } => self.drain(stop).await,
        }
    }
}

impl ProcessWorld {
    /// The next input of the process itself.
    async fn next_input(&mut self) -> Input {
        tokio::select! {
            _ = self.process.signals.hup.recv() => Input::Hup,
            _ = self.process.signals.term.recv() => Input::Stop(StopReason::Sigterm),
            _ = self.process.signals.int.recv() => Input::Stop(StopReason::Sigint),
            _ = poll_some(&mut self.parts.shutdown) => {
                self.parts.shutdown = None;
                Input::Stop(StopReason::Requested)
            }
            Some(input) = self.inputs.recv() => input,
            _ = tick(&mut self.watchdog) => Input::WatchdogTick,
            _ = tick(&mut self.status_tick) => Input::StatusTick,
        }
    }

    /// Without a control socket: try to make one (its directory may be usable now). Not while a
    /// hand-off runs: its successor was given none and makes its own, so one made now would be
    /// served by nobody and its name left behind; the next try after the hand-off makes it, if
    /// this process is still the one serving.
    fn retry_control(&mut self) {
        if self.handing_off {
            return;
        }
        if let Some(c) = open_control(None, &self.process.handoff_socket, &self.inputs_tx, false) {
            // Served once this process is main (a successor's is, from its promotion on).
            if self.was_main {
                c.accept();
            }
            self.control = Some(c);
            self.control_retry = None;
        }
    }

    fn tell_predecessor(&mut self, what: ToPredecessor) {
        if let Some(tx) = self.to_predecessor.take() {
            let _ = tx.send(what);
        }
    }

    fn command(&self, command: Command) {
        if let Some(tx) = &self.handoff {
            let _ = tx.send(command);
        }
    }
}

/// Serve the control socket a predecessor passed on, else bind a new one in the runtime
/// directory. Without one (it cannot be made) `kill -HUP` still reloads; `baton reload` cannot
/// reach this service, which is logged.
fn open_control(
    inherited: Option<std::os::fd::OwnedFd>,
    handoff_socket: &std::path::Path,
    inputs: &mpsc::UnboundedSender<Input>,
    first: bool,
) -> Option<Control> {
    let fd = match inherited {
        Some(fd) => fd,
        None => match crate::runtime_dir::RuntimeDir::open(handoff_socket)
            .and_then(|dir| dir.bind_control())
        {
            Ok((listener, path)) => {
                info!(path = %path.display(), "control socket for `baton reload`");
                std::os::fd::OwnedFd::from(listener)
            }
            Err(e) if first => {
                tracing::error!(error = %e, "no control socket: `baton reload` cannot reach this service until it can be made (kill -HUP still reloads)");
                return None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "still no control socket");
                return None;
            }
        },
    };
    let wake = crate::reload::control::Wake {
        inputs: inputs.clone(),
        input: Input::ReloadRequest,
    };
    match Control::start(fd, wake) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the control socket");
            None
        }
    }
}

/// At a real stop of the service, remove its control socket's name.
fn remove_control_socket(handoff_socket: &std::path::Path, control: &Control) {
    let Some(name) = control.name() else { return };
    if let Ok(dir) = crate::runtime_dir::RuntimeDir::open(handoff_socket) {
        dir.remove_control(&name);
    }
}

/// `STATUS=` while serving: the status of the last `READY=1` and the connections open now.
fn with_connections(status: &str, open: usize) -> String {
    let s = if open == 1 { "" } else { "s" };
    // Bounded here so that the count survives the bound on the whole `STATUS=`.
    let status = notify::bounded(status, notify::MAX_STATUS - 40);
    format!("{status}; {open} open connection{s}")
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
