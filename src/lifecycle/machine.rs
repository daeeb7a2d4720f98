//! The ordering rules of one baton process, as a pure state machine: inputs (signals, what the
//! successor or predecessor did) in, actions out. No I/O, no clock: every rule is a unit test.
//!
//! The rules:
//! 1. **One hand-off at a time.** A `SIGHUP` during a hand-off is ignored.
//! 2. **Promotion before retirement.** The old process accepts until systemd knows the ready
//!    successor as main; then it pauses accepting (the successor accepts on the same sockets; a
//!    connection arriving meanwhile waits in the shared backlog) and sends `promoted`, so that
//!    every connection made after the successor's `READY=1` is the successor's. It retires
//!    (drains) only once the successor confirmed it serves as main.
//! 3. **A failed hand-off changes nothing.** Whatever fails before that confirmation, the old
//!    process accepts again and serves on; where it had told systemd `MAINPID=<successor>`, it
//!    says `MAINPID=<own>` again *before* the successor is reaped, then `READY=1` +
//!    `STATUS=reload failed: …`. **Every stage has a deadline**: a stage that does not end in
//!    time fails the hand-off the same way, and the successor is killed at once (`SIGKILL`, it is
//!    not trusted to drain), so a successor that hangs never leaves the old process paused.
//! 4. **A stop is honoured at any point.** `SIGTERM`/`SIGINT` during a hand-off ends the
//!    successor too (it may already serve, so it gets to drain), and the old process stops. A
//!    successor stopped before it is main passes the stop on to its predecessor (a manager that
//!    follows one pid stops the announced `MAINPID`, the successor), which stops as well.
//! 5. **A successor is quiet until promoted.** It drops a plain `SIGHUP` (meant for its
//!    predecessor), keeps a `baton reload` request (someone waits for its answer; the control
//!    socket is only served by a main process, so none arrives today) for once it is main, and
//!    sends `READY=1` only once promoted (or once its predecessor is gone). It confirms only once
//!    it is main in full (`READY=1` sent, PID file written, control socket served), so whoever
//!    the predecessor then tells "reloaded: … -> successor" can ask the successor at once.
//! 6. **The outcome is recorded before it is announced**: the status is written before the
//!    `READY=1` of a failed reload, and after the old process stopped accepting on success.
//! 7. Only the main process pings the watchdog, and only a main process that is not handing off
//!    refreshes its `STATUS=` (which says how many connections are open).

use tracing::{info, warn};

use crate::notify::Event;

/// Why a process stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `SIGTERM`.
    Sigterm,
    /// `SIGINT`.
    Sigint,
    /// The application's graceful-shutdown future resolved.
    Requested,
    /// (Predecessor) the successor was stopped before it was main, and passed the stop on.
    SuccessorStopped,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Sigterm => "SIGTERM",
            StopReason::Sigint => "SIGINT",
            StopReason::Requested => "shutdown requested",
            StopReason::SuccessorStopped => "a stop passed on by the successor",
        })
    }
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `SIGHUP`: hand off to a successor.
    Hup,
    /// A `baton reload` request read on the control socket, which waits for the answer (see
    /// `crate::reload`).
    ReloadRequest,
    /// Stop: drain and exit.
    Stop(StopReason),
    /// A step of hand-off number `attempt` (results of an ended attempt are ignored).
    Handoff {
        /// Which hand-off, as numbered by [`Action::BeginHandoff`].
        attempt: u64,
        /// What happened.
        step: Step,
    },
    /// (Successor) the predecessor promoted us.
    Promoted,
    /// (Successor) the predecessor hung up before promoting us.
    PredecessorGone,
    /// Time to ping the watchdog.
    WatchdogTick,
    /// Time to refresh `STATUS=`.
    StatusTick,
}

/// What happened in a hand-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The successor accepts on every listener (`ready`).
    Ready {
        /// Its pid.
        pid: u32,
    },
    /// systemd processed `MAINPID=<successor>` (or the barrier timed out).
    Announced,
    /// The successor confirmed it serves as main.
    Confirmed,
    /// The successor was stopped before its confirmation (`stopping`): the stop is the service's.
    SuccessorStopped,
    /// The hand-off failed at some step.
    Failed {
        /// Why, one line.
        reason: String,
    },
    /// The deadline of `stage` passed (armed when the stage began; stale once it ended).
    TimedOut {
        /// The stage whose deadline it was.
        stage: Stage,
        /// How long the stage was given.
        after: std::time::Duration,
    },
}

