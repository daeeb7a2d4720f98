//! systemd socket activation: reading `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`.
//!
//! Pure parsing, no I/O and no environment mutation: the variables are read once at start and are
//! kept out of the successor's environment by [`crate::handoff::spawn`] instead of being unset
//! (`setenv`/`unsetenv` are not thread-safe). Semantics follow
//! [sd_listen_fds(3)](https://www.freedesktop.org/software/systemd/man/latest/sd_listen_fds.html):
//! the descriptors start at fd 3 and are only ours when `LISTEN_PID` is our pid.
//!
//! One deliberate exception: tools that start a program through others (`systemfd --no-pid --
//! cargo watch -x run`) cannot know its pid and pass `LISTEN_FDS` without `LISTEN_PID`. Such
//! descriptors are ignored with a warning ([`ActivationEnv::warning`]) unless
//! `BATON_LISTEN_FDS_WITHOUT_PID=1` opts in, which makes them ours.

use std::os::fd::RawFd;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The variable that opts in to `LISTEN_FDS` without `LISTEN_PID`.
pub const WITHOUT_PID_ENV: &str = "BATON_LISTEN_FDS_WITHOUT_PID";

/// More descriptors than this in `LISTEN_FDS` is treated as garbage.
const MAX_FDS: usize = 4096;

/// One descriptor passed by the service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivatedFd {
    /// The descriptor number in this process.
    pub fd: RawFd,
    /// Its name from `LISTEN_FDNAMES` (`FileDescriptorName=`), or `unknown` as systemd says.
    pub name: String,
}

/// The three variables as found in the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivationEnv {
    /// `LISTEN_PID`
    pub listen_pid: Option<String>,
    /// `LISTEN_FDS`
    pub listen_fds: Option<String>,
    /// `LISTEN_FDNAMES`
    pub listen_fdnames: Option<String>,
    /// `BATON_LISTEN_FDS_WITHOUT_PID`
    pub without_pid: Option<String>,
}

/// Why the activation variables were refused. Each message names the variable and its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_PID` is not a process id.
    #[error("LISTEN_PID={value:?} is not a process id")]
    BadPid {
        /// The value found.
        value: String,
    },
    /// `LISTEN_FDS` is not a count.
    #[error("LISTEN_FDS={value:?} is not a descriptor count (0 to {MAX_FDS})")]
    BadCount {
        /// The value found.
        value: String,
    },
    /// `LISTEN_FDNAMES` names a different number of descriptors than `LISTEN_FDS` passes.
    #[error("LISTEN_FDNAMES={names:?} has {found} names but LISTEN_FDS={count}")]
    NameCount {
        /// The value found.
        names: String,
        /// How many names it holds.
        found: usize,
        /// `LISTEN_FDS`.
        count: usize,
    },
    /// `BATON_LISTEN_FDS_WITHOUT_PID` is not a boolean.
    #[error("{WITHOUT_PID_ENV}={value:?} is not 1 or 0 (true or false)")]
    BadOptIn {
        /// The value found.
        value: String,
    },
}

impl ActivationEnv {
    /// Read the variables from this process's environment (read only).
    pub fn from_process() -> Self {
        let get = |k| std::env::var(k).ok();
        ActivationEnv {
            listen_pid: get("LISTEN_PID"),
            listen_fds: get("LISTEN_FDS"),
            listen_fdnames: get("LISTEN_FDNAMES"),
            without_pid: get(WITHOUT_PID_ENV),
        }
    }

    /// True when `BATON_LISTEN_FDS_WITHOUT_PID` opts in.
    fn opted_in(&self) -> Result<bool, ActivationError> {
        match self.without_pid.as_deref().unwrap_or_default() {
            "" | "0" | "false" => Ok(false),
            "1" | "true" => Ok(true),
            other => Err(ActivationError::BadOptIn {
                value: other.to_owned(),
            }),
        }
    }

    /// `LISTEN_FDS` passes descriptors but no `LISTEN_PID` says to whom.
    fn unaddressed(&self) -> bool {
        self.listen_pid.is_none()
            && self
                .listen_fds
                .as_deref()
                .is_some_and(|n| !n.is_empty() && n != "0")
    }

    /// The one-line warning to log when descriptors are passed without `LISTEN_PID` and nothing
    /// opted in to take them: they are ignored, so the operator must learn why.
    pub fn warning(&self) -> Option<String> {
        if !self.unaddressed() || self.opted_in().unwrap_or(false) {
            return None;
        }
        let fds = self.listen_fds.as_deref().unwrap_or_default();
        Some(format!(
            "LISTEN_FDS={fds:?} without LISTEN_PID: the passed sockets are ignored; if they are \
             meant for this process (systemfd --no-pid, cargo watch), set {WITHOUT_PID_ENV}=1"
        ))
    }

