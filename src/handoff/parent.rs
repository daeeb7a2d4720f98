//! The running process's side of the hand-off: open the hand-off socket safely, start the
//! successor, answer `get_listener` for exactly that process, and wait for its readiness.
//! Specified in [`docs/handoff-protocol.md`](../../docs/handoff-protocol.md).

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use std::sync::Arc;

use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::protocol::{
    self, ChildMessage, Extension, ListenerOffer, OfferedListener, Opening, ParentMessage,
    ProtocolError, EXTENSION_VERSION,
};
use super::spawn::{spawn_successor, Executable};
use crate::listen::Listener;

/// Why a hand-off failed. One variant per failing step, each with its context.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// The hand-off socket's directory could not be made private.
    #[error("hand-off socket directory {path}: {problem}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Something that is not a socket occupies the hand-off socket path.
    #[error("hand-off socket {path}: {what} is in the way; refusing to replace it")]
    PathOccupied {
        /// The path.
        path: PathBuf,
        /// What is there.
        what: &'static str,
    },
    /// The hand-off socket could not be bound.
    #[error("hand-off socket {path}: cannot listen: {source}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The successor could not be started.
    #[error("cannot start successor {exe}: {source}")]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The successor exited during the hand-off.
    #[error("successor {pid} exited ({status}){}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Exited {
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
        /// What it reported, if anything.
        reason: Option<String>,
    },
    /// The successor said it cannot serve.
    #[error("successor {pid} failed: {reason}")]
    Failed {
        /// Its pid.
        pid: u32,
        /// Its reason.
        reason: String,
    },
    /// The successor did not become ready in time.
    #[error("successor {pid} not ready within {after:?}")]
    Timeout {
        /// Its pid.
        pid: u32,
        /// The child timeout.
        after: Duration,
    },
    /// The successor broke the protocol.
    #[error("successor {pid}: {source}")]
    Protocol {
        /// Its pid.
        pid: u32,
        /// What it sent.
        source: ProtocolError,
    },
    /// The hand-off connection failed.
    #[error("successor {pid}: hand-off connection: {source}")]
    Io {
        /// Its pid.
        pid: u32,
        /// The OS error.
        source: io::Error,
    },
    /// The hand-off was called off (we are stopping).
    #[error("hand-off cancelled")]
    Cancelled,
}

/// How long after a successor's exit its failure report may still arrive.
const EXIT_REPORT_GRACE: Duration = Duration::from_millis(300);

/// Produces the application state handed to the successor (see [`crate::Serve::on_handoff`]).
pub type StateFn = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// How long a successor that closed the hand-off connection after `promoted` gets to show it is
/// alive (a version-1 successor closes instead of confirming) or dead.
const HANGUP_GRACE: Duration = Duration::from_millis(200);

/// A successor that serves and waits to be promoted.
#[derive(Debug)]
pub struct ReadySuccessor {
    /// Its process.
    pub child: tokio::process::Child,
    /// Its pid.
    pub pid: u32,
    read: BufReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

/// What a ready successor did on the hand-off connection.
#[derive(Debug)]
pub enum SuccessorEvent {
    /// It serves as main (`confirmed`, or a version-1 successor that closed after `promoted` and
    /// lives on).
    Confirmed,
    /// It is gone, or broke the protocol: the hand-off failed.
    Lost(String),
}

impl ReadySuccessor {
    /// Tell the successor that systemd knows it as the main process.
    pub async fn promote(&mut self) -> io::Result<()> {
        self.write
            .write_all(&protocol::encode_line(&ParentMessage::Promoted))
            .await
    }

    /// The next thing the successor does on the connection. Before `promoted` any event is a
    /// loss (a successor says nothing between `ready` and `promoted`).
    pub async fn next_event(&mut self, promoted: bool) -> SuccessorEvent {
        let mut line = Vec::new();
        let read = (&mut self.read)
            .take(protocol::MAX_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Err(e) => {
                SuccessorEvent::Lost(format!("successor {}: hand-off connection: {e}", self.pid))
            }
            Ok(0) if promoted && self.lives_on().await => SuccessorEvent::Confirmed,
            Ok(0) => SuccessorEvent::Lost(format!(
                "successor {} hung up before it was confirmed as main{}",
                self.pid,
                if self.exited() { " (it exited)" } else { "" }
            )),
            Ok(_) => match protocol::parse_line::<ChildMessage>(&line, "child message") {
                Ok(Some(ChildMessage::Confirmed)) if promoted => SuccessorEvent::Confirmed,
                _ => SuccessorEvent::Lost(format!(
                    "successor {} sent {} out of turn",
                    self.pid,
                    protocol::preview(&line)
                )),
            },
        }
    }

