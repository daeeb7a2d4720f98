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
