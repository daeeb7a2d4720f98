//! The control socket, the running side: a listening Unix stream socket in the runtime directory
//! (`control.<pid>.<random>`), bound by the first generation and passed on to every successor
//! with the listeners, served only by the process that is main and not handing off. Specified in
//! `docs/handoff-protocol.md`, "Reload requests and their answer".
//!
//! A request that is read while the process is main starts a hand-off (or joins the one a plain
//! `SIGHUP` starts at the same moment) and gets its outcome. Once a hand-off began, the socket is
//! not accepted on: requests wait in its backlog for whoever is main next (this process again
//! after a failure, else the successor), so each is answered by a hand-off that began after it
//! arrived. One read just as a hand-off began is answered with the next hand-off's outcome
//! (after a failure, this process starts it at once) or, when a successor took over, with
//! [`Answer::AskAgain`]: the client asks again, on the same socket, and the successor answers.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{self, Backlog};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn, Instrument};

use super::{Answer, Request, MAX_LINE};

/// How many connections may wait in the control socket's backlog (during a hand-off, say).
const BACKLOG: i32 = 1024;
/// How long a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Listen on `fd` (again): the kernel records the caller's credentials for `SO_PEERCRED` at
/// `listen(2)`, so each generation that becomes main calls it, and clients see who serves now.
fn relisten(fd: &OwnedFd) -> io::Result<()> {
    let backlog = Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN);
    socket::listen(&fd.as_fd(), backlog).map_err(io::Error::from)
}

/// A client waiting for the outcome.
type Waiter = oneshot::Sender<Answer>;

/// The requests read that no hand-off has taken yet, shared with the tasks that read them.
#[derive(Default)]
struct Queue {
    /// Waiting for the next hand-off's outcome.
    waiting: Vec<Waiter>,
    /// Set once the process stops taking requests ([`Control::close`]): a request read after
    /// that (its connection was accepted before, its line came late) gets this answer at once,
    /// rather than waiting for an outcome this process will never have.
    closed: Option<Answer>,
}

/// How the owner of a control socket hears of a request read: `input` sent on `inputs`.
pub(crate) struct Wake<T> {
    /// The owner's input channel.
    pub(crate) inputs: mpsc::UnboundedSender<T>,
    /// What is sent for each request.
    pub(crate) input: T,
}

impl<T: Clone> Clone for Wake<T> {
    fn clone(&self) -> Self {
        Wake {
            inputs: self.inputs.clone(),
            input: self.input.clone(),
        }
    }
}

/// The control socket of a serving process and the requests it holds.
pub(crate) struct Control {
    fd: OwnedFd,
    accepting: watch::Sender<bool>,
    /// Requests read that no hand-off has taken yet.
    pending: Arc<Mutex<Queue>>,
    /// Requests the running hand-off answers.
    current: Vec<Waiter>,
    /// How many connections accepted are not done with yet (their request unread, or its answer
    /// not written).
    open: watch::Receiver<usize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Control {
    /// Serve the listening control socket `fd` (not yet accepting: see [`Control::accept`]).
    /// Each request read is reported through `wake`.
    pub(crate) fn start<T: Clone + Send + 'static>(
        fd: OwnedFd,
        wake: Wake<T>,
    ) -> io::Result<Control> {
        let std_listener = std::os::unix::net::UnixListener::from(fd.try_clone()?);
        std_listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(std_listener)?;
        let (accepting, rx) = watch::channel(false);
        let pending = Arc::new(Mutex::new(Queue::default()));
        let (count, open) = watch::channel(0);
        let task = tokio::spawn(
            serve(listener, rx, pending.clone(), wake, Arc::new(count)).in_current_span(),
        );
        Ok(Control {
            fd,
            accepting,
            pending,
            current: Vec::new(),
            open,
            task: Some(task),
        })
    }

    /// The socket, for the successor.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The socket's name in the runtime directory (the last part of the path it was bound to).
    pub(crate) fn name(&self) -> Option<String> {
        let addr: socket::UnixAddr = socket::getsockname(self.fd.as_raw_fd()).ok()?;
        let path = addr.path()?;
        path.file_name()?.to_str().map(str::to_owned)
    }

    /// This process is main and not handing off: take requests (as the listening process).
    pub(crate) fn accept(&self) {
        lock(&self.pending).closed = None;
        if let Err(e) = relisten(&self.fd) {
            warn!(error = %e, "cannot listen on the control socket again");
        }
        self.accepting.send_replace(true);
    }

    /// A hand-off begins: stop taking requests; those read so far (and from now on, even after
    /// a [`Control::close`]) get its outcome.
    pub(crate) fn begin(&mut self) {
        self.accepting.send_replace(false);
        let mut queue = lock(&self.pending);
        queue.closed = None;
        let taken = std::mem::take(&mut queue.waiting);
        drop(queue);
        self.current.extend(taken);
    }

    /// A hand-off ended. Its requests get `answer`; requests read meanwhile get the next
    /// hand-off's outcome: `true` when one should start now (the process is main again), else
    /// (a successor took over) they are told to ask again.
    pub(crate) fn finish(&mut self, answer: Answer, main_again: bool) -> bool {
        for waiter in self.current.drain(..) {
            let _ = waiter.send(answer.clone());
        }
        if main_again {
            self.accept();
            return !lock(&self.pending).waiting.is_empty();
        }
        self.answer_pending(Answer::AskAgain {
            main: match answer {
                Answer::Reloaded { successor, .. } => successor,
                _ => std::process::id(),
            },
        });
        false
    }