    /// True when the process has exited (not reaped: its pid stays valid until [`Self::end`]).
    fn exited(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(
            waitid(Id::Pid(nix::unistd::Pid::from_raw(self.pid as i32)), flags),
            Ok(WaitStatus::StillAlive)
        )
    }

    /// After a hang-up: still alive after a short grace?
    async fn lives_on(&self) -> bool {
        let deadline = tokio::time::Instant::now() + HANGUP_GRACE;
        while tokio::time::Instant::now() < deadline {
            if self.exited() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        !self.exited()
    }

    /// End a successor whose hand-off failed or was called off, and reap it. One that may already
    /// serve connections gets `SIGTERM` and `grace` to drain them, then `SIGKILL`.
    pub async fn end(mut self, grace: Duration) {
        if !self.exited() {
            let pid = nix::unistd::Pid::from_raw(self.pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
            warn!(
                successor = self.pid,
                ?grace,
                "successor still draining; killing it"
            );
        }
        kill_and_reap(&mut self.child).await;
    }
}

/// A hand-off socket bound for one hand-off; unlinked on drop.
struct HandoffSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl Drop for HandoffSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl HandoffSocket {
    fn open(path: &Path) -> Result<HandoffSocket, HandoffError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        prepare_directory(dir)?;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                warn!(path = %path.display(), "replacing a stale hand-off socket");
                std::fs::remove_file(path).map_err(|source| HandoffError::Bind {
                    path: path.to_owned(),
                    source,
                })?;
            }
            Ok(meta) => {
                let ft = meta.file_type();
                let what = if ft.is_symlink() {
                    "a symlink"
                } else if ft.is_dir() {
                    "a directory"
                } else if ft.is_file() {
                    "a regular file"
                } else {
                    "a special file"
                };
                return Err(HandoffError::PathOccupied {
                    path: path.to_owned(),
                    what,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(HandoffError::Bind {
                    path: path.to_owned(),
                    source,
                })
            }
        }
        let listener = UnixListener::bind(path).map_err(|source| HandoffError::Bind {
            path: path.to_owned(),
            source,
        })?;
        let socket = HandoffSocket {
            path: path.to_owned(),
            listener,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |source| HandoffError::Bind {
                path: path.to_owned(),
                source,
            },
        )?;
        Ok(socket)
    }
}

/// Create the directory 0700 if missing; refuse one that others may write into or that is not ours.
fn prepare_directory(dir: &Path) -> Result<(), HandoffError> {
    let problem = |problem: String| HandoffError::Directory {
        path: dir.to_owned(),
        problem,
    };
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        return Err(problem(format!("cannot create: {e}")));
    }
    let meta = std::fs::metadata(dir).map_err(|e| problem(e.to_string()))?;
    if !meta.is_dir() {
        return Err(problem("is not a directory".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    let mode = meta.mode();
    let shared_sticky = mode & 0o1000 != 0; // like /tmp: others may not remove our socket
    if meta.uid() != me && !shared_sticky {
        return Err(problem(format!(
            "owned by uid {} (we are {me})",
            meta.uid()
        )));
    }
    if mode & 0o022 != 0 && !shared_sticky {
        return Err(problem(format!(
            "writable by others (mode {:o})",
            mode & 0o7777
        )));
    }
    Ok(())
}

/// What a connection task learned.
enum ConnEvent {
    Request(OwnedReadHalf, OwnedWriteHalf),
    Message(
        ChildMessage,
        Option<(BufReader<OwnedReadHalf>, OwnedWriteHalf)>,
    ),
    Broken(HandoffError),
}

/// Run one hand-off: start the successor and return it once it serves. On error the successor, if
/// any, has been killed and reaped.
pub async fn hand_off(
    exe: &Executable,
    socket_path: &Path,
    listeners: &[Listener],
    generation: u64,
    child_timeout: Duration,
    state: Option<StateFn>,
    cancel: CancellationToken,
) -> Result<ReadySuccessor, HandoffError> {
    let socket = HandoffSocket::open(socket_path)?;
    let sockets: Vec<_> = listeners.iter().map(|l| &l.socket).collect();
    let mut child =
        spawn_successor(exe, &sockets, socket_path, generation + 1).map_err(|source| {
            HandoffError::Spawn {
                exe: exe.path.clone(),
                source,
            }
        })?;
    let pid = child.id().unwrap_or_default();
    info!(successor = pid, exe = %exe.path.display(), "successor started");
    let offer = offer_for(listeners, generation, state.is_some());
    let conversation = tokio::time::timeout(
        child_timeout,
        converse(&socket, &mut child, pid, &offer, state, child_timeout),
    );
    let result = tokio::select! {
        r = conversation => r.unwrap_or(Err(HandoffError::Timeout { pid, after: child_timeout })),
        _ = cancel.cancelled() => Err(HandoffError::Cancelled),
    };
    match result {
        Ok((read, write)) => Ok(ReadySuccessor {
            child,
            pid,
            read,
            write,
        }),
        Err(e) => {
            kill_and_reap(&mut child).await;
            Err(e)
        }
    }
}

/// Kill a successor that failed and wait for it, so no zombie is left.
pub async fn kill_and_reap(child: &mut tokio::process::Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.start_kill();
    }
    let _ = child.wait().await;
}

fn offer_for(listeners: &[Listener], generation: u64, state: bool) -> ListenerOffer {
    let offered: Vec<OfferedListener> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| OfferedListener {
            addr: l.spec.as_str().to_owned(),
            fd: 3 + i as i32,
            name: l.name.clone(),
            origin: l.origin,
        })
        .collect();
    ListenerOffer {
        addr: offered.first().map(|l| l.addr.clone()).unwrap_or_default(),
        fd: 3,
        filename: offered.first().map(|l| l.name.clone()).unwrap_or_default(),
        baton: Some(Extension {
            version: EXTENSION_VERSION,
            generation,
            listeners: offered,
            state,
        }),
    }
}

async fn converse(
    socket: &HandoffSocket,
    child: &mut tokio::process::Child,
    pid: u32,
    offer: &ListenerOffer,
    state: Option<StateFn>,
    budget: Duration,
) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf), HandoffError> {
    let (tx, mut rx) = mpsc::channel::<ConnEvent>(4);
    let me = nix::unistd::geteuid().as_raw();
    let mut offered = false;
    // A failing successor reports why just before it exits; after its exit, keep accepting for a
    // moment so that report is not lost.
    let mut exited: Option<ExitStatus> = None;
    let report_grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(report_grace);
    loop {
        tokio::select! {
            status = child.wait(), if exited.is_none() => {
                exited = Some(status.map_err(|source| HandoffError::Io { pid, source })?);
                report_grace.as_mut().reset(tokio::time::Instant::now() + EXIT_REPORT_GRACE);
            }
            _ = &mut report_grace, if exited.is_some() => {
                if let Some(status) = exited {
                    return Err(HandoffError::Exited { pid, status, reason: None });
                }
            }
            accepted = socket.listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                match stream.peer_cred() {
                    Ok(cred) if cred.pid() == Some(pid as i32) && cred.uid() == me => {
                        tokio::spawn(read_opening(stream, tx.clone(), pid, budget).in_current_span());
                    }
                    Ok(cred) => {
                        warn!(peer_pid = ?cred.pid(), peer_uid = cred.uid(), successor = pid,
                              "refused a hand-off connection from a process that is not our successor");
                    }
                    Err(e) => warn!(error = %e, "refused a hand-off connection without credentials"),
                }
            }
            Some(event) = rx.recv() => match event {
                ConnEvent::Request(read, mut write) => {
                    if offered {
                        return Err(HandoffError::Protocol { pid, source: ProtocolError::Unexpected("a second get_listener".into()) });
                    }
                    offered = true;
                    write.write_all(&protocol::encode_line(offer)).await
                        .map_err(|source| HandoffError::Io { pid, source })?;
                    tokio::spawn(read_line(BufReader::new(read), write, tx.clone(), pid, state.clone()).in_current_span());
                }
                ConnEvent::Message(ChildMessage::Ready { .. }, Some(conn)) => return Ok(conn),
                ConnEvent::Message(ChildMessage::Ready { .. }, None) => {
                    return Err(HandoffError::Protocol { pid, source: ProtocolError::Unexpected("ready before get_listener".into()) });
                }
                ConnEvent::Message(ChildMessage::Failed { reason }, _) => {
                    return Err(match exited {
                        Some(status) => HandoffError::Exited { pid, status, reason: Some(reason) },
                        None => HandoffError::Failed { pid, reason },
                    });
                }
                ConnEvent::Message(other, _) => {
                    return Err(HandoffError::Protocol { pid, source: ProtocolError::Unexpected(format!("{other:?} out of turn")) });
                }
                ConnEvent::Broken(e) => return Err(e),
            }
        }
    }
}

