//! The files baton creates or changes — the hand-off socket and its directory, the reload status
//! file, the PID file and their temporaries — made without trusting any path another local user
//! controls.
//!
//! [`TrustedDir::open`] walks a directory path one component at a time from `/` (or the working
//! directory), never following a symlink it has not checked, and keeps the directory open:
//! every later operation is relative to that descriptor (`openat`, `mkdirat`, `renameat`,
//! `unlinkat`, and `bind` through `/proc/self/fd/N/…`), so nothing can be swapped in behind it.
//!
//! The rules, in `docs/handoff-protocol.md` ("Files baton creates"):
//! * every directory on the way is owned by root or by us, and is not writable by others unless
//!   it has the sticky bit (like `/tmp`, where others cannot rename or remove what is ours);
//! * a symlink on the way is followed only when root or we own it (it sits in a directory that
//!   passed the rule above, so nobody else can change it);
//! * the directory itself is owned by us and not writable by group or others;
//! * files are created with `O_CREAT|O_EXCL|O_NOFOLLOW` under unpredictable names and
//!   `renameat` into place; their mode is set with `fchmod` on the open descriptor.

mod names;
mod read;
mod rules;
mod trusted_dir;

use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

pub(crate) use names::random_suffix;
pub use names::{owner_pid, pid_is_gone, sockaddr_len, split_file, MAX_SOCKET_PATH};
pub use read::open_regular_for_reading;
pub(crate) use rules::file_type;
pub use trusted_dir::TrustedDir;

/// Why a path or a file could not be used. Every message names the path; OS errors keep their
/// errno text (`No space left on device (os error 28)`).
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The path is not safe: someone else could change what it points to.
    #[error("{path}: {problem}")]
    Unsafe {
        /// The offending directory, symlink or file.
        path: PathBuf,
        /// What is wrong with it, naming its owner or mode.
        problem: String,
    },
    /// An operation failed.
    #[error("{path}: cannot {op}: {source}")]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// What was attempted (`create`, `write`, `rename over`, …).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

impl FsError {
    /// The errno of an OS failure, if that is what it was.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            FsError::Io { source, .. } => source.raw_os_error().map(Errno::from_raw),
            FsError::Unsafe { .. } => None,
        }
    }

    fn io(path: &Path, op: &'static str, e: impl Into<io::Error>) -> FsError {
        FsError::Io {
            path: path.to_owned(),
            op,
            source: e.into(),
        }
    }

    fn refused(path: &Path, problem: String) -> FsError {
        FsError::Unsafe {
            path: path.to_owned(),
            problem,
        }
    }
}

/// Whether [`TrustedDir::open`] creates missing directories (mode 0700).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Create every missing component, 0700.
    Missing,
    /// The directory must exist.
    Never,
}

/// `name (uid N)` or `uid N` for messages.
pub fn describe_uid(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("uid {uid} ({})", user.name),
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::names::*;
    use super::read::*;
    use super::*;
    use nix::sys::stat::Mode;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn creates_private_directories_and_refuses_shared_ones() {
        let (tmp, dir) = crate::test_util::temp_path("a/b");
        let d = TrustedDir::open(&dir, Create::Missing).unwrap();
        assert_eq!(d.path(), dir);
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = TrustedDir::open(&dir, Create::Never)
            .unwrap_err()
            .to_string();
        assert!(e.contains("writable by others (mode 0777)"), "{e}");
        // As an ancestor, a sticky world-writable directory (like /tmp) is fine.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        TrustedDir::open(&dir.join("c"), Create::Missing).unwrap();
        // As an ancestor, a world-writable one without the sticky bit is not.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = TrustedDir::open(&dir.join("c"), Create::Never)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not sticky"), "{e}");
        assert!(TrustedDir::open(&tmp.path().join("missing"), Create::Never).is_err());
    }

    #[test]
    fn follows_our_own_symlinks_and_resolves_dot_dot() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", tmp.path().join("rel")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("real"), tmp.path().join("abs")).unwrap();
        for p in ["rel", "abs", "real/../rel", "abs/."] {
            let d = TrustedDir::open(&tmp.path().join(p), Create::Never).unwrap();
            assert!(d.path().ends_with("real"), "{p}: {}", d.path().display());
        }
        std::fs::write(tmp.path().join("file"), "x").unwrap();
        let e = TrustedDir::open(&tmp.path().join("file"), Create::Never)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a regular file, not a directory"), "{e}");
        std::os::unix::fs::symlink("loop", tmp.path().join("loop")).unwrap();
        assert!(TrustedDir::open(&tmp.path().join("loop"), Create::Never)
            .unwrap_err()
            .to_string()
            .contains("too many symlinks"));
    }

    #[test]
    fn files_are_written_atomically_exclusively_and_never_through_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let d = TrustedDir::open(tmp.path(), Create::Never).unwrap();
        d.write_atomically("f", b"one", 0o644).unwrap();
        d.write_atomically("f", b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("f")).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(tmp.path().join("f")).unwrap().mode() & 0o777,
            0o644
        );
        assert_eq!(
            d.names().unwrap(),
            vec!["f".to_string()],
            "no temporary left"
        );
        d.rewrite_in_place("f", b"3\n").unwrap();
        assert_eq!(d.read_regular("f", 10, |_| true).unwrap(), b"3\n");
        assert!(d.read_regular("f", 1, |_| true).is_err());
        // A symlink in place of a file is neither read nor written through.
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, tmp.path().join("l")).unwrap();
        assert!(d
            .read_regular("l", 100, |_| true)
            .unwrap_err()
            .to_string()
            .contains("symlink"));
        assert!(d.rewrite_in_place("l", b"x").is_err());
        d.write_atomically("l", b"new", 0o600).unwrap(); // replaces the link itself
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // A hard link is not rewritten in place.
        std::fs::hard_link(&victim, tmp.path().join("h")).unwrap();
        assert!(d
            .rewrite_in_place("h", b"x")
            .unwrap_err()
            .to_string()
            .contains("links"));
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn unique_directories_and_names() {
        let tmp = tempfile::tempdir().unwrap();
        let d = TrustedDir::open(tmp.path(), Create::Never).unwrap();
        let (a, an) = d.create_unique_dir("handoff.1.").unwrap();
        let (_b, bn) = d.create_unique_dir("handoff.1.").unwrap();
        assert_ne!(an, bn);
        assert_eq!(owner_pid(&an, "handoff."), Some(1));
        assert_eq!(owner_pid("handoff.x.y", "handoff."), None);
        assert_eq!(
            owner_pid("reload-status.12.json", "reload-status."),
            Some(12)
        );
        assert_eq!(a.path(), tmp.path().join(&an));
        assert!(a.fd_path("s").starts_with("/proc/self/fd/"));
        assert!(!pid_is_gone(std::process::id()));
    }

    #[test]
    fn only_regular_files_are_read_as_config() {
        let (tmp, fifo) = crate::test_util::temp_path("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let e = open_regular_for_reading(&fifo).unwrap_err().to_string();
        assert!(e.contains("is a FIFO, not a regular file"), "{e}");
        let e = open_regular_for_reading(tmp.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = open_regular_for_reading(Path::new("/dev/null"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("character device"), "{e}");
    }
}
