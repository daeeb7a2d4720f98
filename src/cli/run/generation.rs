//! A generation: one COMMAND started with the listeners, its environment, its readiness
//! deadline, and its retirement (the stop signal, then SIGKILL on its group after the grace).

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::options::Ready;
use super::{state, Service};
use crate::exit;
use crate::handoff::spawn::{self, Child};
use crate::listen::Listener;

/// The exit code a status stands for: its code, or 128 + the signal that ended it.
pub(super) fn code_of(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(sig)) => 128u8.saturating_add(sig as u8),
        (None, None) => exit::OSERR,
    }
}

/// A running COMMAND.
#[derive(Debug)]
pub(super) struct Generation {
    pub(super) number: u64,
    pub(super) pid: u32,
    pub(super) child: Child,
}

/// A generation on its way to ready.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) generation: Generation,
    /// Stopped unless ready by then.
    pub(super) deadline: Instant,
    /// `--ready=delay:…`: ready at this instant if still running.
    pub(super) ready_at: Option<Instant>,
    /// Whether it is the first generation (no reload to report).
    pub(super) first: bool,
}

/// What a retiring generation's task returns.
#[derive(Debug)]
pub(super) struct Retired {
    pub(super) number: u64,
    pub(super) pid: u32,
    /// It was the serving generation when baton was asked to stop.
    pub(super) last: bool,
    pub(super) status: io::Result<ExitStatus>,
}

/// Why a COMMAND could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start {command}: {source}")]
pub(super) struct SpawnError {
    pub(super) command: String,
    pub(super) source: io::Error,
}

impl SpawnError {
    pub(super) fn exit_code(&self) -> u8 {
        match self.source.kind() {
            io::ErrorKind::NotFound => exit::CONFIG,
            io::ErrorKind::PermissionDenied => exit::NOPERM,
            _ => exit::OSERR,
        }
    }
}

impl Service {
    pub(super) fn command_line(&self) -> String {
        self.options
            .command
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Start the next generation.
    pub(super) fn spawn(&mut self) -> Result<Generation, SpawnError> {
        let number = self.next_generation;
        self.next_generation += 1;
        let error = |source: io::Error| SpawnError {
            command: self.command_line(),
            source,
        };
        let program = find_program(&self.options.command[0]).map_err(error)?;
        let env = self.child_env(number).map_err(error)?;
        let sockets: Vec<_> = self.listeners.iter().map(|l| &l.socket).collect();
        let child = spawn::spawn_app(
            &program,
            &self.options.command,
            env,
            &sockets,
            self.options.stop_signal as i32,
        )
        .map_err(error)?;
        let pid = child.id();
        info!(generation = number, pid, command = %self.command_line(), "started generation {number} (pid {pid})");
        Ok(Generation { number, pid, child })
    }

    pub(super) fn set_pending(&mut self, generation: Generation, first: bool) {
        let now = Instant::now();
        self.pending = Some(Pending {
            generation,
            deadline: now + self.options.ready_timeout,
            ready_at: match self.options.ready {
                Ready::Notify => None,
                Ready::Delay(d) => Some(now + d),
            },
            first,
        });
    }

    /// The environment of a COMMAND: ours, without what was meant for baton, with the listeners
    /// and the private notify socket (`LISTEN_PID` is added by the spawn, in the child).
    fn child_env(&self, number: u64) -> io::Result<Vec<std::ffi::CString>> {
        const DROPPED: [&str; 6] = [
            "LISTEN_PID",
            "LISTEN_FDS",
            "LISTEN_FDNAMES",
            "NOTIFY_SOCKET",
            "WATCHDOG_PID",
            "WATCHDOG_USEC",
        ];
        let names: Vec<String> = self.listeners.iter().map(fd_name).collect();
        let (count, names, number) = (
            self.listeners.len().to_string(),
            names.join(":"),
            number.to_string(),
        );
        spawn::environment(
            |key| DROPPED.iter().any(|d| d.as_bytes() == key) || key == state::STATE_ENV.as_bytes(),
            &[
                ("LISTEN_FDS", count.as_ref()),
                ("LISTEN_FDNAMES", names.as_ref()),
                ("NOTIFY_SOCKET", self.notify.path().as_os_str()),
                ("BATON_RUN_GENERATION", number.as_ref()),
            ],
        )
    }

    /// Send a generation its stop signal and reap it after the grace period (SIGKILL on its
    /// group then).
    pub(super) fn retire(&mut self, g: Generation, last: bool) {
        let sig = self.options.stop_signal;
        if let Err(e) = kill(Pid::from_raw(g.pid as i32), sig) {
            debug!(pid = g.pid, error = %e, "cannot send the stop signal");
        }
        info!(generation = g.number, pid = g.pid, signal = %sig, "generation {} (pid {}) stopping", g.number, g.pid);
        let grace = self.options.grace;
        self.retire_adopted(g.child, g.number, grace, last);
    }

    pub(super) fn retire_adopted(
        &mut self,
        mut child: Child,
        number: u64,
        kill_in: Duration,
        last: bool,
    ) {
        let pid = child.id();
        let kill_at = Instant::now() + kill_in;
        self.retiring_pids.insert(pid, (number, kill_at));
        self.retiring.spawn(async move {
            let status = match tokio::time::timeout_at(kill_at, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    warn!(
                        generation = number,
                        pid, "still running after the grace period: SIGKILL"
                    );
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            Retired {
                number,
                pid,
                last,
                status,
            }
        });
    }

    pub(super) fn retired(&mut self, r: Retired) {
        self.retiring_pids.remove(&r.pid);
        match &r.status {
            Ok(st) => info!(
                generation = r.number,
                pid = r.pid,
                code = code_of(*st),
                "generation {} (pid {}) exited",
                r.number,
                r.pid
            ),
            Err(e) => warn!(generation = r.number, pid = r.pid, error = %e, "cannot reap"),
        }
        if r.last {
            if let (Some(code), Ok(st)) = (&mut self.stopping, &r.status) {
                *code = code_of(*st);
            }
        }
    }
}

/// `pid` is the generation led by `leader` or a process of its group.
pub(super) fn belongs_to(pid: u32, leader: u32) -> bool {
    pid == leader
        || nix::unistd::getpgid(Some(Pid::from_raw(pid as i32)))
            .is_ok_and(|g| g.as_raw() as u32 == leader)
}

/// The `LISTEN_FDNAMES` entry of a listener: its socket-activation name, else its address with
/// the characters a name cannot hold (`:`) replaced by `_`.
pub(super) fn fd_name(l: &Listener) -> String {
    let raw = if l.source == crate::listen::Source::Systemd {
        l.name.clone()
    } else {
        l.spec.to_string()
    };
    raw.chars()
        .map(|c| {
            if c == ':' || !c.is_ascii_graphic() {
                '_'
            } else {
                c
            }
        })
        .take(255)
        .collect()
}

/// The program to execute: a name with a `/` as it is, else the first executable in `PATH`
/// (looked up at every start: a package upgrade may move it).
fn find_program(name: &OsString) -> io::Result<PathBuf> {
    let name_bytes = name.as_bytes();
    if name_bytes.contains(&b'/') {
        return Ok(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            && candidate.is_file()
        {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found in PATH", Path::new(name).display()),
    ))
}

pub(super) async fn wait(g: Option<&mut Generation>) -> io::Result<ExitStatus> {
    match g {
        Some(g) => g.child.wait().await,
        None => std::future::pending().await,
    }
}
