//! One baton process from serving to exit.
//!
//! The ordering rules live in [`machine`], a pure state machine. The outside world — signals,
//! the successor, systemd, the clock, files — is behind the [`World`] trait: [`drive`] feeds what
//! the world reports into the machine and has the world carry out what the machine decides.
//! [`ProcessWorld`] is the real one.

pub(crate) mod machine;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::drain::DrainSignal;
use crate::handoff::child::{Predecessor, Promotion};
use crate::handoff::parent::{self, HandoffError, StateFn, SuccessorEvent};
use crate::handoff::spawn::Executable;
use crate::http::Serving;
use crate::listen::Listener;
use crate::notify::{self, Event};
use crate::pidfile;
use crate::reload::control::Control;
use crate::reload::{self, Answer, ReloadStatus};
use crate::settings::Settings;
pub(crate) use machine::{Action, Input, Machine, Outcome, Stage, Step, StopReason};

/// How long to wait for systemd to confirm it processed `MAINPID=`.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);
/// How much longer than the hand-off's own bound (the child timeout for the successor's start,
/// [`BARRIER_TIMEOUT`] for the announcement) a stage's deadline is: the cause those bounds name
/// is reported first, the deadline is the last resort.
const DEADLINE_MARGIN: Duration = Duration::from_secs(1);
/// How long a successor stopped before it is main waits to have told its predecessor.
const PASS_STOP_ON_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a process without a control socket tries to make one.
const CONTROL_RETRY: Duration = Duration::from_secs(1);
/// How often a serving main process refreshes `STATUS=` (only when the count of open
/// connections changed, and only under a service manager).
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// What the driver needs from the outside world.
#[allow(async_fn_in_trait)]
pub(crate) trait World {
    /// The next thing that happened: a signal, a step of a hand-off, a watchdog tick.
    async fn next(&mut self) -> Input;
    /// Carry out one action; returns once it is done (a drain: once the process may exit).
    async fn perform(&mut self, action: Action);
}

/// Run the process: carry out `initial`, then feed the world's inputs to the machine until it
/// has drained.
pub(crate) async fn drive<W: World>(mut machine: Machine, initial: Vec<Action>, world: &mut W) {
    for action in initial {
        world.perform(action).await;
    }
    while !machine.is_done() {
        let input = world.next().await;
        for action in machine.handle(input) {
            world.perform(action).await;
        }
    }
}

