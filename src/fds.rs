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
    mark_each_listed()?;
    Ok("/proc/self/fd")
}

/// The fallback of [`close_inherited_on_exec`]: each descriptor above 2 that `/proc/self/fd`
/// lists is marked close-on-exec, one `fcntl` each.
fn mark_each_listed() -> io::Result<()> {
    for fd in open_descriptors()? {
        if fd > 2 {
            set_cloexec(fd)?;
        }
    }
    Ok(())
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    match fcntl(fd, FcntlArg::F_GETFD) {
        Ok(bits) => {
            let flags = FdFlag::from_bits_truncate(bits) | FdFlag::FD_CLOEXEC;
            match fcntl(fd, FcntlArg::F_SETFD(flags)) {
                // Closed by another thread between the two calls: nothing to mark.
                Ok(_) | Err(nix::errno::Errno::EBADF) => Ok(()),
                Err(e) => Err(e.into()),
            }
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

    /// The tests here change flags of the whole process's descriptors: one at a time.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn is_cloexec(fd: RawFd) -> bool {
        let bits = fcntl(fd, FcntlArg::F_GETFD).unwrap();
        FdFlag::from_bits_truncate(bits).contains(FdFlag::FD_CLOEXEC)
    }

    /// The kernel's release as (major, minor), as uname(2) gives it.
    fn kernel() -> (u32, u32) {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next().unwrap().parse().unwrap();
        let minor = parts.next().unwrap().parse().unwrap();
        (major, minor)
    }

    #[test]
    fn close_range_is_used_where_the_kernel_has_it() {
        // Linux 5.11 added CLOSE_RANGE_CLOEXEC: there, one system call marks everything, and the
        // log says so (the fallback walks /proc/self/fd, one fcntl per descriptor).
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let how = close_inherited_on_exec().unwrap();
        if kernel() >= (5, 11) {
            assert_eq!(how, "close_range", "kernel {:?}", kernel());
        } else {
            assert_eq!(how, "/proc/self/fd", "kernel {:?}", kernel());
        }
    }

    #[test]
    fn the_fallback_marks_every_listed_descriptor_above_2_and_clears_none() {
        // What close_range does where it is missing (or a seccomp filter refuses it): every
        // descriptor above 2 ends close-on-exec, those already so stay so, stdio is untouched.
        let (r, w) = nix::unistd::pipe().unwrap();
        let (already, _w2) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // Several descriptors without FD_CLOEXEC, the last the highest open one here.
        let extra: Vec<std::os::fd::OwnedFd> = (0..3)
            .map(|_| {
                let raw = fcntl(w.as_raw_fd(), FcntlArg::F_DUPFD(w.as_raw_fd())).unwrap();
                // SAFETY: F_DUPFD just returned this descriptor; nothing else owns it.
                unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) }
            })
            .collect();
        let plain: Vec<RawFd> = [r.as_raw_fd(), w.as_raw_fd()]
            .into_iter()
            .chain(extra.iter().map(|f| f.as_raw_fd()))
            .collect();
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        for &fd in &plain {
            // As a launcher's descriptor would be inherited: without FD_CLOEXEC.
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).unwrap();
        }
        assert!(is_cloexec(already.as_raw_fd()));
        let stdio: Vec<bool> = (0..3)
            .map(|fd| fcntl(fd, FcntlArg::F_GETFD).is_ok() && is_cloexec(fd))
            .collect();

        mark_each_listed().unwrap();

        for &fd in &plain {
            assert!(is_cloexec(fd), "fd {fd} not marked by the fallback");
        }
        assert!(
            is_cloexec(already.as_raw_fd()),
            "a descriptor already close-on-exec stays so"
        );
        let after: Vec<bool> = (0..3)
            .map(|fd| fcntl(fd, FcntlArg::F_GETFD).is_ok() && is_cloexec(fd))
            .collect();
        assert_eq!(after, stdio, "stdio (0, 1, 2) is left as it was");
    }

    #[test]
    fn open_descriptors_lists_ours_in_order() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let fds = open_descriptors().unwrap();
        assert!(
            fds.contains(&r.as_raw_fd()) && fds.contains(&w.as_raw_fd()),
            "{fds:?}"
        );
        assert!(fds.windows(2).all(|p| p[0] < p[1]), "{fds:?}");
    }

    #[test]
    fn inherited_descriptors_become_close_on_exec() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
