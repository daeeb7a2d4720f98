//! The successor's side of the hand-off: dial the predecessor, ask for the listeners with the
//! documented `get_listener`, and (when the predecessor is baton) report readiness and wait to be
//! promoted. Specified in [`docs/handoff-protocol.md`](../../docs/handoff-protocol.md).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tracing::{debug, warn};

use super::protocol::{self, ChildMessage, ListenerOffer, ParentMessage, ProtocolError};

/// Why the import failed. Each names the hand-off socket and the failing step.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Could not connect.
    #[error("hand-off {path}: cannot connect: {source}")]
    Connect {
        /// The hand-off socket.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Could not send the request.
    #[error("hand-off {path}: cannot send get_listener: {source}")]
    Write {
        /// The hand-off socket.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Could not read the answer.
    #[error("hand-off {path}: cannot read the answer: {source}")]
    Read {
        /// The hand-off socket.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// No complete answer in time.
    #[error("hand-off {path}: no answer within {after:?} ({received} bytes received)")]
    Timeout {
        /// The hand-off socket.
        path: PathBuf,
        /// The budget.
        after: Duration,
        /// How much arrived.
        received: usize,
    },
    /// The predecessor hung up without a complete answer.
    #[error("hand-off {path}: the predecessor closed the connection after {received} bytes without a complete answer")]
    Closed {
        /// The hand-off socket.
        path: PathBuf,
        /// How much arrived.
        received: usize,
    },
    /// The process listening there is not one we may take listeners from.
    #[error("hand-off {path}: refusing to deal with pid {pid} ({owner}): {why}")]
    Stranger {
        /// The hand-off socket.
        path: PathBuf,
        /// The listening process, as the kernel reports it (`SO_PEERCRED`).
        pid: i32,
        /// Its user.
        owner: String,
        /// Why it is refused.
        why: String,
    },
    /// The answer is malformed.
    #[error("hand-off {path}: {source}")]
    Protocol {
        /// The hand-off socket.
        path: PathBuf,
        /// What is wrong.
        source: ProtocolError,
    },
}

/// Who may hand us listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The process that started us (a baton parent mid-hand-off), running as our user or root.
    OurParent,
    /// Any process running as our user or as root (a predecessor found at the configured path).
    SameUserOrRoot,
}

/// Check the credentials of the process listening on the other end (`SO_PEERCRED`, recorded by
/// the kernel when it called `listen`) before a byte is exchanged.
pub fn check_peer(stream: &UnixStream, path: &Path, expect: Peer) -> Result<(), ImportError> {
    use nix::sys::socket::{getsockopt, sockopt};
    let cred = getsockopt(stream, sockopt::PeerCredentials).map_err(|e| ImportError::Connect {
        path: path.to_owned(),
        source: e.into(),
    })?;
    let me = nix::unistd::geteuid().as_raw();
    let stranger = |why: String| ImportError::Stranger {
        path: path.to_owned(),
        pid: cred.pid(),
        owner: crate::safe_fs::describe_uid(cred.uid()),
        why,
    };
    if cred.uid() != me && cred.uid() != 0 {
        return Err(stranger(format!(
            "it runs as another user (we are {}), and only our own user or root may hand us listeners",
            crate::safe_fs::describe_uid(me)
        )));
    }
    if expect == Peer::OurParent {
        let parent = nix::unistd::getppid().as_raw();
        if cred.pid() != parent {
            return Err(stranger(format!(
                "it is not the process that started us (pid {parent})"
            )));
        }
    }
    Ok(())
}

/// Connect to the predecessor that started us: it must be there, and be it.
pub fn dial(path: &Path) -> Result<UnixStream, ImportError> {
    let stream = UnixStream::connect(path).map_err(|source| ImportError::Connect {
        path: path.to_owned(),
        source,
    })?;
    check_peer(&stream, path, Peer::OurParent)?;
    Ok(stream)
}

/// Connect if something listens at `path`; `Ok(None)` when nothing does (no file, a stale file)
/// or when what listens runs as another user (logged, never spoken to).
pub fn dial_if_listening(path: &Path) -> Result<Option<UnixStream>, ImportError> {
    match UnixStream::connect(path) {
        Ok(s) => match check_peer(&s, path, Peer::SameUserOrRoot) {
            Ok(()) => Ok(Some(s)),
            Err(e @ ImportError::Stranger { .. }) => {
                warn!(error = %e, "not importing; binding instead");
                Ok(None)
            }
            Err(e) => Err(e),
        },
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) || e.raw_os_error() == Some(libc::ENOTSOCK) =>
        {
            debug!(path = %path.display(), error = %e, "no predecessor to import from");
            Ok(None)
        }
        Err(source) => Err(ImportError::Connect {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A baton predecessor still on the line after the offer.
#[derive(Debug)]
pub struct Predecessor {
    stream: UnixStream,
    path: PathBuf,
}

/// Send `get_listener` and read the offer. Returns the connection too when the predecessor
/// speaks baton's extension (it then waits for our readiness).
pub fn request_listeners(
    mut stream: UnixStream,
    path: &Path,
    timeout: Duration,
) -> Result<(ListenerOffer, Option<Predecessor>), ImportError> {
    let deadline = Instant::now() + timeout;
    let err_path = || path.to_owned();
    stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| stream.write_all(protocol::REQUEST))
        .map_err(|source| ImportError::Write {
            path: err_path(),
            source,
        })?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ImportError::Timeout {
                path: err_path(),
                after: timeout,
                received: buf.len(),
            });
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|source| ImportError::Read {
                path: err_path(),
                source,
            })?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ImportError::Read {
                    path: err_path(),
                    source,
                })
            }
        };
        if n == 0 {
            return Err(ImportError::Closed {
                path: err_path(),
                received: buf.len(),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        let parsed = protocol::parse_offer(&buf).map_err(|source| ImportError::Protocol {
            path: err_path(),
            source,
        })?;
        if let Some(offer) = parsed {
            let predecessor = offer.baton.is_some().then(|| Predecessor {
                stream,
                path: path.to_owned(),
            });
            return Ok((offer, predecessor));
        }
    }
}

impl Predecessor {
    /// Tell the predecessor we serve, then wait until it says we are the main process.
    /// Returns `false` when the predecessor hung up first (it died or was stopped): we serve on.
    pub async fn ready_then_promoted(self, pid: u32) -> io::Result<bool> {
        self.stream.set_nonblocking(true)?;
        let stream = tokio::net::UnixStream::from_std(self.stream)?;
        let (read, mut write) = stream.into_split();
        write
            .write_all(&protocol::encode_line(&ChildMessage::Ready { pid }))
            .await?;
        let mut reader = BufReader::new(read.take(protocol::MAX_MESSAGE as u64));
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            warn!(path = %self.path.display(), "predecessor hung up before promoting us; serving on as main");
            return Ok(false);
        }
        match protocol::parse_line::<ParentMessage>(&line, "parent message") {
            Ok(Some(ParentMessage::Promoted)) => Ok(true),
            Ok(None) | Err(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "predecessor sent {} instead of promoted",
                    protocol::preview(&line)
                ),
            )),
        }
    }
}

/// Best effort, for a successor that cannot start: tell the predecessor why, then return.
pub fn report_failure(path: &Path, reason: &str) {
    let send = || -> io::Result<()> {
        let mut stream = UnixStream::connect(path)?;
        check_peer(&stream, path, Peer::OurParent).map_err(|e| io::Error::other(e.to_string()))?;
        stream.set_write_timeout(Some(Duration::from_secs(1)))?;
        let one_line = reason.replace('\n', " ");
        stream.write_all(&protocol::encode_line(&ChildMessage::Failed {
            reason: one_line,
        }))
    };
    if let Err(e) = send() {
        debug!(path = %path.display(), error = %e, "could not report the failure to the predecessor");
    }
}
