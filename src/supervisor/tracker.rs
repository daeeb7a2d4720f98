//! Which generation is main, followed from what the generations tell their service manager (the
//! supervisor) and from which of them exit. Pure: the caller says what it heard and who ended.

use nix::sys::wait::WaitStatus;

use crate::exit;

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

/// Follows which generation is main, from the notifications the generations send, the way
/// systemd does with `NotifyAccess=main`. Pure: the caller tells it what it heard and who exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    main: Option<u32>,
    /// The generation that announced the current main one, until it ends or a later hand-off:
    /// it may take the announcement back (its hand-off failed before the successor confirmed).
    announced_by: Option<u32>,
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
    /// The generation that announced the main one said `MAINPID=<its own pid>`: its hand-off
    /// failed after the announcement (the successor died or hung before confirming), and it
    /// serves on as main.
    TakenBack(u32),
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
            announced_by: None,
            main_ended: None,
            last_ended: None,
        }
    }

    /// The main generation, if one is running.
    pub fn main(&self) -> Option<u32> {
        self.main
    }

    /// A datagram from `sender`. `ours(pid)` tells whether a pid is a descendant of the
    /// supervisor. Only the main generation is heard; besides it, the generation that announced
    /// it when it takes the announcement back (`MAINPID=<its own pid>`), and, when there is no
    /// main generation, `READY=1` of a descendant, which then becomes main.
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
                            self.announced_by = Some(sender);
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
            _ if self.announced_by == Some(sender)
                && lines.contains(&format!("MAINPID={sender}").as_str())
                && ours(sender) =>
            {
                self.main = Some(sender);
                self.announced_by = None;
                Heard {
                    forward: forward(),
                    change: Some(Change::TakenBack(sender)),
                }
            }
            None if lines.contains(&"READY=1") && ours(sender) => {
                self.main = Some(sender);
                self.announced_by = None;
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
        if self.announced_by == Some(pid) {
            self.announced_by = None;
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

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

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
        // Without a /proc of our PID namespace every pid counts as ours: init is still refused.
        let h = t.hear(10, "MAINPID=1\n", |_| true);
        assert_eq!(
            h.change,
            Some(Change::Refused {
                from: 10,
                named: "1".into()
            })
        );
        assert_eq!(t.main(), Some(10));
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
    fn a_hand_off_that_fails_after_mainpid_gives_main_back_to_the_announcer() {
        let ours = |p: u32| (10..100).contains(&p);
        let mut t = Tracker::new(10);
        t.hear(10, "MAINPID=11\n", ours);
        assert_eq!(t.main(), Some(11));
        // The successor died (its parent reaps it, not the supervisor); the old generation
        // takes the announcement back, then reports the failed reload.
        let h = t.hear(10, "MAINPID=10\n", ours);
        assert_eq!(h.change, Some(Change::TakenBack(10)));
        assert_eq!(t.main(), Some(10));
        let h = t.hear(10, "READY=1\nSTATUS=reload failed: x\n", ours);
        assert_eq!(h.forward, ["READY=1", "STATUS=reload failed: x"]);
        // Only once, and only by the announcer.
        assert_eq!(t.hear(11, "MAINPID=11\n", ours), Heard::default());
        t.hear(10, "MAINPID=12\n", ours);
        assert_eq!(t.hear(11, "MAINPID=11\n", ours), Heard::default());
        assert_eq!(t.main(), Some(12));
        // An announcer that ended cannot.
        t.ended(10, 0);
        assert_eq!(t.hear(10, "MAINPID=10\n", ours), Heard::default());
        assert_eq!(t.main(), Some(12));
    }

    /// Every sequence of four events around one hand-off (old generation 10, successor 11, a
    /// stranger 99): the main generation is always a known generation or none, `MAINPID=` is
    /// never passed on, nothing is heard from a stranger, and the generation that announced a
    /// successor can always take it back until it ends — so a failed hand-off never leaves the
    /// service without a main generation while the old one serves.
    #[test]
    fn every_sequence_of_four_events_keeps_a_main_generation_known() {
        #[derive(Debug, Clone, Copy)]
        enum Event {
            Hear(u32, &'static str),
            Ended(u32),
        }
        let events = [
            Event::Hear(10, "MAINPID=11\n"),
            Event::Hear(10, "MAINPID=10\n"),
            Event::Hear(10, "READY=1\nSTATUS=reload failed: x\n"),
            Event::Hear(11, "READY=1\nSTATUS=serving\n"),
            Event::Hear(11, "MAINPID=10\n"),
            Event::Hear(99, "MAINPID=99\nREADY=1\n"),
            Event::Hear(10, "MAINPID=99\n"),
            Event::Ended(10),
            Event::Ended(11),
        ];
        let ours = |p: u32| p == 10 || p == 11;
        let mut checked = 0;
        for a in events {
            for b in events {
                for c in events {
                    for d in events {
                        let mut t = Tracker::new(10);
                        let mut alive = [10u32, 11].to_vec();
                        for e in [a, b, c, d] {
                            let before = t.main();
                            match e {
                                Event::Hear(pid, text) => {
                                    // What /proc would say: a process that ended is not ours.
                                    let h = t.hear(pid, text, |p| alive.contains(&p));
                                    assert!(
                                        h.forward.iter().all(|l| !l.starts_with("MAINPID=")),
                                        "{e:?}"
                                    );
                                    if pid == 99 {
                                        assert_eq!(h, Heard::default(), "a stranger was heard");
                                    }
                                    if !h.forward.is_empty() {
                                        assert_eq!(
                                            t.main(),
                                            Some(pid),
                                            "forwarded from a non-main: {e:?}"
                                        );
                                    }
                                }
                                Event::Ended(pid) => {
                                    alive.retain(|&p| p != pid);
                                    t.ended(pid, 0);
                                }
                            }
                            if let Some(main) = t.main() {
                                assert!(ours(main), "{main} became main after {e:?}");
                                assert!(alive.contains(&main), "a main that ended: {e:?}");
                            }
                            if before == Some(11) && t.announced_by == Some(10) {
                                let mut probe = t.clone();
                                probe.hear(10, "MAINPID=10\n", |p| alive.contains(&p));
                                assert_eq!(
                                    probe.main(),
                                    Some(10),
                                    "the announcer cannot take it back"
                                );
                            }
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 9 * 9 * 9 * 9);
    }
}
