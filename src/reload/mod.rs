//! `baton reload` and the running process's answer to it, so that `systemctl reload` (with
//! `ExecReload=baton reload`) tells the truth about a hand-off, even when the disk is full or
//! read-only.
//!
//! * The **request** is a `SIGHUP` sent with sigqueue(3) carrying [`REQUEST_VALUE`]. A plain
//!   `kill -HUP` still reloads; it just gets no answer.
//! * The **answer** is the real-time signal [`reply_signal`] (`SIGRTMIN+5`) queued back to the
//!   requesting process through a pidfd taken when the request arrived (so a recycled pid is never
//!   signalled), carrying a [`Reply`]: the successor's pid, a failure, or "not main any more, ask
//!   this pid". Nothing on disk is needed, so nothing on disk can lose or forge it.
//! * The **reason** of a failure is in the status file `reload-status.<pid>.json` of the runtime
//!   directory, written with [`crate::safe_fs`] and read by `baton reload` only from a directory
//!   and a file owned by the reloaded process's user. If it could not be written, the answer says
//!   so with the errno, and the reason is in the journal.
//!
//! See `docs/handoff-protocol.md`, "Reload requests and their answer".

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::handoff::runtime_dir;
use crate::safe_fs::{Create, FsError, TrustedDir};

/// File names of status files start with this, then the parent's pid: `reload-status.<pid>.json`.
pub const STATUS_PREFIX: &str = "reload-status.";

/// What `baton reload` puts in the `SIGHUP` it queues ("batn"): "answer me".
pub const REQUEST_VALUE: usize = 0x6261_746e;

/// The status file of the process `pid`.
pub fn status_name(pid: u32) -> String {
    format!("{STATUS_PREFIX}{pid}.json")
}

/// The signal that carries the answer: `SIGRTMIN+5` (real-time signals queue and carry a value).
pub fn reply_signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

/// The outcome of one hand-off attempt, as the status file records it.
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

/// The answer to a reload request, as one signal value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The hand-off worked: this pid serves now.
    Ready {
        /// The successor.
        successor: u32,
    },
    /// The hand-off failed; the old process serves on. The reason is in its status file, unless
    /// writing that failed with `unrecorded` (an errno).
    Failed {
        /// Why the status file could not be written, if it could not.
        unrecorded: Option<i32>,
    },
    /// This process hands over to (or has handed over to) `main`: ask it.
    NotMain {
        /// The process that is (or is about to be) main.
        main: u32,
    },
}

/// Values at or below this carry [`Reply::NotMain`].
const NOT_MAIN_BASE: i64 = -(1 << 24);
/// The largest pid Linux hands out (`PID_MAX_LIMIT`).
#[cfg(any(test, feature = "cli"))]
const PID_MAX: u32 = 1 << 22;

impl Reply {
    /// As a signal value: `pid > 0` ready; `0` failed (reason recorded); `-errno` failed (reason
    /// not recorded); `-(2^24) - pid` not main.
    pub fn encode(self) -> i64 {
        match self {
            Reply::Ready { successor } => i64::from(successor),
            Reply::Failed { unrecorded: None } => 0,
            Reply::Failed {
                unrecorded: Some(errno),
            } => -i64::from(errno.clamp(1, 4095)),
            Reply::NotMain { main } => NOT_MAIN_BASE - i64::from(main),
        }
    }

    /// The reply a signal value carries; `None` for values no baton sends.
    #[cfg(any(test, feature = "cli"))]
    pub fn decode(value: i64) -> Option<Reply> {
        match value {
            0 => Some(Reply::Failed { unrecorded: None }),
            v if v > 0 => u32::try_from(v)
                .ok()
                .filter(|p| *p <= PID_MAX)
                .map(|successor| Reply::Ready { successor }),
            v if (-4095..0).contains(&v) => Some(Reply::Failed {
                unrecorded: Some(-v as i32),
            }),
            v => u32::try_from(NOT_MAIN_BASE - v)
                .ok()
                .filter(|p| *p > 0 && *p <= PID_MAX)
                .map(|main| Reply::NotMain { main }),
        }
    }
}

/// `CLOCK_MONOTONIC` in microseconds, comparable across processes of one boot.
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The running process's side.

/// Requests not answered yet: `pid | pidfd << 32` (pidfd `u32::MAX` when none could be opened),
/// 0 for a free slot. Written by the signal handler, so fixed-size and lock-free.
static PENDING: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
const NO_PIDFD: u64 = u32::MAX as u64;

