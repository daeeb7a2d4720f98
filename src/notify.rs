//! Telling systemd what happens, as typed events, through
//! [sd_notify(3)](https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html).
//!
//! With `NOTIFY_SOCKET` unset every call is a silent no-op, so baton runs the same outside
//! systemd. Nothing here changes the environment.
//!
//! No send waits for long: a notification waits at most a quarter of a second for room in the
//! manager's socket (a supervisor passing one on, not at all); a manager that does not drain its
//! socket loses notifications (the caller logs it), it never stalls the process. Every `STATUS=` is one line, escaped, and
//! at most [`MAX_STATUS`] bytes, so a datagram always fits the 4 KiB a service manager reads
//! whole (systemd drops a longer one, `READY=1` with it).

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use sd_notify::NotifyState;
use tracing::debug;

/// The most bytes of a `STATUS=` value; a longer one keeps its beginning and its end around
/// an ellipsis.
pub const MAX_STATUS: usize = 1024;

/// `status` as one line (control characters escaped), at most `max` bytes: a longer one keeps
/// its beginning and its end (where baton puts the generation and the open connections) around
/// `…`.
pub fn bounded(status: &str, max: usize) -> String {
    let line = crate::text::one_line(status);
    if line.len() <= max {
        return line;
    }
    const ELLIPSIS: &str = "…";
    let room = max.saturating_sub(ELLIPSIS.len());
    let mut head = room * 3 / 4;
    while !line.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = line.len() - (room - head);
    while !line.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}{ELLIPSIS}{}", &line[..head], &line[tail..])
}

/// What baton tells the service manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Serving (at start, as a promoted successor, or after a failed reload): `READY=1` + `STATUS=`.
    Ready {
        /// Human-readable state.
        status: String,
    },
    /// A reload began: `RELOADING=1` + `MONOTONIC_USEC=` + `STATUS=`.
    Reloading {
        /// Human-readable state.
        status: String,
    },
    /// The unit's main process is now `pid`: `MAINPID=`.
    MainPid(u32),
    /// A real stop began: `STOPPING=1` + `STATUS=`.
    Stopping {
        /// Human-readable state.
        status: String,
    },
    /// Keep-alive ping for `WatchdogSec=`: `WATCHDOG=1`.
    Watchdog,
    /// A new human-readable state while serving: `STATUS=`.
    Status {
        /// Human-readable state.
        status: String,
    },
}

/// Send `event`. Failures are logged at debug level: a missing or full notify socket must never
/// take the server down.
pub fn send(event: &Event) {
    // A status may quote what a peer or a file said: a newline in it would end the `STATUS=`
    // line and start another assignment; a long one would make the datagram too long to read.
    let status = match event {
        Event::Ready { status }
        | Event::Reloading { status }
        | Event::Stopping { status }
        | Event::Status { status } => bounded(status, MAX_STATUS),
        Event::MainPid(_) | Event::Watchdog => String::new(),
    };
    let monotonic;
    let states: Vec<NotifyState<'_>> = match event {
        Event::Ready { .. } => vec![NotifyState::Ready, NotifyState::Status(&status)],
        Event::Reloading { .. } => {
            monotonic = NotifyState::monotonic_usec_now().ok();
            let mut v = vec![NotifyState::Reloading];
            v.extend(monotonic);
            v.push(NotifyState::Status(&status));
            v
        }
        Event::MainPid(pid) => vec![NotifyState::MainPid(*pid)],
        Event::Stopping { .. } => vec![NotifyState::Stopping, NotifyState::Status(&status)],
        Event::Watchdog => vec![NotifyState::Watchdog],
        Event::Status { .. } => vec![NotifyState::Status(&status)],
    };
    if let Err(e) = send_states(&states) {
        debug!(error = %e, ?event, "sd_notify failed");
    }
}

