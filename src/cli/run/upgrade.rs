//! baton's own upgrade: at a reload, if a package upgrade replaced the binary at baton's path,
//! baton re-executes itself (same pid) with its state (see [`super::state`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use super::generation::fd_name;
use super::{state, Service};
use crate::reload::Answer;

impl Service {
    /// The binary at our path is not the one running (a package upgrade replaced it).
    pub(super) fn binary_replaced(&self) -> bool {
        let on_disk = std::fs::metadata(&self.exe.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        matches!((self.running_binary, on_disk), (Some(a), Some(b)) if a != b)
    }

    /// Replace this process's program with the binary on disk, keeping the listeners, the notify
    /// socket, the control socket and the generations (children survive an execve). Requests
    /// already read are told to ask again, on the same socket: the new image answers them.
    /// Returns only on failure.
    pub(super) async fn reexec(&mut self) -> io::Result<std::convert::Infallible> {
        let now = Instant::now();
        let saved = state::Saved {
            listeners: self
                .listeners
                .iter()
                .map(|l| state::SavedListener {
                    fd: l.socket.as_fd().as_raw_fd(),
                    name: fd_name(l),
                    spec: l.spec.to_string(),
                })
                .collect(),
            notify_fd: self.notify.raw_fd(),
            notify_dir: self.notify.dir().to_owned(),
            notify_path: self.notify.path().to_owned(),
            serving: self.serving.as_ref().map(|g| state::SavedGeneration {
                pid: g.pid,
                number: g.number,
                kill_in_ms: None,
            }),
            retiring: self
                .retiring_pids
                .iter()
                .map(|(&pid, &(number, kill_at))| state::SavedGeneration {
                    pid,
                    number,
                    kill_in_ms: Some(kill_at.saturating_duration_since(now).as_millis() as u64),
                })
                .collect(),
            next_generation: self.next_generation,
            reload_requested: self.reload_requested,
            control_fd: self.control.as_ref().map(|c| c.fd().as_raw_fd()),
        };
        info!(exe = %self.exe.path.display(), "the baton binary was replaced: re-executing it before the reload");
        if let Some(c) = &mut self.control {
            // Same pid, same socket: the client asks again and the new image answers.
            c.close(Answer::AskAgain {
                main: std::process::id(),
            });
            c.flush(Duration::from_secs(1)).await;
        }
        let e = state::exec(&self.exe, &saved);
        // Still here: this image answers after all (the requests told to ask again are back in
        // the backlog).
        if let Some(c) = &mut self.control {
            c.begin();
        }
        Err(e)
    }
}
