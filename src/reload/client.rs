//! `baton reload`'s side: send the request, wait for the answer, read the reason of a failure
//! from the status file (trusting only the reloaded process's user).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use nix::unistd::Pid;

use tracing::info;

use super::*;
use crate::pidfile;
use crate::safe_fs;

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
    /// The PID file names a process that does not exist.
    #[error("pid file {path} names pid {pid}, which is not running (is baton running? the journal says why the file was not updated)")]
    StalePidFile {
        /// The file.
        path: PathBuf,
        /// The pid in it.
        pid: u32,
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
        source: io::Error,
    },
    /// The hand-off failed; the old process serves on.
    #[error("reload failed: {reason} (pid {pid} keeps serving)")]
    Failed {
        /// The old process.
        pid: u32,
        /// The successor's error.
        reason: String,
    },
    /// The process exited without answering.
    #[error("pid {pid} exited without reporting the reload's outcome")]
    Vanished {
        /// The old process.
        pid: u32,
    },
    /// Processes kept pointing at each other.
    #[error("pid {pid} keeps handing over (followed {hops} hand-overs); try again")]
    TooManyHops {
        /// The last process asked.
        pid: u32,
        /// How many times we were sent on.
        hops: u32,
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
    let read = || {
        pidfile::read(path).map_err(|source| ReloadError::PidFile {
            path: path.to_owned(),
            source,
        })
    };
    let pid = read()?;
    if !safe_fs::pid_is_gone(pid) {
        return Ok(pid);
    }
    // Right after a hand-off the old main may be gone before its successor, just promoted,
    // wrote the file: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        match read() {
            Ok(now) if now != pid && !safe_fs::pid_is_gone(now) => return Ok(now),
            _ => {}
        }
    }
    Err(ReloadError::StalePidFile {
        path: path.to_owned(),
        pid,
    })
}

/// Ask `pid` to hand off and wait for its answer. Returns the successor's pid. The status file
/// for a failure's reason is looked up in the runtime directory of `handoff_socket`.
pub fn reload(pid: u32, handoff_socket: &Path, timeout: Duration) -> Result<u32, ReloadError> {
    let replies = ReplyWaiter::new().map_err(|source| ReloadError::Signal { pid, source })?;
    let deadline = Instant::now() + timeout;
    let mut target = pid;
    let mut hops = 0;
    request(target)?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReloadError::Timeout {
                pid: target,
                after: timeout,
            });
        }
        match replies.wait(left.min(Duration::from_millis(100))) {
            Some((from, reply)) if from == target => match reply {
                Reply::Ready { successor } => return Ok(successor),
                Reply::Failed { unrecorded } => {
                    return Err(ReloadError::Failed {
                        pid: target,
                        reason: failure_reason(handoff_socket, target, unrecorded),
                    })
                }
                Reply::NotMain { main } => {
                    hops += 1;
                    if hops > 8 {
                        return Err(ReloadError::TooManyHops { pid: main, hops });
                    }
                    info!(
                        from = target,
                        to = main,
                        "not main any more: asking its successor"
                    );
                    target = main;
                    request(target)?;
                }
            },
            Some((from, reply)) => debug!(from, ?reply, "ignoring an answer from another process"),
            None => {
                if kill(Pid::from_raw(target as i32), None).is_err() {
                    return Err(ReloadError::Vanished { pid: target });
                }
            }
        }
    }
}

/// The failure's reason from the status file of `pid`, or why it is not available.
pub(super) fn failure_reason(handoff_socket: &Path, pid: u32, unrecorded: Option<i32>) -> String {
    if let Some(errno) = unrecorded {
        // Say what is wrong with the directory when that is the cause (another user's, say).
        let owner = process_uid(pid).unwrap_or_else(|| nix::unistd::geteuid().as_raw());
        let path = match RuntimeDir::open_existing(handoff_socket, owner) {
            Err(e @ FsError::Unsafe { .. }) => {
                return format!("the reason could not be recorded: {e}; see the journal")
            }
            Ok(dir) => dir.join(&status_name(pid)),
            Err(_) => crate::runtime_dir::configured(handoff_socket).join(status_name(pid)),
        };
        return format!(
            "the reason could not be recorded in {}: {}; see the journal",
            path.display(),
            io::Error::from_raw_os_error(errno)
        );
    }
    match read_status(handoff_socket, pid) {
        Ok(status) => status
            .reason
            .map(|r| crate::error::one_line(&r))
            .unwrap_or_else(|| "no reason recorded".to_owned()),
        Err(e) => format!("the reason is not available ({e}); see the journal"),
    }
}

