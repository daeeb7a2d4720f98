//! The successor's side of the hand-off, and where a starting process finds its listeners.
//!
//! `crate::startup::acquire` walks the chain once at start: systemd socket activation, else the
//! documented import from a running predecessor ([`dial`], [`dial_if_listening`], [`import`]:
//! `get_listener`, the offer), else a fresh bind. When the predecessor is baton, the connection stays open as a [`Predecessor`]: the child reports `ready`,
//! waits to be `promoted`, and `confirmed`s. Specified in
//! [`docs/handoff-protocol.md`](../../docs/handoff-protocol.md).

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tracing::{debug, info, warn};

use super::protocol::{self, ChildMessage, ListenerOffer, ParentMessage, ProtocolError};
use crate::listen::spec::ListenSpec;
use crate::listen::{self, Listener, Origin, Source};
use crate::settings::Settings;

/// Why the import from a predecessor failed: the hand-off socket and the failing step.
#[derive(Debug, thiserror::Error)]
#[error("hand-off {path}: {problem}")]
pub struct ImportError {
    /// The hand-off socket dialed.
    pub path: PathBuf,
    /// What went wrong.
    pub problem: ImportProblem,
}

/// The failing step of an import.
#[derive(Debug, thiserror::Error)]
pub enum ImportProblem {
    /// Could not connect.
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// Could not send a request.
    #[error("cannot send {what}: {source}")]
    Write {
        /// `get_listener` or `get_state`.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Could not read the answer.
    #[error("cannot read the answer: {0}")]
    Read(io::Error),
    /// No complete answer in time.
    #[error("no answer within {after:?} ({received} bytes received)")]
    Timeout {
        /// The budget.
        after: Duration,
        /// How much arrived.
        received: usize,
    },
    /// The predecessor hung up without a complete answer.
    #[error(
        "the predecessor closed the connection after {received} bytes without a complete answer"
    )]
    Closed {
        /// How much arrived.
        received: usize,
    },
    /// The process listening there is not one we may take listeners from.
    #[error("refusing to deal with pid {pid} ({owner}): {why}")]
    Stranger {
        /// The listening process, as the kernel reports it (`SO_PEERCRED`).
        pid: i32,
        /// Its user.
        owner: String,
        /// Why it is refused.
        why: String,
    },
    /// The answer is malformed.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    /// An offered descriptor is not a listening stream socket.
    #[error("fd {fd} ({name}) {problem}")]
    BadFd {
        /// The descriptor.
        fd: RawFd,
        /// Its name.
        name: String,
        /// What it is instead.
        problem: String,
    },
    /// The predecessor offers a listener the configuration does not name.
    #[error("predecessor offers {offered:?} but the configuration listens on {configured}")]
    Mismatch {
        /// The offered address.
        offered: String,
        /// The configured addresses.
        configured: String,
    },
}

impl ImportError {
    fn new(path: &Path, problem: ImportProblem) -> Self {
        ImportError {
            path: path.to_owned(),
            problem,
        }
    }
}

/// Who may hand us listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// The process that started us (a baton parent mid-hand-off), running as our user or root.
    OurParent,
    /// Any process running as our user or as root (a predecessor found at the configured path).
    SameUserOrRoot,
}

/// Check the credentials of the process listening on the other end (`SO_PEERCRED`, recorded by
/// the kernel when it called `listen`) before a byte is exchanged.
fn check_peer(stream: &UnixStream, expect: Peer) -> Result<(), ImportProblem> {
    let cred = stream.peer_cred().map_err(ImportProblem::Connect)?;
    let pid = cred.pid().unwrap_or(0);
    let me = nix::unistd::geteuid().as_raw();
    let stranger = |why: String| ImportProblem::Stranger {
        pid,
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
        if pid != parent {
            return Err(stranger(format!(
                "it is not the process that started us (pid {parent})"
            )));
        }
    }
    Ok(())
}

/// Connect to the predecessor that started us: it must be there, and be it.
pub(crate) async fn dial(path: &Path) -> Result<UnixStream, ImportError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| ImportError::new(path, ImportProblem::Connect(e)))?;
    check_peer(&stream, Peer::OurParent).map_err(|p| ImportError::new(path, p))?;
    Ok(stream)
}

