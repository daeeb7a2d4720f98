//! Starting the successor: the executable path recorded at start, the same arguments, a cleaned
//! environment, the listeners at fds 3, 4, … and nothing else inherited. See
//! [`docs/handoff-protocol.md`](../../docs/handoff-protocol.md), "Environment of the child".

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg};

use super::protocol::{GENERATION_ENV, PREDECESSOR_ENV};

/// How this process was started, recorded once at start (before any package upgrade could
/// replace the binary on disk).
#[derive(Debug, Clone)]
pub struct Executable {
    /// The binary's path on disk.
    pub path: PathBuf,
    /// The arguments after argv\[0\].
    pub args: Vec<OsString>,
}

impl Executable {
    /// Record the running binary's path and arguments. `/proc/self/exe` is resolved now; a
    /// " (deleted)" suffix (the binary was replaced before we started) is stripped so the path on
    /// disk, i.e. the new binary, is what a successor runs.
    pub fn current() -> io::Result<Executable> {
        let exe = std::env::current_exe()?;
        Ok(Executable {
            path: strip_deleted(&exe),
            args: std::env::args_os().skip(1).collect(),
        })
    }
}

/// `/usr/bin/baton (deleted)` → `/usr/bin/baton`.
pub fn strip_deleted(path: &Path) -> PathBuf {
    let bytes = path.as_os_str().as_bytes();
    match bytes.strip_suffix(b" (deleted)") {
        Some(rest) => PathBuf::from(std::ffi::OsStr::from_bytes(rest)),
        None => path.to_owned(),
    }
}

/// Variables never passed to a successor.
const STRIPPED_ENV: [&str; 4] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_PID"];

/// Start the successor with `listeners` at fds 3, 4, … in order.
pub fn spawn_successor(
    exe: &Executable,
    listeners: &[impl AsFd],
    predecessor_socket: &Path,
    generation: u64,
) -> io::Result<tokio::process::Child> {
    // Duplicate every listener above the target range first, so placing one never overwrites
    // another still to be placed (and so dup2 never sees the same source and target, which would
    // leave FD_CLOEXEC set).
    let first_free = 3 + listeners.len() as RawFd;
    let staged: Vec<OwnedFd> = listeners
        .iter()
        .map(|l| {
            let raw = fcntl(l.as_fd().as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(first_free))?;
            // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor; nothing else owns it.
            Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) })
        })
        .collect::<nix::Result<_>>()?;
    let sources: Vec<RawFd> = staged.iter().map(AsRawFd::as_raw_fd).collect();

    let mut cmd = tokio::process::Command::new(&exe.path);
    cmd.args(&exe.args)
        .env(PREDECESSOR_ENV, predecessor_socket)
        .env(GENERATION_ENV, generation.to_string())
        .kill_on_drop(false);
    for var in STRIPPED_ENV {
        cmd.env_remove(var);
    }
    // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe
    // functions (dup2, signal); it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            for (i, src) in sources.iter().enumerate() {
                // dup2 onto a different number clears FD_CLOEXEC on the target: exactly these
                // descriptors survive exec.
                if libc::dup2(*src, 3 + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // A reload request before the successor installed its handler must not kill it.
            if libc::signal(libc::SIGHUP, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(staged);
    child
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_suffix_is_stripped() {
        assert_eq!(
            strip_deleted(Path::new("/usr/bin/baton (deleted)")),
            Path::new("/usr/bin/baton")
        );
        assert_eq!(
            strip_deleted(Path::new("/usr/bin/baton")),
            Path::new("/usr/bin/baton")
        );
    }
}
