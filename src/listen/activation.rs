//! systemd socket activation: reading `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`.
//!
//! Pure parsing, no I/O and no environment mutation: the variables are read once at start and are
//! kept out of the successor's environment by [`crate::handoff::spawn`] instead of being unset
//! (`setenv`/`unsetenv` are not thread-safe). Semantics follow
//! [sd_listen_fds(3)](https://www.freedesktop.org/software/systemd/man/latest/sd_listen_fds.html):
//! the descriptors start at fd 3 and are only ours when `LISTEN_PID` is our pid.

use std::os::fd::RawFd;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

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
}

impl ActivationEnv {
    /// Read the variables from this process's environment (read only).
    pub fn from_process() -> Self {
        let get = |k| std::env::var(k).ok();
        ActivationEnv {
            listen_pid: get("LISTEN_PID"),
            listen_fds: get("LISTEN_FDS"),
            listen_fdnames: get("LISTEN_FDNAMES"),
        }
    }

    /// The descriptors passed to `our_pid`, in order. `Ok(empty)` when nothing was passed or the
    /// variables are meant for another process.
    pub fn parse(&self, our_pid: u32) -> Result<Vec<ActivatedFd>, ActivationError> {
        let (Some(pid), Some(fds)) = (&self.listen_pid, &self.listen_fds) else {
            return Ok(Vec::new());
        };
        let pid_num: u32 = parse_digits(pid)
            .filter(|p| *p > 0)
            .ok_or_else(|| ActivationError::BadPid { value: pid.clone() })?;
        if pid_num != our_pid {
            return Ok(Vec::new());
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
        }
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