/// Connect if something listens at `path`; `Ok(None)` when nothing does (no file, a stale file)
/// or when what listens runs as another user (logged, never spoken to).
pub(crate) async fn dial_if_listening(path: &Path) -> Result<Option<UnixStream>, ImportError> {
    match UnixStream::connect(path).await {
        Ok(s) => match check_peer(&s, Peer::SameUserOrRoot) {
            Ok(()) => Ok(Some(s)),
            Err(p @ ImportProblem::Stranger { .. }) => {
                warn!(path = %path.display(), error = %p, "not importing; binding instead");
                Ok(None)
            }
            Err(p) => Err(ImportError::new(path, p)),
        },
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) || e.raw_os_error() == Some(nix::errno::Errno::ENOTSOCK as i32) =>
        {
            debug!(path = %path.display(), error = %e, "no predecessor to import from");
            Ok(None)
        }
        Err(e) => Err(ImportError::new(path, ImportProblem::Connect(e))),
    }
}

/// What one import brought.
pub(crate) struct Imported {
    /// The listeners offered and kept.
    pub(crate) listeners: Vec<Listener>,
    /// The predecessor, when it speaks baton's extension.
    pub(crate) predecessor: Option<Predecessor>,
    /// The application state it handed over.
    pub(crate) state: Option<Vec<u8>>,
    /// The service's control socket it passed on.
    pub(crate) control: Option<std::os::fd::OwnedFd>,
}

/// Request the listeners (and the state, when a baton parent has some), adopt the offered fds and
/// keep those the configuration still names.
pub(crate) async fn import(
    stream: UnixStream,
    path: &Path,
    settings: &Settings,
    wanted: &mut Vec<ListenSpec>,
    activated: &[Listener],
) -> Result<Imported, ImportError> {
    let err = |problem| ImportError::new(path, problem);
    let timeout = settings.child_timeout;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let exchange = async {
        write
            .write_all(protocol::REQUEST)
            .await
            .map_err(|source| ImportProblem::Write {
                what: "get_listener",
                source,
            })?;
        let offer = read_offer(&mut read).await?;
        let mut state = None;
        if offer.baton.as_ref().is_some_and(|ext| ext.state) {
            write
                .write_all(&protocol::encode_line(&ChildMessage::GetState))
                .await
                .map_err(|source| ImportProblem::Write {
                    what: "get_state",
                    source,
                })?;
            state = Some(read_state(&mut read).await?);
        }
        Ok::<_, ImportProblem>((offer, state))
    };
    let (offer, state) = match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result.map_err(err)?,
        Err(_) => {
            return Err(err(ImportProblem::Timeout {
                after: timeout,
                received: read.buffer().len(),
            }))
        }
    };
    match &offer.baton {
        Some(ext) => info!(path = %path.display(), predecessor_generation = ext.generation,
            state_bytes = state.as_ref().map(Vec::len), "importing listeners from a baton predecessor"),
        None => {
            info!(path = %path.display(), "importing the listener from a predecessor (base protocol)")
        }
    }

    let mut listeners = Vec::new();
    for offered in offer.listeners() {
        if activated
            .iter()
            .any(|l| l.socket.as_fd().as_raw_fd() == offered.fd)
        {
            return Err(err(ImportProblem::BadFd {
                fd: offered.fd,
                name: offered.name,
                problem: "is already a socket-activated listener".into(),
            }));
        }
        let socket = listen::adopt_listening_fd(offered.fd).map_err(|problem| {
            err(ImportProblem::BadFd {
                fd: offered.fd,
                name: offered.name.clone(),
                problem,
            })
        })?;
        let spec = match matching(wanted, &offered.addr) {
            Some(i) => wanted.remove(i),
            None if offered.origin == Origin::Systemd || !settings.listen_explicit => offered
                .addr
                .parse()
                .unwrap_or_else(|_| listen::local_spec(&socket)),
            None if offer.baton.is_some() => {
                info!(listener = %offered.addr, "no longer configured; closing the inherited listener");
                continue;
            }
            None => {
                return Err(err(ImportProblem::Mismatch {
                    offered: offered.addr,
                    configured: settings
                        .listen
                        .iter()
                        .map(|s| format!("{:?}", s.as_str()))
                        .collect::<Vec<_>>()
                        .join(", "),
                }))
            }
        };
        listeners.push(Listener {
            name: offered.name,
            spec,
            source: Source::Import,
            origin: offered.origin,
            socket,
        });
    }
    let control = match offer.baton.as_ref().and_then(|ext| ext.control) {
        Some(fd) => Some(crate::reload::control::adopt(fd).map_err(|problem| {
            err(ImportProblem::BadFd {
                fd,
                name: "control socket".into(),
                problem,
            })
        })?),
        None => None,
    };
    let predecessor = offer.baton.is_some().then(|| Predecessor {
        read,
        write,
        path: path.to_owned(),
    });
    Ok(Imported {
        listeners,
        predecessor,
        state,
        control,
    })
}

