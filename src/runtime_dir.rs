//! baton's runtime directory, in one place: where it is, what baton keeps in it, how it is made
//! safely, and how what dead processes left there is swept away. Specified in
//! `docs/handoff-protocol.md` ("Files baton creates").
//!
//! The **configured** runtime directory is the directory of the hand-off socket path
//! (`--handoff-socket`; by default `$RUNTIME_DIRECTORY`, `$XDG_RUNTIME_DIR/baton` or
//! `<tmp>/baton-<uid>`). baton makes its files in it when it is a private directory of baton's
//! user. When it is a *shared* one — sticky and writable by others, like `/tmp` with the Go
//! article's `/tmp/api.sock` — baton makes its files in its private subdirectory
//! `baton-<uid>/` there instead (made with `mkdir` 0700, checked on the open descriptor; a name
//! another user made first is refused). Its layout:
//!
//! | name | what | made by |
//! | --- | --- | --- |
//! | `handoff.<pid>.<random>/handoff.sock` | one hand-off's socket, in a directory of its own | the parent of that hand-off |
//! | `control.<pid>.<random>` | the control socket `baton reload` asks (passed on from generation to generation; `0600`) | the first generation |
//! | `reload-status.<pid>.json` | the outcome of `<pid>`'s last hand-off | that process |
//! | `supervisor.<pid>.<random>/notify.sock` | a supervisor's private notify socket (swept; made with [`RuntimeDir::create_supervisor_dir`]) | the supervisor |
//! | `run.<pid>.<random>/notify.sock` | the private notify socket of `baton run`'s applications (swept; made with [`RuntimeDir::create_run_dir`]) | `baton run` |
//!
//! Every name carries the pid of the process that made it, so [`RuntimeDir::sweep`] can remove
//! what a process that no longer exists left behind, and never touches anything else.

use std::path::{Path, PathBuf};

use tracing::{debug, info};

use crate::safe_fs::{self, Create, FsError, TrustedDir};

/// Per-hand-off directories: `handoff.<pid>.<random>`.
pub const HANDOFF_DIR_PREFIX: &str = "handoff.";
/// The socket's name inside a per-hand-off directory.
pub const HANDOFF_SOCKET_NAME: &str = "handoff.sock";
/// Status files: `reload-status.<pid>.json`.
pub const STATUS_PREFIX: &str = "reload-status.";
/// Control sockets: `control.<pid>.<random>`.
pub const CONTROL_PREFIX: &str = "control.";
/// A supervisor's private directories: `supervisor.<pid>.<random>`.
pub const SUPERVISOR_DIR_PREFIX: &str = "supervisor.";
/// `baton run`'s private directories: `run.<pid>.<random>`.
pub const RUN_DIR_PREFIX: &str = "run.";
/// The notify socket inside a supervisor's or `baton run`'s private directory.
pub const NOTIFY_SOCKET_NAME: &str = "notify.sock";

/// The most bytes the longest name baton makes adds to the runtime directory:
/// `/handoff.<pid: up to 10 digits>.<6 random>/handoff.sock`. (In a shared directory the
/// private subdirectory `/baton-<uid>` comes on top; the bind then says so if it is too long.)
pub const PATH_SUFFIX_MAX: usize =
    1 + HANDOFF_DIR_PREFIX.len() + 10 + 1 + 6 + 1 + HANDOFF_SOCKET_NAME.len();