/// How long baton's own notifications may wait for room in the manager's socket (a burst, or a
/// manager busy for a moment) before they are dropped: never longer, so a manager that stopped
/// reading never stalls the process. A supervisor passing notifications on waits not at all.
const PATIENCE: Duration = Duration::from_millis(250);

/// The states as one datagram to `NOTIFY_SOCKET`, waiting at most [`PATIENCE`] for room: a full
/// socket is then [`io::ErrorKind::WouldBlock`]. Ok without a notify socket.
fn send_states(states: &[NotifyState<'_>]) -> io::Result<()> {
    let text: String = states.iter().map(|s| format!("{s}\n")).collect();
    send_datagram(text.as_bytes(), &[], PATIENCE)
}

/// `bytes` (and `fds`) as one datagram to `NOTIFY_SOCKET`, never waiting longer than `patience`
/// for room in its queue.
fn send_datagram(
    bytes: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
    patience: Duration,
) -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    send_to(std::path::Path::new(&path), bytes, fds, patience)
}

/// [`send_datagram`] to the socket at `path`.
fn send_to(
    path: &std::path::Path,
    bytes: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
    patience: Duration,
) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    // Connected, so that poll(POLLOUT) tells when the manager's queue has room again.
    socket.connect(path)?;
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let iov = [io::IoSlice::new(bytes)];
    let deadline = std::time::Instant::now() + patience;
    loop {
        match sendmsg::<UnixAddr>(
            socket.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(sent) if sent == bytes.len() => return Ok(()),
            Ok(_) => return Err(io::Error::new(io::ErrorKind::WriteZero, "incomplete write")),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(io::Error::from(io::ErrorKind::WouldBlock));
                }
                let mut fd = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
                let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
                let _ = poll(&mut fd, PollTimeout::from(ms));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// True when a notify socket is configured.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|v| !v.is_empty())
}

/// Wait until the service manager processed every message sent so far (`BARRIER=1`, as
/// sd_notify_barrier(3) does): send the write end of a fresh pipe, close ours, wait for EOF.
/// Returns false on timeout or error (the caller goes on; it only loses the guarantee).
pub async fn barrier(timeout: Duration) -> bool {
    if !enabled() {
        return true;
    }
    let Ok((read, write)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        return false;
    };
    if let Err(e) = send_datagram(b"BARRIER=1\n", &[write.as_fd()], PATIENCE) {
        debug!(error = %e, "BARRIER=1 failed");
        return false;
    }
    drop(write);
    // The read end becomes ready (hang-up) once systemd closed its copy: wait for that on the
    // runtime's own poller rather than on a blocking thread, which would cost a thread start on
    // the hand-off's critical path.
    // SAFETY: the AsyncFd owns the descriptor (an OwnedFd) for as long as it is registered.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(read, tokio::io::Interest::READABLE)
    };
    let Ok(read) = registered else {
        return false;
    };
    matches!(
        tokio::time::timeout(timeout, read.readable()).await,
        Ok(Ok(_))
    )
}