/// The outcome of a hand-off, as recorded for `baton reload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The successor serves and is main.
    Ready {
        /// Its pid.
        successor: u32,
    },
    /// It did not work out; the old process serves on.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Something to do, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Tell the service manager.
    Notify(Event),
    /// Tell the service manager the last `READY=1` status again, with the connections open now.
    RefreshStatus,
    /// Start hand-off number `attempt`; ends in its `Ready` or `Failed` step.
    BeginHandoff {
        /// Its number, carried by every [`Input::Handoff`] of it.
        attempt: u64,
    },
    /// Tell systemd `MAINPID=<successor>` and wait for it to process that; ends in `Announced`.
    Announce {
        /// The hand-off.
        attempt: u64,
        /// The successor.
        successor: u32,
    },
    /// Tell the successor it is main; ends in `Confirmed` or `Failed`.
    Promote,
    /// End the successor of a failed or called-off hand-off and reap it.
    AbortHandoff,
    /// Kill the successor of a hand-off that missed a deadline at once (`SIGKILL`) and reap it.
    KillHandoff,
    /// (Successor) tell the predecessor we serve as main.
    ConfirmPromotion,
    /// (Successor, before it is main) tell the predecessor we were stopped, so that it stops too.
    PassStopOn,
    /// Record a hand-off's outcome.
    WriteStatus(Outcome),
    /// Write the PID file: we are main.
    WritePidFile,
    /// Stop accepting for now (the listening sockets stay open; the successor accepts on them).
    PauseAccepting,
    /// Accept again after a pause.
    ResumeAccepting,
    /// Drain: stop accepting for good, tell the application, finish in-flight work; then the
    /// process ends.
    Drain {
        /// A real stop (the PID file is removed if it still names us) rather than a retirement.
        stop: bool,
    },
}

/// Where a hand-off stands. Each stage has a deadline (see [`Step::TimedOut`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The successor was started; waiting for `ready`.
    Starting,
    /// `MAINPID=<successor>` sent; waiting for systemd to process it.
    Announcing,
    /// Accepting paused and `promoted` sent; waiting for the successor's confirmation.
    Promoting,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Starting => "successor start",
            Stage::Announcing => "MAINPID announcement",
            Stage::Promoting => "promotion",
        })
    }
}

/// Where the process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Started by a baton predecessor; serving, not yet main.
    Successor,
    /// The main process, serving.
    Main,
    /// The main process, handing off.
    HandingOff {
        /// Which hand-off.
        attempt: u64,
        /// How far.
        stage: Stage,
        /// The successor's pid once it said `ready`.
        successor: Option<u32>,
    },
    /// A successor is main: draining, then exit.
    Retiring,
    /// Stopping: draining, then exit.
    Stopping,
}

/// The state machine of one process.
#[derive(Debug)]
pub struct Machine {
    state: State,
    pid: u32,
    serving_on: String,
    attempts: u64,
    /// A reload request that reached a successor before it was main.
    queued: bool,
}

impl Machine {
    /// A process that starts as main (first start, or a predecessor that speaks only the base
    /// exchange). Returns the actions of becoming main.
    pub fn main(pid: u32, serving_on: String) -> (Machine, Vec<Action>) {
        let machine = Machine {
            state: State::Main,
            pid,
            serving_on,
            attempts: 0,
            queued: false,
        };
        let actions = machine.become_main();
        (machine, actions)
    }

    /// A process a baton predecessor started: it serves and waits to be promoted.
    pub fn successor(pid: u32, serving_on: String) -> Machine {
        Machine {
            state: State::Successor,
            pid,
            serving_on,
            attempts: 0,
            queued: false,
        }
    }

    /// Where the process stands.
    #[cfg(test)]
    pub fn state(&self) -> State {
        self.state
    }

