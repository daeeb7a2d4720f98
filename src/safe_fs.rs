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

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, FileStat, Mode, SFlag};
use nix::unistd::{self, UnlinkatFlags};

/// How many symlinks one walk may follow (as the kernel's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

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
    pub fn errno(&self) -> Option<i32> {
        match self {
            FsError::Io { source, .. } => source.raw_os_error(),
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

/// An open directory that passed the rules of this module. Operations are relative to it.
#[derive(Debug)]
pub struct TrustedDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// `name (uid N)` or `uid N` for messages.
pub fn describe_uid(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("uid {uid} ({})", user.name),
        _ => format!("uid {uid}"),
    }
}

fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open/openat in this module and is owned by
    // nothing else; wrapping it makes sure it is closed exactly once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn open_dir_fd(at: Option<RawFd>, name: &OsStr) -> nix::Result<OwnedFd> {
    fcntl::openat(
        at,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map(own)
}

fn open_root(me: u32) -> Result<OwnedFd, FsError> {
    let root = Path::new("/");
    let fd = open_dir_fd(None, OsStr::new("/")).map_err(|e| FsError::io(root, "open", e))?;
    let st = stat::fstat(fd.as_raw_fd()).map_err(|e| FsError::io(root, "inspect", e))?;
    check_ancestor(root, &st, me)?;
    Ok(fd)
}

/// Open `root` (following it: it may be the magic link `/proc/<pid>/root`) as the start of a walk.
fn open_root_at(root: &Path, me: u32) -> Result<OwnedFd, FsError> {
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

fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn kind_of(st: &FileStat) -> &'static str {
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
fn check_ancestor(path: &Path, st: &FileStat, me: u32) -> Result<(), FsError> {
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
fn check_final(path: &Path, st: &FileStat, me: u32) -> Result<(), FsError> {
    if st.st_uid != me {
        return Err(FsError::refused(
            path,
            format!(
                "owned by {}, not by baton's user ({}); refusing to create files in it",
                describe_uid(st.st_uid),
                describe_uid(me)
            ),
        ));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(FsError::refused(
            path,
            format!("writable by others (mode {mode:04o}); refusing to create files in it"),
        ));
    }
    Ok(())
}

impl TrustedDir {
    /// Open (and with [`Create::Missing`] create, 0700) the directory `path` under the rules of
    /// this module. A relative path starts at the working directory.
    pub fn open(path: &Path, create: Create) -> Result<TrustedDir, FsError> {
        Self::open_for(path, create, unistd::geteuid().as_raw())
    }

    /// [`TrustedDir::open`] for a directory that belongs to the user `me` rather than to us:
    /// what `baton reload`, run as root, uses to read the status file of a baton that runs as
    /// another user.
    pub fn open_for(path: &Path, create: Create, me: u32) -> Result<TrustedDir, FsError> {
        let (dir, st) = Self::walk(None, path, create, me)?;
        check_final(&dir.path, &st, me)?;
        Ok(dir)
    }

    /// Walk to the directory `path`, checking every directory on the way but not the last one
    /// (the caller does, with the rule it needs); returns it with its status.
    fn walk(
        root: Option<&Path>,
        path: &Path,
        create: Create,
        me: u32,
    ) -> Result<(TrustedDir, FileStat), FsError> {
        let absolute;
        let path = if path.is_absolute() {
            path
        } else {
            let cwd = std::env::current_dir()
                .map_err(|e| FsError::io(Path::new("."), "find the working directory", e))?;
            absolute = cwd.join(path);
            absolute.as_path()
        };
        // The directories walked so far (for `..`), the last one is where we are.
        let start = match root {
            None => (open_root(me)?, PathBuf::from("/")),
            Some(root) => (open_root_at(root, me)?, root.to_owned()),
        };
        let mut stack: Vec<(OwnedFd, PathBuf)> = vec![start];
        let mut todo: VecDeque<OsString> = components(path);
        let mut followed = 0;
        while let Some(name) = todo.pop_front() {
            let last = todo.is_empty();
            if name == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                if last {
                    return Self::finish_walk(stack);
                }
                continue;
            }
            let (here, here_path) = stack
                .last()
                .map(|(f, p)| (f.as_raw_fd(), p.clone()))
                .ok_or_else(|| FsError::refused(path, "empty walk".into()))?;
            let next_path = here_path.join(&name);
            match open_dir_fd(Some(here), &name) {
                Ok(fd) => {
                    let st = stat::fstat(fd.as_raw_fd())
                        .map_err(|e| FsError::io(&next_path, "inspect", e))?;
                    if !last {
                        check_ancestor(&next_path, &st, me)?;
                    }
                    stack.push((fd, next_path));
                }
                Err(Errno::ENOENT) if create == Create::Missing => {
                    match stat::mkdirat(
                        Some(here),
                        name.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => todo.push_front(name),
                        Err(e) => return Err(FsError::io(&next_path, "create the directory", e)),
                    }
                }
                Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
                    let st =
                        stat::fstatat(Some(here), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                            .map_err(|e| FsError::io(&next_path, "inspect", e))?;
                    if file_type(&st) != SFlag::S_IFLNK {
                        return Err(FsError::refused(
                            &next_path,
                            format!("is {}, not a directory", kind_of(&st)),
                        ));
                    }
                    if st.st_uid != 0 && st.st_uid != me {
                        return Err(FsError::refused(
                            &next_path,
                            format!(
                                "is a symlink owned by {}: another user controls where it points",
                                describe_uid(st.st_uid)
                            ),
                        ));
                    }
                    followed += 1;
                    if followed > MAX_SYMLINKS {
                        return Err(FsError::refused(path, "too many symlinks".into()));
                    }
                    let target = fcntl::readlinkat(Some(here), name.as_os_str())
                        .map_err(|e| FsError::io(&next_path, "read the symlink", e))?;
                    let target = PathBuf::from(target);
                    let mut rest = components(&target);
                    rest.extend(todo.drain(..));
                    todo = rest;
                    if target.is_absolute() {
                        stack.truncate(1);
                    }
                    if todo.is_empty() {
                        return Self::finish_walk(stack);
                    }
                }
                Err(e) => return Err(FsError::io(&next_path, "open", e)),
            }
        }
        Self::finish_walk(stack)
    }

    fn finish_walk(mut stack: Vec<(OwnedFd, PathBuf)>) -> Result<(TrustedDir, FileStat), FsError> {
        let Some((fd, path)) = stack.pop() else {
            return Err(FsError::refused(Path::new("/"), "empty walk".into()));
        };
        let st = stat::fstat(fd.as_raw_fd()).map_err(|e| FsError::io(&path, "inspect", e))?;
        Ok((TrustedDir { fd, path }, st))
    }

    /// Open the directory `path` for files of the user `me`: the directory itself when it
    /// passes the rules of this module ([`TrustedDir::open_for`]); when it is a *shared* one —
    /// sticky and writable by others, owned by root or `me`, like `/tmp` — the private
    /// subdirectory `<path>/<private_name>` of `me` in it instead, made with `mkdir` (mode 0700)
    /// if missing and checked on the open descriptor: a directory, not a symlink, owned by `me`,
    /// no access for group or others. A name another user made first is refused, naming its
    /// owner; nothing is ever created through it.
    pub fn open_private_for(
        path: &Path,
        create: Create,
        me: u32,
        private_name: &str,
    ) -> Result<TrustedDir, FsError> {
        Self::open_private_in(None, path, create, me, private_name)
    }

    /// [`TrustedDir::open_private_for`] seen from another root directory: `root` (such as
    /// `/proc/<pid>/root`, the root of a process in another mount namespace) is where the walk
    /// starts and where absolute symlinks lead.
    pub fn open_private_in(
        root: Option<&Path>,
        path: &Path,
        create: Create,
        me: u32,
        private_name: &str,
    ) -> Result<TrustedDir, FsError> {
        let (dir, st) = Self::walk(root, path, create, me)?;
        let mode = st.st_mode & 0o7777;
        let shared = mode & 0o1000 != 0 && mode & 0o022 != 0;
        if !shared {
            check_final(&dir.path, &st, me)?;
            return Ok(dir);
        }
        check_ancestor(&dir.path, &st, me)?;
        dir.private_subdir(private_name, create, me)
    }

    /// The private subdirectory `name` of `me` in this (shared) directory: made with `mkdirat`
    /// (0700) when missing, opened without following a symlink, and checked on the descriptor.
    fn private_subdir(&self, name: &str, create: Create, me: u32) -> Result<TrustedDir, FsError> {
        let path = self.join(name);
        if create == Create::Missing {
            match stat::mkdirat(
                Some(self.fd.as_raw_fd()),
                name,
                Mode::from_bits_truncate(0o700),
            ) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(FsError::io(&path, "create the directory", e)),
            }
        }
        let fd = match open_dir_fd(Some(self.fd.as_raw_fd()), OsStr::new(name)) {
            Ok(fd) => fd,
            Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
                let st = stat::fstatat(
                    Some(self.fd.as_raw_fd()),
                    name,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| FsError::io(&path, "inspect", e))?;
                return Err(FsError::refused(
                    &path,
                    format!(
                        "is {} owned by {}, not a private directory of baton's user ({}); refusing to use it",
                        kind_of(&st),
                        describe_uid(st.st_uid),
                        describe_uid(me)
                    ),
                ));
            }
            Err(e) => return Err(FsError::io(&path, "open", e)),
        };
        let st = stat::fstat(fd.as_raw_fd()).map_err(|e| FsError::io(&path, "inspect", e))?;
        if st.st_uid != me {
            return Err(FsError::refused(
                &path,
                format!(
                    "owned by {}, not by baton's user ({}): another user made this name first; refusing to create files in it",
                    describe_uid(st.st_uid),
                    describe_uid(me)
                ),
            ));
        }
        let mode = st.st_mode & 0o7777;
        if mode & 0o077 != 0 {
            return Err(FsError::refused(
                &path,
                format!("has mode {mode:04o}, not private (0700); refusing to create files in it"),
            ));
        }
        Ok(TrustedDir { fd, path })
    }

    /// The directory's path as walked (symlinks resolved).
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The uid that owns this directory (0 if it cannot be inspected).
    pub fn owner(&self) -> u32 {
        stat::fstat(self.fd.as_raw_fd())
            .map(|st| st.st_uid)
            .unwrap_or(0)
    }

    /// `name` in this directory, for messages and for other processes.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A path that reaches `name` through this process's descriptor of the directory, for calls
    /// that only take a path (`bind` of a Unix socket): `/proc/self/fd/N/name`.
    pub fn fd_path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.fd.as_raw_fd()))
    }

    /// Create a new private subdirectory `<prefix><random>` (0700) and open it.
    pub fn create_unique_dir(&self, prefix: &str) -> Result<(TrustedDir, String), FsError> {
        let me = unistd::geteuid().as_raw();
        for _ in 0..16 {
            let name = format!("{prefix}{}", random_suffix());
            let path = self.join(&name);
            match stat::mkdirat(
                Some(self.fd.as_raw_fd()),
                name.as_str(),
                Mode::from_bits_truncate(0o700),
            ) {
                Ok(()) => {}
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(FsError::io(&path, "create the directory", e)),
            }
            let fd = open_dir_fd(Some(self.fd.as_raw_fd()), OsStr::new(&name))
                .map_err(|e| FsError::io(&path, "open", e))?;
            let st = stat::fstat(fd.as_raw_fd()).map_err(|e| FsError::io(&path, "inspect", e))?;
            check_final(&path, &st, me)?;
            if st.st_mode & 0o077 != 0 {
                return Err(FsError::refused(
                    &path,
                    format!("created with mode {:04o}", st.st_mode & 0o7777),
                ));
            }
            return Ok((TrustedDir { fd, path }, name));
        }
        Err(FsError::refused(
            &self.join(&format!("{prefix}*")),
            "no free name after 16 attempts".into(),
        ))
    }

    /// Write `bytes` to `name` atomically: a new file `.<name>.<random>` created exclusively
    /// (never through a symlink), its mode set on the descriptor, synced, then renamed over
    /// `name`. A reader sees the old content or the new one, never a part.
    pub fn write_atomically(&self, name: &str, bytes: &[u8], mode: u32) -> Result<(), FsError> {
        let dest = self.join(name);
        let dir = self.fd.as_raw_fd();
        let (tmp, mut file) =
            self.create_exclusive(&format!(".{name}."), mode)
                .map_err(|e| match e {
                    FsError::Io { source, .. } => {
                        FsError::io(&dest, "create a new version of", source)
                    }
                    other => other,
                })?;
        let result = (|| {
            file.write_all(bytes)
                .map_err(|e| FsError::io(&dest, "write", e))?;
            file.sync_data()
                .map_err(|e| FsError::io(&dest, "sync", e))?;
            fcntl::renameat(Some(dir), tmp.as_str(), Some(dir), name)
                .map_err(|e| FsError::io(&dest, "rename a new version over", e))
        })();
        if result.is_err() {
            let _ = unistd::unlinkat(Some(dir), tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        result
    }

    fn create_exclusive(
        &self,
        prefix: &str,
        mode: u32,
    ) -> Result<(String, std::fs::File), FsError> {
        for _ in 0..16 {
            let name = format!("{prefix}{}", random_suffix());
            match fcntl::openat(
                Some(self.fd.as_raw_fd()),
                name.as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            ) {
                Ok(fd) => {
                    let file = std::fs::File::from(own(fd));
                    if let Err(e) = stat::fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode)) {
                        let _ = unistd::unlinkat(
                            Some(self.fd.as_raw_fd()),
                            name.as_str(),
                            UnlinkatFlags::NoRemoveDir,
                        );
                        return Err(FsError::io(&self.join(&name), "set the mode of", e));
                    }
                    return Ok((name, file));
                }
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(FsError::io(&self.join(&format!("{prefix}*")), "create", e)),
            }
        }
        Err(FsError::refused(
            &self.join(&format!("{prefix}*")),
            "no free name after 16 attempts".into(),
        ))
    }

    /// Overwrite the existing regular file `name` in place (same inode, no new block or inode
    /// needed for a small file): what still works on a full file system. Refuses anything that is
    /// not a regular file of ours with a single link.
    pub fn rewrite_in_place(&self, name: &str, bytes: &[u8]) -> Result<(), FsError> {
        let path = self.join(name);
        let file = self.open_regular(name, OFlag::O_WRONLY, &path, |uid, me| uid == me)?;
        let st = stat::fstat(file.as_raw_fd()).map_err(|e| FsError::io(&path, "inspect", e))?;
        if st.st_nlink != 1 {
            return Err(FsError::refused(
                &path,
                format!("has {} links; refusing to write through it", st.st_nlink),
            ));
        }
        use std::os::unix::fs::FileExt;
        file.write_all_at(bytes, 0)
            .map_err(|e| FsError::io(&path, "write", e))?;
        file.set_len(bytes.len() as u64)
            .map_err(|e| FsError::io(&path, "truncate", e))?;
        file.sync_data().map_err(|e| FsError::io(&path, "sync", e))
    }

    fn open_regular(
        &self,
        name: &str,
        access: OFlag,
        path: &Path,
        owner_ok: impl Fn(u32, u32) -> bool,
    ) -> Result<std::fs::File, FsError> {
        let fd = fcntl::openat(
            Some(self.fd.as_raw_fd()),
            name,
            access | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP => FsError::refused(path, "is a symlink".into()),
            e => FsError::io(path, "open", e),
        })?;
        let file = std::fs::File::from(own(fd));
        let st = regular_file_stat(&file, path)?;
        let me = unistd::geteuid().as_raw();
        if !owner_ok(st.st_uid, me) {
            return Err(FsError::refused(
                path,
                format!("owned by {}", describe_uid(st.st_uid)),
            ));
        }
        Ok(file)
    }

    /// Read the regular file `name` (at most `max` bytes), never through a symlink, and only if
    /// `owner_ok(file owner uid)` accepts its owner.
    #[cfg(test)]
    pub fn read_regular(
        &self,
        name: &str,
        max: u64,
        owner_ok: impl Fn(u32) -> bool,
    ) -> Result<Vec<u8>, FsError> {
        let path = self.join(name);
        let file = self.open_regular(name, OFlag::O_RDONLY, &path, |uid, _| owner_ok(uid))?;
        use std::io::Read;
        let mut bytes = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| FsError::io(&path, "read", e))?;
        if bytes.len() as u64 > max {
            return Err(FsError::refused(&path, format!("larger than {max} bytes")));
        }
        Ok(bytes)
    }

    /// Set the mode of `name`, which must not be a symlink (race-free: nobody else may change
    /// entries of a trusted directory).
    pub fn set_mode(&self, name: &str, mode: u32) -> Result<(), FsError> {
        let path = self.join(name);
        let st = stat::fstatat(
            Some(self.fd.as_raw_fd()),
            name,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| FsError::io(&path, "inspect", e))?;
        if file_type(&st) == SFlag::S_IFLNK {
            return Err(FsError::refused(&path, "is a symlink".into()));
        }
        stat::fchmodat(
            Some(self.fd.as_raw_fd()),
            name,
            Mode::from_bits_truncate(mode),
            stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| FsError::io(&path, "set the mode of", e))
    }

    /// Remove the file (or socket) `name`.
    pub fn remove_file(&self, name: &str) -> Result<(), FsError> {
        unistd::unlinkat(Some(self.fd.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| FsError::io(&self.join(name), "remove", e))
    }

    /// Remove the empty directory `name`.
    pub fn remove_dir(&self, name: &str) -> Result<(), FsError> {
        unistd::unlinkat(Some(self.fd.as_raw_fd()), name, UnlinkatFlags::RemoveDir)
            .map_err(|e| FsError::io(&self.join(name), "remove", e))
    }

    /// Open the subdirectory `name` of ours (never through a symlink).
    pub fn subdir(&self, name: &str) -> Result<TrustedDir, FsError> {
        let path = self.join(name);
        let fd = open_dir_fd(Some(self.fd.as_raw_fd()), OsStr::new(name))
            .map_err(|e| FsError::io(&path, "open", e))?;
        let st = stat::fstat(fd.as_raw_fd()).map_err(|e| FsError::io(&path, "inspect", e))?;
        check_final(&path, &st, unistd::geteuid().as_raw())?;
        Ok(TrustedDir { fd, path })
    }

    /// The names in this directory (read through the descriptor, not the path).
    pub fn names(&self) -> Result<Vec<String>, FsError> {
        let entries = std::fs::read_dir(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
            .map_err(|e| FsError::io(&self.path, "list", e))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect())
    }
}