/// The watchdog interval meant for this process, if any (`WATCHDOG_USEC`, and `WATCHDOG_PID`
/// absent or ours). See [sd_watchdog_enabled(3)](https://www.freedesktop.org/software/systemd/man/latest/sd_watchdog_enabled.html).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Pass `lines` (`NAME=value` each) on as one notification: what a supervisor tells its own
/// service manager of what its main generation said (a `STATUS=` bounded as baton's own). A
/// no-op without a notify socket; never waits: a full socket is [`io::ErrorKind::WouldBlock`].
pub fn forward(lines: &[String]) -> io::Result<()> {
    let mut text = String::new();
    for line in lines {
        match line.strip_prefix("STATUS=") {
            Some(status) => text.push_str(&format!("STATUS={}", bounded(status, MAX_STATUS))),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    send_datagram(text.as_bytes(), &[], Duration::ZERO)
}

/// One datagram read from a private notify socket, as systemd reads its own: the sender's
/// credentials from `SCM_CREDENTIALS` (the socket has `SO_PASSCRED`), and whether it was longer
/// than the buffer. Descriptors that came with it are closed (`BARRIER=1` sends a pipe: closing
/// it is the answer).
pub(crate) struct Received {
    /// Bytes read into the buffer.
    pub bytes: usize,
    /// The sender's pid and uid, when the kernel attached them.
    pub sender: Option<(u32, u32)>,
    /// Longer than the buffer: cut (systemd drops such a datagram whole).
    pub truncated: bool,
}

/// Read one datagram from the notify socket `fd` into `buf` without waiting (see [`Received`]).
/// `EAGAIN` when none is queued.
pub(crate) fn receive(fd: std::os::fd::RawFd, buf: &mut [u8]) -> nix::Result<Received> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, UnixCredentials};
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(UnixCredentials, [std::os::fd::RawFd; 16]);
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut sender = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::ScmCredentials(cred) => {
                    sender = Some((cred.pid() as u32, cred.uid()));
                }
                ControlMessageOwned::ScmRights(fds) => {
                    for fd in fds {
                        let _ = nix::unistd::close(fd);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Received {
        bytes: msg.bytes,
        sender,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_manager_socket_costs_at_most_the_patience_then_room_is_used_at_once() {
        let (_dir, path) = crate::test_util::temp_path("manager.sock");
        let manager = UnixDatagram::bind(&path).unwrap();
        let mut queued = 0;
        while send_to(&path, b"STATUS=x\n", &[], Duration::ZERO).is_ok() {
            queued += 1;
            assert!(queued < 100_000);
        }
        let t = std::time::Instant::now();
        let e = send_to(&path, b"READY=1\n", &[], Duration::from_millis(100)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // Room made while a sender waits is used.
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut buf = [0u8; 64];
            manager.recv(&mut buf).unwrap();
            manager
        });
        send_to(&path, b"READY=1\n", &[], Duration::from_secs(5)).unwrap();
        drop(reader.join().unwrap());
    }

    #[test]
    fn a_long_status_keeps_its_beginning_and_end_one_line_within_the_bound() {
        let long = format!(
            "serving on {}; generation 3",
            "unix:/run/x.sock (config), ".repeat(200)
        );
        let b = bounded(&long, MAX_STATUS);
        assert!(b.len() <= MAX_STATUS, "{}", b.len());
        assert!(b.starts_with("serving on unix:/run/x.sock"));
        assert!(b.ends_with("; generation 3"), "{b}");
        assert!(b.contains('…'));
        let reason = format!("reload failed: {}\nSTATUS=forged\u{85}", "é".repeat(3000));
        let b = bounded(&reason, 100);
        assert!(b.len() <= 100, "{}", b.len());
        assert!(
            !b.contains('\n') && !b.chars().any(char::is_control),
            "{b:?}"
        );
        assert_eq!(bounded("short", MAX_STATUS), "short");
        for max in 0..12 {
            assert!(bounded("ééééééééééééééé", max).len() <= max.max(3));
        }
    }

    /// The split: three quarters of the room (the bound less the ellipsis) for the beginning,
    /// the rest for the end, each cut back to a whole character (never past the bound).
    #[test]
    fn a_long_status_keeps_three_quarters_of_the_room_for_its_beginning() {
        let digits = "0123456789".repeat(50);
        // Room 97: 72 bytes of the beginning, 25 of the end.
        assert_eq!(
            bounded(&digits, 100),
            format!("{}…{}", &digits[..72], &digits[digits.len() - 25..])
        );
        // Room 98 over two-byte characters: three quarters (73) is inside a character, so the
        // beginning ends at 72 (36 characters) and the end takes the 26 bytes left.
        assert_eq!(
            bounded(&"é".repeat(1000), 101),
            format!("{}…{}", "é".repeat(36), "é".repeat(13))
        );
    }
}
