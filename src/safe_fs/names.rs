//! Names of what baton makes: unpredictable temporaries, names tagged with their maker's pid,
//! and Unix socket paths measured as the kernel measures them.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::FsError;

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
    // libc: nix has no getrandom.
    // SAFETY: getrandom writes at most `raw.len()` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(raw.as_mut_ptr().cast(), raw.len(), 0) };
    if n != raw.len() as isize {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        raw = clock_bytes(nanos, std::process::id());
    }
    raw.iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The fallback when getrandom(2) fails (kernels before 3.17, a seccomp filter refusing it): the
/// low six bytes of the clock's nanoseconds mixed with our pid.
fn clock_bytes(nanos: u128, pid: u32) -> [u8; 6] {
    let mixed = (nanos as u64 ^ u64::from(pid)).to_le_bytes();
    [mixed[0], mixed[1], mixed[2], mixed[3], mixed[4], mixed[5]]
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

/// Bytes of `path` as the kernel sees them in a `sockaddr_un` (without the final NUL).
pub fn sockaddr_len(path: &Path) -> usize {
    path.as_os_str().as_bytes().len()
}

/// The most bytes a Unix socket path may have (`sun_path` is 108 bytes, NUL included).
pub const MAX_SOCKET_PATH: usize = 107;

#[cfg(test)]
mod tests {
    use super::*;

    /// The clock fallback keeps the six low bytes of nanoseconds XOR pid: names that still
    /// change with every nanosecond and differ between processes.
    #[test]
    fn the_clock_fallback_mixes_the_nanoseconds_with_the_pid() {
        assert_eq!(
            clock_bytes(0x1234_5678_9abc, 0xff),
            [0x43, 0x9a, 0x78, 0x56, 0x34, 0x12]
        );
        assert_ne!(clock_bytes(1_000, 7), clock_bytes(1_001, 7));
        assert_ne!(clock_bytes(1_000, 7), clock_bytes(1_000, 8));
        assert_eq!(clock_bytes(0, 0), [0; 6]);
    }
}