    /// The process stops or retires: no more requests; every waiting one gets `answer`, and so
    /// does every one read from now on (until [`Control::begin`] or [`Control::accept`]).
    pub(crate) fn close(&mut self, answer: Answer) {
        self.accepting.send_replace(false);
        for waiter in self.current.drain(..) {
            let _ = waiter.send(answer.clone());
        }
        let waiting = {
            let mut queue = lock(&self.pending);
            queue.closed = Some(answer.clone());
            std::mem::take(&mut queue.waiting)
        };
        for waiter in waiting {
            let _ = waiter.send(answer.clone());
        }
    }

    /// Wait (at most `within`) until every connection accepted is done with: its request read
    /// and its answer written (after [`Control::close`], at once), or found to hold none. For a
    /// process about to exit or replace its program, which would otherwise close connections it
    /// accepted without a word (a client would read a reset, not an answer).
    pub(crate) async fn flush(&mut self, within: Duration) {
        let _ = tokio::time::timeout(within, self.open.wait_for(|n| *n == 0)).await;
    }

    fn answer_pending(&self, answer: Answer) {
        for waiter in std::mem::take(&mut lock(&self.pending).waiting) {
            let _ = waiter.send(answer.clone());
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Accept while allowed; read each request in a task of its own.
async fn serve<T: Clone + Send + 'static>(
    listener: UnixListener,
    mut accepting: watch::Receiver<bool>,
    pending: Arc<Mutex<Queue>>,
    wake: Wake<T>,
    open: Arc<watch::Sender<usize>>,
) {
    let me = nix::unistd::geteuid().as_raw();
    loop {
        if accepting.wait_for(|on| *on).await.is_err() {
            return;
        }
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!(error = %e, "cannot accept on the control socket");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = accepting.changed() => continue,
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == me || cred.uid() == 0 => {
                open.send_modify(|n| *n += 1);
                let done = Accepted(open.clone());
                let task = answer_one(stream, pending.clone(), wake.clone(), done);
                tokio::spawn(task.in_current_span());
            }
            Ok(cred) => {
                warn!(peer_pid = ?cred.pid(), peer_uid = cred.uid(),
                      "refused a control connection from another user");
            }
            Err(e) => warn!(error = %e, "refused a control connection without credentials"),
        }
    }
}

/// A connection accepted, counted open until this is dropped (its task ended, however).
struct Accepted(Arc<watch::Sender<usize>>);

impl Drop for Accepted {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Read one request, wait for its outcome, write the answer.
async fn answer_one<T>(
    stream: UnixStream,
    pending: Arc<Mutex<Queue>>,
    wake: Wake<T>,
    _accepted: Accepted,
) {
    let peer = stream.peer_cred().ok().and_then(|c| c.pid());
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        BufReader::new(read)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line),
    )
    .await;
    match read {
        // One line, its newline within `MAX_LINE` + 1 bytes.
        Ok(Ok(_)) if line.ends_with(b"\n") => {}
        // Connected and left (a client looking for its service's socket), or said nothing.
        _ if line.is_empty() => return debug!(?peer, "control connection without a request"),
        // Cut off by the limit, by the peer or by the time: never read as a request.
        _ => {
            return warn!(
                ?peer,
                bytes = line.len(),
                "refused a control request that is not one line of at most 64 KiB"
            );
        }
    }
    match serde_json::from_slice::<Request>(&line) {
        Ok(Request::Reload {}) => {}
        Err(e) => {
            return warn!(?peer, error = %crate::text::one_line(&e.to_string()),
                         "refused a malformed control request");
        }
    }
    info!(?peer, "reload requested on the control socket");
    let (tx, rx) = oneshot::channel();
    let closed = {
        let mut queue = lock(&pending);
        match &queue.closed {
            Some(answer) => Some(answer.clone()),
            None => {
                queue.waiting.push(tx);
                None
            }
        }
    };
    let answer = match closed {
        Some(answer) => {
            debug!(
                ?peer,
                "request read after this process stopped taking requests"
            );
            Ok(answer)
        }
        None => {
            let _ = wake.inputs.send(wake.input);
            rx.await
        }
    };
    let answer = answer.unwrap_or(Answer::Failed {
        pid: std::process::id(),
        reason: "the request was dropped".into(),
    });
    let mut bytes = serde_json::to_vec(&answer).unwrap_or_default();
    bytes.push(b'\n');
    if let Err(e) = write.write_all(&bytes).await {
        debug!(?peer, error = %e, "the requester left before its answer");
    }
}

/// Whether `fd` is a listening Unix stream socket: what a predecessor offers as its control
/// socket.
pub(crate) fn adopt(fd: i32) -> Result<OwnedFd, String> {
    match crate::listen::adopt_listening_fd(fd)? {
        crate::listen::Socket::Unix(l) => Ok(OwnedFd::from(l)),
        _ => Err("is not a Unix socket".into()),
    }
}
