//! One baton process from serving to exit.
//!
//! The ordering rules live in [`machine`], a pure state machine. The outside world — signals,
//! the successor, systemd, the clock, files — is behind the [`World`] trait: [`drive`] feeds what
//! the world reports into the machine and has the world carry out what the machine decides.
//! [`ProcessWorld`] is the real one.

mod handoff_task;
pub(crate) mod machine;
mod world;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub(crate) use machine::{Action, Input, Machine, Outcome, Stage, Step, StopReason};
pub(crate) use world::{Finish, Parts, Process, ProcessWorld, Signals};

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
/// How long a process that drained waits, at most, for the answers to the control connections
/// it accepted to be written.
const CONTROL_FLUSH: Duration = Duration::from_secs(1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Event;
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
