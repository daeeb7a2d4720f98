//! Reading a configured file (a certificate, a key, a configuration file) without hanging on a
//! FIFO or a device.

use std::os::fd::AsRawFd;
use std::path::Path;

use nix::fcntl::{self, OFlag};
use nix::sys::stat::{self, Mode, SFlag};

use super::rules::{file_type, kind_of, own};
use super::FsError;

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
pub(super) fn regular_file_stat(
    file: &std::fs::File,
    path: &Path,
) -> Result<stat::FileStat, FsError> {
    let st = stat::fstat(file.as_raw_fd()).map_err(|e| FsError::io(path, "inspect", e))?;
    if file_type(&st) != SFlag::S_IFREG {
        return Err(FsError::refused(
            path,
            format!("is {}, not a regular file", kind_of(&st)),
        ));
    }
    Ok(st)
}
