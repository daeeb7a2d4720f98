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
    use nix::sys::stat::SFlag;
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

    /// `nobody`, a real account of the machine other than root, to own files in the tests of
    /// ownership: giving a file away needs root. Not root, the test fails (CI runs as root),
    /// unless `BATON_TESTS_ALLOW_SKIP=1` lets it print a `SKIPPED:` line and return, as the
    /// integration tests' prerequisites do.
    fn other_user(what: &str) -> Option<(u32, String)> {
        if !crate::test_util::root_for(what) {
            return None;
        }
        let user = nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("the account nobody (Debian has it)");
        Some((user.uid.as_raw(), user.name))
    }

    fn give(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), None).unwrap();
    }

    fn mkdir(path: &Path, mode: u32) -> PathBuf {
        std::fs::create_dir(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.to_owned()
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn close_on_exec(fd: &impl std::os::fd::AsRawFd) -> bool {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn errors_keep_the_os_errno_and_users_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let e = TrustedDir::open(&tmp.path().join("missing"), Create::Never).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::ENOENT), "{e}");
        std::fs::write(tmp.path().join("file"), "x").unwrap();
        let e = TrustedDir::open(&tmp.path().join("file"), Create::Never).unwrap_err();
        assert_eq!(e.errno(), None, "a refusal is no OS error: {e}");
        assert_eq!(describe_uid(0), "uid 0 (root)");
        let free = (4_000_000_000u32..)
            .find(|&u| {
                matches!(
                    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u)),
                    Ok(None)
                )
            })
            .unwrap();
        assert_eq!(describe_uid(free), format!("uid {free}"));
    }

    #[test]
    fn a_path_splits_into_its_directory_and_a_plain_file_name() {
        let split = |p: &Path| {
            split_file(p)
                .map(|(d, n)| (d.display().to_string(), n))
                .map_err(|e| e.to_string())
        };
        let ok = |d: &str, n: &str| Ok((d.to_owned(), n.to_owned()));
        assert_eq!(split(Path::new("/run/baton.pid")), ok("/run", "baton.pid"));
        assert_eq!(split(Path::new("run/baton.pid")), ok("run", "baton.pid"));
        assert_eq!(split(Path::new("baton.pid")), ok(".", "baton.pid"));
        assert_eq!(split(Path::new("/baton.pid")), ok("/", "baton.pid"));
        use std::os::unix::ffi::OsStrExt;
        let not_utf8 = Path::new(std::ffi::OsStr::from_bytes(b"/run/\xff.pid"));
        for bad in [
            Path::new(""),
            Path::new("/"),
            Path::new(".."),
            Path::new("run/.."),
            not_utf8,
        ] {
            let e = split(bad).unwrap_err();
            assert!(
                e.ends_with(": does not end in a plain UTF-8 file name"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn random_suffixes_are_six_characters_nobody_can_predict() {
        let all: Vec<String> = (0..64).map(|_| random_suffix()).collect();
        for s in &all {
            assert_eq!(s.len(), 6, "{s}");
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "{s}"
            );
        }
        let distinct: std::collections::HashSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
        // Every position changes, the last ones too: names made from the clock (the fallback
        // should getrandom fail) take their last characters from the slow bits of the time,
        // which stay the same for seconds.
        for i in 0..6 {
            let seen: std::collections::HashSet<u8> = all.iter().map(|s| s.as_bytes()[i]).collect();
            assert!(seen.len() > 1, "character {i} never changes: {all:?}");
        }
        // The whole alphabet is drawn from, not a part of it.
        let chars: std::collections::HashSet<u8> = all.iter().flat_map(|s| s.bytes()).collect();
        assert!(chars.len() > 20, "only {} characters: {all:?}", chars.len());
    }

    #[test]
    fn only_a_plain_decimal_pid_after_the_prefix_is_an_owner() {
        assert_eq!(owner_pid("handoff.12.sock", "handoff."), Some(12));
        assert_eq!(
            owner_pid("handoff.4294967295.x", "handoff."),
            Some(u32::MAX)
        );
        for name in [
            "handoff.+12.x",
            "handoff.-1.x",
            "handoff..x",
            "handoff.12",
            "handoff.1 2.x",
            "handoff.4294967296.x",
            "run.12.x",
        ] {
            assert_eq!(owner_pid(name, "handoff."), None, "{name}");
        }
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(pid_is_gone(pid_max), "no process can have pid {pid_max}");
        assert!(!pid_is_gone(std::process::id()));
        assert!(!pid_is_gone(0), "0 is no process");
        assert!(!pid_is_gone(u32::MAX), "beyond any pid");
        assert_eq!(
            sockaddr_len(Path::new("/run/b\u{e9}")),
            8,
            "bytes, not characters"
        );
    }

    #[test]
    fn every_kind_of_file_is_named_where_a_directory_was_expected() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        let _socket = std::os::unix::net::UnixListener::bind(p.join("socket")).unwrap();
        nix::unistd::mkfifo(&p.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(p.join("file"), "x").unwrap();
        for (name, kind) in [
            ("socket", "a socket"),
            ("fifo", "a FIFO"),
            ("file", "a regular file"),
        ] {
            let e = TrustedDir::open(&p.join(name), Create::Never)
                .unwrap_err()
                .to_string();
            assert!(
                e.ends_with(&format!("/{name}: is {kind}, not a directory")),
                "{e}"
            );
        }
        let e = TrustedDir::open(Path::new("/dev/null"), Create::Never)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "/dev/null: is a character device, not a directory");
        let e = open_regular_for_reading(p).unwrap_err().to_string();
        assert!(e.ends_with(": is a directory, not a regular file"), "{e}");
        // And what is read is not inherited by the programs baton starts.
        assert!(close_on_exec(
            &open_regular_for_reading(&p.join("file")).unwrap()
        ));
        if other_user("making a block device").is_none() {
            return;
        }
        nix::sys::stat::mknod(
            &p.join("block"),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(7, 0),
        )
        .unwrap();
        let e = TrustedDir::open(&p.join("block"), Create::Never)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("/block: is a block device, not a directory"),
            "{e}"
        );
    }

    #[test]
    fn a_directory_of_another_user_is_neither_on_the_way_nor_the_place_for_our_files() {
        let Some((other, name)) = other_user("giving a directory to another user") else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let theirs = mkdir(&tmp.path().join("theirs"), 0o755);
        let inside = mkdir(&theirs.join("inside"), 0o700);
        give(&theirs, other);
        give(&inside, other);
        let e = TrustedDir::open(&inside, Create::Never)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "{}: owned by uid {other} ({name}), neither root nor baton's user (uid 0 \
                 (root)): another user controls this path",
                theirs.display()
            )
        );
        let e = TrustedDir::open(&theirs, Create::Never)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "{}: owned by uid {other} ({name}), not by baton's user (uid 0 (root)); \
                 refusing to create files in it",
                theirs.display()
            )
        );
        // For that user, root's directories on the way and its own are fine, ours are not its.
        let d = TrustedDir::open_for(&inside, Create::Never, other).unwrap();
        assert_eq!(d.path(), inside);
        assert_eq!(d.owner(), other);
        let e = TrustedDir::open_for(tmp.path(), Create::Never, other)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(&format!(
                ": owned by uid 0 (root), not by baton's user (uid {other} ({name})); refusing \
                 to create files in it"
            )),
            "{e}"
        );
        // In a shared directory, the private name another user made first is refused.
        let shared = mkdir(&tmp.path().join("shared"), 0o1777);
        let taken = mkdir(&shared.join("baton-0"), 0o700);
        give(&taken, other);
        let e = TrustedDir::open_private_for(&shared, Create::Missing, 0, "baton-0")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "{}: owned by uid {other} ({name}), not by baton's user (uid 0 (root)): another \
                 user made this name first; refusing to create files in it",
                taken.display()
            )
        );
    }

    #[test]
    fn a_symlink_on_the_way_is_followed_only_when_root_or_the_user_owns_it() {
        let Some((other, name)) = other_user("giving a symlink to another user") else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        mkdir(&p.join("ours"), 0o700);
        std::os::unix::fs::symlink("ours", p.join("their-link")).unwrap();
        give(&p.join("their-link"), other);
        let e = TrustedDir::open(&p.join("their-link"), Create::Never)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "{}: is a symlink owned by uid {other} ({name}): another user controls where \
                 it points",
                p.join("their-link").display()
            )
        );
        // For that user: root's symlink and its own lead to its directory.
        let its = mkdir(&p.join("its"), 0o700);
        give(&its, other);
        std::os::unix::fs::symlink("its", p.join("root-link")).unwrap();
        std::os::unix::fs::symlink("its", p.join("own-link")).unwrap();
        give(&p.join("own-link"), other);
        for link in ["root-link", "own-link"] {
            let d = TrustedDir::open_for(&p.join(link), Create::Never, other).unwrap();
            assert_eq!(d.path(), its, "{link}");
        }
    }

    #[test]
    fn forty_symlinks_in_a_row_are_followed_and_a_forty_first_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        mkdir(&p.join("real"), 0o700);
        for i in 1..=40 {
            let to = if i == 40 {
                "real".to_owned()
            } else {
                format!("s{}", i + 1)
            };
            std::os::unix::fs::symlink(to, p.join(format!("s{i}"))).unwrap();
        }
        let d = TrustedDir::open(&p.join("s1"), Create::Never).unwrap();
        assert_eq!(d.path(), p.join("real"));
        std::os::unix::fs::symlink("s1", p.join("s0")).unwrap();
        let e = TrustedDir::open(&p.join("s0"), Create::Never)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("/s0: too many symlinks"), "{e}");
    }

    #[test]
    fn dot_dot_at_the_root_stays_at_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let below = tmp.path().strip_prefix("/").unwrap();
        for up in ["/..", "/../.."] {
            let d = TrustedDir::open(&Path::new(up).join(below), Create::Never).unwrap();
            assert_eq!(d.path(), tmp.path(), "{up}");
        }
    }

    #[test]
    fn a_shared_directory_gets_a_private_subdirectory_and_any_other_is_used_itself() {
        let me = nix::unistd::geteuid().as_raw();
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        let shared = mkdir(&p.join("shared"), 0o1777);
        let e = TrustedDir::open_private_for(&shared, Create::Never, me, "baton-x").unwrap_err();
        assert_eq!(e.errno(), Some(Errno::ENOENT), "{e}");
        assert!(
            !shared.join("baton-x").exists(),
            "made without Create::Missing"
        );
        let d = TrustedDir::open_private_for(&shared, Create::Missing, me, "baton-x").unwrap();
        assert_eq!(d.path(), shared.join("baton-x"));
        assert_eq!(mode_of(&shared.join("baton-x")), 0o700);
        let d = TrustedDir::open_private_for(&shared, Create::Never, me, "baton-x").unwrap();
        assert_eq!(d.path(), shared.join("baton-x"));
        // Not shared: the directory itself, with nothing made in it.
        for (name, mode) in [("private", 0o700), ("sticky", 0o1700), ("readable", 0o755)] {
            let dir = mkdir(&p.join(name), mode);
            let d = TrustedDir::open_private_for(&dir, Create::Missing, me, "baton-x").unwrap();
            assert_eq!(d.path(), dir, "{name}");
            assert_eq!(d.names().unwrap(), Vec::<String>::new(), "{name}");
        }
        // Writable by others without the sticky bit: refused as the place for our files.
        let open = mkdir(&p.join("open"), 0o777);
        let e = TrustedDir::open_private_for(&open, Create::Missing, me, "baton-x")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "{}: writable by others (mode 0777); refusing to create files in it",
                open.display()
            )
        );
        assert!(!open.join("baton-x").exists());
        // In the shared directory, a name that is not a private directory of ours is refused
        // and nothing is made through it.
        let wide = mkdir(&shared.join("wide"), 0o755);
        let e = TrustedDir::open_private_for(&shared, Create::Missing, me, "wide")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "{}: has mode 0755, not private (0700); refusing to create files in it",
                wide.display()
            )
        );
        let target = mkdir(&p.join("target"), 0o700);
        std::os::unix::fs::symlink(&target, shared.join("link")).unwrap();
        std::fs::write(shared.join("file"), "x").unwrap();
        for (name, kind) in [("link", "a symlink"), ("file", "a regular file")] {
            let e = TrustedDir::open_private_for(&shared, Create::Missing, me, name)
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!(
                    "{}: is {kind} owned by {}, not a private directory of baton's user ({}); \
                     refusing to use it",
                    shared.join(name).display(),
                    describe_uid(me),
                    describe_uid(me)
                )
            );
        }
        assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    }

    #[test]
    fn another_root_is_where_the_walk_starts_and_where_absolute_symlinks_lead() {
        let me = nix::unistd::geteuid().as_raw();
        let tmp = tempfile::tempdir().unwrap();
        let root = mkdir(&tmp.path().join("root"), 0o755);
        mkdir(&root.join("run"), 0o755);
        let baton = mkdir(&root.join("run/baton"), 0o700);
        std::os::unix::fs::symlink("/run", root.join("var-run")).unwrap();
        let d = TrustedDir::open_private_in(
            Some(&root),
            Path::new("/var-run/baton"),
            Create::Never,
            me,
            "x",
        )
        .unwrap();
        assert_eq!(d.path(), baton);
        // A root that is no directory is refused, not walked from.
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let e = TrustedDir::open_private_in(Some(&file), Path::new("/"), Create::Never, me, "x")
            .unwrap_err();
        assert_eq!(e.errno(), Some(Errno::ENOTDIR), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("{}: cannot open", file.display())),
            "{e}"
        );
    }

    #[test]
    fn modes_are_set_and_entries_removed_in_the_directory_never_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        let d = TrustedDir::open(p, Create::Never).unwrap();
        d.write_atomically("f", b"x", 0o600).unwrap();
        d.set_mode("f", 0o640).unwrap();
        assert_eq!(mode_of(&p.join("f")), 0o640);
        let victim = p.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&victim, p.join("l")).unwrap();
        let e = d.set_mode("l", 0o666).unwrap_err().to_string();
        assert!(e.ends_with("/l: is a symlink"), "{e}");
        assert_eq!(mode_of(&victim), 0o600);
        d.remove_file("f").unwrap();
        assert!(!p.join("f").exists());
        assert_eq!(d.remove_file("f").unwrap_err().errno(), Some(Errno::ENOENT));
        d.remove_file("l").unwrap();
        assert!(p.join("l").symlink_metadata().is_err() && victim.exists());
        mkdir(&p.join("sub"), 0o700);
        d.remove_dir("sub").unwrap();
        assert!(!p.join("sub").exists());
        assert_eq!(
            d.remove_dir("sub").unwrap_err().errno(),
            Some(Errno::ENOENT)
        );
    }
}