    /// True once the process drains towards its exit.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Retiring | State::Stopping)
    }

    fn become_main(&self) -> Vec<Action> {
        vec![
            Action::Notify(Event::Ready {
                status: self.serving_on.clone(),
            }),
            Action::WritePidFile,
        ]
    }

    /// Take one input; return what to do, in order.
    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        use Action as A;
        match (self.state, input) {
            // --- a successor, before it is main
            (State::Successor, Input::Promoted) => {
                self.state = State::Main;
                // Fully main (READY=1, PID file, control socket listened on again) before the
                // predecessor hears it: its `reloaded` answer names us, and the next request
                // that answer prompts must find us serving the control socket.
                let mut actions = self.become_main();
                actions.push(A::ConfirmPromotion);
                actions.extend(self.queued_request());
                actions
            }
            (State::Successor, Input::PredecessorGone) => {
                info!("predecessor gone before promoting us; serving on as main");
                self.state = State::Main;
                let mut actions = self.become_main();
                actions.extend(self.queued_request());
                actions
            }
            (State::Successor, Input::Hup) => {
                info!("dropping a SIGHUP received before this process became main");
                vec![]
            }
            (State::Successor, Input::ReloadRequest) => {
                info!("a reload request before this process became main: served once it is");
                self.queued = true;
                vec![]
            }

            // --- the main process
            (State::Main, Input::Hup | Input::ReloadRequest) => {
                self.attempts += 1;
                let attempt = self.attempts;
                self.state = State::HandingOff {
                    attempt,
                    stage: Stage::Starting,
                    successor: None,
                };
                vec![
                    A::Notify(Event::Reloading {
                        status: "reloading: starting successor".into(),
                    }),
                    A::BeginHandoff { attempt },
                ]
            }
            (State::Main | State::HandingOff { .. }, Input::WatchdogTick) => {
                vec![A::Notify(Event::Watchdog)]
            }
            (State::Main, Input::StatusTick) => vec![A::RefreshStatus],

            // --- a hand-off
            (State::HandingOff { .. }, Input::Hup | Input::ReloadRequest) => {
                warn!("SIGHUP during a hand-off: ignored, one hand-off at a time (a waiting baton reload gets this one's outcome)");
                vec![]
            }
            (
                State::HandingOff {
                    attempt: current,
                    stage,
                    successor,
                },
                Input::Handoff { attempt, step },
            ) if attempt == current => self.step(attempt, stage, successor, step),
            (State::HandingOff { stage, .. }, Input::Stop(why)) => {
                info!(reason = %why, "stopping during a hand-off: ending the successor too");
                self.state = State::Stopping;
                let mut actions = self.reclaim_main(stage);
                actions.push(A::AbortHandoff);
                actions.push(A::WriteStatus(Outcome::Failed {
                    reason: format!("{why} during the hand-off"),
                }));
                actions.extend(self.stop_actions());
                actions
            }

            // --- stopping, from wherever a stop is not a hand-off
            (State::Successor, Input::Stop(why)) => {
                info!(reason = %why, "stopping before this process became main; passing the stop on to the predecessor");
                self.state = State::Stopping;
                let mut actions = vec![A::PassStopOn];
                actions.extend(self.stop_actions());
                actions
            }
            (State::Main, Input::Stop(why)) => {
                info!(reason = %why, "stopping");
                self.state = State::Stopping;
                self.stop_actions()
            }

            // --- anything else is stale or out of turn: nothing to do
            (state, input) => {
                tracing::debug!(?state, ?input, "nothing to do");
                vec![]
            }
        }
    }

    /// Once main: the hand-off a reload request asked for before, if one did.
    fn queued_request(&mut self) -> Vec<Action> {
        if std::mem::take(&mut self.queued) {
            self.handle(Input::Hup)
        } else {
            Vec::new()
        }
    }

    /// A step of the current hand-off.
    fn step(
        &mut self,
        attempt: u64,
        stage: Stage,
        successor: Option<u32>,
        step: Step,
    ) -> Vec<Action> {
        use Action as A;
        match (stage, step, successor) {
            (Stage::Starting, Step::Ready { pid }, _) => {
                self.state = State::HandingOff {
                    attempt,
                    stage: Stage::Announcing,
                    successor: Some(pid),
                };
                vec![A::Announce {
                    attempt,
                    successor: pid,
                }]
            }
            (Stage::Announcing, Step::Announced, _) => {
                self.state = State::HandingOff {
                    attempt,
                    stage: Stage::Promoting,
                    successor,
                };
                vec![A::PauseAccepting, A::Promote]
            }
            (_, Step::SuccessorStopped, _) => {
                self.handle(Input::Stop(StopReason::SuccessorStopped))
            }
            (Stage::Promoting, Step::Confirmed, Some(successor)) => {
                info!(successor, "hand-off done; retiring");
                self.state = State::Retiring;
                vec![
                    A::WriteStatus(Outcome::Ready { successor }),
                    A::Drain { stop: false },
                ]
            }
            (stage, Step::Failed { reason }, _) => self.fail(stage, reason, A::AbortHandoff),
            (
                stage,
                Step::TimedOut {
                    stage: timed,
                    after,
                },
                successor,
            ) if timed == stage => {
                let who = successor
                    .map(|p| format!(" (successor {p})"))
                    .unwrap_or_default();
                self.fail(
                    stage,
                    format!("{stage} timed out after {after:?}{who}"),
                    A::KillHandoff,
                )
            }
            (stage, step, _) => {
                tracing::debug!(?stage, ?step, "hand-off step out of turn; ignored");
                vec![]
            }
        }
    }

    /// The hand-off failed at `stage`: accept again, take `MAINPID=` back, end the successor with
    /// `end` (before it is reaped systemd knows us as main again), record and report.
    fn fail(&mut self, stage: Stage, reason: String, end: Action) -> Vec<Action> {
        use Action as A;
        warn!(error = %reason, "reload failed; serving on");
        self.state = State::Main;
        let mut actions = Vec::new();
        if stage == Stage::Promoting {
            actions.push(A::ResumeAccepting);
        }
        actions.extend(self.reclaim_main(stage));
        actions.push(end);
        actions.push(A::WriteStatus(Outcome::Failed {
            reason: reason.clone(),
        }));
        actions.push(A::Notify(Event::Ready {
            status: format!("reload failed: {reason}"),
        }));
        actions
    }

    /// After `MAINPID=<successor>` was sent, systemd must hear `MAINPID=<own>` again before the
    /// successor is reaped.
    fn reclaim_main(&self, stage: Stage) -> Vec<Action> {
        match stage {
            Stage::Starting => vec![],
            Stage::Announcing | Stage::Promoting => vec![Action::Notify(Event::MainPid(self.pid))],
        }
    }

    fn stop_actions(&self) -> Vec<Action> {
        vec![
            Action::Notify(Event::Stopping {
                status: "stopping: draining".into(),
            }),
            Action::Drain { stop: true },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action as A;

    const OWN: u32 = 100;
    const NEXT: u32 = 200;

    fn main() -> Machine {
        Machine::main(OWN, "serving".into()).0
    }

    fn ready(status: &str) -> Action {
        A::Notify(Event::Ready {
            status: status.into(),
        })
    }

    /// A step of the first hand-off.
    fn on(step: Step) -> Input {
        Input::Handoff { attempt: 1, step }
    }

    fn failed(reason: &str) -> Input {
        on(Step::Failed {
            reason: reason.into(),
        })
    }

    fn timed_out(stage: Stage) -> Input {
        on(Step::TimedOut {
            stage,
            after: std::time::Duration::from_secs(10),
        })
    }

    fn begins(actions: &[Action]) -> bool {
        actions.iter().any(|a| matches!(a, A::BeginHandoff { .. }))
    }

    /// Drive the machine to the given stage of a hand-off.
    fn at(stage: Stage) -> Machine {
        let mut m = main();
        m.handle(Input::Hup);
        if stage == Stage::Starting {
            return m;
        }
        m.handle(on(Step::Ready { pid: NEXT }));
        if stage == Stage::Announcing {
            return m;
        }
        m.handle(on(Step::Announced));
        m
    }

    fn position(actions: &[Action], wanted: &Action) -> usize {
        actions
            .iter()
            .position(|a| a == wanted)
            .unwrap_or_else(|| panic!("{wanted:?} not in {actions:?}"))
    }

    #[test]
    fn a_first_start_announces_ready_then_writes_the_pid_file() {
        let (m, actions) = Machine::main(OWN, "serving on x".into());
        assert_eq!(actions, vec![ready("serving on x"), A::WritePidFile]);
        assert_eq!(m.state(), State::Main);
    }

    #[test]
    fn a_successful_hand_off_in_order() {
        let mut m = main();
        assert_eq!(
            m.handle(Input::Hup),
            vec![
                A::Notify(Event::Reloading {
                    status: "reloading: starting successor".into()
                }),
                A::BeginHandoff { attempt: 1 }
            ]
        );
        assert_eq!(
            m.handle(on(Step::Ready { pid: NEXT })),
            vec![A::Announce {
                attempt: 1,
                successor: NEXT
            }]
        );
        assert_eq!(
            m.handle(on(Step::Announced)),
            vec![A::PauseAccepting, A::Promote]
        );
        assert!(!m.is_done(), "not retiring until the successor confirms");
        assert_eq!(
            m.handle(on(Step::Confirmed)),
            vec![
                A::WriteStatus(Outcome::Ready { successor: NEXT }),
                A::Drain { stop: false }
            ]
        );
        assert!(m.is_done());
        assert_eq!(m.state(), State::Retiring);
    }

    #[test]
    fn accepting_pauses_only_once_systemd_knows_the_ready_successor() {
        let mut m = main();
        for input in [Input::Hup, on(Step::Ready { pid: NEXT })] {
            let actions = m.handle(input);
            assert!(!actions.contains(&A::PauseAccepting), "{actions:?}");
            assert!(!actions.iter().any(|a| matches!(a, A::Drain { .. })));
        }
        let actions = m.handle(on(Step::Announced));
        assert_eq!(
            position(&actions, &A::PauseAccepting) + 1,
            position(&actions, &A::Promote),
            "paused before the successor is promoted (and says READY=1)"
        );
        assert!(!actions.iter().any(|a| matches!(a, A::Drain { .. })));
    }

    #[test]
    fn a_failure_after_the_pause_accepts_again_first() {
        let mut m = at(Stage::Promoting);
        let actions = m.handle(failed(
            "successor 200 hung up before it was confirmed as main",
        ));
        assert_eq!(actions.first(), Some(&A::ResumeAccepting), "{actions:?}");
        for stage in [Stage::Starting, Stage::Announcing] {
            let actions = at(stage).handle(failed("x"));
            assert!(
                !actions.contains(&A::ResumeAccepting),
                "nothing to resume at {stage:?}"
            );
        }
    }

    #[test]
    fn every_stage_has_a_deadline_that_resumes_reclaims_kills_and_reports() {
        for stage in [Stage::Starting, Stage::Announcing, Stage::Promoting] {
            let mut m = at(stage);
            let actions = m.handle(timed_out(stage));
            assert_eq!(m.state(), State::Main, "{stage:?}");
            let kill = position(&actions, &A::KillHandoff);
            assert!(!actions.contains(&A::AbortHandoff), "killed, not drained");
            assert_eq!(
                actions.first() == Some(&A::ResumeAccepting),
                stage == Stage::Promoting,
                "accepts again first where it had paused: {actions:?}"
            );
            if stage != Stage::Starting {
                assert!(position(&actions, &A::Notify(Event::MainPid(OWN))) < kill);
            }
            let who = if stage == Stage::Starting {
                ""
            } else {
                " (successor 200)"
            };
            // The stage as an operator reads it in `STATUS=` (docs/handoff-protocol.md).
            let named = match stage {
                Stage::Starting => "successor start",
                Stage::Announcing => "MAINPID announcement",
                Stage::Promoting => "promotion",
            };
            let reason = format!("{named} timed out after 10s{who}");
            assert!(
                position(
                    &actions,
                    &A::WriteStatus(Outcome::Failed {
                        reason: reason.clone()
                    })
                ) > kill
            );
            assert_eq!(
                actions.last(),
                Some(&ready(&format!("reload failed: {reason}")))
            );
            assert!(begins(&m.handle(Input::Hup)), "the next SIGHUP reloads");
        }
        // A deadline of another stage, or of an earlier attempt, changes nothing.
        let mut m = at(Stage::Promoting);
        assert_eq!(m.handle(timed_out(Stage::Starting)), vec![]);
        assert_eq!(m.handle(timed_out(Stage::Announcing)), vec![]);
        assert_eq!(
            at(Stage::Promoting)
                .handle(timed_out(Stage::Promoting))
                .first(),
            Some(&A::ResumeAccepting)
        );
        let mut m = at(Stage::Promoting);
        m.handle(on(Step::Confirmed));
        assert_eq!(m.handle(timed_out(Stage::Promoting)), vec![], "retiring");
    }

    #[test]
    fn one_hand_off_at_a_time() {
        for stage in [Stage::Starting, Stage::Announcing, Stage::Promoting] {
            let mut m = at(stage);
            assert_eq!(m.handle(Input::Hup), vec![], "at {stage:?}");
            assert!(matches!(m.state(), State::HandingOff { stage: s, .. } if s == stage));
        }
    }

    #[test]
    fn a_failure_before_mainpid_keeps_serving_and_reports() {
        let mut m = at(Stage::Starting);
        assert_eq!(
            m.handle(failed("successor 200 exited (exit status: 78)")),
            vec![
                A::AbortHandoff,
                A::WriteStatus(Outcome::Failed {
                    reason: "successor 200 exited (exit status: 78)".into()
                }),
                ready("reload failed: successor 200 exited (exit status: 78)"),
            ]
        );
        assert_eq!(m.state(), State::Main);
    }

    #[test]
    fn a_failure_after_mainpid_reclaims_main_before_the_successor_is_reaped() {
        for stage in [Stage::Announcing, Stage::Promoting] {
            let mut m = at(stage);
            let actions = m.handle(failed("lost"));
            let reclaim = position(&actions, &A::Notify(Event::MainPid(OWN)));
            let abort = position(&actions, &A::AbortHandoff);
            let status = position(
                &actions,
                &A::WriteStatus(Outcome::Failed {
                    reason: "lost".into(),
                }),
            );
            let ready = position(&actions, &ready("reload failed: lost"));
            assert!(
                reclaim < abort && abort < status && status < ready,
                "{actions:?}"
            );
            assert!(!actions.iter().any(|a| matches!(a, A::Drain { .. })));
            assert_eq!(m.state(), State::Main, "at {stage:?}");
        }
    }

    #[test]
    fn after_a_failed_hand_off_the_next_sighup_starts_a_new_one() {
        let mut m = at(Stage::Promoting);
        m.handle(failed("lost"));
        assert!(begins(&m.handle(Input::Hup)));
    }

    #[test]
    fn a_stop_at_any_point_of_a_hand_off_ends_the_successor_and_stops() {
        for stage in [Stage::Starting, Stage::Announcing, Stage::Promoting] {
            let mut m = at(stage);
            let actions = m.handle(Input::Stop(StopReason::Sigterm));
            let abort = position(&actions, &A::AbortHandoff);
            let stopping = position(
                &actions,
                &A::Notify(Event::Stopping {
                    status: "stopping: draining".into(),
                }),
            );
            let drain = position(&actions, &A::Drain { stop: true });
            assert!(abort < stopping && stopping < drain, "{actions:?}");
            let reclaims = actions.contains(&A::Notify(Event::MainPid(OWN)));
            assert_eq!(
                reclaims,
                stage != Stage::Starting,
                "at {stage:?}: {actions:?}"
            );
            if reclaims {
                assert!(position(&actions, &A::Notify(Event::MainPid(OWN))) < stopping);
            }
            assert!(actions.contains(&A::WriteStatus(Outcome::Failed {
                reason: "SIGTERM during the hand-off".into()
            })));
            assert_eq!(m.state(), State::Stopping);
        }
    }

    #[test]
    fn late_results_of_an_ended_hand_off_change_nothing() {
        let mut m = at(Stage::Announcing);
        m.handle(Input::Stop(StopReason::Sigint));
        for late in [
            on(Step::Announced),
            on(Step::Confirmed),
            on(Step::Ready { pid: NEXT }),
            failed("late"),
            Input::Hup,
            Input::Stop(StopReason::Sigterm),
            Input::WatchdogTick,
        ] {
            assert_eq!(m.handle(late.clone()), vec![], "{late:?}");
        }
        assert_eq!(m.state(), State::Stopping);

        let mut m = at(Stage::Announcing);
        m.handle(failed("lost"));
        assert_eq!(m.handle(on(Step::Announced)), vec![]);
        assert_eq!(m.handle(on(Step::Confirmed)), vec![]);
        assert_eq!(m.state(), State::Main);
    }

    #[test]
    fn a_step_of_an_earlier_hand_off_is_not_taken_for_one_of_the_current() {
        let mut m = at(Stage::Announcing);
        m.handle(failed("lost"));
        assert_eq!(
            m.handle(Input::Hup),
            vec![
                A::Notify(Event::Reloading {
                    status: "reloading: starting successor".into()
                }),
                A::BeginHandoff { attempt: 2 }
            ]
        );
        let second = |step| Input::Handoff { attempt: 2, step };
        m.handle(second(Step::Ready { pid: 300 }));
        // The barrier of the first attempt completes late: it must not promote the second.
        assert_eq!(m.handle(on(Step::Announced)), vec![]);
        assert_eq!(
            m.handle(on(Step::Failed {
                reason: "late".into()
            })),
            vec![]
        );
        assert!(matches!(
            m.state(),
            State::HandingOff {
                attempt: 2,
                stage: Stage::Announcing,
                successor: Some(300)
            }
        ));
        assert_eq!(
            m.handle(second(Step::Announced)),
            vec![A::PauseAccepting, A::Promote]
        );
    }

    #[test]
    fn a_retiring_process_ignores_everything() {
        let mut m = at(Stage::Promoting);
        m.handle(on(Step::Confirmed));
        for late in [
            Input::Hup,
            Input::Stop(StopReason::Sigterm),
            Input::WatchdogTick,
            failed("x"),
        ] {
            assert_eq!(m.handle(late), vec![]);
        }
        assert_eq!(m.state(), State::Retiring);
    }

    #[test]
    fn a_confirmation_out_of_turn_is_not_a_retirement() {
        for stage in [Stage::Starting, Stage::Announcing] {
            let mut m = at(stage);
            assert_eq!(m.handle(on(Step::Confirmed)), vec![]);
            assert!(!m.is_done());
        }
    }

    #[test]
    fn a_successor_is_ready_before_it_confirms_and_drops_early_sighups() {
        let mut m = Machine::successor(NEXT, "serving on x; generation 1".into());
        assert_eq!(m.handle(Input::Hup), vec![]);
        assert_eq!(m.handle(Input::WatchdogTick), vec![]);
        assert_eq!(
            m.handle(Input::Promoted),
            vec![
                ready("serving on x; generation 1"),
                A::WritePidFile,
                A::ConfirmPromotion
            ]
        );
        assert_eq!(m.state(), State::Main);
        assert!(begins(&m.handle(Input::Hup)));
    }

    #[test]
    fn a_reload_request_before_promotion_is_served_once_main() {
        let mut m = Machine::successor(NEXT, "s".into());
        assert_eq!(m.handle(Input::ReloadRequest), vec![]);
        let actions = m.handle(Input::Promoted);
        assert_eq!(
            &actions[..3],
            &[ready("s"), A::WritePidFile, A::ConfirmPromotion]
        );
        assert!(begins(&actions[3..]), "{actions:?}");
        // A plain SIGHUP is not kept.
        let mut m = Machine::successor(NEXT, "s".into());
        m.handle(Input::Hup);
        assert!(!begins(&m.handle(Input::PredecessorGone)));
    }

    #[test]
    fn a_successor_whose_predecessor_vanished_serves_on_as_main() {
        let mut m = Machine::successor(NEXT, "s".into());
        assert_eq!(
            m.handle(Input::PredecessorGone),
            vec![ready("s"), A::WritePidFile]
        );
        assert_eq!(m.state(), State::Main);
    }

    #[test]
    fn a_successor_stopped_before_promotion_passes_the_stop_on_and_stops() {
        let mut m = Machine::successor(NEXT, "s".into());
        let actions = m.handle(Input::Stop(StopReason::Sigterm));
        assert_eq!(actions.first(), Some(&A::PassStopOn));
        assert_eq!(actions.last(), Some(&A::Drain { stop: true }));
        assert!(!actions.contains(&A::ConfirmPromotion));
        assert_eq!(m.handle(Input::Promoted), vec![]);
    }

    #[test]
    fn a_stop_passed_on_by_the_successor_stops_the_predecessor_as_its_own_would() {
        for stage in [Stage::Announcing, Stage::Promoting] {
            let mut m = at(stage);
            let passed_on = m.handle(Input::Handoff {
                attempt: 1,
                step: Step::SuccessorStopped,
            });
            let mut own = at(stage);
            let sigterm = own.handle(Input::Stop(StopReason::Sigterm));
            assert_eq!(m.state(), State::Stopping, "{stage:?}");
            assert_eq!(passed_on.len(), sigterm.len(), "{stage:?}");
            assert_eq!(
                passed_on.first(),
                Some(&A::Notify(Event::MainPid(OWN))),
                "{stage:?}: MAINPID=<own> before the successor is reaped"
            );
            assert!(passed_on.contains(&A::AbortHandoff), "{stage:?}");
            assert_eq!(
                passed_on.last(),
                Some(&A::Drain { stop: true }),
                "{stage:?}"
            );
        }
    }

    #[test]
    fn only_a_main_process_that_is_not_handing_off_refreshes_its_status() {
        assert_eq!(main().handle(Input::StatusTick), vec![A::RefreshStatus]);
        for stage in [Stage::Starting, Stage::Announcing, Stage::Promoting] {
            assert_eq!(at(stage).handle(Input::StatusTick), vec![], "{stage:?}");
        }
        assert_eq!(
            Machine::successor(1, "s".into()).handle(Input::StatusTick),
            vec![]
        );
        let mut m = main();
        m.handle(Input::Stop(StopReason::Sigterm));
        assert_eq!(m.handle(Input::StatusTick), vec![]);
    }

    #[test]
    fn only_the_main_process_pings_the_watchdog() {
        assert_eq!(
            main().handle(Input::WatchdogTick),
            vec![A::Notify(Event::Watchdog)]
        );
        assert_eq!(
            at(Stage::Announcing).handle(Input::WatchdogTick),
            vec![A::Notify(Event::Watchdog)]
        );
        assert_eq!(
            Machine::successor(1, "s".into()).handle(Input::WatchdogTick),
            vec![]
        );
    }

    /// Every interleaving of the inputs the fault suite covers slowly, from every state: the
    /// machine never retires without a confirmation, never pauses without resuming or draining,
    /// never runs two hand-offs, begins one exactly when a request (also one queued before it was
    /// main) is there to serve, and after a stop or retirement does nothing more.
    #[test]
    fn every_sequence_of_three_inputs_keeps_the_invariants() {
        let inputs = [
            Input::Hup,
            Input::ReloadRequest,
            Input::Stop(StopReason::Sigterm),
            on(Step::Ready { pid: NEXT }),
            on(Step::Announced),
            on(Step::Confirmed),
            on(Step::SuccessorStopped),
            failed("x"),
            timed_out(Stage::Starting),
            timed_out(Stage::Announcing),
            timed_out(Stage::Promoting),
            Input::Promoted,
            Input::PredecessorGone,
            Input::WatchdogTick,
            Input::StatusTick,
        ];
        let starts: Vec<fn() -> Machine> = vec![
            main,
            || Machine::successor(NEXT, "s".into()),
            || at(Stage::Starting),
            || at(Stage::Announcing),
            || at(Stage::Promoting),
        ];
        let mut checked = 0;
        for start in &starts {
            for a in &inputs {
                for b in &inputs {
                    for c in &inputs {
                        let mut m = start();
                        // A `baton reload` that reached a successor before it was main, and is
                        // owed a hand-off of its own once it is.
                        let mut owed = false;
                        let mut confirmed = false;
                        let mut paused = start().state()
                            == State::HandingOff {
                                attempt: 1,
                                stage: Stage::Promoting,
                                successor: Some(NEXT),
                            };
                        for input in [a, b, c] {
                            let before = m.state();
                            confirmed |= *input == on(Step::Confirmed)
                                && matches!(
                                    before,
                                    State::HandingOff {
                                        stage: Stage::Promoting,
                                        ..
                                    }
                                );
                            let actions = m.handle(input.clone());
                            // A hand-off begins exactly when a request is there to serve: a
                            // SIGHUP or reload request to an idle main process, or the request
                            // queued before this process became main.
                            let becomes_main = before == State::Successor
                                && matches!(m.state(), State::Main | State::HandingOff { .. });
                            let expected = (before == State::Main
                                && matches!(input, Input::Hup | Input::ReloadRequest))
                                || (owed && becomes_main);
                            assert_eq!(
                                begins(&actions),
                                expected,
                                "{before:?} + {input:?} (queued request: {owed}): {actions:?}"
                            );
                            if before == State::Successor && *input == Input::ReloadRequest {
                                owed = true;
                            }
                            if begins(&actions) || m.is_done() {
                                owed = false;
                            }
                            assert!(
                                !(owed && m.state() == State::Main),
                                "a queued reload request forgotten: {before:?} + {input:?} left an idle main"
                            );
                            if matches!(before, State::HandingOff { .. }) {
                                assert!(!begins(&actions), "two hand-offs");
                            }
                            if actions.contains(&A::Drain { stop: false }) {
                                assert!(confirmed, "retired without a confirmation");
                            }
                            if actions.contains(&A::PauseAccepting) {
                                assert!(!paused, "paused twice");
                                paused = true;
                            }
                            if actions.contains(&A::ResumeAccepting) {
                                assert!(paused, "resumed without a pause");
                                paused = false;
                            }
                            if paused
                                && !matches!(
                                    m.state(),
                                    State::HandingOff {
                                        stage: Stage::Promoting,
                                        ..
                                    }
                                )
                            {
                                assert!(m.is_done(), "left paused after {input:?} from {before:?}");
                            }
                            if matches!(before, State::Retiring | State::Stopping) {
                                assert!(actions.is_empty(), "{before:?} + {input:?}: {actions:?}");
                            }
                            if let Input::Handoff {
                                step: Step::TimedOut { stage, .. },
                                ..
                            } = input
                            {
                                if matches!(before, State::HandingOff { attempt: 1, stage: s, .. } if s == *stage)
                                {
                                    assert_eq!(
                                        m.state(),
                                        State::Main,
                                        "a deadline ends the hand-off"
                                    );
                                    assert!(actions.contains(&A::KillHandoff), "{actions:?}");
                                } else {
                                    assert!(
                                        actions.is_empty(),
                                        "a stale deadline acted: {before:?}"
                                    );
                                }
                            }
                            if actions.contains(&A::KillHandoff)
                                || actions.contains(&A::AbortHandoff)
                            {
                                if let Some(i) = actions
                                    .iter()
                                    .position(|x| *x == A::Notify(Event::MainPid(OWN)))
                                {
                                    let end = actions.iter().position(|x| {
                                        matches!(x, A::KillHandoff | A::AbortHandoff)
                                    });
                                    assert!(
                                        Some(i) < end,
                                        "MAINPID=<own> after the end: {actions:?}"
                                    );
                                }
                            }
                            if actions.contains(&A::PassStopOn) {
                                assert_eq!(before, State::Successor, "a stop passed on by a main");
                            }
                            if actions.contains(&A::RefreshStatus) {
                                assert_eq!(before, State::Main, "status refreshed out of turn");
                            }
                            if let Some(i) =
                                actions.iter().position(|x| matches!(x, A::Drain { .. }))
                            {
                                assert_eq!(i, actions.len() - 1, "drain is the last action");
                            }
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 5 * 15 * 15 * 15);
    }
}
