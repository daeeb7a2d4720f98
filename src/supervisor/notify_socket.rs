//! The supervisor's private notify socket and what arrives on it: datagrams with the sender's
//! credentials (`SO_PASSCRED`), as systemd reads its own.
//!
//! The socket lives in a fresh private directory of the runtime directory
//! ([`crate::runtime_dir`], which owns the layout), made under the rules of [`crate::safe_fs`] as
//! the hand-off's are: the runtime directory must be ours and not
//! writable by others, nothing is created or bound through a path another user controls.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use tracing::warn;

use crate::runtime_dir::{RuntimeDir, NOTIFY_SOCKET_NAME};
use crate::safe_fs::{self, FsError, TrustedDir};

/// The largest datagram read whole (as systemd, which drops longer ones).
pub(super) const MAX_DATAGRAM: usize = 4096;

/// The supervisor's private notify socket, in a fresh `0700` directory of the runtime directory;
/// both removed when dropped.
pub(super) struct PrivateSocket {
    runtime: RuntimeDir,
    dir: TrustedDir,
    name: String,
    path: PathBuf,
    socket: UnixDatagram,
}

/// One datagram read from the socket.
#[derive(Debug)]
pub(super) enum Received {
    /// A whole datagram with its sender's credentials.
    Datagram {
        /// The sender's pid.
        pid: u32,
        /// The sender's uid.
        uid: u32,
        /// Its text.
        text: String,
    },
    /// A datagram without credentials, or longer than [`MAX_DATAGRAM`]: not usable.
    Unusable {
        /// Why.
        why: &'static str,
    },
}

/// Why the socket could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SocketError {
    /// The runtime directory or the private one.
    #[error("{0}")]
    Directory(#[from] FsError),
    /// Binding or setting up the socket.
    #[error("{path}: cannot {op}: {source}")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// What was attempted.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

impl PrivateSocket {
    /// Make `<runtime>/supervisor.<pid>.<random>/notify.sock` for the hand-off socket path
    /// `handoff_socket` and bind it.
    pub(super) fn open(handoff_socket: &Path) -> Result<PrivateSocket, SocketError> {
        let runtime = RuntimeDir::open(handoff_socket)?;
        let (dir, name) = runtime.create_supervisor_dir()?;
        let path = dir.join(NOTIFY_SOCKET_NAME);
        match bind(&dir, &path) {
            Ok(socket) => Ok(PrivateSocket {
                runtime,
                dir,
                name,
                path,
                socket,
            }),
            Err(e) => {
                let _ = runtime.remove_private_dir(&dir, &name);
                Err(e)
            }
        }
    }

    /// The socket's path, for the generations' `NOTIFY_SOCKET`.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// For `poll`.
    pub(super) fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// The next datagram, without waiting; `None` when none is queued. Descriptors that came
    /// with it are closed (`BARRIER=1` sends a pipe: closing it is the answer).
    pub(super) fn receive(&self) -> Option<Received> {
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            let crate::notify::Received {
                bytes,
                sender,
                truncated,
            } = match crate::notify::receive(self.socket.as_raw_fd(), &mut buf) {
                Ok(received) => received,
                Err(Errno::EAGAIN) => return None,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!(error = %e, "reading the notify socket failed");
                    return None;
                }
            };
            let Some((pid, uid)) = sender else {
                return Some(Received::Unusable {
                    why: "without credentials",
                });
            };
            if truncated {
                return Some(Received::Unusable { why: "oversized" });
            }
            let text = String::from_utf8_lossy(&buf[..bytes.min(MAX_DATAGRAM)]).into_owned();
            return Some(Received::Datagram { pid, uid, text });
        }
    }
}

impl Drop for PrivateSocket {
    fn drop(&mut self) {
        let _ = self.runtime.remove_private_dir(&self.dir, &self.name);
    }
}

/// Bind the socket `path` names, through our descriptor of the verified directory `dir` (not
/// through its path), `0600`, with `SO_PASSCRED`, non-blocking.
fn bind(dir: &TrustedDir, path: &Path) -> Result<UnixDatagram, SocketError> {
    let fail = |op: &'static str| {
        let path = path.to_owned();
        move |source: std::io::Error| SocketError::Socket { path, op, source }
    };
    if safe_fs::sockaddr_len(path) > safe_fs::MAX_SOCKET_PATH {
        return Err(fail("bind")(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "longer than the 107 bytes a Unix socket address holds",
        )));
    }
    let socket = UnixDatagram::bind(dir.fd_path(NOTIFY_SOCKET_NAME)).map_err(fail("bind"))?;
    dir.set_mode(NOTIFY_SOCKET_NAME, 0o600)?;
    setsockopt(&socket, sockopt::PassCred, &true).map_err(|e| fail("set SO_PASSCRED")(e.into()))?;
    socket
        .set_nonblocking(true)
        .map_err(fail("set O_NONBLOCK"))?;
    Ok(socket)
}
