//! `baton reload`: trigger the hand-off of a running baton and wait for its outcome, so that
//! `systemctl reload` (with `ExecReload=baton reload`) fails visibly when the successor fails.
//!
//! The running process writes [`ReloadStatus`] to `reload-status.json` beside the hand-off socket
//! after every attempt (see `docs/handoff-protocol.md`, "Reload status file").

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::pidfile;

/// File name of the status file, in the hand-off socket's directory.
pub const STATUS_FILE: &str = "reload-status.json";

/// The outcome of one hand-off attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// The process that handled SIGHUP.
    pub parent_pid: u32,
    /// When it received SIGHUP (`CLOCK_MONOTONIC`, µs).
    pub requested_usec: u64,
    /// When the outcome was known (`CLOCK_MONOTONIC`, µs).
    pub finished_usec: u64,
    /// `ready` or `failed`.
    pub outcome: Outcome,
    /// The successor's pid, when it serves.
    pub successor_pid: Option<u32>,
    /// Why it failed.
    pub reason: Option<String>,
}

/// How a hand-off ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The successor serves and is the main process.
    Ready,
    /// The successor was killed; the old process serves on.
    Failed,
}

/// Where the status file for hand-off socket `socket` lives.
pub fn status_path(socket: &Path) -> PathBuf {
    socket.with_file_name(STATUS_FILE)
}

/// `CLOCK_MONOTONIC` in microseconds, comparable across processes of one boot.
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or_default()
}

/// Write the status atomically; failures are logged, never fatal.
pub fn write_status(socket: &Path, status: &ReloadStatus) {
    let path = status_path(socket);
    let mut bytes = serde_json::to_vec(status).unwrap_or_default();
    bytes.push(b'\n');
    if let Err(e) = pidfile::write_atomically(&path, &bytes) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the reload status");
    }
}

/// Why `baton reload` could not report success.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// No pid given, no `$MAINPID`, no PID file.
    #[error("no process to reload: give --pid, set MAINPID, or configure pid_file")]
    NoPid,
    /// The PID file could not be read.
    #[error("pid file {path}: {source}")]
    PidFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `$MAINPID` is garbage.
    #[error("MAINPID={0:?} is not a pid")]
    BadMainPid(String),
    /// SIGHUP could not be sent.
    #[error("cannot signal pid {pid}: {source}")]
    Signal {
        /// The target.
        pid: u32,
        /// The error.
        source: nix::Error,
    },
    /// The hand-off failed; the old process serves on.
    #[error("reload failed: {reason} (pid {pid} keeps serving)")]
    Failed {
        /// The old process.
        pid: u32,
        /// The successor's error.
        reason: String,
    },
    /// The process exited without reporting an outcome.
    #[error("pid {pid} exited without reporting the reload's outcome")]
    Vanished {
        /// The old process.
        pid: u32,
    },
    /// No outcome within the timeout.
    #[error("no outcome from pid {pid} within {after:?}")]
    Timeout {
        /// The old process.
        pid: u32,
        /// The timeout.
        after: Duration,
    },
}

/// Find the pid to reload: explicit, else `$MAINPID`, else the PID file.
pub fn target_pid(explicit: Option<u32>, pid_file: Option<&Path>) -> Result<u32, ReloadError> {
    if let Some(pid) = explicit {
        return Ok(pid);
    }
    if let Some(main) = std::env::var("MAINPID").ok().filter(|v| !v.is_empty()) {
        return main.parse().map_err(|_| ReloadError::BadMainPid(main));
    }
    let path = pid_file.ok_or(ReloadError::NoPid)?;
    pidfile::read(path).map_err(|source| ReloadError::PidFile {
        path: path.to_owned(),
        source,
    })
}

/// Send SIGHUP to `pid` and wait for the outcome in the status file beside `socket`.
/// Returns the successor's pid.
pub fn reload(pid: u32, socket: &Path, timeout: Duration) -> Result<u32, ReloadError> {
    let status_file = status_path(socket);
    let sent_usec = monotonic_usec();
    kill(Pid::from_raw(pid as i32), Signal::SIGHUP)
        .map_err(|source| ReloadError::Signal { pid, source })?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = fresh_status(&status_file, pid, sent_usec) {
            return match status.outcome {
                Outcome::Ready => Ok(status.successor_pid.unwrap_or_default()),
                Outcome::Failed => Err(ReloadError::Failed {
                    pid,
                    reason: status.reason.unwrap_or_default(),
                }),
            };
        }
        if kill(Pid::from_raw(pid as i32), None).is_err() {
            // Gone: it may have written the status just before exiting; look once more.
            return match fresh_status(&status_file, pid, sent_usec) {
                Some(ReloadStatus {
                    outcome: Outcome::Ready,
                    successor_pid,
                    ..
                }) => Ok(successor_pid.unwrap_or_default()),
                _ => Err(ReloadError::Vanished { pid }),
            };
        }
        if Instant::now() >= deadline {
            return Err(ReloadError::Timeout {
                pid,
                after: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The status in `path` if it answers a SIGHUP sent to `pid` at `since`.
fn fresh_status(path: &Path, pid: u32, since: u64) -> Option<ReloadStatus> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice::<ReloadStatus>(&bytes)
        .ok()
        .filter(|s| answers(s, pid, since))
}

/// `pid` finished a hand-off after `since` (possibly one already running when the signal came),
/// or another process received SIGHUP after `since`: `pid` was a supervisor (see
/// [`crate::supervisor`]) and passed the signal on to the main generation.
fn answers(status: &ReloadStatus, pid: u32, since: u64) -> bool {
    (status.parent_pid == pid && status.finished_usec >= since) || status.requested_usec >= since
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(parent_pid: u32, requested_usec: u64, finished_usec: u64) -> ReloadStatus {
        ReloadStatus {
            parent_pid,
            requested_usec,
            finished_usec,
            outcome: Outcome::Ready,
            successor_pid: Some(parent_pid + 1),
            reason: None,
        }
    }

    #[test]
    fn a_status_answers_the_signal_sent_to_the_process_or_to_its_supervisor() {
        // Sent to the main process at t=100.
        assert!(answers(&status(40, 105, 120), 40, 100));
        assert!(
            answers(&status(40, 90, 120), 40, 100),
            "a hand-off already running"
        );
        assert!(!answers(&status(40, 50, 60), 40, 100), "an older reload");
        // Sent to a supervisor (pid 1) at t=100: the main generation handled it.
        assert!(answers(&status(40, 105, 120), 1, 100));
        assert!(!answers(&status(40, 90, 120), 1, 100), "not ours");
        assert!(!answers(&status(40, 50, 60), 1, 100));
    }
}
