//! A hand-off's two sides as tasks: the predecessor's ([`HandoffTask`], from spawning the
//! successor to its confirmation) and the successor's ([`follow_predecessor`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::world::{Command, ToPredecessor};
use super::{Input, Step};
use crate::handoff::child::{Predecessor, Promotion};
use crate::handoff::parent::{self, HandoffError, StateFn, SuccessorEvent};
use crate::handoff::spawn::Executable;
use crate::listen::Listener;

/// One hand-off, from spawning the successor to its confirmation or its end.
pub(super) struct HandoffTask {
    pub(super) control: Option<std::os::fd::OwnedFd>,
    pub(super) exe: Executable,
    pub(super) socket: PathBuf,
    pub(super) listeners: Arc<Vec<Listener>>,
    pub(super) generation: u64,
    pub(super) child_timeout: Duration,
    pub(super) grace: Duration,
    pub(super) state: Option<StateFn>,
}

impl HandoffTask {
    pub(super) async fn run(
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
        let mut successor = match after_attempt(result, cancel.is_cancelled(), kill) {
            AfterAttempt::GoOn(successor) => successor,
            AfterAttempt::Kill(successor) => return successor.kill().await,
            AfterAttempt::End(successor) => return successor.end(self.grace).await,
            AfterAttempt::Nothing => return,
            AfterAttempt::Failed(e) => return failed(e.to_string()),
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
                        // The successor is main: it runs on, and its exit is for whoever
                        // follows the main process to see, never reaped here.
                        successor.child.release();
                        return;
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

/// What a hand-off's task does once the attempt to start the successor has ended.
#[derive(Debug, PartialEq, Eq)]
enum AfterAttempt<S, E> {
    /// The successor started and nothing called the hand-off off: report it ready, go on.
    GoOn(S),
    /// Its start completed in the same poll as a `Kill` (a deadline): `SIGKILL` it and reap it.
    Kill(S),
    /// Its start completed in the same poll as an `Abort` (a stop, or the driver gone): it may
    /// already serve, so it gets `SIGTERM` and the grace period to drain, then is reaped.
    End(S),
    /// Called off before the successor was up: the attempt has killed and reaped what it
    /// started; nothing to report (the driver called it off).
    Nothing,
    /// The attempt failed: report why.
    Failed(E),
}

/// What becomes of a hand-off attempt's `result` (a started successor or why none) when the
/// attempt was `called_off` or not, and by a `kill` (a deadline) or an abort. A call-off that
/// comes in the same poll as the successor's start is seen here, not by the attempt: the started
/// successor is then ended as the call-off asks. A failure other than the call-off is reported
/// even when the hand-off was called off meanwhile.
fn after_attempt<S>(
    result: Result<S, HandoffError>,
    called_off: bool,
    kill: bool,
) -> AfterAttempt<S, HandoffError> {
    match result {
        Ok(successor) if !called_off => AfterAttempt::GoOn(successor),
        Ok(successor) if kill => AfterAttempt::Kill(successor),
        Ok(successor) => AfterAttempt::End(successor),
        Err(HandoffError::Cancelled) => AfterAttempt::Nothing,
        Err(e) => AfterAttempt::Failed(e),
    }
}

/// A successor's side: wait for `promoted` (or the predecessor hanging up), then confirm once
/// the driver has said `READY=1`; or, stopped before that, pass the stop on.
pub(super) async fn follow_predecessor(
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

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    /// Each of the attempt's ends (a successor, the call-off's own error, another failure),
    /// called off or not, by a kill or an abort: the successor goes on only when nothing called
    /// the hand-off off; a call-off in the same poll as its start ends it as the call-off asks
    /// (a deadline kills, a stop drains); a failure is reported whatever happened meanwhile.
    #[test]
    fn after_attempt_decides_for_every_end_and_call_off() {
        // `kill` is set only with a call-off in the task; without one it changes nothing.
        for kill in [false, true] {
            assert_eq!(
                after_attempt(Ok(7), false, kill).map_failed(),
                AfterAttempt::GoOn(7),
                "kill {kill}: a successor started and nothing called the hand-off off goes on"
            );
        }
        assert_eq!(
            after_attempt(Ok(7), true, true).map_failed(),
            AfterAttempt::Kill(7),
            "a successor started in the same poll as a Kill (a deadline) is killed, not drained"
        );
        assert_eq!(
            after_attempt(Ok(7), true, false).map_failed(),
            AfterAttempt::End(7),
            "a successor started in the same poll as an abort (a stop) drains gracefully, not \
             killed"
        );
        for called_off in [false, true] {
            for kill in [false, true] {
                assert_eq!(
                    after_attempt::<u32>(Err(HandoffError::Cancelled), called_off, kill)
                        .map_failed(),
                    AfterAttempt::Nothing,
                    "called off {called_off}, kill {kill}: the attempt that ended because it was \
                     called off reaped what it started; nothing to do or report"
                );
                let failure = HandoffError::Io {
                    pid: 7,
                    source: io::Error::other("broken"),
                };
                assert_eq!(
                    after_attempt::<u32>(Err(failure), called_off, kill).map_failed(),
                    AfterAttempt::Failed("successor 7: hand-off connection: broken".to_string()),
                    "called off {called_off}, kill {kill}: a failure other than the call-off is \
                     reported"
                );
            }
        }
    }

    impl<S> AfterAttempt<S, HandoffError> {
        /// The same decision with the failure as its message (`HandoffError` has no `==`).
        fn map_failed(self) -> AfterAttempt<S, String> {
            match self {
                AfterAttempt::GoOn(s) => AfterAttempt::GoOn(s),
                AfterAttempt::Kill(s) => AfterAttempt::Kill(s),
                AfterAttempt::End(s) => AfterAttempt::End(s),
                AfterAttempt::Nothing => AfterAttempt::Nothing,
                AfterAttempt::Failed(e) => AfterAttempt::Failed(e.to_string()),
            }
        }
    }
}
