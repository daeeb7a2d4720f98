//! What a `baton run` process passes to itself across an execve of its new binary (after a
//! package upgrade replaced it): one JSON value in `BATON_RUN_STATE`. The descriptors it names
//! (listeners, notify socket, control socket with the connections in its backlog) are inherited as they are; the generations it names are still
//! this process's children (an execve keeps the pid and the children), adopted again with new
//! pidfds. `SIGHUP`, `SIGTERM` and `SIGINT` are blocked across the execve (the mask survives it),
//! so a stop or a reload request that arrives meanwhile waits for the new handlers instead of
//! killing the process with the default action.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use serde::{Deserialize, Serialize};

use super::generation::Generation;
use super::notify_socket::NotifySocket;
use crate::handoff::spawn::{Child, Executable};
use crate::listen::{self, Listener, Origin, Source};

/// The variable that carries the state.
pub const STATE_ENV: &str = "BATON_RUN_STATE";

/// A listener, by descriptor number, with its `LISTEN_FDNAMES` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedListener {
    pub fd: RawFd,
    pub name: String,
    pub spec: String,
}

/// A generation, by pid.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedGeneration {
    pub pid: u32,
    pub number: u64,
    /// Retiring: SIGKILL due in this many milliseconds.
    pub kill_in_ms: Option<u64>,
}

/// Everything the new image needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub listeners: Vec<SavedListener>,
    pub notify_fd: RawFd,
    pub notify_dir: PathBuf,
    pub notify_path: PathBuf,
    pub serving: Option<SavedGeneration>,
    pub retiring: Vec<SavedGeneration>,
    pub next_generation: u64,
    pub reload_requested: u64,
    /// The service's control socket, listening.
    pub control_fd: Option<RawFd>,
}

/// The state, taken over.
pub struct Restored {
    pub listeners: Vec<Listener>,
    pub notify: NotifySocket,
    pub serving: Option<Generation>,
    pub retiring: Vec<(Child, u64, Duration)>,
    pub next_generation: u64,
    pub reload_requested: u64,
    pub control: Option<OwnedFd>,
}

/// The state passed by the previous image, if this process is a re-executed `baton run`.
pub fn take_from_env() -> Result<Option<Saved>, String> {
    match std::env::var(STATE_ENV) {
        Ok(text) if !text.is_empty() => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{STATE_ENV}: {e}")),
        _ => Ok(None),
    }
}

impl Saved {
    /// Take over the descriptors and the children it names.
    pub fn restore(self) -> Result<Restored, String> {
        let mut listeners = Vec::new();
        for l in self.listeners {
            let socket = listen::adopt_listening_fd(l.fd)
                .map_err(|problem| format!("fd {} ({}) {problem}", l.fd, l.name))?;
            let spec = l
                .spec
                .parse()
                .unwrap_or_else(|_| listen::local_spec(&socket));
            // Named as the commands saw it (LISTEN_FDNAMES), whatever its first source was.
            listeners.push(Listener {
                name: l.name,
                spec,
                source: Source::Systemd,
                origin: Origin::Systemd,
                socket,
            });
        }
        check_socket(self.notify_fd)?;
        // SAFETY: the previous image passed this descriptor (checked open just above) for this
        // process to own; nothing else here refers to it.
        let fd = unsafe { OwnedFd::from_raw_fd(self.notify_fd) };
        let notify = NotifySocket::adopt(self.notify_dir, self.notify_path, fd)
            .map_err(|e| format!("notify socket: {e}"))?;
        let control = match self.control_fd {
            Some(fd) => {
                let fd = crate::reload::control::adopt(fd)
                    .map_err(|problem| format!("control socket fd {fd} {problem}"))?;
                // Close-on-exec again: no COMMAND inherits it.
                fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
                    .map_err(|e| format!("control socket: {e}"))?;
                Some(fd)
            }
            None => None,
        };
        Ok(Restored {
            listeners,
            notify,
            serving: self.serving.map(|g| Generation {
                number: g.number,
                pid: g.pid,
                child: Child::adopt(g.pid),
            }),
            retiring: self
                .retiring
                .into_iter()
                .map(|g| {
                    (
                        Child::adopt(g.pid),
                        g.number,
                        Duration::from_millis(g.kill_in_ms.unwrap_or(0)),
                    )
                })
                .collect(),
            next_generation: self.next_generation,
            reload_requested: self.reload_requested,
            control,
        })
    }
}

fn check_socket(fd: RawFd) -> Result<(), String> {
    let stat = nix::sys::stat::fstat(fd).map_err(|e| format!("notify socket fd {fd}: {e}"))?;
    if crate::safe_fs::file_type(&stat) != nix::sys::stat::SFlag::S_IFSOCK {
        return Err(format!("notify socket fd {fd} is not a socket"));
    }
    Ok(())
}

fn blocked() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        set.add(s);
    }
    set
}

/// Unblock what [`exec`] blocked (a no-op in a process that was not re-executed).
pub fn unblock_signals() {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&blocked()), None);
}

/// execve the binary at `exe.path` with the same arguments and the state. Returns the error when
/// it failed (everything is put back as it was).
pub fn exec(exe: &Executable, saved: &Saved) -> io::Error {
    match try_exec(exe, saved) {
        Ok(never) => match never {},
        Err(e) => {
            set_cloexec(saved, true);
            unblock_signals();
            e
        }
    }
}

fn try_exec(exe: &Executable, saved: &Saved) -> io::Result<std::convert::Infallible> {
    let json = serde_json::to_string(saved).map_err(io::Error::other)?;
    let cstring = |b: &[u8]| CString::new(b).map_err(|_| io::Error::other("NUL byte"));
    let program = cstring(exe.path.as_os_str().as_bytes())?;
    let mut argv = vec![program.clone()];
    for a in &exe.args {
        argv.push(cstring(a.as_bytes())?);
    }
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k.as_bytes() == STATE_ENV.as_bytes() {
            continue;
        }
        envp.push(cstring(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
    }
    envp.push(cstring(format!("{STATE_ENV}={json}").as_bytes())?);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked()), None)?;
    set_cloexec(saved, false);
    // Returns only on failure.
    let Err(e) = nix::unistd::execve(&program, &argv, &envp);
    Err(e.into())
}

/// Mark the descriptors the state names close-on-exec (`on`) or inheritable.
fn set_cloexec(saved: &Saved, on: bool) {
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    for fd in saved
        .listeners
        .iter()
        .map(|l| l.fd)
        .chain(std::iter::once(saved.notify_fd))
        .chain(saved.control_fd)
    {
        let _ = fcntl(fd, FcntlArg::F_SETFD(flags));
    }
}