/// The configured runtime directory of a hand-off socket path: its directory.
pub fn configured(handoff_socket: &Path) -> PathBuf {
    match handoff_socket.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The name of the private subdirectory of the user `uid` in a shared directory.
pub fn private_name(uid: u32) -> String {
    format!("baton-{uid}")
}

/// The status file of the process `pid`.
pub fn status_name(pid: u32) -> String {
    format!("{STATUS_PREFIX}{pid}.json")
}

/// The runtime directory, open and verified: every operation is relative to its descriptor.
#[derive(Debug)]
pub struct RuntimeDir {
    dir: TrustedDir,
}

impl RuntimeDir {
    /// Open (creating what is missing, 0700) the runtime directory of `handoff_socket` for
    /// baton's own files.
    pub fn open(handoff_socket: &Path) -> Result<RuntimeDir, FsError> {
        let me = nix::unistd::geteuid().as_raw();
        Self::open_as(handoff_socket, Create::Missing, me)
    }

    /// [`Self::open_existing_in`] from this process's own root.
    #[cfg(test)]
    pub fn open_existing(handoff_socket: &Path, owner: u32) -> Result<RuntimeDir, FsError> {
        Self::open_existing_in(None, handoff_socket, owner)
    }

    /// Open the existing runtime directory of `handoff_socket` that belongs to the user `owner`
    /// (what `baton reload`, run as root, uses for a baton of another user), as the process
    /// whose root directory is `root` sees it (`/proc/<pid>/root` for a process in another
    /// mount namespace, such as a container's; `None`: this process's own).
    pub fn open_existing_in(
        root: Option<&Path>,
        handoff_socket: &Path,
        owner: u32,
    ) -> Result<RuntimeDir, FsError> {
        let dir = TrustedDir::open_private_in(
            root,
            &configured(handoff_socket),
            Create::Never,
            owner,
            &private_name(owner),
        )?;
        Ok(RuntimeDir { dir })
    }

    fn open_as(handoff_socket: &Path, create: Create, owner: u32) -> Result<RuntimeDir, FsError> {
        let dir = TrustedDir::open_private_for(
            &configured(handoff_socket),
            create,
            owner,
            &private_name(owner),
        )?;
        Ok(RuntimeDir { dir })
    }

    /// The verified directory.
    #[cfg(test)]
    pub fn dir(&self) -> &TrustedDir {
        &self.dir
    }

    /// `name` in the runtime directory, for messages and for other processes.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A new private directory for one hand-off of this process: `handoff.<pid>.<random>/`.
    pub fn create_handoff_dir(&self) -> Result<(TrustedDir, String), FsError> {
        self.dir
            .create_unique_dir(&format!("{HANDOFF_DIR_PREFIX}{}.", std::process::id()))
    }

    /// A new private directory for a supervisor's notify socket: `supervisor.<pid>.<random>/`.
    pub fn create_supervisor_dir(&self) -> Result<(TrustedDir, String), FsError> {
        self.dir
            .create_unique_dir(&format!("{SUPERVISOR_DIR_PREFIX}{}.", std::process::id()))
    }

    /// A new private directory for `baton run`'s notify socket: `run.<pid>.<random>/`.
    #[cfg(feature = "cli")]
    pub fn create_run_dir(&self) -> Result<(TrustedDir, String), FsError> {
        self.dir
            .create_unique_dir(&format!("{RUN_DIR_PREFIX}{}.", std::process::id()))
    }

    /// Remove the directory `name` made by [`Self::create_handoff_dir`],
    /// [`Self::create_supervisor_dir`] or [`Self::create_run_dir`] with the socket in it.
    pub fn remove_private_dir(&self, dir: &TrustedDir, name: &str) -> Result<(), FsError> {
        let _ = dir.remove_file(HANDOFF_SOCKET_NAME);
        let _ = dir.remove_file(NOTIFY_SOCKET_NAME);
        self.dir.remove_dir(name)
    }

    /// Bind a new control socket `control.<pid>.<random>` (`0600`), through the directory's
    /// descriptor; a stale one nobody listens on any more is removed first.
    pub fn bind_control(&self) -> Result<(std::os::unix::net::UnixListener, PathBuf), FsError> {
        self.sweep_control();
        for _ in 0..16 {
            let name = format!(
                "{CONTROL_PREFIX}{}.{}",
                std::process::id(),
                safe_fs::random_suffix()
            );
            match std::os::unix::net::UnixListener::bind(self.dir.fd_path(&name)) {
                Ok(listener) => {
                    self.dir.set_mode(&name, 0o600)?;
                    return Ok((listener, self.join(&name)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(source) => {
                    return Err(FsError::Io {
                        path: self.join(&name),
                        op: "listen on",
                        source,
                    })
                }
            }
        }
        Err(FsError::Unsafe {
            path: self.join(&format!("{CONTROL_PREFIX}*")),
            problem: "no free name after 16 attempts".into(),
        })
    }

    /// The control sockets here.
    pub fn control_names(&self) -> Vec<String> {
        let names: Vec<String> = self.dir.names().unwrap_or_default();
        let mut names: Vec<String> = names
            .into_iter()
            .filter(|n| n.starts_with(CONTROL_PREFIX))
            .collect();
        names.sort();
        names
    }

    /// The directory's owner (the service's user).
    pub fn owner(&self) -> u32 {
        self.dir.owner()
    }

    /// A path that reaches `name` through this process's descriptor of the directory.
    pub fn fd_path(&self, name: &str) -> PathBuf {
        self.dir.fd_path(name)
    }

    /// Remove the control socket `name` (at a real stop of the service).
    pub fn remove_control(&self, name: &str) {
        if name.starts_with(CONTROL_PREFIX) {
            let _ = self.dir.remove_file(name);
        }
    }

    /// Remove control sockets nobody listens on (their service stopped without removing them).
    fn sweep_control(&self) {
        for name in self.control_names() {
            if let Err(e) = std::os::unix::net::UnixStream::connect(self.dir.fd_path(&name)) {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    info!(path = %self.join(&name).display(), "removed a control socket nobody listens on");
                    let _ = self.dir.remove_file(&name);
                }
            }
        }
    }

    /// Write the status file of `pid` (exclusive temporary file, `fchmod`, rename).
    pub fn write_status(&self, pid: u32, bytes: &[u8]) -> Result<(), FsError> {
        self.dir.write_atomically(&status_name(pid), bytes, 0o644)
    }

    /// Read the status file of `pid`, only if the user `owner` owns it (at most 64 KiB).
    #[cfg(test)]
    pub fn read_status(&self, pid: u32, owner: u32) -> Result<Vec<u8>, FsError> {
        self.dir
            .read_regular(&status_name(pid), 64 * 1024, |uid| uid == owner)
    }

    /// Remove what processes that no longer exist left here (the hand-off or supervisor
    /// directory or status file of a process that was killed): only names of baton's making
    /// whose pid is gone.
    pub fn sweep(&self) {
        let Ok(names) = self.dir.names() else { return };
        let me = std::process::id();
        let gone = |pid: u32| pid != me && safe_fs::pid_is_gone(pid);
        for name in names {
            let dir_pid = safe_fs::owner_pid(&name, HANDOFF_DIR_PREFIX)
                .or_else(|| safe_fs::owner_pid(&name, SUPERVISOR_DIR_PREFIX))
                .or_else(|| safe_fs::owner_pid(&name, RUN_DIR_PREFIX));
            if let Some(pid) = dir_pid.filter(|p| gone(*p)) {
                let removed = match self.dir.subdir(&name) {
                    Ok(sub) => self.remove_private_dir(&sub, &name),
                    Err(e) => Err(e),
                };
                match removed {
                    Ok(()) => info!(path = %self.join(&name).display(), pid,
                                    "removed a directory left by a process that is gone"),
                    Err(e) => debug!(error = %e, "cannot remove a stale directory"),
                }
            } else if let Some(pid) = safe_fs::owner_pid(&name, STATUS_PREFIX) {
                if gone(pid) && name.ends_with(".json") {
                    let _ = self.dir.remove_file(&name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A shared directory like `/tmp` (mode 1777) in a scratch directory.
    fn sticky_shared() -> (tempfile::TempDir, std::path::PathBuf) {
        let (tmp, shared) = crate::test_util::temp_path("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        (tmp, shared)
    }

    #[test]
    fn a_shared_sticky_directory_gets_a_private_subdirectory() {
        let (tmp, shared) = sticky_shared();
        let rt = RuntimeDir::open(&shared.join("api.sock")).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let private = shared.join(private_name(me));
        assert_eq!(rt.join("x"), private.join("x"));
        assert_eq!(std::fs::metadata(&private).unwrap().mode() & 0o7777, 0o700);
        // Not sticky: refused as before.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(RuntimeDir::open(&shared.join("api.sock")).is_err());
        // A private directory is used as it is.
        let own = tmp.path().join("own");
        let rt = RuntimeDir::open(&own.join("h.sock")).unwrap();
        assert_eq!(rt.join("x"), own.join("x"));
    }

    #[test]
    fn a_symlink_or_an_open_directory_in_place_of_the_private_one_is_refused() {
        let (tmp, shared) = sticky_shared();
        let me = nix::unistd::geteuid().as_raw();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, shared.join(private_name(me))).unwrap();
        let e = RuntimeDir::open(&shared.join("api.sock"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a symlink"), "{e}");
        std::fs::remove_file(shared.join(private_name(me))).unwrap();
        std::fs::create_dir(shared.join(private_name(me))).unwrap();
        std::fs::set_permissions(
            shared.join(private_name(me)),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let e = RuntimeDir::open(&shared.join("api.sock"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not private"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn stale_directories_of_dead_processes_are_swept_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = RuntimeDir::open(&tmp.path().join("h.sock")).unwrap();
        // 4194305 is above the kernel's largest pid: never alive.
        std::fs::create_dir(tmp.path().join("handoff.4194305.abcdef")).unwrap();
        std::fs::create_dir(tmp.path().join("supervisor.4194305.abcdef")).unwrap();
        std::fs::create_dir(tmp.path().join("run.4194305.abcdef")).unwrap();
        std::fs::write(tmp.path().join("reload-status.4194305.json"), "{}").unwrap();
        let live = format!("handoff.{}.abcdef", std::process::id());
        std::fs::create_dir(tmp.path().join("handoff.1.abcdef")).unwrap(); // pid 1 lives
        std::fs::create_dir(tmp.path().join(&live)).unwrap();
        std::fs::write(tmp.path().join("unrelated"), "x").unwrap();
        rt.sweep();
        let mut left: Vec<String> = rt.dir().names().unwrap();
        left.sort();
        assert_eq!(
            left,
            vec!["handoff.1.abcdef".to_string(), live, "unrelated".into()]
        );
    }
}
