//! The supervisor's loop: one thread, no runtime, waiting in `poll(2)` on a signalfd and the
//! private notify socket. Signals are forwarded (`SIGHUP` to the main generation, `SIGTERM` and
//! `SIGINT` to every generation), notifications of the main generation passed on upwards, and
//! every child that ends is reaped.

use std::collections::BTreeSet;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use super::notify_socket::{PrivateSocket, Received};
use super::procfs::{descendants, has_exited, is_descendant, process_table};
use super::tracker::{ended, Change, Tracker};

/// Whether children are left after reaping.
#[derive(Debug, PartialEq, Eq)]
enum Left {
    Some,
    None,
}

/// The supervisor, once set up ([`Supervisor::start`]).
pub(super) struct Supervisor {
    pub(super) me: u32,
    pub(super) tracker: Tracker,
    pub(super) signals: SignalFd,
    pub(super) notify: PrivateSocket,
    /// Every generation pid we learned (generation 0, `MAINPID=` targets, adopted), until reaped.
    pub(super) known: BTreeSet<u32>,
    /// `/proc` shows our PID namespace (so parent links can be checked).
    pub(super) proc_is_ours: bool,
    /// A stop was forwarded: no more reloads.
    pub(super) stopping: bool,
    /// We have a service manager of our own to pass notifications on to.
    pub(super) upward: bool,
    /// Notifications dropped since our manager's socket was last found full.
    pub(super) dropped: u64,
}

impl Supervisor {
    /// Run until no child is left; returns the exit code.
    pub(super) fn run(&mut self) -> u8 {
        loop {
            self.read_notifications();
            self.read_signals();
            // MAINPID= of a generation is heard before the exit of the one that sent it.
            self.read_notifications();
            if self.reap() == Left::None {
                return self.tracker.exit_code();
            }
            let mut fds = [
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.notify.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    // Should never happen; do not spin.
                    error!(error = %e, "poll failed");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
    }

    fn read_signals(&mut self) {
        loop {
            let info = match self.signals.read_signal() {
                Ok(Some(info)) => info,
                Ok(None) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    error!(error = %e, "reading signals failed");
                    return;
                }
            };
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGHUP) => self.reload(),
                Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) => self.stop(sig),
                _ => {} // SIGCHLD: reaped after this
            }
        }
    }

    fn reload(&self) {
        if self.stopping {
            info!("SIGHUP while stopping: dropped");
            return;
        }
        match self.tracker.main() {
            // Killed while its predecessor drains, the main generation is that predecessor's
            // zombie until the predecessor exits and we reap it: a signal would go nowhere.
            Some(main) if self.proc_is_ours && has_exited(main) => warn!(
                main,
                "SIGHUP: the main generation has exited (its exit status comes when its draining predecessor ends); dropped"
            ),
            Some(main) if self.ours(main) => {
                match signal::kill(Pid::from_raw(main as i32), Signal::SIGHUP) {
                    Ok(()) => info!(main, "SIGHUP: forwarded to the main generation"),
                    Err(e) => {
                        warn!(main, error = %e, "SIGHUP: cannot forward to the main generation")
                    }
                }
            }
            _ => warn!("SIGHUP: no main generation is running; dropped"),
        }
    }

    fn stop(&mut self, sig: Signal) {
        self.stopping = true;
        let targets = self.generations();
        for &pid in &targets {
            if let Err(e) = signal::kill(Pid::from_raw(pid as i32), sig) {
                debug!(pid, error = %e, "cannot forward the stop signal");
            }
        }
        info!(signal = %sig, generations = ?targets, "stopping: forwarded to every generation");
    }

    /// Every process below us, as systemd's `KillMode=control-group` reaches every process of the
    /// unit: the main generation, retired ones still draining, a successor in flight (its parent
    /// stops the hand-off anyway). Without a `/proc` of our own: the generations we know.
    fn generations(&self) -> BTreeSet<u32> {
        if self.proc_is_ours {
            descendants(self.me, &process_table())
        } else {
            self.known.clone()
        }
    }

    fn ours(&self, pid: u32) -> bool {
        !self.proc_is_ours || is_descendant(pid, self.me)
    }

    fn read_notifications(&mut self) {
        let me_uid = nix::unistd::geteuid().as_raw();
        while let Some(received) = self.notify.receive() {
            match received {
                Received::Datagram { pid, uid, text } if uid == me_uid || uid == 0 => {
                    self.heard(pid, &text)
                }
                Received::Datagram { pid, .. } => {
                    debug!(pid, "notification from another user: ignored")
                }
                Received::Unusable { why } => debug!(why, "notification ignored"),
            }
        }
    }

    fn heard(&mut self, pid: u32, text: &str) {
        let me = self.me;
        let proc_is_ours = self.proc_is_ours;
        let heard = self
            .tracker
            .hear(pid, text, |p| !proc_is_ours || is_descendant(p, me));
        match &heard.change {
            Some(Change::HandedOver { from, to }) => {
                self.known.insert(*to);
                info!(from, to, "main generation handed over");
            }
            Some(Change::Adopted(to)) => {
                self.known.insert(*to);
                info!(
                    main = to,
                    "a generation serving on without a predecessor is now main"
                );
            }
            Some(Change::TakenBack(to)) => {
                self.known.insert(*to);
                info!(
                    main = to,
                    "the hand-off failed after MAINPID= of the successor: the generation that announced it is main again"
                );
            }
            Some(Change::Refused { from, named }) => {
                warn!(from, named = %named, "MAINPID= does not name a process of ours: ignored");
            }
            None => {}
        }
        if heard.forward.is_empty() {
            if heard.change.is_none() && self.tracker.main() != Some(pid) {
                debug!(pid, text = %text.trim_end(), "notification from a process that is not main: ignored");
            }
            return;
        }
        if self.upward {
            self.pass_on(&heard.forward);
        }
    }

    /// Tell our own service manager, never waiting for it: while its socket is full,
    /// notifications are dropped (one line when that begins, one when it ends).
    fn pass_on(&mut self, lines: &[String]) {
        match crate::notify::forward(lines) {
            Ok(()) if self.dropped > 0 => {
                info!(
                    dropped = self.dropped,
                    "the service manager reads its notify socket again"
                );
                self.dropped = 0;
            }
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if self.dropped == 0 {
                    warn!(lines = ?lines, "the service manager's notify socket is full: dropping notifications until it reads again");
                }
                self.dropped += 1;
            }
            Err(e) => debug!(error = %e, "cannot pass a notification on"),
        }
    }

    /// Reap every child that ended.
    fn reap(&mut self) -> Left {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return Left::Some,
                Ok(status) => {
                    let Some((pid, code)) = ended(status) else {
                        continue;
                    };
                    let was_main = self.tracker.main() == Some(pid);
                    let generation = self.known.remove(&pid);
                    self.tracker.ended(pid, code);
                    if was_main {
                        info!(pid, code, "the main generation exited");
                    } else if generation {
                        info!(pid, code, "a generation exited");
                    } else {
                        debug!(pid, code, "reaped");
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => return Left::None,
                Err(e) => {
                    error!(error = %e, "waitpid failed");
                    return Left::None;
                }
            }
        }
    }
}
