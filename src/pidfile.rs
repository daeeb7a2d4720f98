//! The PID file of the process serving as main: written atomically (exclusive temporary file +
//! rename, in a directory checked by [`crate::safe_fs`]) so a reader never sees a partial pid,
//! removed on a real stop only if it still names us.
//!
//! On a full file system (no block or no inode for the temporary file) the existing file is
//! overwritten in place, which needs neither; if even that fails, a file that names another pid
//! is removed rather than left naming a process that is about to exit. Whatever fails is
//! returned with the path and errno, for the caller to log: the PID file never goes stale
//! silently.

use std::io;
use std::path::Path;

use nix::errno::Errno;

use crate::safe_fs::{self, Create, FsError, TrustedDir};

/// Write `pid` to `path` atomically. The directory must exist, be ours and not writable by others.
pub fn write(path: &Path, pid: u32) -> Result<(), FsError> {
    let (dir, name) = safe_fs::split_file(path)?;
    let dir = TrustedDir::open(&dir, Create::Never)?;
    dir.write_atomically(&name, format!("{pid}\n").as_bytes(), 0o644)
}

/// Check, before anything is bound, that a PID file can be written at `path`: its directory
/// exists, passes the rules of [`crate::safe_fs`] (ours, not writable by others — `/tmp` itself
/// is refused) and is writable by us (not on a read-only file system). A server asked for a PID
/// file refuses to start without one, as nginx does, rather than run on unseen by whoever reads
/// the file.
///
/// When the PID file is in `runtime_dir` (the hand-off socket's directory, baton's own), that
/// directory is created (0700) if missing, as a hand-off would create it; with `create` false
/// (`baton check`, which changes nothing) a missing runtime directory is fine.
pub fn check_writable(path: &Path, runtime_dir: &Path, create: bool) -> Result<(), FsError> {
    let (dir, _) = safe_fs::split_file(path)?;
    // `baton check` run by root for a service of another user (the packaged unit's `baton`
    // user owns /run/baton): the directory must be safe for its owner, who will write there.
    if !create && nix::unistd::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() && meta.uid() != 0 => {
                return TrustedDir::open_for(&dir, Create::Never, meta.uid()).map(drop);
            }
            _ => {}
        }
    }
    let ours = dir == runtime_dir;
    let how = if ours && create {
        Create::Missing
    } else {
        Create::Never
    };
    let trusted = match TrustedDir::open(&dir, how) {
        Err(e) if ours && !create && e.errno() == Some(Errno::ENOENT) => return Ok(()),
        opened => opened?,
    };
    nix::unistd::access(&trusted.fd_path("."), nix::unistd::AccessFlags::W_OK).map_err(|e| {
        FsError::Io {
            path: dir,
            op: "write in",
            source: e.into(),
        }
    })
}

/// Make `path` name `pid` by whatever still works (see the module documentation). `Err` when the
/// file does not name `pid` afterwards.
pub fn update(path: &Path, pid: u32) -> Result<(), FsError> {
    let error = match write(path, pid) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let Ok((dir, name)) = safe_fs::split_file(path) else {
        return Err(error);
    };
    let Ok(dir) = TrustedDir::open(&dir, Create::Never) else {
        return Err(error);
    };
    if matches!(error.errno(), Some(Errno::ENOSPC | Errno::EDQUOT)) {
        match dir.rewrite_in_place(&name, format!("{pid}\n").as_bytes()) {
            Ok(()) => {
                tracing::warn!(error = %error, "pid file rewritten in place instead");
                return Ok(());
            }
            Err(e) => tracing::debug!(error = %e, "cannot rewrite the pid file in place"),
        }
    }
    // It names someone else (our predecessor, about to exit): better no file than a stale pid.
    if read(path).ok().is_some_and(|named| named != pid) {
        if let Err(e) = dir.remove_file(&name) {
            tracing::debug!(error = %e, "cannot remove the stale pid file");
        }
    }
    Err(error)
}

/// The pid in `path`, if it holds one (a regular file, not a FIFO; at most 64 bytes).
pub fn read(path: &Path) -> io::Result<u32> {
    use std::io::Read;
    let file = safe_fs::open_regular_for_reading(path).map_err(|e| match e {
        FsError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    })?;
    let mut text = String::new();
    file.take(64).read_to_string(&mut text)?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} does not hold a pid: {:?}", path.display(), text.trim()),
        )
    })
}

/// Remove `path` if it still names `pid` (a successor may have replaced it).
pub fn remove_if_ours(path: &Path, pid: u32) {
    if read(path).ok() != Some(pid) {
        return;
    }
    let removed = safe_fs::split_file(path).and_then(|(dir, name)| {
        TrustedDir::open(&dir, Create::Never).and_then(|d| d.remove_file(&name))
    });
    if let Err(e) = removed {
        tracing::warn!(error = %e, "cannot remove the pid file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_atomically_and_removed_only_if_ours() {
        let (dir, p) = crate::test_util::temp_path("baton.pid");
        write(&p, 42).unwrap();
        assert_eq!(read(&p).unwrap(), 42);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        update(&p, 43).unwrap();
        assert_eq!(read(&p).unwrap(), 43);
        remove_if_ours(&p, 41);
        assert!(p.exists());
        remove_if_ours(&p, 43);
        assert!(!p.exists());
        std::fs::write(&p, "garbage").unwrap();
        assert!(read(&p)
            .unwrap_err()
            .to_string()
            .contains("does not hold a pid"));
    }

    #[test]
    fn a_pid_file_in_a_directory_of_others_is_refused() {
        let (dir, shared) = crate::test_util::temp_path("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let e = update(&shared.join("baton.pid"), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("writable by others"), "{e}");
        let rt = dir.path().join("rt");
        let e = check_writable(&shared.join("baton.pid"), &rt, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("writable by others"), "{e}");
        check_writable(&dir.path().join("baton.pid"), &rt, true).unwrap();
        let e = check_writable(&dir.path().join("missing/baton.pid"), &rt, true).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::ENOENT), "{e}");
        // In the runtime directory: `check` accepts it missing, a start creates it.
        check_writable(&rt.join("baton.pid"), &rt, false).unwrap();
        assert!(!rt.exists());
        check_writable(&rt.join("baton.pid"), &rt, true).unwrap();
        assert!(rt.is_dir());
    }
}