/// Read the status file of `pid` from the runtime directory of `handoff_socket`, trusting only a
/// directory and a file owned by that process's user.
pub fn read_status(handoff_socket: &Path, pid: u32) -> Result<ReloadStatus, String> {
    let owner = process_uid(pid).unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    let dir = RuntimeDir::open_existing(handoff_socket, owner).map_err(|e| e.to_string())?;
    let name = status_name(pid);
    let bytes = dir.read_status(pid, owner).map_err(|e| e.to_string())?;
    let status = parse_status(&bytes).map_err(|e| format!("{}: {e}", dir.join(&name).display()))?;
    if status.parent_pid != pid {
        return Err(format!(
            "{}: written for pid {}, not {pid}",
            dir.join(&name).display(),
            status.parent_pid
        ));
    }
    Ok(status)
}

/// Parse a status file.
pub fn parse_status(bytes: &[u8]) -> Result<ReloadStatus, String> {
    serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "not a reload status: {}",
            crate::error::one_line(&e.to_string())
        )
    })
}

/// The effective uid of a process (the owner of `/proc/<pid>`).
fn process_uid(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// Send the request. Run as root against a baton of another user, first make that user's
/// answer deliverable: the saved uid becomes the target's (real and effective stay root), which
/// lets that user signal us and nothing more.
fn request(pid: u32) -> Result<(), ReloadError> {
    let signal_err = |source| ReloadError::Signal { pid, source };
    let me = nix::unistd::geteuid().as_raw();
    if me == 0 {
        if let Some(uid) = process_uid(pid).filter(|u| *u != 0) {
            if let Ok(ids) = nix::unistd::getresuid() {
                if let Err(e) =
                    nix::unistd::setresuid(ids.real, ids.effective, nix::unistd::Uid::from_raw(uid))
                {
                    warn!(error = %e, "cannot let pid {pid}'s user answer; waiting may time out");
                }
            }
        }
    }
    let value = libc::sigval {
        sival_ptr: REQUEST_VALUE as *mut libc::c_void,
    };
    // SAFETY: sigqueue(3) with a pid, SIGHUP and a plain value.
    if unsafe { libc::sigqueue(pid as libc::pid_t, libc::SIGHUP, value) } < 0 {
        return Err(signal_err(io::Error::last_os_error()));
    }
    Ok(())
}

/// The reply signal, blocked in this thread so it can be waited for.
struct ReplyWaiter {
    set: libc::sigset_t,
}

impl ReplyWaiter {
    fn new() -> io::Result<ReplyWaiter> {
        // SAFETY: sigemptyset/sigaddset initialise the set we own; pthread_sigmask blocks it in
        // this thread (baton reload has no other thread).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, reply_signal());
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(ReplyWaiter { set })
        }
    }

    /// The next answer within `timeout`: who sent it and what it says.
    fn wait(&self, timeout: Duration) -> Option<(u32, Reply)> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: an all-zero siginfo_t is a valid buffer for sigtimedwait to fill.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: the set and the buffers live across the call; the signal is blocked.
        let signo = unsafe { libc::sigtimedwait(&self.set, &mut info, &ts) };
        if signo != reply_signal() || info.si_code != libc::SI_QUEUE {
            return None;
        }
        // SAFETY: an SI_QUEUE siginfo carries the sender's pid and value.
        let (from, value) = unsafe { (info.si_pid(), info.si_value().sival_ptr as isize) };
        let reply = Reply::decode(value as i64)?;
        Some((u32::try_from(from).ok()?, reply))
    }
}