/// Which configured address an offered listener is: the same string, else the address naming
/// the same socket (`https://127.0.0.1:8443` and `127.0.0.1:8443`), so that a reload which changes how an address is written — its scheme
/// included — keeps the socket, and the new process serves it the way its configuration says.
/// Configured addresses never name one socket twice (the settings refuse that).
fn matching(wanted: &[ListenSpec], offered: &str) -> Option<usize> {
    wanted
        .iter()
        .position(|w| w.as_str() == offered)
        .or_else(|| {
            let offered: ListenSpec = offered.parse().ok()?;
            wanted.iter().position(|w| w.same_socket(&offered))
        })
}

/// Read until one complete offer has arrived. A newline after it is consumed; nothing else may
/// follow before the child speaks again.
async fn read_offer(read: &mut BufReader<OwnedReadHalf>) -> Result<ListenerOffer, ImportProblem> {
    let mut buf = Vec::with_capacity(256);
    loop {
        let chunk = read.fill_buf().await.map_err(ImportProblem::Read)?;
        if chunk.is_empty() {
            return Err(ImportProblem::Closed {
                received: buf.len(),
            });
        }
        let before = buf.len();
        let n = chunk.len();
        buf.extend_from_slice(chunk);
        if let Some((offer, end)) = protocol::parse_offer_at(&buf)? {
            read.consume(end.saturating_sub(before));
            return Ok(offer);
        }
        read.consume(n);
    }
}

/// Read the answer to `get_state`: one `state` line, then exactly that many bytes.
async fn read_state(read: &mut BufReader<OwnedReadHalf>) -> Result<Vec<u8>, ImportProblem> {
    let line = read_line(read).await.map_err(ImportProblem::Read)?;
    if line.is_empty() {
        return Err(ImportProblem::Closed { received: 0 });
    }
    let len = match protocol::parse_line::<ParentMessage>(&line, "state header")? {
        Some(ParentMessage::State { len }) if len <= protocol::MAX_STATE => len,
        Some(ParentMessage::State { .. }) => return Err(ProtocolError::TooLarge.into()),
        _ => {
            return Err(ProtocolError::Unexpected(protocol::preview(&line)).into());
        }
    };
    let mut state = Vec::with_capacity(len as usize);
    let got = read
        .take(len)
        .read_to_end(&mut state)
        .await
        .map_err(ImportProblem::Read)?;
    if (got as u64) < len {
        return Err(ImportProblem::Closed { received: got });
    }
    Ok(state)
}

/// One line of at most [`protocol::MAX_MESSAGE`] bytes (empty at EOF).
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(read: &mut R) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    read.take(protocol::MAX_MESSAGE as u64 + 1)
        .read_until(b'\n', &mut line)
        .await?;
    Ok(line)
}

/// A baton predecessor still on the line after the offer.
#[derive(Debug)]
pub struct Predecessor {
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    path: PathBuf,
}

/// What the predecessor said after our `ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promotion {
    /// It told the service manager we are the main process.
    Promoted,
    /// It hung up first (it died, or was stopped): we serve on as main.
    Gone,
}

impl Predecessor {
    /// Tell the predecessor we accept on every listener.
    pub async fn ready(&mut self, pid: u32) -> io::Result<()> {
        self.write
            .write_all(&protocol::encode_line(&ChildMessage::Ready { pid }))
            .await
    }

    /// Wait for `promoted` (or the predecessor hanging up).
    pub async fn promotion(&mut self) -> io::Result<Promotion> {
        let line = read_line(&mut self.read).await?;
        if line.is_empty() {
            warn!(path = %self.path.display(), "predecessor hung up before promoting us");
            return Ok(Promotion::Gone);
        }
        match protocol::parse_line::<ParentMessage>(&line, "parent message") {
            Ok(Some(ParentMessage::Promoted)) => Ok(Promotion::Promoted),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "predecessor sent {} instead of promoted",
                    protocol::preview(&line)
                ),
            )),
        }
    }

    /// Tell the predecessor, before it promoted us, that we were told to stop: it stops too.
    pub async fn stopping(mut self) -> io::Result<()> {
        self.write
            .write_all(&protocol::encode_line(&ChildMessage::Stopping))
            .await?;
        self.write.shutdown().await
    }

    /// Tell the predecessor we serve as main (after `READY=1`); it stops accepting and retires.
    pub async fn confirm(mut self) -> io::Result<()> {
        self.write
            .write_all(&protocol::encode_line(&ChildMessage::Confirmed))
            .await?;
        self.write.shutdown().await
    }
}

