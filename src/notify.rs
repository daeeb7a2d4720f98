//! Telling systemd what happens, as typed events, through
//! [sd_notify(3)](https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html).
//!
//! With `NOTIFY_SOCKET` unset every call is a silent no-op, so baton runs the same outside
//! systemd. Nothing here changes the environment.

use std::os::fd::AsFd;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

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
    // line and start another assignment.
    let status = match event {
        Event::Ready { status }
        | Event::Reloading { status }
        | Event::Stopping { status }
        | Event::Status { status } => crate::text::one_line(status),
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
    if let Err(e) = sd_notify::notify(&states) {
        debug!(error = %e, ?event, "sd_notify failed");
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
    if let Err(e) =
        sd_notify::notify_with_fds(&[NotifyState::Custom("BARRIER=1")], &[write.as_fd()])
    {
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
