//! The rules a walk applies to each directory and symlink on the way (see the module docs), and
//! the descriptors it starts from.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path};

use nix::fcntl::{self, OFlag};
use nix::sys::stat::{self, FileStat, Mode, SFlag};

use super::{describe_uid, FsError};

/// How many symlinks one walk may follow (as the kernel's `MAXSYMLINKS`).
pub(super) const MAX_SYMLINKS: usize = 40;

pub(super) fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open/openat in this module and is owned by
    // nothing else; wrapping it makes sure it is closed exactly once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

pub(super) fn open_dir_fd(at: Option<RawFd>, name: &OsStr) -> nix::Result<OwnedFd> {
    fcntl::openat(
        at,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(own)
}

pub(super) fn open_root(me: u32) -> Result<OwnedFd, FsError> {
    let root = Path::new("/");
    let fd = open_dir_fd(None, OsStr::new("/")).map_err(|e| FsError::io(root, "open", e))?;
    let st = stat::fstat(fd.as_raw_fd()).map_err(|e| FsError::io(root, "inspect", e))?;
    check_ancestor(root, &st, me)?;
    Ok(fd)
}

/// Open `root` (following it: it may be the magic link `/proc/<pid>/root`) as the start of a walk.
pub(super) fn open_root_at(root: &Path, me: u32) -> Result<OwnedFd, FsError> {
    let fd = fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(own)
    .map_err(|e| FsError::io(root, "open", e))?;
    let st = stat::fstat(fd.as_raw_fd()).map_err(|e| FsError::io(root, "inspect", e))?;
    check_ancestor(root, &st, me)?;
    Ok(fd)
}

/// The type bits of a file's mode (`S_IFREG`, `S_IFSOCK`, …).
pub(crate) fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

pub(super) fn kind_of(st: &FileStat) -> &'static str {
    match file_type(st) {
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFLNK => "a symlink",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        _ => "a special file",
    }
}

/// The rule for a directory on the way: root's or ours, not writable by others unless sticky.
pub(super) fn check_ancestor(path: &Path, st: &FileStat, me: u32) -> Result<(), FsError> {
    if st.st_uid != 0 && st.st_uid != me {
        return Err(FsError::refused(
            path,
            format!(
                "owned by {}, neither root nor baton's user ({}): another user controls this path",
                describe_uid(st.st_uid),
                describe_uid(me)
            ),
        ));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(FsError::refused(
            path,
            format!("writable by others (mode {mode:04o}) and not sticky"),
        ));
    }
    Ok(())
}

/// The rule for the directory baton creates files in: ours, not writable by group or others.
pub(super) fn check_final(path: &Path, st: &FileStat, me: u32) -> Result<(), FsError> {
    check_mine(path, st, me, "", 0o022, |mode| {
        format!("writable by others (mode {mode:04o})")
    })
}

/// A directory baton creates files in must be owned by baton's user (`owner_note` says more
/// when it is not) and have none of the `forbidden` mode bits (`mode_problem` says what its
/// mode is then).
pub(super) fn check_mine(
    path: &Path,
    st: &FileStat,
    me: u32,
    owner_note: &str,
    forbidden: u32,
    mode_problem: impl FnOnce(u32) -> String,
) -> Result<(), FsError> {
    let problem = if st.st_uid != me {
        format!(
            "owned by {}, not by baton's user ({}){owner_note}",
            describe_uid(st.st_uid),
            describe_uid(me)
        )
    } else {
        let mode = st.st_mode & 0o7777;
        if mode & forbidden == 0 {
            return Ok(());
        }
        mode_problem(mode)
    };
    Err(FsError::refused(
        path,
        format!("{problem}; refusing to create files in it"),
    ))
}

/// The normal components of `path`, with `..` kept (handled by the walk) and `.` dropped.
pub(super) fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}