/// Start recording reload requests. Call it before the first `SIGHUP` stream is created (the
/// handler of tokio and this one then both run, this one first). Idempotent.
pub fn accept_requests() -> io::Result<()> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        // SAFETY: the action only does what a signal handler may: it reads the siginfo, makes
        // two system calls (pidfd_open, close) and touches atomics; it allocates nothing and
        // takes no lock.
        let registered = unsafe {
            signal_hook_registry::register_sigaction(libc::SIGHUP, |info: &libc::siginfo_t| {
                record_request(info)
            })
        };
        if let Err(e) = registered {
            result = Err(e);
        }
    });
    result
}

fn record_request(info: &libc::siginfo_t) {
    if info.si_code != libc::SI_QUEUE {
        return;
    }
    // SAFETY: for SI_QUEUE the kernel delivers the sender's pid, uid and value in these fields.
    let (pid, value) = unsafe { (info.si_pid(), info.si_value().sival_ptr as usize) };
    if value != REQUEST_VALUE || pid <= 0 {
        return;
    }
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1; a plain
    // system call, safe in a signal handler.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd_bits = if pidfd >= 0 { pidfd as u64 } else { NO_PIDFD };
    let entry = pid as u64 | fd_bits << 32;
    for slot in &PENDING {
        if slot
            .compare_exchange(0, entry, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
    if pidfd >= 0 {
        // SAFETY: the descriptor was opened just above and is not stored anywhere.
        unsafe { libc::close(pidfd as libc::c_int) };
    }
}

/// A process waiting for an answer.
#[derive(Debug)]
struct Requester {
    pid: i32,
    pidfd: Option<std::os::fd::OwnedFd>,
}

fn take_requests() -> Vec<Requester> {
    let mut out = Vec::new();
    for slot in &PENDING {
        let entry = slot.swap(0, Ordering::SeqCst);
        if entry == 0 {
            continue;
        }
        let fd = entry >> 32;
        out.push(Requester {
            pid: (entry & 0xffff_ffff) as i32,
            pidfd: (fd != NO_PIDFD).then(|| {
                // SAFETY: the handler opened this pidfd and stored it here; swapping the slot to 0
                // made us its only owner.
                unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) }
            }),
        });
    }
    out
}

/// The processes waiting for an answer, taken (their pidfds closed): for a process about to
/// re-execute itself, which then answers them by pid ([`answer`]).
#[cfg(feature = "cli")]
pub fn take_requesters() -> Vec<i32> {
    take_requests().into_iter().map(|r| r.pid).collect()
}

/// True when a reload request arrived that no hand-off has answered yet.
pub fn has_pending_requests() -> bool {
    PENDING.iter().any(|s| s.load(Ordering::SeqCst) != 0)
}

/// The fields of a `siginfo_t` for `SI_QUEUE`, laid out as the kernel's: three ints, then the
/// union (pointer-aligned) whose `_rt` member is pid, uid, value.
#[repr(C)]
struct QueuedInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    rt: QueuedFields,
}

/// The `_rt` member of the kernel's `__sifields` union; nested so that it starts where the
/// union does (aligned like a pointer: offset 16 on 64-bit targets, 12 on 32-bit ones).
#[repr(C)]
struct QueuedFields {
    pid: libc::pid_t,
    uid: libc::uid_t,
    value: libc::sigval,
}

const _: () = assert!(
    std::mem::offset_of!(QueuedInfo, rt)
        == if cfg!(target_pointer_width = "64") {
            16
        } else {
            12
        }
);

const _: () = assert!(std::mem::size_of::<QueuedInfo>() <= std::mem::size_of::<libc::siginfo_t>());

