//! Setting the supervisor up: becoming a subreaper, taking the socket-activated listeners meant
//! for generation 0, routing the signals to a signalfd, making the private notify socket, and
//! starting generation 0 through the hand-off's own spawn ([`crate::handoff::spawn`]: the same
//! environment rules, `SIGHUP` ignored across exec, nothing else inherited).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::fd::RawFd;
use std::path::Path;

use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tracing::info;

use crate::handoff::spawn::{self, Executable};
use crate::listen::activation::ActivationEnv;

use super::event_loop::Supervisor;
use super::notify_socket::PrivateSocket;
use super::procfs::proc_is_ours;
use super::tracker::Tracker;
use super::{setup, SuperviseError, Why, SUPERVISOR_ENV};

/// Variables generation 0 never gets from the supervisor's environment.
const STRIPPED_ENV: [&str; 1] = ["WATCHDOG_PID"];
/// The socket-activation variables, passed on only with the descriptors they describe.
const ACTIVATION_ENV: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

impl Supervisor {
    /// Set up and start generation 0.
    pub(super) fn start(handoff_socket: &Path, why: Why) -> Result<Supervisor, SuperviseError> {
        let me = std::process::id();
        if why != Why::Pid1 {
            nix::sys::prctl::set_child_subreaper(true)
                .map_err(|e| setup("PR_SET_CHILD_SUBREAPER")(e.into()))?;
        }
        let exe = Executable::current().map_err(setup("cannot find the running executable"))?;

        // Descriptors a service manager or container runtime passed to us go to generation 0.
        // Only listening sockets are taken, before the supervisor opens descriptors of its own:
        // it must never hand over, or close, one of those.
        let activation = ActivationEnv::from_process();
        let for_us = activation
            .listen_pid
            .as_deref()
            .and_then(|p| p.trim().parse::<u32>().ok())
            == Some(me);
        let passed: Vec<RawFd> = if for_us {
            activation
                .parse(me)
                .map(|fds| {
                    fds.into_iter()
                        .map(|f| f.fd)
                        .filter(|&fd| is_listening(fd))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };

        // SIGCHLD must not be ignored, or children would be reaped by the kernel behind our back.
        // SAFETY: installs the default disposition, no handler; nothing else runs yet.
        unsafe { signal::signal(Signal::SIGCHLD, signal::SigHandler::SigDfl) }
            .map_err(|e| setup("SIGCHLD")(e.into()))?;
        let mut mask = SigSet::empty();
        for s in [
            Signal::SIGHUP,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGCHLD,
        ] {
            mask.add(s);
        }
        let mut old_mask = SigSet::empty();
        signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), Some(&mut old_mask))
            .map_err(|e| setup("sigprocmask")(e.into()))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| setup("signalfd")(e.into()))?;

        let notify = PrivateSocket::open(handoff_socket)?;

        let watchdog_for_us = crate::notify::watchdog_interval().is_some();
        let removed = |key: &[u8]| {
            STRIPPED_ENV.iter().any(|s| s.as_bytes() == key)
                || (!watchdog_for_us && key == b"WATCHDOG_USEC")
                || (!for_us && ACTIVATION_ENV.iter().any(|s| s.as_bytes() == key))
        };
        let me_text = me.to_string();
        let envp = spawn::environment(
            removed,
            &[
                (SUPERVISOR_ENV, OsStr::new(&me_text)),
                ("NOTIFY_SOCKET", notify.path().as_os_str()),
            ],
        )
        .map_err(setup("cannot prepare generation 0's environment"))?;
        // Each passed descriptor stays at its number; the child starts with the signal mask we
        // were started with, not ours.
        let fds: Vec<(RawFd, RawFd)> = passed.iter().map(|&fd| (fd, fd)).collect();
        let first = spawn::start(&exe, &envp, &fds, old_mask.as_ref()).map_err(|source| {
            SuperviseError::Spawn {
                exe: exe.path.clone(),
                source,
            }
        })?;
        // The supervisor holds no listener.
        for fd in passed {
            let _ = nix::unistd::close(fd);
        }
        // Reaped through waitpid(-1) by the loop.
        info!(
            generation0 = first,
            exe = %exe.path.display(),
            notify_socket = %notify.path().display(),
            why = match why { Why::Pid1 => "PID 1", Why::Asked => "asked" },
            "supervising: generation 0 started"
        );
        Ok(Supervisor {
            me,
            tracker: Tracker::new(first),
            signals,
            notify,
            known: BTreeSet::from([first]),
            proc_is_ours: proc_is_ours(me),
            stopping: false,
            upward: crate::notify::enabled(),
            dropped: 0,
        })
    }
}

/// `fd` is an open, listening socket.
fn is_listening(fd: RawFd) -> bool {
    // libc: nix's getsockopt (it has SO_ACCEPTCONN) takes a descriptor known to be open; this
    // probes a bare number that may not be.
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt on a plain descriptor number writes at most `len` bytes into `value`;
    // a number that is not an open socket only yields EBADF or ENOTSOCK.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0 && value != 0
}
