//! The private notify socket of `baton run`: every COMMAND gets it as `NOTIFY_SOCKET`, so what an
//! application says (`READY=1`, `STATUS=`, `MAINPID=` …) reaches baton and never the real service
//! manager. baton reads the sender's pid from `SCM_CREDENTIALS`, as systemd does.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use tokio::io::unix::AsyncFd;
use tracing::debug;

use crate::exit;
use crate::runtime_dir::{RuntimeDir, NOTIFY_SOCKET_NAME};
use crate::safe_fs::FsError;

/// Why the notify socket could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The runtime directory is unsafe, or its private directory could not be made.
    #[error("{0}")]
    Dir(FsError),
    /// The socket could not be bound or set up.
    #[error("{0}")]
    Socket(io::Error),
}

impl CreateError {
    /// 77 for a directory that is not ours and private, 71 for an OS error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CreateError::Dir(FsError::Unsafe { .. }) => exit::NOPERM,
            CreateError::Dir(FsError::Io { .. }) | CreateError::Socket(_) => exit::OSERR,
        }
    }
}

/// One datagram: who sent it and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender's pid, as the kernel reported it.
    pub pid: u32,
    /// The text, one assignment per line.
    pub text: String,
}

impl Message {
    /// True when one line of the message is exactly `line`.
    pub fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    /// The value of `KEY=` in the message, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

/// The socket, in a fresh `0700` directory of its own; both removed when dropped (an execve
/// drops nothing: a re-executed baton takes them over).
#[derive(Debug)]
pub struct NotifySocket {
    dir: PathBuf,
    path: PathBuf,
    socket: AsyncFd<UnixDatagram>,
}

impl NotifySocket {
    /// Create it in a new private directory (`run.<pid>.<random>`, `0700`) of the service's
    /// runtime directory ([`RuntimeDir`]: its layout and rules, as for `serve`'s files).
    pub fn create(runtime: &RuntimeDir) -> Result<NotifySocket, CreateError> {
        let fs_error = |e: FsError| io::Error::other(e.to_string());
        let (dir, name) = runtime.create_run_dir().map_err(CreateError::Dir)?;
        let dir_path = runtime.join(&name);
        let path = dir_path.join(NOTIFY_SOCKET_NAME);
        let made = (|| {
            // Bound through the directory's descriptor: no path component is walked again.
            let socket = UnixDatagram::bind(dir.fd_path(NOTIFY_SOCKET_NAME)).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display()))
            })?;
            dir.set_mode(NOTIFY_SOCKET_NAME, 0o600).map_err(fs_error)?;
            Ok::<_, io::Error>(socket)
        })();
        match made.and_then(|s| NotifySocket::wrap(dir_path.clone(), path.clone(), s.into())) {
            Ok(s) => Ok(s),
            Err(e) => {
                let _ = runtime.remove_private_dir(&dir, &name);
                Err(CreateError::Socket(e))
            }
        }
    }

    /// Take over a socket this process already holds (after re-executing itself).
    pub fn adopt(dir: PathBuf, path: PathBuf, fd: OwnedFd) -> io::Result<NotifySocket> {
        NotifySocket::wrap(dir, path, fd)
    }

    fn wrap(dir: PathBuf, path: PathBuf, fd: OwnedFd) -> io::Result<NotifySocket> {
        let socket = UnixDatagram::from(fd);
        setsockopt(&socket, sockopt::PassCred, &true)?;
        socket.set_nonblocking(true)?;
        nix::fcntl::fcntl(
            socket.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
        Ok(NotifySocket {
            dir,
            path,
            // SAFETY: the AsyncFd owns the socket for as long as it is registered.
            socket: unsafe {
                AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE)
            }?,
        })
    }

    /// Its path, for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The descriptor.
    pub fn raw_fd(&self) -> RawFd {
        self.socket.get_ref().as_fd().as_raw_fd()
    }

    /// The next message from a process of our user or root. Cancel-safe.
    pub async fn recv(&self) -> io::Result<Message> {
        loop {
            let mut guard = self.socket.readable().await?;
            match guard.try_io(|s| receive(s.get_ref().as_raw_fd())) {
                Ok(Ok(Some(m))) => return Ok(m),
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Read one datagram; `Ok(None)` for one to ignore (no or foreign credentials, too long).
fn receive(fd: RawFd) -> io::Result<Option<Message>> {
    let mut buf = [0u8; 4096];
    let crate::notify::Received {
        bytes,
        sender,
        truncated,
    } = match crate::notify::receive(fd, &mut buf) {
        Ok(received) => received,
        Err(Errno::EAGAIN) => return Err(io::ErrorKind::WouldBlock.into()),
        Err(Errno::EINTR) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let me = nix::unistd::geteuid().as_raw();
    let Some((pid, _)) = sender.filter(|&(_, uid)| uid == me || uid == 0) else {
        debug!("notification without acceptable credentials: ignored");
        return Ok(None);
    };
    if truncated {
        debug!(pid, "oversized notification: ignored");
        return Ok(None);
    }
    Ok(Some(Message {
        pid,
        text: String::from_utf8_lossy(&buf[..bytes]).into_owned(),
    }))
}
