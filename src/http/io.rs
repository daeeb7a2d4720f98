//! The I/O wrapper of a connection and the state it shares with the service wrapper and the
//! connection task. Only cheap relaxed stores on the hot path; the task reads them on its
//! periodic checks.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::task::task_tracker::TaskTrackerToken;

/// The first bytes of every HTTP/2 connection (RFC 9113, section 3.4).
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// What a connection did lately.
#[derive(Default)]
pub(super) struct Activity {
    /// Set by every read that returned bytes; cleared by the task when it looks.
    pub read_seen: AtomicBool,
    /// Requests that reached the service.
    pub requests: AtomicU64,
    /// Requests whose response body has not ended yet.
    pub in_flight: AtomicUsize,
    /// The connection speaks HTTP/2.
    pub h2: AtomicBool,
    /// The process is draining: HTTP/1 responses get `Connection: close`.
    pub draining: AtomicBool,
    /// The peer was given up on while draining (it answered no GOAWAY, or read nothing of
    /// what is in flight for a while): its send queue is not waited for once more.
    pub gave_up: AtomicBool,
    /// The last bytes read did not end a request head (`CRLF CRLF`): hyper may hold part of a
    /// request (or a body) in its buffer. Never parked then.
    pub partial: AtomicBool,
    /// The last write could not go out (the peer does not read): hyper may hold unsent bytes
    /// and unprocessed pipelined requests. Never parked then.
    pub write_blocked: AtomicBool,
    /// The task asks the wrapper to end hyper's connection if nothing is readable (parking).
    pub park: AtomicBool,
    /// The wrapper did: hyper saw an end-of-file the peer did not send.
    pub parked: AtomicBool,
}

/// One allocation per connection: the activity, and the slot where the I/O wrapper leaves the
/// stream when hyper is done with it, for the lingering close.
pub(super) struct Shared<I> {
    pub activity: Activity,
    parked: Mutex<Option<Parked<I>>>,
}

/// A stream hyper let go of, still counted as an open connection.
pub(super) struct Parked<I> {
    pub io: I,
    pub token: TaskTrackerToken,
    /// The peer had closed its side (a read returned end-of-file): nothing to linger for.
    pub peer_closed: bool,
}

impl<I> Shared<I> {
    pub fn new() -> Arc<Self> {
        Arc::new(Shared {
            activity: Activity::default(),
            parked: Mutex::new(None),
        })
    }

    /// The stream, once hyper dropped it (not while an upgrade holds it).
    pub fn take_parked(&self) -> Option<Parked<I>> {
        self.parked.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// The stream as hyper sees it: records reads, recognises HTTP/2, holds the connection's tracker
/// token (so the process waits for it, upgraded or not) and, when dropped, parks the stream for
/// the connection task (lingering close, delivery of what is still queued) instead of closing it
/// at once.
pub(super) struct ConnIo<I> {
    inner: Option<Parked<I>>,
    shared: Arc<Shared<I>>,
    /// The first bytes were looked at.
    sniffed: bool,
    /// A read returned end-of-file: the peer closed its side, nothing to linger for.
    eof: bool,
    /// This wrapper told hyper the peer closed (parking): a shutdown leaves the stream open.
    parking: bool,
    /// The last four bytes read (a request head ends with `CRLF CRLF`, which reads may split).
    tail: u32,
}

impl<I> ConnIo<I> {
    pub fn new(io: I, token: TaskTrackerToken, shared: Arc<Shared<I>>) -> Self {
        ConnIo {
            inner: Some(Parked {
                io,
                token,
                peer_closed: false,
            }),
            shared,
            sniffed: false,
            eof: false,
            parking: false,
            tail: 0,
        }
    }
}

impl<I> Drop for ConnIo<I> {
    fn drop(&mut self) {
        if let (Some(mut parked), Ok(mut slot)) = (self.inner.take(), self.shared.parked.lock()) {
            parked.peer_closed = self.eof;
            *slot = Some(parked);
        }
    }
}

/// Whether the write could go out (see [`Activity::write_blocked`]).
fn answered<I>(
    shared: &Shared<I>,
    res: Poll<std::io::Result<usize>>,
) -> Poll<std::io::Result<usize>> {
    shared
        .activity
        .write_blocked
        .store(res.is_pending(), Ordering::Relaxed);
    res
}

fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "connection parked")
}

impl<I: AsyncRead + Unpin> AsyncRead for ConnIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        if this.parking {
            // Told hyper the peer closed: whatever comes now stays in the socket, for the
            // parked connection's next task.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        // The request to park is for the first read of the task's poll alone: a read that
        // brings bytes (a request that came after the task's check) cancels it, for hyper then
        // serves that request, and a later read in the same poll that would tell hyper "closed"
        // would find it busy and end the connection with the request unanswered.
        let park = this.shared.activity.park.swap(false, Ordering::Relaxed);
        let res = Pin::new(&mut inner.io).poll_read(cx, buf);
        if res.is_pending() && park {
            // Nothing readable and the task parks the connection: hyper ends it as if the peer
            // had closed while idle, and gives the stream back (see `Drop`).
            this.parking = true;
            this.shared.activity.parked.store(true, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        if let Poll::Ready(Ok(())) = res {
            let filled = buf.filled();
            if filled.len() > before {
                let activity = &this.shared.activity;
                activity.read_seen.store(true, Ordering::Relaxed);
                let chunk = &filled[before..];
                this.tail = match chunk.last_chunk::<4>() {
                    Some(last) => u32::from_be_bytes(*last),
                    None => chunk
                        .iter()
                        .fold(this.tail, |tail, b| (tail << 8) | u32::from(*b)),
                };
                let ends_head = this.tail == u32::from_be_bytes(*b"\r\n\r\n");
                activity.partial.store(!ends_head, Ordering::Relaxed);
                if !this.sniffed {
                    this.sniffed = true;
                    if filled[before..].starts_with(H2_PREFACE_START) {
                        this.shared.activity.h2.store(true, Ordering::Relaxed);
                    }
                }
            } else if room {
                this.eof = true;
            }
        }
        res
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ConnIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match this.inner.as_mut() {
            Some(inner) => answered(&this.shared, Pin::new(&mut inner.io).poll_write(cx, buf)),
            None => Poll::Ready(Err(gone())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut().inner.as_mut() {
            Some(inner) => Pin::new(&mut inner.io).poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match this.inner.as_mut() {
            // Parking: the stream stays open, for the parked connection.
            Some(_) if this.parking => Poll::Ready(Ok(())),
            Some(inner) => Pin::new(&mut inner.io).poll_shutdown(cx),
            None => Poll::Ready(Err(gone())),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match this.inner.as_mut() {
            Some(inner) => answered(
                &this.shared,
                Pin::new(&mut inner.io).poll_write_vectored(cx, bufs),
            ),
            None => Poll::Ready(Err(gone())),
        }
    }
    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .map(|inner| inner.io.is_write_vectored())
            .unwrap_or(false)
    }
}
