//! [`TrustedDir`]: a directory opened by a walk that passed the rules, and everything done
//! relative to its descriptor.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::sys::stat::{self, FileStat, Mode, SFlag};
use nix::unistd::{self, UnlinkatFlags};

use super::names::random_suffix;
use super::read::regular_file_stat;
use super::rules::*;
use super::{describe_uid, Create, FsError};

/// An open directory that passed the rules of this module. Operations are relative to it.
#[derive(Debug)]
pub struct TrustedDir {
    fd: OwnedFd,
    path: PathBuf,
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
        check_mine(
            &path,
            &st,
            me,
            ": another user made this name first",
            0o077,
            |mode| format!("has mode {mode:04o}, not private (0700)"),
        )?;
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
            match self.open_new(&name) {
                Ok(file) => {
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

    /// Create the file `name` (mode 0600 until the caller sets it) and open it for writing:
    /// `O_CREAT|O_EXCL` fails with `EEXIST` on any entry of that name, a symlink included, so
    /// nothing someone prepared is ever opened.
    fn open_new(&self, name: &str) -> nix::Result<std::fs::File> {
        fcntl::openat(
            Some(self.fd.as_raw_fd()),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map(|fd| std::fs::File::from(own(fd)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn close_on_exec(fd: &impl AsRawFd) -> bool {
        let flags = fcntl::fcntl(fd.as_raw_fd(), fcntl::FcntlArg::F_GETFD).unwrap();
        fcntl::FdFlag::from_bits_truncate(flags).contains(fcntl::FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn no_descriptor_is_inherited_by_the_programs_baton_starts() {
        let tmp = tempfile::tempdir().unwrap();
        let me = unistd::geteuid().as_raw();
        let d = TrustedDir::open(tmp.path(), Create::Never).unwrap();
        assert!(close_on_exec(&d.fd), "the directory");
        let (sub, _) = d.create_unique_dir("u.").unwrap();
        assert!(close_on_exec(&sub.fd), "a unique directory");
        let (name, file) = d.create_exclusive(".f.", 0o600).unwrap();
        assert!(close_on_exec(&file), "a new file");
        let path = d.join(&name);
        for access in [OFlag::O_RDONLY, OFlag::O_WRONLY] {
            let file = d.open_regular(&name, access, &path, |_, _| true).unwrap();
            assert!(close_on_exec(&file), "{access:?}");
        }
        assert!(
            close_on_exec(&open_root_at(tmp.path(), me).unwrap()),
            "another root"
        );
        assert!(close_on_exec(&open_root(me).unwrap()), "the root");
    }

    #[test]
    fn a_new_file_is_never_one_that_exists_nor_made_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        let d = TrustedDir::open(p, Create::Never).unwrap();
        std::fs::write(p.join("taken"), "old").unwrap();
        assert_eq!(d.open_new("taken").unwrap_err(), Errno::EEXIST);
        assert_eq!(std::fs::read(p.join("taken")).unwrap(), b"old");
        std::os::unix::fs::symlink(p.join("elsewhere"), p.join("dangling")).unwrap();
        assert_eq!(d.open_new("dangling").unwrap_err(), Errno::EEXIST);
        assert!(!p.join("elsewhere").exists(), "made through the symlink");
        let mut file = d.open_new("fresh").unwrap();
        file.write_all(b"new").unwrap();
        assert_eq!(std::fs::read(p.join("fresh")).unwrap(), b"new");
    }

    #[test]
    fn a_fifo_in_place_of_a_file_is_refused_without_waiting_for_a_peer() {
        let tmp = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&tmp.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let d = TrustedDir::open(tmp.path(), Create::Never).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let read = d.read_regular("fifo", 10, |_| true).map(|_| ());
            let write = d.rewrite_in_place("fifo", b"x");
            let _ = tx.send((
                read.map_err(|e| e.to_string()),
                write.map_err(|e| e.to_string()),
            ));
        });
        // Generous: without O_NONBLOCK the opens wait for a peer that never comes.
        let (read, write) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("opening the FIFO waited for a peer");
        let read = read.unwrap_err();
        assert!(
            read.ends_with("/fifo: is a FIFO, not a regular file"),
            "{read}"
        );
        // For writing, a FIFO nobody reads cannot even be opened (ENXIO).
        let write = write.unwrap_err();
        assert!(write.contains("/fifo: cannot open: "), "{write}");
    }
}