    /// The descriptors passed to `our_pid`, in order. `Ok(empty)` when nothing was passed or the
    /// variables are meant for another process.
    /// With `BATON_LISTEN_FDS_WITHOUT_PID=1`, descriptors passed without `LISTEN_PID` are ours.
    pub fn parse(&self, our_pid: u32) -> Result<Vec<ActivatedFd>, ActivationError> {
        let Some(fds) = &self.listen_fds else {
            return Ok(Vec::new());
        };
        match &self.listen_pid {
            Some(pid) => {
                let pid_num: u32 = parse_digits(pid)
                    .filter(|p| *p > 0)
                    .ok_or_else(|| ActivationError::BadPid { value: pid.clone() })?;
                if pid_num != our_pid {
                    return Ok(Vec::new());
                }
            }
            None if self.opted_in()? => {}
            None => return Ok(Vec::new()),
        }
        let count: usize = parse_digits(fds)
            .filter(|n| *n <= MAX_FDS)
            .ok_or_else(|| ActivationError::BadCount { value: fds.clone() })?;
        let names: Vec<String> = match &self.listen_fdnames {
            Some(names) => {
                let split: Vec<String> = names.split(':').map(str::to_owned).collect();
                if split.len() != count {
                    return Err(ActivationError::NameCount {
                        names: names.clone(),
                        found: split.len(),
                        count,
                    });
                }
                split
            }
            None => vec!["unknown".to_owned(); count],
        };
        Ok(names
            .into_iter()
            .enumerate()
            .map(|(i, name)| ActivatedFd {
                fd: LISTEN_FDS_START + i as RawFd,
                name,
            })
            .collect())
    }
}

/// A decimal number of ASCII digits only (no sign, no blanks), as systemd writes them.
fn parse_digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pid: Option<&str>, fds: Option<&str>, names: Option<&str>) -> ActivationEnv {
        ActivationEnv {
            listen_pid: pid.map(Into::into),
            listen_fds: fds.map(Into::into),
            listen_fdnames: names.map(Into::into),
            without_pid: None,
        }
    }

    fn opted(value: &str, fds: Option<&str>) -> ActivationEnv {
        ActivationEnv {
            without_pid: Some(value.into()),
            ..env(None, fds, None)
        }
    }

    #[test]
    fn fds_without_a_pid_are_ignored_with_a_warning_unless_opted_in() {
        let e = env(None, Some("1"), None);
        assert!(e.parse(5).unwrap().is_empty());
        let w = e.warning().unwrap();
        assert!(
            w.starts_with("LISTEN_FDS=\"1\" without LISTEN_PID")
                && w.contains("BATON_LISTEN_FDS_WITHOUT_PID=1")
                && !w.contains('\n'),
            "{w}"
        );
        for off in ["0", "false", ""] {
            assert!(opted(off, Some("1")).parse(5).unwrap().is_empty());
            assert!(opted(off, Some("1")).warning().is_some());
        }
        for on in ["1", "true"] {
            let got = opted(on, Some("2")).parse(5).unwrap();
            assert_eq!(got.iter().map(|f| f.fd).collect::<Vec<_>>(), vec![3, 4]);
            assert_eq!(got[0].name, "unknown");
            assert_eq!(opted(on, Some("2")).warning(), None);
        }
        let e = opted("yes please", Some("1")).parse(5).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("BATON_LISTEN_FDS_WITHOUT_PID=\"yes please\""),
            "{e}"
        );
        // Opting in changes nothing when LISTEN_PID is there: it still decides.
        let mut e = opted("1", Some("1"));
        e.listen_pid = Some("9".into());
        assert!(e.parse(5).unwrap().is_empty());
        assert_eq!(e.warning(), None);
        // Nothing passed: nothing to warn about.
        assert_eq!(env(None, Some("0"), None).warning(), None);
        assert_eq!(env(None, None, None).warning(), None);
        assert!(opted("1", Some("0")).parse(5).unwrap().is_empty());
        assert!(opted("1", None).parse(5).unwrap().is_empty());
    }

    #[test]
    fn passes_named_fds_to_the_named_pid_only() {
        let e = env(Some("42"), Some("2"), Some("http:admin"));
        let got = e.parse(42).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].fd, got[0].name.as_str()), (3, "http"));
        assert_eq!((got[1].fd, got[1].name.as_str()), (4, "admin"));
        assert!(e.parse(43).unwrap().is_empty());
    }

    #[test]
    fn missing_variables_mean_no_activation() {
        assert!(env(None, Some("1"), None).parse(1).unwrap().is_empty());
        assert!(env(Some("1"), None, None).parse(1).unwrap().is_empty());
        assert!(env(Some("1"), Some("0"), None).parse(1).unwrap().is_empty());
    }

    #[test]
    fn unnamed_fds_are_unknown() {
        let got = env(Some("7"), Some("1"), None).parse(7).unwrap();
        assert_eq!(got[0].name, "unknown");
    }

    #[test]
    fn garbage_is_refused_with_the_variable_named() {
        let e = env(Some("abc"), Some("1"), None).parse(1).unwrap_err();
        assert!(e.to_string().starts_with("LISTEN_PID=\"abc\""), "{e}");
        let e = env(Some("1"), Some("x"), None).parse(1).unwrap_err();
        assert!(e.to_string().starts_with("LISTEN_FDS=\"x\""), "{e}");
        assert!(env(Some("+1"), Some("1"), None).parse(1).is_err());
        // No process has pid 0: LISTEN_PID=0 is garbage, not "meant for another process".
        let e = env(Some("0"), Some("1"), None).parse(1).unwrap_err();
        assert!(matches!(e, ActivationError::BadPid { .. }), "{e}");
        assert!(env(Some("1"), Some(" 1"), None).parse(1).is_err());
        let e = env(Some("1"), Some("-1"), None).parse(1).unwrap_err();
        assert!(matches!(e, ActivationError::BadCount { .. }));
        let e = env(Some("1"), Some("2"), Some("a")).parse(1).unwrap_err();
        assert!(
            e.to_string().contains("has 1 names but LISTEN_FDS=2"),
            "{e}"
        );
    }

    #[test]
    fn garbage_for_another_process_is_none_of_our_business() {
        assert!(env(Some("9"), Some("x"), Some("a:b"))
            .parse(1)
            .unwrap()
            .is_empty());
    }
}
