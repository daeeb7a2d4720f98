//! The running process's side of the hand-off: open the hand-off socket safely, start the
//! successor, answer `get_listener` for exactly that process, and wait for its readiness.
//! Specified in [`docs/handoff-protocol.md`](../../docs/handoff-protocol.md).

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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
use super::spawn::{spawn_successor, Child, Executable};
use crate::listen::Listener;
use crate::safe_fs::{self, FsError, TrustedDir};

/// Why a hand-off failed. One variant per failing step, each with its context.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// The runtime directory (that of the hand-off socket path) is not safe or not usable.
    #[error("runtime directory {0}")]
    Directory(FsError),
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

/// How long the hand-off socket pauses accepting after an error (as the HTTP accept loop does).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long after a successor's exit a failure report still being read may take to arrive.
const EXIT_REPORT_GRACE: Duration = Duration::from_millis(300);
/// How long after a successor's exit a connection it made just before may take to be accepted.
const EXIT_ACCEPT_GRACE: Duration = Duration::from_millis(30);

/// Produces the application state handed to the successor (see [`crate::Serve::on_handoff`]).
pub type StateFn = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// How long a successor that closed the hand-off connection after `promoted` gets to show it is
/// alive (a version-1 successor closes instead of confirming) or dead.
const HANGUP_GRACE: Duration = Duration::from_millis(200);

/// A successor that serves and waits to be promoted.
#[derive(Debug)]
pub struct ReadySuccessor {
    /// Its process.
    pub child: Child,
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
    /// It was told to stop before it was confirmed (`stopping`): the stop is the service's.
    Stopping,
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

    /// The next thing the successor does on the connection. Before `promoted` any event but
    /// `stopping` is a loss (a successor says nothing else between `ready` and `promoted`).
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
                Ok(Some(ChildMessage::Stopping)) => SuccessorEvent::Stopping,
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

    /// Kill a successor that missed a deadline of its hand-off (`SIGKILL`: it is not trusted to
    /// drain) and reap it.
    pub async fn kill(mut self) {
        kill_and_reap(&mut self.child).await;
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

use crate::runtime_dir::{RuntimeDir, HANDOFF_SOCKET_NAME as SOCKET_NAME};

/// The socket of one hand-off, in a private directory made for it alone; both are removed on
/// drop.
struct HandoffSocket {
    path: PathBuf,
    listener: UnixListener,
    place: Place,
}

/// The per-hand-off directory, removed (with the socket in it) on drop.
struct Place {
    runtime: RuntimeDir,
    dir: TrustedDir,
    name: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Err(e) = self.runtime.remove_private_dir(&self.dir, &self.name) {
            warn!(error = %e, "cannot remove the hand-off directory");
        }
    }
}

impl HandoffSocket {
    /// Make `<runtime>/handoff.<pid>.<random>/` (0700, ours, never reused) and listen in it. No
    /// other process's file is ever touched: nothing is unlinked but what this hand-off made.
    fn open(handoff_socket: &Path) -> Result<HandoffSocket, HandoffError> {
        let runtime = RuntimeDir::open(handoff_socket).map_err(HandoffError::Directory)?;
        let (dir, name) = runtime
            .create_handoff_dir()
            .map_err(HandoffError::Directory)?;
        let place = Place { runtime, dir, name };
        let path = place.dir.join(SOCKET_NAME);
        if safe_fs::sockaddr_len(&path) > safe_fs::MAX_SOCKET_PATH {
            return Err(HandoffError::Bind {
                path,
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "longer than the 107 bytes a Unix socket address holds",
                ),
            });
        }
        let bind_err = |source| HandoffError::Bind {
            path: path.clone(),
            source,
        };
        // Bound through our descriptor of the verified directory, not through its path.
        let std_listener = std::os::unix::net::UnixListener::bind(place.dir.fd_path(SOCKET_NAME))
            .map_err(bind_err)?;
        place
            .dir
            .set_mode(SOCKET_NAME, 0o600)
            .map_err(|e| bind_err(io::Error::other(e.to_string())))?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let listener = UnixListener::from_std(std_listener).map_err(bind_err)?;
        Ok(HandoffSocket {
            path,
            listener,
            place,
        })
    }
}

