//! A real tmpfs mounted for one test (size and inode limits, remounted read-only on demand) and
//! unmounted afterwards. Needs root (CAP_SYS_ADMIN); without it [`Tmpfs::mount`] fails the test, or returns `None`
//! when skipping is allowed ([`super::prereq`]).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// `mount -t tmpfs -o <options> tmpfs <path>` (the directory is created).
    pub fn mount(path: &Path, options: &str) -> Option<Tmpfs> {
        fs::create_dir_all(path).expect("mount point");
        let out = super::reaper::output(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", options, "tmpfs"])
                .arg(path),
        )
        .expect("run mount");
        if !out.status.success() {
            super::prereq::missing(&format!(
                "cannot mount a tmpfs at {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
        Some(Tmpfs {
            path: path.to_owned(),
        })
    }

    /// `mount -o remount,<options>`.
    pub fn remount(&self, options: &str) {
        let out = super::reaper::output(
            Command::new("mount")
                .args(["-o", &format!("remount,{options}")])
                .arg(&self.path),
        )
        .expect("run mount");
        assert!(
            out.status.success(),
            "remount {options} {}: {}",
            self.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Fills the data blocks: one file grown until ENOSPC. Returns the bytes written.
    pub fn fill_blocks(&self) -> u64 {
        let mut f = File::create(self.path.join("filler")).expect("filler");
        let chunk = vec![b'x'; 4096];
        let mut written = 0;
        loop {
            match f.write(&chunk) {
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return written,
                Err(e) => panic!("filling {}: {e}", self.path.display()),
            }
        }
    }

    /// Uses up the inodes: empty files until ENOSPC. Returns how many were made.
    pub fn fill_inodes(&self) -> usize {
        let dir = self.path.join("inodes");
        fs::create_dir(&dir).expect("inodes dir");
        for n in 0.. {
            match File::create(dir.join(n.to_string())) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return n,
                Err(e) => panic!("filling inodes of {}: {e}", self.path.display()),
            }
        }
        unreachable!()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = super::reaper::output(Command::new("umount").arg("-l").arg(&self.path));
    }
}
