//! `baton reload` and the running process's answer to it, so that `systemctl reload` (with
//! `ExecReload=baton reload`) tells the truth about a hand-off.
//!
//! * The **request** goes over the service's **control socket**, a Unix stream socket in the
//!   runtime directory (`docs/handoff-protocol.md`, "Files baton creates") that passes from
//!   generation to generation with the listeners: one JSON line (`{"request":"reload"}`). Only the service's own user or root may ask
//!   (`SO_PEERCRED`).
//! * The **answer** comes back on the same connection, one JSON line: the successor's
//!   pid, or the failure's reason inline. The client believes it only from a process of the
//!   service's user or root that belongs to the service it named. Nothing on disk is needed, so a
//!   full or read-only disk cannot lose it, and nothing on disk can forge it.
//! * A plain `kill -HUP` still reloads (and gets no answer).
//! * The outcome is also recorded in the status file `reload-status.<pid>.json` of the runtime
//!   directory, for people and tools that look later.
//!
//! [`request`] is the client, for a library user's own `reload` command. See
//! `docs/handoff-protocol.md`, "Reload requests and their answer".

use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::runtime_dir::RuntimeDir;
use crate::safe_fs::FsError;

mod client;
pub(crate) mod control;
#[cfg(test)]
mod control_tests;

pub use client::{request, ReloadError, Reloaded, Target};

/// The longest request or answer line (without its newline).
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// What a client asks on the control socket (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Request {
    /// `{"request":"reload"}`: hand off to a successor and say how it went. (A struct variant,
    /// though it has no field: serde refuses unknown fields only there, so a line with any other
    /// field is refused rather than read as a reload.)
    Reload {},
}

/// What the service answers (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Answer {
    /// `{"answer":"reloaded","retired":P,"successor":S}`: the successor `S` serves; `P`, the
    /// process that handed off, retires. Pids as the service's PID namespace numbers them.
    Reloaded {
        /// The process that handed off.
        retired: u32,
        /// The process that serves now.
        successor: u32,
    },
    /// `{"answer":"failed","pid":P,"reason":"…"}`: the hand-off failed; `P` serves on.
    Failed {
        /// The process that serves on.
        pid: u32,
        /// Why, one line.
        reason: String,
    },
    /// `{"answer":"ask_again","main":S}`: the request reached a process whose successor `S`
    /// took over before the request was served: ask again on the same socket.
    AskAgain {
        /// The process that is main now.
        main: u32,
    },
    /// `{"answer":"stopping","pid":P}`: the service stops; no hand-off.
    Stopping {
        /// The process that stops.
        pid: u32,
    },
}

/// The outcome of one hand-off attempt, as the status file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReloadStatus {
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
pub(crate) enum Outcome {
    /// The successor serves and is the main process.
    Ready,
    /// The successor was killed; the old process serves on.
    Failed,
}

/// `CLOCK_MONOTONIC` in microseconds, comparable across processes of one boot.
pub(crate) fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or_default()
}

/// Record the outcome of a hand-off in the status file (failures are logged with the path and
/// errno, never fatal: the answer on the control socket carries the outcome anyway).
pub(crate) fn publish(handoff_socket: &Path, status: &ReloadStatus) {
    if let Err(e) = write_status(handoff_socket, status) {
        warn!(error = %e, "cannot write the reload status file");
    }
}

/// Write the status file `reload-status.<parent pid>.json` in the runtime directory.
pub(crate) fn write_status(handoff_socket: &Path, status: &ReloadStatus) -> Result<(), FsError> {
    let mut bytes = serde_json::to_vec(status).unwrap_or_default();
    bytes.push(b'\n');
    RuntimeDir::open(handoff_socket)?.write_status(status.parent_pid, &bytes)
}

/// Parse a status file.
#[cfg(test)]
pub(crate) fn parse_status(bytes: &[u8]) -> Result<ReloadStatus, String> {
    serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "not a reload status: {}",
            crate::text::one_line(&e.to_string())
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_lines_are_typed_json() {
        assert_eq!(
            serde_json::to_string(&Request::Reload {}).unwrap(),
            r#"{"request":"reload"}"#
        );
        let a = Answer::Reloaded {
            retired: 7,
            successor: 9,
        };
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(text, r#"{"answer":"reloaded","retired":7,"successor":9}"#);
        assert_eq!(serde_json::from_str::<Answer>(&text).unwrap(), a);
        assert!(serde_json::from_str::<Answer>(r#"{"answer":"reloaded","retired":7}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"request":"stop"}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"request":"reload"}"#).unwrap(),
            Request::Reload {}
        );
        assert!(
            serde_json::from_str::<Request>(r#"{"request":"reload","force":true}"#).is_err(),
            "a field the protocol does not define is refused"
        );
    }

    #[test]
    fn monotonic_usec_reads_the_monotonic_clock_in_microseconds() {
        let usec = || {
            let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
            t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000
        };
        for _ in 0..3 {
            let before = usec();
            let read = monotonic_usec();
            let after = usec();
            assert!(before <= read && read <= after, "{before} {read} {after}");
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
    }

    #[test]
    fn a_published_outcome_is_in_the_status_file() {
        let (_tmp, socket) = crate::test_util::temp_path("run/handoff.sock");
        let me = std::process::id();
        let status = ReloadStatus {
            parent_pid: me,
            requested_usec: 3,
            finished_usec: 4,
            outcome: Outcome::Ready,
            successor_pid: Some(4242),
            reason: None,
        };
        publish(&socket, &status);
        let uid = nix::unistd::geteuid().as_raw();
        let bytes = RuntimeDir::open_existing(&socket, uid)
            .unwrap()
            .read_status(me, uid)
            .unwrap();
        assert_eq!(parse_status(&bytes).unwrap(), status);
    }

    #[test]
    fn status_files_are_written_privately_and_read_back() {
        let (_tmp, socket) = crate::test_util::temp_path("run/handoff.sock");
        let me = std::process::id();
        let status = ReloadStatus {
            parent_pid: me,
            requested_usec: 1,
            finished_usec: 2,
            outcome: Outcome::Failed,
            successor_pid: None,
            reason: Some("config /x: bad".into()),
        };
        write_status(&socket, &status).unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let bytes = RuntimeDir::open_existing(&socket, uid)
            .unwrap()
            .read_status(me, uid)
            .unwrap();
        assert_eq!(parse_status(&bytes).unwrap(), status);
        let e = parse_status(br#"{"outcome":"x\ny"}"#).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
    }
}