/// Best effort, for a successor that cannot start: tell the predecessor why, then return.
pub async fn report_failure(path: &Path, reason: &str) {
    let send = async {
        let mut stream = UnixStream::connect(path).await?;
        check_peer(&stream, Peer::OurParent).map_err(|e| io::Error::other(e.to_string()))?;
        let one_line = reason.replace('\n', " ");
        stream
            .write_all(&protocol::encode_line(&ChildMessage::Failed {
                reason: one_line,
            }))
            .await
    };
    match tokio::time::timeout(Duration::from_secs(1), send).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            debug!(path = %path.display(), error = %e, "could not report the failure to the predecessor")
        }
        Err(_) => {
            debug!(path = %path.display(), "reporting the failure to the predecessor timed out")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offer_matches_the_same_string_else_the_same_socket() {
        let wanted: Vec<ListenSpec> = ["127.0.0.1:80", "https://127.0.0.1:443", "unix:/run/a.sock"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(matching(&wanted, "127.0.0.1:80"), Some(0));
        // a scheme added, removed or changed by the new configuration: the same socket
        assert_eq!(matching(&wanted, "127.0.0.1:443"), Some(1));
        assert_eq!(matching(&wanted, "http://127.0.0.1:443"), Some(1));
        assert_eq!(matching(&wanted, "https://127.0.0.1:80"), Some(0));
        assert_eq!(matching(&wanted, "127.0.0.1:080"), Some(0));
        assert_eq!(matching(&wanted, "unix:/run/a.sock"), Some(2));
        assert_eq!(matching(&wanted, "127.0.0.1:81"), None);
        assert_eq!(matching(&wanted, "garbage"), None);
        assert_eq!(matching(&[], "127.0.0.1:80"), None);
    }

    /// A socket pair: the child's buffered read half, and the parent's end.
    fn pair() -> (BufReader<OwnedReadHalf>, OwnedWriteHalf, UnixStream) {
        let (child, parent) = UnixStream::pair().unwrap();
        let (read, write) = child.into_split();
        (BufReader::new(read), write, parent)
    }

    /// The documented bounds of `get_state` (docs/handoff-protocol.md): a state of 16 MiB is
    /// taken whole, one byte more is refused; its header may be a full 64 KiB line.
    #[tokio::test]
    async fn a_state_of_16_mib_is_taken_and_one_byte_more_is_refused() {
        const MIB16: u64 = 16_777_216;
        for (len, pad) in [(MIB16, 0), (3, protocol::MAX_MESSAGE), (MIB16 + 1, 0)] {
            let (mut read, _write, mut parent) = pair();
            let sender = tokio::spawn(async move {
                let mut header = format!("{{\"event\":\"state\",\"len\":{len}").into_bytes();
                header.resize(pad.max(header.len() + 1) - 1, b' ');
                header.extend_from_slice(b"}\n");
                parent.write_all(&header).await?;
                if len <= MIB16 {
                    parent.write_all(&vec![7u8; len as usize]).await?;
                }
                Ok::<_, io::Error>(()) // and hang up
            });
            let got = read_state(&mut read).await;
            if len <= MIB16 {
                let state = got.unwrap_or_else(|e| panic!("state of {len} bytes: {e}"));
                assert_eq!(state.len() as u64, len);
                assert!(state.iter().all(|b| *b == 7));
            } else {
                assert!(
                    matches!(got, Err(ImportProblem::Protocol(ProtocolError::TooLarge))),
                    "{got:?}"
                );
            }
            sender.await.unwrap().unwrap();
        }
    }

    /// A state cut short by the parent's hang-up is an error, not a shorter state.
    #[tokio::test]
    async fn a_state_cut_short_is_refused() {
        let (mut read, _write, mut parent) = pair();
        parent
            .write_all(b"{\"event\":\"state\",\"len\":5}\nabcd")
            .await
            .unwrap();
        drop(parent);
        let got = read_state(&mut read).await;
        assert!(
            matches!(got, Err(ImportProblem::Closed { received: 4 })),
            "{got:?}"
        );
        let (mut read, _write, mut parent) = pair();
        parent
            .write_all(b"{\"event\":\"state\",\"len\":5}\nabcde")
            .await
            .unwrap();
        drop(parent);
        assert_eq!(read_state(&mut read).await.unwrap(), b"abcde");
    }
}