/// A future the application resolves to ask for a stop (like `SIGTERM`).
pub(crate) type ShutdownFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Everything a serving process owns.
pub(crate) struct ProcessWorld {
    pub(crate) settings: Settings,
    pub(crate) exe: Executable,
    pub(crate) generation: u64,
    pub(crate) handoff_socket: PathBuf,
    pub(crate) listeners: Arc<Vec<Listener>>,
    pub(crate) serving: Serving,
    pub(crate) state: Option<StateFn>,
    pub(crate) drain: DrainSignal,
    pub(crate) shutdown: Option<ShutdownFuture>,
    signals: Signals,
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
    on_reload: Option<crate::observe::ReloadHook>,
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

/// The parts of a [`ProcessWorld`] the caller provides.
pub(crate) struct Parts {
    pub(crate) settings: Settings,
    pub(crate) exe: Executable,
    pub(crate) generation: u64,
    pub(crate) handoff_socket: PathBuf,
    pub(crate) listeners: Arc<Vec<Listener>>,
    pub(crate) serving: Serving,
    pub(crate) state: Option<StateFn>,
    pub(crate) drain: DrainSignal,
    pub(crate) shutdown: Option<ShutdownFuture>,
    pub(crate) signals: Signals,
    /// The control socket a predecessor passed on; `None`: bind a new one.
    pub(crate) control: Option<std::os::fd::OwnedFd>,
    /// The application's reload callback.
    pub(crate) on_reload: Option<crate::observe::ReloadHook>,
}

/// What a successor's driver has the task that follows its predecessor say.
enum ToPredecessor {
    /// `confirmed`: we serve as main.
    Confirm,
    /// `stopping`: we were stopped before we were main.
    Stopping,
}

/// What the driver tells a hand-off task.
enum Command {
    Promote,
    Abort,
    /// A deadline passed: `SIGKILL`, no drain.
    Kill,
}

impl ProcessWorld {
    /// Install the signal handlers and, for a successor, start listening to the predecessor.
    pub(crate) fn new(parts: Parts, predecessor: Option<Predecessor>) -> Self {
        let (inputs_tx, inputs) = mpsc::unbounded_channel();
        let control = open_control(parts.control, &parts.handoff_socket, &inputs_tx, true);
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
        ProcessWorld {
            settings: parts.settings,
            exe: parts.exe,
            generation: {
                crate::observe::generation(parts.generation);
                parts.generation
            },
            handoff_socket: parts.handoff_socket,
            listeners: parts.listeners,
            serving: parts.serving,
            state: parts.state,
            drain: parts.drain,
            shutdown: parts.shutdown,
            signals: parts.signals,
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
            on_reload: parts.on_reload,
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
        if let Some(hook) = &self.on_reload {
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
            &self.handoff_socket,
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
            Stage::Starting => self.settings.child_timeout + DEADLINE_MARGIN,
            Stage::Announcing => BARRIER_TIMEOUT + DEADLINE_MARGIN,
            Stage::Promoting => self.settings.child_timeout,
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
        info!(exe = %self.exe.path.display(), "SIGHUP: handing off to a successor");
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
            exe: self.exe.clone(),
            socket: self.handoff_socket.clone(),
            listeners: self.listeners.clone(),
            generation: self.generation,
            child_timeout: self.settings.child_timeout,
            grace: self.settings.shutdown_timeout,
            state: self.state.clone(),
        };
        let handle = tokio::spawn(
            task.run(attempt, rx, self.inputs_tx.clone())
                .in_current_span(),
        );
        self.ending.push(handle);
    }

    async fn drain(&mut self, stop: bool) {
        info!(
            open = self.serving.open_connections(),
            "{}: draining",
            if stop { "stopping" } else { "retiring" }
        );
        self.drain.trigger();
        let me = std::process::id();
        if let Some(c) = &mut self.control {
            c.close(match self.retiring_for {
                Some(main) if !stop => Answer::AskAgain { main },
                _ => Answer::Stopping { pid: me },
            });
        }
        if stop && self.was_main {
            if let Some(c) = &self.control {
                remove_control_socket(&self.handoff_socket, c);
            }
        }
        let deadline = tokio::time::Instant::now() + self.settings.shutdown_timeout;
        if stop {
            // Answer the clients already queued, then let go of the listening sockets at once:
            // our own copies first, so that each accept loop's copy is the last one and closes
            // right after its sweep finds the backlog empty.
            self.listeners = Arc::new(Vec::new());
            self.serving.stop_accepting_for_stop().await;
        }
        self.serving.drain(self.settings.shutdown_timeout).await;
        // A successor of a called-off hand-off drains too; wait for it within the same budget.
        for task in self.ending.drain(..) {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                warn!("a successor did not end within the shutdown timeout");
            }
        }
        if stop {
            if let Some(path) = &self.settings.pid_file {
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

impl ProcessWorld {
    /// How this process's serving ended (once [`drive`] returned).
    pub(crate) fn ended(&self) -> crate::Ended {
        use crate::{Ended, StopSignal};
        match (self.drained, self.retiring_for, self.last_stop) {
            (Some(false), Some(successor), _) => Ended::HandedOff { successor },
            (_, _, Some(StopReason::Sigterm)) => Ended::Signal(StopSignal::Term),
            (_, _, Some(StopReason::Sigint)) => Ended::Signal(StopSignal::Int),
            (_, _, Some(StopReason::Requested)) => Ended::Shutdown,
            (_, _, Some(StopReason::SuccessorStopped)) => Ended::StopPassedOn,
            // A retirement without a recorded successor, or a stop with no recorded reason: not
            // reached by the machine; called a stop.
            (_, _, None) => Ended::Shutdown,
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
                let open = self.serving.open_connections();
                notify::send(&Event::Ready {
                    status: with_connections(&status, open),
                });
                self.status = (status, open);
            }
            Action::Notify(event) => notify::send(&event),
            Action::RefreshStatus => {
                let open = self.serving.open_connections();
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
                if let Some(path) = &self.settings.pid_file {
                    if let Err(e) = pidfile::update(path, std::process::id()) {
                        tracing::error!(error = %e, "cannot write the pid file");
                    }
                }
            }
            Action::PauseAccepting => self.serving.pause_accepting().await,
            Action::ResumeAccepting => self.serving.resume_accepting(),
            Action::Drain { stop } => self.drain(stop).await,
        }
    }
}

impl ProcessWorld {
    /// The next input of the process itself.
    async fn next_input(&mut self) -> Input {
        tokio::select! {
            _ = self.signals.hup.recv() => Input::Hup,
            _ = self.signals.term.recv() => Input::Stop(StopReason::Sigterm),
            _ = self.signals.int.recv() => Input::Stop(StopReason::Sigint),
            _ = poll_some(&mut self.shutdown) => {
                self.shutdown = None;
                Input::Stop(StopReason::Requested)
            }
            Some(input) = self.inputs.recv() => input,
            _ = tick(&mut self.watchdog) => Input::WatchdogTick,
            _ = tick(&mut self.status_tick) => Input::StatusTick,
        }
    }

    /// Without a control socket: try to make one (its directory may be usable now).
    fn retry_control(&mut self) {
        if let Some(c) = open_control(None, &self.handoff_socket, &self.inputs_tx, false) {
            if self.was_main && !self.handing_off {
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

/// One hand-off, from spawning the successor to its confirmation or its end.
struct HandoffTask {
    control: Option<std::os::fd::OwnedFd>,
    exe: Executable,
    socket: PathBuf,
    listeners: Arc<Vec<Listener>>,
    generation: u64,
    child_timeout: Duration,
    grace: Duration,
    state: Option<StateFn>,
}

impl HandoffTask {
    async fn run(
        self,
        attempt: u64,
        mut commands: mpsc::UnboundedReceiver<Command>,
        inputs: mpsc::UnboundedSender<Input>,
    ) {
        let report = |step: Step| {
            let _ = inputs.send(Input::Handoff { attempt, step });
        };
        let failed = |reason: String| report(Step::Failed { reason });
        let cancel = CancellationToken::new();
        let attempt = parent::hand_off(
            &self.exe,
            &self.socket,
            parent::Passed {
                listeners: &self.listeners,
                control: self.control.as_ref(),
            },
            self.generation,
            self.child_timeout,
            self.state.clone(),
            cancel.clone(),
        );
        tokio::pin!(attempt);
        let mut kill = false;
        let result = loop {
            tokio::select! {
                result = &mut attempt => break result,
                command = commands.recv(), if !cancel.is_cancelled() => {
                    if !matches!(command, Some(Command::Promote)) {
                        kill = matches!(command, Some(Command::Kill));
                        cancel.cancel(); // the attempt kills and reaps what it started
                    }
                }
            }
        };
        let mut successor = match result {
            Ok(successor) if !cancel.is_cancelled() => successor,
            Ok(successor) if kill => return successor.kill().await,
            Ok(successor) => return successor.end(self.grace).await,
            Err(HandoffError::Cancelled) => return,
            Err(e) => return failed(e.to_string()),
        };
        report(Step::Ready { pid: successor.pid });
        let mut promoted = false;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Promote) => {
                        promoted = true;
                        if let Err(e) = successor.promote().await {
                            failed(format!("successor {}: cannot send promoted: {e}", successor.pid));
                            break;
                        }
                    }
                    Some(Command::Abort) | None => return successor.end(self.grace).await,
                    Some(Command::Kill) => return successor.kill().await,
                },
                event = successor.next_event(promoted) => match event {
                    SuccessorEvent::Confirmed => {
                        report(Step::Confirmed);
                        return; // the successor is main; dropping its handle leaves it running
                    }
                    SuccessorEvent::Stopping => {
                        report(Step::SuccessorStopped);
                        break;
                    }
                    SuccessorEvent::Lost(reason) => {
                        failed(reason);
                        break;
                    }
                },
            }
        }
        // Failed or stopped: the driver reclaims MAINPID= first, then tells us to end (and reap)
        // it.
        loop {
            match commands.recv().await {
                Some(Command::Promote) => {}
                Some(Command::Kill) => return successor.kill().await,
                Some(Command::Abort) | None => return successor.end(self.grace).await,
            }
        }
    }
}

/// A successor's side: wait for `promoted` (or the predecessor hanging up), then confirm once
/// the driver has said `READY=1`; or, stopped before that, pass the stop on.
async fn follow_predecessor(
    mut predecessor: Predecessor,
    mut told: oneshot::Receiver<ToPredecessor>,
    inputs: mpsc::UnboundedSender<Input>,
) {
    let promotion = tokio::select! {
        promotion = predecessor.promotion() => promotion,
        // Before the promotion the driver can only pass a stop on (or be gone: the process ends).
        what = &mut told => return pass_stop_on(predecessor, what).await,
    };
    match promotion {
        Ok(Promotion::Promoted) => {
            let _ = inputs.send(Input::Promoted);
            // A stop the driver took before `Input::Promoted` is passed on even now.
            match told.await {
                Ok(ToPredecessor::Confirm) => {
                    if let Err(e) = predecessor.confirm().await {
                        warn!(error = %e, "could not confirm the promotion to the predecessor");
                    }
                }
                what => pass_stop_on(predecessor, what).await,
            }
        }
        Ok(Promotion::Gone) => {
            let _ = inputs.send(Input::PredecessorGone);
        }
        Err(e) => {
            warn!(error = %e, "hand-off connection failed before promotion; serving on as main");
            let _ = inputs.send(Input::PredecessorGone);
        }
    }
}

async fn pass_stop_on(
    predecessor: Predecessor,
    what: Result<ToPredecessor, oneshot::error::RecvError>,
) {
    if let Ok(ToPredecessor::Stopping) = what {
        if let Err(e) = predecessor.stopping().await {
            warn!(error = %e, "could not pass the stop on to the predecessor");
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A world that plays back inputs and records actions; a hand-off's steps answer at once.
    struct Scripted {
        inputs: VecDeque<Input>,
        done: Vec<Action>,
        successor_dies_at_announce: bool,
    }

    impl World for Scripted {
        async fn next(&mut self) -> Input {
            self.inputs
                .pop_front()
                .unwrap_or(Input::Stop(StopReason::Sigterm))
        }
        async fn perform(&mut self, action: Action) {
            let step = match &action {
                Action::BeginHandoff { .. } => Some(Step::Ready { pid: 7 }),
                Action::Announce { .. } if self.successor_dies_at_announce => Some(Step::Failed {
                    reason: "successor 7 hung up".into(),
                }),
                Action::Announce { .. } => Some(Step::Announced),
                Action::Promote => Some(Step::Confirmed),
                _ => None,
            };
            if let Some(step) = step {
                self.inputs.push_front(Input::Handoff { attempt: 1, step });
            }
            self.done.push(action);
        }
    }

    fn run(successor_dies_at_announce: bool, inputs: Vec<Input>) -> Vec<Action> {
        let (machine, initial) = Machine::main(1, "s".into());
        let mut world = Scripted {
            inputs: inputs.into(),
            done: Vec::new(),
            successor_dies_at_announce,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(drive(machine, initial, &mut world));
        world.done
    }

    #[test]
    fn the_driver_runs_a_whole_reload_and_stops_after_the_drain() {
        let done = run(false, vec![Input::WatchdogTick, Input::Hup]);
        assert_eq!(
            done.first(),
            Some(&Action::Notify(Event::Ready { status: "s".into() }))
        );
        assert_eq!(done.last(), Some(&Action::Drain { stop: false }));
        assert!(done.contains(&Action::PauseAccepting));
    }

    #[test]
    fn the_driver_serves_on_after_a_failed_reload_until_stopped() {
        let done = run(true, vec![Input::Hup]);
        let reclaim = done
            .iter()
            .position(|a| *a == Action::Notify(Event::MainPid(1)))
            .unwrap();
        let abort = done
            .iter()
            .position(|a| *a == Action::AbortHandoff)
            .unwrap();
        assert!(reclaim < abort);
        assert!(!done.contains(&Action::PauseAccepting));
        assert_eq!(done.last(), Some(&Action::Drain { stop: true }));
    }
}
