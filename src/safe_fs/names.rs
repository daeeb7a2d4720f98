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

/// Bytes of `path` as the kernel sees them in a `sockaddr_un` (without the final NUL).
pub fn sockaddr_len(path: &Path) -> usize {
    path.as_os_str().as_bytes().len()
}

/// The most bytes a Unix socket path may have (`sun_path` is 108 bytes, NUL included).
pub const MAX_SOCKET_PATH: usize = 107;