/// Read the first bytes of a verified connection: the request or a child message.
async fn read_opening(stream: UnixStream, tx: mpsc::Sender<ConnEvent>, pid: u32, budget: Duration) {
    let (mut read, write) = stream.into_split();
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 1024];
    let event = loop {
        let n = match tokio::time::timeout(budget, read.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(source)) => break ConnEvent::Broken(HandoffError::Io { pid, source }),
            Err(_) => return, // the hand-off's own deadline reports this
        };
        if n == 0 {
            return; // hung up: the child's exit or the deadline tells the story
        }
        buf.extend_from_slice(&chunk[..n]);
        match protocol::parse_opening(&buf) {
            Ok(None) => continue,
            Ok(Some(Opening::Request)) => break ConnEvent::Request(read, write),
            Ok(Some(Opening::Message(m))) => break ConnEvent::Message(m, None),
            Err(source) => break ConnEvent::Broken(HandoffError::Protocol { pid, source }),
        }
    };
    let _ = tx.send(event).await;
}

/// After the offer: answer `get_state`, then pass on the child's next line (ready or failed).
async fn read_line(
    mut read: BufReader<OwnedReadHalf>,
    mut write: OwnedWriteHalf,
    tx: mpsc::Sender<ConnEvent>,
    pid: u32,
    state: Option<StateFn>,
) {
    let mut state_sent = false;
    let event = loop {
        let mut line = Vec::new();
        let read_result = (&mut read)
            .take(protocol::MAX_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await;
        let msg = match read_result {
            Ok(0) => return,
            Ok(_) => match protocol::parse_line::<ChildMessage>(&line, "child message") {
                Ok(Some(msg)) => msg,
                Ok(None) => {
                    break ConnEvent::Broken(HandoffError::Protocol {
                        pid,
                        source: ProtocolError::TooLarge,
                    })
                }
                Err(source) => break ConnEvent::Broken(HandoffError::Protocol { pid, source }),
            },
            Err(source) => break ConnEvent::Broken(HandoffError::Io { pid, source }),
        };
        if msg != ChildMessage::GetState || state_sent {
            break ConnEvent::Message(msg, Some((read, write)));
        }
        state_sent = true;
        let bytes = state.as_ref().map(|f| f()).unwrap_or_default();
        let header = protocol::encode_line(&ParentMessage::State {
            len: bytes.len() as u64,
        });
        if bytes.len() as u64 > protocol::MAX_STATE {
            break ConnEvent::Broken(HandoffError::Protocol {
                pid,
                source: ProtocolError::Inconsistent(format!(
                    "the application state has {} bytes; at most {} can be handed over",
                    bytes.len(),
                    protocol::MAX_STATE
                )),
            });
        }
        if let Err(source) = async {
            write.write_all(&header).await?;
            write.write_all(&bytes).await
        }
        .await
        {
            break ConnEvent::Broken(HandoffError::Io { pid, source });
        }
        info!(
            successor = pid,
            bytes = bytes.len(),
            "application state handed over"
        );
    };
    let _ = tx.send(event).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_is_created_private_and_others_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        prepare_directory(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(prepare_directory(&dir)
            .unwrap_err()
            .to_string()
            .contains("writable by others"));
    }

    #[tokio::test]
    async fn socket_path_occupied_by_a_file_or_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f.sock");
        std::fs::write(&file, b"keep me").unwrap();
        let e = HandoffSocket::open(&file).err().unwrap().to_string();
        assert!(e.contains("a regular file is in the way"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        let link = tmp.path().join("l.sock");
        std::os::unix::fs::symlink("/nonexistent", &link).unwrap();
        assert!(HandoffSocket::open(&link)
            .err()
            .unwrap()
            .to_string()
            .contains("a symlink"));
        let stale = tmp.path().join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let s = HandoffSocket::open(&stale).unwrap();
        drop(s);
        assert!(!stale.exists());
    }
}
