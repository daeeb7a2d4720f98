//! Descriptor hygiene: whatever a process inherited besides stdio and its listeners must not reach
//! its successors. A launcher's pipe (`$(baton …)`, an ssh session) or a stray `baton 7<file`
//! would otherwise be held open by every later generation, and whoever waits for its end waits
//! forever.
//!
//! [`close_inherited_on_exec`] marks every descriptor above 2 close-on-exec. The listeners are
//! close-on-exec too: a successor gets its own copies at 3, 4, … placed on purpose by
//! [`crate::handoff::spawn`].

use std::io;
use std::os::fd::RawFd;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// Mark every open descriptor above 2 close-on-exec: `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`
/// (Linux 5.11), else each descriptor listed in `/proc/self/fd`. Call it once the listeners are
/// adopted, before any successor is started. Returns how it was done, for the log.
pub fn close_inherited_on_exec() -> io::Result<&'static str> {
    // libc: nix 0.29 has no close_range.
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors; it closes
    // nothing and takes no pointer.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok("close_range");
    }
    // ENOSYS (kernel before 5.11), EINVAL (no CLOSE_RANGE_CLOEXEC), EPERM (a seccomp filter).
    for fd in open_descriptors()? {
        if fd > 2 {
            set_cloexec(fd)?;
        }
    }
    Ok("/proc/self/fd")
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    match fcntl(fd, FcntlArg::F_GETFD) {
        Ok(bits) => {
            let flags = FdFlag::from_bits_truncate(bits) | FdFlag::FD_CLOEXEC;
            fcntl(fd, FcntlArg::F_SETFD(flags))
                .map(drop)
                .map_err(io::Error::from)
        }
        // Closed meanwhile (the listing's own descriptor): nothing to mark.
        Err(nix::errno::Errno::EBADF) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The descriptors open in this process, from `/proc/self/fd`.
pub fn open_descriptors() -> io::Result<Vec<RawFd>> {
    let mut fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    fds.sort_unstable();
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn inherited_descriptors_become_close_on_exec() {
        let (r, w) = nix::unistd::pipe().unwrap();
        // pipe() without O_CLOEXEC: as a launcher's pipe would be inherited.
        for fd in [r.as_raw_fd(), w.as_raw_fd()] {
            let bits = fcntl(fd, FcntlArg::F_GETFD).unwrap();
            assert!(!FdFlag::from_bits_truncate(bits).contains(FdFlag::FD_CLOEXEC));
        }
        let how = close_inherited_on_exec().unwrap();
        for fd in [r.as_raw_fd(), w.as_raw_fd()] {
            let bits = fcntl(fd, FcntlArg::F_GETFD).unwrap();
            assert!(
                FdFlag::from_bits_truncate(bits).contains(FdFlag::FD_CLOEXEC),
                "fd {fd} not marked by {how}"
            );
        }
        for fd in 0..3 {
            if let Ok(bits) = fcntl(fd, FcntlArg::F_GETFD) {
                assert!(!FdFlag::from_bits_truncate(bits).contains(FdFlag::FD_CLOEXEC));
            }
        }
    }
}
