//! Who this process is — a supervisor, a supervised generation, or a plain baton — decided once
//! at start from a few facts. Pure: the facts are read by [`Facts::of_process`], the rule is
//! [`decide`].

use crate::handoff::protocol::PREDECESSOR_ENV;
use crate::listen::activation::ActivationEnv;

use super::procfs::under_systemd;
use super::SUPERVISOR_ENV;

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

    /// Every combination of the facts, against the rule said once more in plain words.
    #[test]
    fn every_combination_of_facts_follows_the_rule() {
        let mut checked = 0;
        for pid in [1, 40] {
            for mark in [None, Some("7"), Some("0"), Some("garbage")] {
                for successor in [false, true] {
                    for asked in [false, true] {
                        for under_systemd in [false, true] {
                            let facts = Facts {
                                pid,
                                mark: mark.map(str::to_owned),
                                successor,
                                asked,
                                under_systemd,
                            };
                            let expected = if pid == 1 {
                                Role::Supervisor(Why::Pid1)
                            } else if let Some(mark) = mark {
                                Role::Generation {
                                    supervisor: (mark == "7").then_some(7),
                                }
                            } else if successor || !asked {
                                Role::Alone
                            } else if under_systemd {
                                Role::IgnoredUnderSystemd
                            } else {
                                Role::Supervisor(Why::Asked)
                            };
                            assert_eq!(decide(&facts), expected, "{facts:?}");
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 2 * 4 * 2 * 2 * 2);
    }
}