/// What a connection task learned.
enum ConnEvent {
    Request(OwnedReadHalf, OwnedWriteHalf),
    Message(
        ChildMessage,
        Option<(BufReader<OwnedReadHalf>, OwnedWriteHalf)>,
    ),
    Broken(HandoffError),
    /// A connection ended without a message (hung up, or nothing within the budget).
    Done,
}

/// The descriptors a successor inherits: the listeners (from fd 3), then the control socket.
#[derive(Debug, Clone, Copy)]
pub struct Passed<'a> {
    /// The listeners, in order.
    pub listeners: &'a [Listener],
    /// The service's control socket, if it has one.
    pub control: Option<&'a OwnedFd>,
}

/// Run one hand-off: start the successor and return it once it serves. On error the successor, if
/// any, has been killed and reaped. The hand-off socket is made in a private directory of its own
/// inside the runtime directory of the configured `handoff_socket` (see [`crate::runtime_dir`]),
/// never at that path; the successor learns where from `BATON_PREDECESSOR_SOCKET`.
pub async fn hand_off(
    exe: &Executable,
    handoff_socket: &Path,
    passed: Passed<'_>,
    generation: u64,
    child_timeout: Duration,
    state: Option<StateFn>,
    cancel: CancellationToken,
) -> Result<ReadySuccessor, HandoffError> {
    let Passed { listeners, control } = passed;
    let socket = HandoffSocket::open(handoff_socket)?;
    let mut sockets: Vec<BorrowedFd<'_>> = listeners.iter().map(|l| l.socket.as_fd()).collect();
    let control_fd = control.map(|fd| {
        sockets.push(fd.as_fd());
        3 + listeners.len() as i32
    });
    let mut child =
        spawn_successor(exe, &sockets, &socket.path, generation + 1).map_err(|source| {
            HandoffError::Spawn {
                exe: exe.path.clone(),
                source,
            }
        })?;
    let pid = child.id();
    info!(successor = pid, exe = %exe.path.display(), "successor started");
    // While the successor starts (not before: listing the directory and probing every pid in it
    // would delay the start).
    socket.place.runtime.sweep();
    let offer = offer_for(listeners, generation, state.is_some(), control_fd);
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
pub async fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.start_kill();
    }
    let _ = child.wait().await;
}

fn offer_for(
    listeners: &[Listener],
    generation: u64,
    state: bool,
    control: Option<i32>,
) -> ListenerOffer {
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
            control,
        }),
    }
}