/// The normal components of `path`, with `..` kept (handled by the walk) and `.` dropped.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Split `path` into its directory and a plain file name.
pub fn split_file(path: &Path) -> Result<(PathBuf, String), FsError> {
    let name = match path.file_name().and_then(OsStr::to_str) {
        Some(n) if !n.is_empty() && n != "." && n != ".." => n.to_owned(),
        _ => {
            return Err(FsError::refused(
                path,
                "does not end in a plain UTF-8 file name".into(),
            ))
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// Six characters from the kernel's random source (or, should that fail, the clock): names
/// nobody can predict, so nobody can prepare them.
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = [0u8; 6];
    // SAFETY: getrandom writes at most `raw.len()` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(raw.as_mut_ptr().cast(), raw.len(), 0) };
    if n != raw.len() as isize {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        raw.copy_from_slice(&(nanos as u64 ^ u64::from(std::process::id())).to_le_bytes()[..6]);
    }
    raw.iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Whether `name` looks like something one of our processes made: `<prefix><pid><rest>` with
/// `rest` starting at a `.`. Returns the pid.
pub fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let end = rest.find('.')?;
    let digits = &rest[..end];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// True when no process with this pid exists (`kill(pid, 0)` says ESRCH).
pub fn pid_is_gone(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    raw > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) == Err(Errno::ESRCH)
}

/// Open a file for reading without hanging on a FIFO or a device: `O_NONBLOCK` open, then it must
/// be a regular file. Follows symlinks (configuration files are often links).
pub fn open_regular_for_reading(path: &Path) -> Result<std::fs::File, FsError> {
    let fd = fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::io(path, "open", e))?;
    let file = std::fs::File::from(own(fd));
    regular_file_stat(&file, path)?;
    Ok(file)
}

/// The status of an open `file` (opened as `path`), which must be a regular file.
fn regular_file_stat(file: &std::fs::File, path: &Path) -> Result<stat::FileStat, FsError> {
    let st = stat::fstat(file.as_raw_fd()).map_err(|e| FsError::io(path, "inspect", e))?;
    if file_type(&st) != SFlag::S_IFREG {
        return Err(FsError::refused(
            path,
            format!("is {}, not a regular file", kind_of(&st)),
        ));
    }
    Ok(st)
}

/// Bytes of `path` as the kernel sees them in a `sockaddr_un` (without the final NUL).
pub fn sockaddr_len(path: &Path) -> usize {
    path.as_os_str().as_bytes().len()
}

/// The most bytes a Unix socket path may have (`sun_path` is 108 bytes, NUL included).
pub const MAX_SOCKET_PATH: usize = 107;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn creates_private_directories_and_refuses_shared_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
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
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
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