fn send_reply(to: &Requester, reply: Reply) -> io::Result<()> {
    let value = libc::sigval {
        sival_ptr: reply.encode() as isize as *mut libc::c_void,
    };
    let signo = reply_signal();
    let rc = match &to.pidfd {
        Some(pidfd) => {
            use std::os::fd::AsRawFd;
            // SAFETY: an all-zero siginfo_t is valid; the queued fields are then written through
            // a struct with the kernel's layout for them (checked to fit above).
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: `info` is a live, writable siginfo_t at least as large as QueuedInfo, and
            // QueuedInfo's alignment (that of a pointer) is not larger than siginfo_t's.
            unsafe {
                std::ptr::write(
                    (&mut info as *mut libc::siginfo_t).cast::<QueuedInfo>(),
                    QueuedInfo {
                        signo,
                        errno: 0,
                        code: libc::SI_QUEUE,
                        rt: QueuedFields {
                            pid: libc::getpid(),
                            uid: libc::getuid(),
                            value,
                        },
                    },
                )
            };
            // SAFETY: pidfd_send_signal(2) with a pidfd we own, a valid signal, a pointer to an
            // initialised siginfo_t that outlives the call, and no flags.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    signo,
                    &info as *const libc::siginfo_t,
                    0,
                )
            }
        }
        // No pidfd (kernel older than 5.3, or a filter forbids it): by pid.
        // SAFETY: sigqueue(3) with a pid, a valid signal and a plain value.
        None => i64::from(unsafe { libc::sigqueue(to.pid, signo, value) }),
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True for a `SIGHUP` queued by `baton reload` (`si_code` `SI_QUEUE`, value
/// [`REQUEST_VALUE`]), as a signalfd reports it.
pub fn is_request(code: i32, value: u64) -> bool {
    code == libc::SI_QUEUE && value == REQUEST_VALUE as u64
}

/// Answer one request directly (by pid): what a supervisor, which holds no hand-off, says.
pub fn answer(requester: i32, reply: Reply) -> io::Result<()> {
    send_reply(
        &Requester {
            pid: requester,
            pidfd: None,
        },
        reply,
    )
}

fn answer_all(reply: Reply) {
    for r in take_requests() {
        match send_reply(&r, reply) {
            Ok(()) => debug!(requester = r.pid, ?reply, "answered a reload request"),
            Err(e) => debug!(requester = r.pid, error = %e, "could not answer a reload request"),
        }
    }
}

/// Record the outcome of a hand-off: write the status file (failures are logged with the path
/// and errno, never fatal) and answer every process that asked for a reload and waits.
pub fn publish(handoff_socket: &Path, status: &ReloadStatus) {
    let written = write_status(handoff_socket, status);
    if let Err(e) = &written {
        match status.outcome {
            Outcome::Ready => warn!(error = %e, "cannot write the reload status"),
            Outcome::Failed => {
                tracing::error!(error = %e, "cannot write the reload status: `baton reload` gets the failure without its reason")
            }
        }
    }
    let reply = match (status.outcome, status.successor_pid) {
        (Outcome::Ready, Some(successor)) => Reply::Ready { successor },
        _ => Reply::Failed {
            unrecorded: written.err().map(|e| e.errno().unwrap_or(libc::EPERM)),
        },
    };
    answer_all(reply);
}

/// Write the status file `reload-status.<parent pid>.json` in the runtime directory.
pub fn write_status(handoff_socket: &Path, status: &ReloadStatus) -> Result<(), FsError> {
    let mut bytes = serde_json::to_vec(status).unwrap_or_default();
    bytes.push(b'\n');
    let dir = TrustedDir::open(&runtime_dir(handoff_socket), Create::Missing)?;
    dir.write_atomically(&status_name(status.parent_pid), &bytes, 0o644)
}

/// While this process retires, answer every reload request with "ask `main`". Stops when dropped.
pub fn forward_requests(main: u32) -> ForwardRequests {
    answer_all(Reply::NotMain { main });
    ForwardRequests(tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        loop {
            every.tick().await;
            answer_all(Reply::NotMain { main });
        }
    }))
}

/// The task started by [`forward_requests`], aborted on drop.
#[derive(Debug)]
pub struct ForwardRequests(tokio::task::JoinHandle<()>);

impl Drop for ForwardRequests {
    fn drop(&mut self) {
        self.0.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// `baton reload`.

#[cfg(feature = "cli")]
pub(crate) mod client;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_roundtrip_and_garbage_is_refused() {
        for r in [
            Reply::Ready { successor: 1 },
            Reply::Ready { successor: PID_MAX },
            Reply::Failed { unrecorded: None },
            Reply::Failed {
                unrecorded: Some(libc::ENOSPC),
            },
            Reply::Failed {
                unrecorded: Some(libc::EROFS),
            },
            Reply::NotMain { main: 1 },
            Reply::NotMain { main: PID_MAX },
        ] {
            assert_eq!(Reply::decode(r.encode()), Some(r), "{r:?}");
        }
        assert_eq!(Reply::decode(i64::from(PID_MAX) + 1), None);
        assert_eq!(Reply::decode(-5000), None);
        assert_eq!(Reply::decode(NOT_MAIN_BASE), None);
        assert_eq!(Reply::decode(i64::MIN), None);
    }

    #[cfg(feature = "cli")]
    #[test]
    fn status_files_are_written_privately_and_read_back() {
        use super::client::{failure_reason, parse_status, read_status};
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("run/handoff.sock");
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
        assert_eq!(read_status(&socket, me).unwrap(), status);
        assert!(failure_reason(&socket, me, None).contains("config /x: bad"));
        assert!(failure_reason(&socket, me, Some(libc::ENOSPC)).contains("No space left"));
        let e = read_status(&socket, me + 1).unwrap_err();
        assert!(e.contains("reload-status."), "{e}");
        let e = parse_status(br#"{"outcome":"x\ny"}"#).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
    }
}
