//! The PID file of the process serving as main: written atomically (temporary file + rename) so
//! a reader never sees a partial pid, removed on a real stop only if it still names us.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Write `pid` to `path` atomically.
pub fn write(path: &Path, pid: u32) -> io::Result<()> {
    write_atomically(path, format!("{pid}\n").as_bytes())
}

/// Write `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// The pid in `path`, if it holds one.
pub fn read(path: &Path) -> io::Result<u32> {
    let text = std::fs::read_to_string(path)?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} does not hold a pid: {:?}", path.display(), text.trim()),
        )
    })
}

/// Remove `path` if it still names `pid` (a successor may have replaced it).
pub fn remove_if_ours(path: &Path, pid: u32) {
    if read(path).ok() == Some(pid) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_atomically_and_removed_only_if_ours() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("baton.pid");
        write(&p, 42).unwrap();
        assert_eq!(read(&p).unwrap(), 42);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        remove_if_ours(&p, 41);
        assert!(p.exists());
        remove_if_ours(&p, 42);
        assert!(!p.exists());
        std::fs::write(&p, "garbage").unwrap();
        assert!(read(&p)
            .unwrap_err()
            .to_string()
            .contains("does not hold a pid"));
    }
}