async fn converse(
    socket: &HandoffSocket,
    child: &mut Child,
    pid: u32,
    offer: &ListenerOffer,
    state: Option<StateFn>,
    budget: Duration,
) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf), HandoffError> {
    let (tx, mut rx) = mpsc::channel::<ConnEvent>(4);
    let me = nix::unistd::geteuid().as_raw();
    let mut offered = false;
    // A failing successor reports why just before it exits; after its exit, keep accepting for a
    // moment so that report is not lost: a short moment when no connection is being read, longer
    // while one is (a crash without a report is told within tens of milliseconds).
    let mut exited: Option<ExitStatus> = None;
    let mut readers = 0usize;
    let report_grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(report_grace);
    // A persistent accept error (EMFILE, ENFILE, ENOBUFS) must not spin: pause accepting.
    let accept_pause = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(accept_pause);
    let mut paused = false;
    let mut accept_errors: u64 = 0;
    loop {
        tokio::select! {
            status = child.wait(), if exited.is_none() => {
                exited = Some(status.map_err(|source| HandoffError::Io { pid, source })?);
                let grace = if readers > 0 { EXIT_REPORT_GRACE } else { EXIT_ACCEPT_GRACE };
                report_grace.as_mut().reset(tokio::time::Instant::now() + grace);
            }
            _ = &mut report_grace, if exited.is_some() => {
                if let Some(status) = exited {
                    return Err(HandoffError::Exited { pid, status, reason: None });
                }
            }
            _ = &mut accept_pause, if paused => paused = false,
            accepted = socket.listener.accept(), if !paused => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        accept_errors += 1;
                        if accept_errors.is_power_of_two() {
                            warn!(path = %socket.path.display(), error = %e, failures = accept_errors,
                                  "cannot accept on the hand-off socket; retrying every {ACCEPT_BACKOFF:?}");
                        }
                        paused = true;
                        accept_pause.as_mut().reset(tokio::time::Instant::now() + ACCEPT_BACKOFF);
                        continue;
                    }
                };
                match stream.peer_cred() {
                    Ok(cred) if cred.pid() == Some(pid as i32) && cred.uid() == me => {
                        readers += 1;
                        if exited.is_some() {
                            report_grace.as_mut().reset(tokio::time::Instant::now() + EXIT_REPORT_GRACE);
                        }
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
                ConnEvent::Done => {
                    readers = readers.saturating_sub(1);
                    if let (Some(status), 0) = (exited, readers) {
                        return Err(HandoffError::Exited { pid, status, reason: None });
                    }
                }
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
            Err(_) => break ConnEvent::Done, // the hand-off's own deadline reports this
        };
        if n == 0 {
            break ConnEvent::Done; // hung up: the child's exit or the deadline tells the story
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
            Ok(0) => break ConnEvent::Done,
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
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// A ready successor whose process runs `script` under /bin/sh, talking over a socket pair:
    /// returns it and the successor's end of the connection.
    fn successor(script: &str) -> (ReadySuccessor, UnixStream) {
        let exe = Executable {
            path: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
        };
        let child = spawn_successor(&exe, &[] as &[OwnedFd], Path::new("/nonexistent"), 1).unwrap();
        let pid = child.id();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (read, write) = ours.into_split();
        let read = BufReader::new(read);
        let s = ReadySuccessor {
            child,
            pid,
            read,
            write,
        };
        (s, theirs)
    }

    /// Waits (bounded) until `pid` is a zombie: exited, not reaped.
    async fn until_exited(pid: u32) {
        for _ in 0..3000 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            if stat
                .rsplit(')')
                .next()
                .unwrap()
                .trim_start()
                .starts_with('Z')
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{pid} did not exit");
    }

    fn is_gone(pid: u32) -> bool {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    #[tokio::test]
    async fn confirmed_counts_only_after_promoted_and_stopping_always() {
        let (mut s, mut c) = successor("sleep 60");
        let confirmed = protocol::encode_line(&ChildMessage::Confirmed);
        let stopping = protocol::encode_line(&ChildMessage::Stopping);
        s.promote().await.unwrap();
        let promoted = protocol::encode_line(&ParentMessage::Promoted);
        let mut line = vec![0u8; promoted.len()];
        tokio::time::timeout(Duration::from_secs(60), c.read_exact(&mut line))
            .await
            .expect("promote() sends a line")
            .unwrap();
        assert_eq!(line, promoted, "promote() tells the successor");
        c.write_all(&confirmed).await.unwrap();
        assert!(matches!(
            s.next_event(true).await,
            SuccessorEvent::Confirmed
        ));
        c.write_all(&confirmed).await.unwrap();
        assert!(
            matches!(s.next_event(false).await, SuccessorEvent::Lost(_)),
            "confirmed before promoted is out of turn"
        );
        for promoted in [false, true] {
            c.write_all(&stopping).await.unwrap();
            assert!(
                matches!(s.next_event(promoted).await, SuccessorEvent::Stopping),
                "promoted: {promoted}"
            );
        }
        s.kill().await;
    }

    #[tokio::test]
    async fn a_hang_up_confirms_only_after_promoted_and_while_the_process_lives() {
        // A version-1 successor closes the connection after `promoted` and serves on.
        // It is believed alive only after HANGUP_GRACE: a crashing process closes its descriptors
        // a moment before it is seen to exit.
        let (mut s, c) = successor("sleep 60");
        drop(c);
        let began = tokio::time::Instant::now();
        match s.next_event(true).await {
            SuccessorEvent::Confirmed => {}
            other => panic!("a live successor that hung up after promoted: {other:?}"),
        }
        assert!(
            began.elapsed() >= HANGUP_GRACE,
            "confirmed after {:?}, before the grace of {HANGUP_GRACE:?} was over",
            began.elapsed()
        );
        assert!(!s.exited());
        s.kill().await;

        // Before promoted, a hang-up is a loss, even while the process lives.
        let (mut s, c) = successor("sleep 60");
        drop(c);
        match s.next_event(false).await {
            SuccessorEvent::Lost(why) => assert!(!why.contains("it exited"), "{why}"),
            other => panic!("a hang-up before promoted: {other:?}"),
        }
        s.kill().await;

        // After promoted, a hang-up by a process that is gone is a loss.
        let (mut s, c) = successor("exit 3");
        until_exited(s.pid).await;
        assert!(s.exited());
        drop(c);
        assert!(!s.lives_on().await);
        match s.next_event(true).await {
            SuccessorEvent::Lost(_) => {}
            other => panic!("a dead successor's hang-up after promoted: {other:?}"),
        }
        let (mut s2, c2) = successor("exit 3");
        until_exited(s2.pid).await;
        drop(c2);
        match s2.next_event(false).await {
            SuccessorEvent::Lost(why) => assert!(why.contains("(it exited)"), "{why}"),
            other => panic!("{other:?}"),
        }
        let pids = [s.pid, s2.pid];
        s.end(Duration::from_secs(1)).await;
        s2.end(Duration::from_secs(1)).await;
        assert!(pids.into_iter().all(is_gone), "both reaped");
    }

    #[tokio::test]
    async fn a_successor_line_of_64_kib_is_read_and_one_byte_more_is_refused() {
        // `confirmed` padded with blanks to `len` bytes before its newline.
        let line = |len: usize| {
            let mut l = br#"{"event":"confirmed""#.to_vec();
            l.resize(len - 1, b' ');
            l.extend_from_slice(b"}\n");
            l
        };
        let (mut s, mut c) = successor("sleep 60");
        c.write_all(&line(protocol::MAX_MESSAGE)).await.unwrap();
        c.write_all(&protocol::encode_line(&ChildMessage::Stopping))
            .await
            .unwrap();
        match s.next_event(true).await {
            SuccessorEvent::Confirmed => {}
            other => panic!("a line of 64 KiB: {other:?}"),
        }
        assert!(
            matches!(s.next_event(true).await, SuccessorEvent::Stopping),
            "the line was read whole, the next one is next"
        );
        c.write_all(&line(protocol::MAX_MESSAGE + 1)).await.unwrap();
        assert!(matches!(s.next_event(true).await, SuccessorEvent::Lost(_)));
        s.kill().await;
    }

    #[tokio::test]
    async fn kill_kills_and_reaps_the_successor() {
        let (s, _c) = successor("sleep 60");
        let pid = s.pid;
        assert!(!s.exited());
        s.kill().await;
        assert!(is_gone(pid), "{pid} killed and reaped");
    }

    #[tokio::test]
    async fn end_gives_a_live_successor_sigterm_and_its_grace_to_drain() {
        let (_tmp, dir) = crate::test_util::temp_path("end");
        std::fs::create_dir(&dir).unwrap();
        let (ready, drained) = (dir.join("ready"), dir.join("drained"));
        let script = format!(
            "trap 'echo drained > {}; kill $! 2>/dev/null; exit 0' TERM; sleep 60 & \
             echo > {}; wait",
            drained.display(),
            ready.display()
        );
        let (s, _c) = successor(&script);
        let pid = s.pid;
        for _ in 0..3000 {
            if ready.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(ready.exists(), "the script never got ready");
        s.end(Duration::from_secs(60)).await;
        assert!(is_gone(pid), "{pid} ended and reaped");
        assert_eq!(
            std::fs::read_to_string(&drained).ok().as_deref(),
            Some("drained\n"),
            "it was asked with SIGTERM and drained, not killed"
        );
    }

    #[tokio::test]
    async fn each_hand_off_gets_a_private_directory_removed_afterwards() {
        let (_tmp, runtime) = crate::test_util::temp_path("run");
        let a = HandoffSocket::open(&runtime.join("h.sock")).unwrap();
        let b = HandoffSocket::open(&runtime.join("h.sock")).unwrap();
        assert_ne!(a.path, b.path, "two hand-offs never share a socket");
        for s in [&a, &b] {
            let meta = std::fs::symlink_metadata(&s.path).unwrap();
            assert!(meta.file_type().is_socket());
            assert_eq!(meta.mode() & 0o777, 0o600);
            let dir = s.path.parent().unwrap();
            assert_eq!(std::fs::metadata(dir).unwrap().mode() & 0o777, 0o700);
            assert!(std::os::unix::net::UnixStream::connect(&s.path).is_ok());
        }
        assert!(
            safe_fs::sockaddr_len(&a.path)
                <= safe_fs::sockaddr_len(&runtime) + crate::runtime_dir::PATH_SUFFIX_MAX
        );
        drop(a);
        drop(b);
        assert_eq!(
            std::fs::read_dir(&runtime).unwrap().count(),
            0,
            "nothing left behind"
        );
    }

    /// The parent's side after the offer, over a real socket pair: the child sends `lines` and
    /// hangs up its sending half; returns the event passed on and every byte the child received.
    async fn after_offer(state: Option<usize>, lines: Vec<u8>) -> (ConnEvent, Vec<u8>) {
        let (parent, child) = UnixStream::pair().unwrap();
        let (read, write) = parent.into_split();
        let (mut child_read, mut child_write) = child.into_split();
        let (tx, mut rx) = mpsc::channel(1);
        let state = state.map(|n| Arc::new(move || vec![9u8; n]) as StateFn);
        tokio::spawn(read_line(BufReader::new(read), write, tx, 7, state));
        let received = tokio::spawn(async move {
            let mut all = Vec::new();
            child_read.read_to_end(&mut all).await.map(|_| all)
        });
        child_write.write_all(&lines).await.unwrap();
        child_write.shutdown().await.unwrap();
        let event = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .expect("the hand-off passes an event on")
            .unwrap();
        let event = match event {
            // the connection stays with the hand-off; close it so that the child reads to the end
            ConnEvent::Message(m, Some(conn)) => {
                drop(conn);
                ConnEvent::Message(m, None)
            }
            e => e,
        };
        (event, received.await.unwrap().unwrap())
    }

    const GET_STATE: &[u8] = b"{\"event\":\"get_state\"}\n";
    const READY: &[u8] = b"{\"event\":\"ready\",\"pid\":7}\n";

    /// The documented bound of the state (docs/handoff-protocol.md): 16 MiB are handed over
    /// whole after their header, one byte more fails the hand-off before a byte is sent.
    #[tokio::test]
    async fn a_state_of_16_mib_is_handed_over_and_one_byte_more_is_refused() {
        const MIB16: usize = 16_777_216;
        let (event, got) = after_offer(Some(MIB16), [GET_STATE, READY].concat()).await;
        assert!(matches!(
            event,
            ConnEvent::Message(ChildMessage::Ready { pid: 7 }, _)
        ));
        let header = b"{\"event\":\"state\",\"len\":16777216}\n";
        assert_eq!(&got[..header.len()], header);
        assert_eq!(got.len(), header.len() + MIB16);
        assert!(got[header.len()..].iter().all(|b| *b == 9));

        let (event, got) = after_offer(Some(MIB16 + 1), [GET_STATE, READY].concat()).await;
        assert!(matches!(
            event,
            ConnEvent::Broken(HandoffError::Protocol {
                source: ProtocolError::Inconsistent(_),
                ..
            })
        ));
        assert!(got.is_empty(), "{} bytes sent", got.len());
    }

    /// The state is sent once, only when asked: `ready` without `get_state` is passed on at
    /// once, a second `get_state` is out of turn.
    #[tokio::test]
    async fn the_state_is_sent_only_when_asked_and_once() {
        let (event, got) = after_offer(Some(3), READY.to_vec()).await;
        assert!(matches!(
            event,
            ConnEvent::Message(ChildMessage::Ready { .. }, _)
        ));
        assert!(got.is_empty());
        let (event, got) = after_offer(Some(3), [GET_STATE, GET_STATE].concat()).await;
        assert!(matches!(
            event,
            ConnEvent::Message(ChildMessage::GetState, _)
        ));
        assert_eq!(got, b"{\"event\":\"state\",\"len\":3}\n\x09\x09\x09");
    }

    /// A child message of 64 KiB (the documented bound) is read whole; one byte more is refused.
    #[tokio::test]
    async fn a_child_line_of_64_kib_is_read_and_one_byte_more_is_refused() {
        let line = |len: usize| {
            let mut l = br#"{"event":"failed","reason":""#.to_vec();
            l.resize(len - 2, b'x');
            l.extend_from_slice(b"\"}\n");
            l
        };
        let (event, _) = after_offer(None, line(protocol::MAX_MESSAGE)).await;
        assert!(matches!(
            event,
            ConnEvent::Message(ChildMessage::Failed { .. }, _)
        ));
        let (event, _) = after_offer(None, line(protocol::MAX_MESSAGE + 1)).await;
        assert!(matches!(
            event,
            ConnEvent::Broken(HandoffError::Protocol {
                source: ProtocolError::TooLarge,
                ..
            })
        ));
    }

    /// The hand-off socket's path may take the whole 107 bytes of a Unix socket address; one
    /// byte more is refused with a clear error, before any bind.
    #[tokio::test]
    async fn a_hand_off_socket_path_of_107_bytes_is_bound_and_108_refused() {
        let tmp = tempfile::tempdir().unwrap();
        // <runtime>/handoff.<pid>.<6 random>/handoff.sock
        let suffix = format!("/handoff.{}.123456/{SOCKET_NAME}", std::process::id()).len();
        for total in [safe_fs::MAX_SOCKET_PATH, safe_fs::MAX_SOCKET_PATH + 1] {
            let pad = total - suffix - safe_fs::sockaddr_len(tmp.path()) - 1;
            let runtime = tmp.path().join(format!("{total}{}", "r".repeat(pad - 3)));
            let opened = HandoffSocket::open(&runtime.join("h.sock"));
            if total == safe_fs::MAX_SOCKET_PATH {
                let socket = opened.unwrap_or_else(|e| panic!("{total} bytes: {e}"));
                assert_eq!(safe_fs::sockaddr_len(&socket.path), total);
                assert!(std::os::unix::net::UnixStream::connect(&socket.path).is_ok());
            } else {
                match opened {
                    Err(HandoffError::Bind { path, source }) => {
                        assert_eq!(safe_fs::sockaddr_len(&path), total);
                        assert!(source.to_string().contains("107 bytes"), "{source}");
                    }
                    Err(e) => panic!("{total} bytes: {e}"),
                    Ok(s) => panic!("{total} bytes bound at {}", s.path.display()),
                }
            }
        }
    }
}
