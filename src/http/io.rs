//! The I/O wrapper of a connection and the state it shares with the service wrapper and the
//! connection task. Only cheap relaxed stores on the hot path; the task reads them on its
//! periodic checks.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::task::task_tracker::TaskTrackerToken;

/// The bytes every HTTP/2 connection opens with (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a connection did lately.
#[derive(Default)]
pub(super) struct Activity {
    /// Set by every read that returned bytes; cleared by the task when it looks.
    pub read_seen: AtomicBool,
    /// Requests that reached the service.
    pub requests: AtomicU64,
    /// Requests whose response body has not ended yet.
    pub in_flight: AtomicUsize,
    /// The connection speaks HTTP/2: it opened with HTTP/2's preface (see
    /// [`ConnIo::poll_opening`]).
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

/// The stream as hyper sees it: records reads, tells HTTP/2 from HTTP/1 by the first bytes,
/// holds the connection's tracker token (so the process waits for it, upgraded or not) and,
/// when dropped, parks the stream for the connection task (lingering close, delivery of what is
/// still queued) instead of closing it at once.
pub(super) struct ConnIo<I> {
    inner: Option<Parked<I>>,
    shared: Arc<Shared<I>>,
    /// The first bytes, read to tell the protocol; hyper's first reads are given them.
    opening: Opening,
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
            opening: Opening::default(),
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

/// A connection's first bytes: up to the length of HTTP/2's preface, read before hyper's
/// connection is chosen, and how many of them hyper was given since.
#[derive(Default)]
struct Opening {
    bytes: [u8; H2_PREFACE.len()],
    read: usize,
    given: usize,
}

impl<I: AsyncRead + Unpin> ConnIo<I> {
    /// Read the connection's first bytes until they are known to open with HTTP/2's preface
    /// (`true`: [`Activity::h2`] is set) or not (`false`: HTTP/1 — also when the peer closed, or
    /// the task parked the connection, before sending anything). They are not lost: hyper's
    /// first reads are given them, as if it had read them itself.
    pub fn poll_opening(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        loop {
            let before = self.opening.read;
            if before == H2_PREFACE.len() {
                self.shared.activity.h2.store(true, Ordering::Relaxed);
                return Poll::Ready(Ok(true));
            }
            let mut bytes = self.opening.bytes;
            let mut buf = ReadBuf::new(&mut bytes[before..]);
            std::task::ready!(self.read_counted(cx, &mut buf))?;
            let now = before + buf.filled().len();
            self.opening.bytes = bytes;
            self.opening.read = now;
            if now == before || bytes[before..now] != H2_PREFACE[before..now] {
                return Poll::Ready(Ok(false));
            }
            // Part of the preface, whose first 18 bytes end like a request head: never parked
            // before the rest came (hyper's HTTP/1 would then be given a piece of HTTP/2).
            self.shared.activity.partial.store(true, Ordering::Relaxed);
        }
    }

    /// Read from the stream, recording what the task looks at (see [`Activity`]).
    fn read_counted(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        if self.parking {
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
        let park = self.shared.activity.park.swap(false, Ordering::Relaxed);
        let res = Pin::new(&mut inner.io).poll_read(cx, buf);
        if res.is_pending() && park {
            // Nothing readable and the task parks the connection: hyper ends it as if the peer
            // had closed while idle, and gives the stream back (see `Drop`).
            self.parking = true;
            self.shared.activity.parked.store(true, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        if let Poll::Ready(Ok(())) = res {
            let filled = buf.filled();
            if filled.len() > before {
                let activity = &self.shared.activity;
                activity.read_seen.store(true, Ordering::Relaxed);
                let chunk = &filled[before..];
                self.tail = match chunk.last_chunk::<4>() {
                    Some(last) => u32::from_be_bytes(*last),
                    None => chunk
                        .iter()
                        .fold(self.tail, |tail, b| (tail << 8) | u32::from(*b)),
                };
                let ends_head = self.tail == u32::from_be_bytes(*b"\r\n\r\n");
                activity.partial.store(!ends_head, Ordering::Relaxed);
            } else if room {
                self.eof = true;
            }
        }
        res
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ConnIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let opening = &mut this.opening;
        if opening.given < opening.read {
            let rest = &opening.bytes[opening.given..opening.read];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            opening.given += n;
            return Poll::Ready(Ok(()));
        }
        this.read_counted(cx, buf)
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

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Waker;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
    use tokio::net::UnixStream;
    use tokio_util::task::TaskTracker;

    use super::*;

    /// Generous: the machine may be loaded.
    const BOUND: Duration = Duration::from_secs(30);

    fn wrap<I>(io: I) -> (ConnIo<I>, Arc<Shared<I>>) {
        let shared = Shared::new();
        let io = ConnIo::new(io, TaskTracker::new().token(), shared.clone());
        (io, shared)
    }

    /// A served connection: the wrapper around the server's end, and the client's end.
    fn connection() -> (ConnIo<UnixStream>, Arc<Shared<UnixStream>>, UnixStream) {
        let (server, client) = UnixStream::pair().unwrap();
        let (io, shared) = wrap(server);
        (io, shared, client)
    }

    /// One read through the wrapper into a buffer of `room` bytes, once it is ready.
    async fn read<I: AsyncRead + Unpin>(io: &mut ConnIo<I>, room: usize) -> Vec<u8> {
        let read = poll_fn(|cx| {
            let mut space = vec![0; room];
            let mut buf = ReadBuf::new(&mut space);
            Pin::new(&mut *io)
                .poll_read(cx, &mut buf)
                .map_ok(|()| buf.filled().to_vec())
        });
        tokio::time::timeout(BOUND, read).await.unwrap().unwrap()
    }

    /// One poll of a read into a buffer of 256 bytes, not waiting.
    fn poll_read_now<I: AsyncRead + Unpin>(io: &mut ConnIo<I>) -> Poll<Vec<u8>> {
        let mut space = [0; 256];
        let mut buf = ReadBuf::new(&mut space);
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(io).poll_read(&mut cx, &mut buf) {
            Poll::Ready(res) => {
                res.unwrap();
                Poll::Ready(buf.filled().to_vec())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn flag(flag: &AtomicBool) -> bool {
        flag.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn reads_are_seen_and_a_request_head_ends_only_at_crlf_crlf_however_reads_split_it() {
        let (mut io, shared, mut client) = connection();
        let activity = &shared.activity;
        assert!(!flag(&activity.read_seen));
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r")
            .await
            .unwrap();
        assert_eq!(read(&mut io, 256).await, b"GET / HTTP/1.1\r\nHost: a\r\n\r");
        assert!(flag(&activity.read_seen), "a read that brought bytes");
        assert!(flag(&activity.partial), "the head has not ended");
        client.write_all(b"\n").await.unwrap();
        assert_eq!(read(&mut io, 256).await, b"\n");
        assert!(
            !flag(&activity.partial),
            "CRLF CRLF split 3 + 1 across reads"
        );
        // the body of a POST: part of a request again
        client.write_all(b"abc").await.unwrap();
        assert_eq!(read(&mut io, 256).await, b"abc");
        assert!(flag(&activity.partial), "a body follows");
        // the next head, its end one byte a read
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a")
            .await
            .unwrap();
        assert_eq!(read(&mut io, 256).await, b"GET / HTTP/1.1\r\nHost: a");
        for (i, byte) in b"\r\n\r\n".iter().enumerate() {
            client.write_all(&[*byte]).await.unwrap();
            assert_eq!(read(&mut io, 256).await, [*byte]);
            assert_eq!(
                flag(&activity.partial),
                i < 3,
                "after byte {i} of CRLF CRLF"
            );
        }
        assert!(!flag(&activity.h2), "no HTTP/2 preface");
    }

    /// [`ConnIo::poll_opening`], once the connection's first bytes have come.
    async fn opening<I: AsyncRead + Unpin>(io: &mut ConnIo<I>) -> bool {
        let opened = poll_fn(|cx| io.poll_opening(cx));
        tokio::time::timeout(BOUND, opened).await.unwrap().unwrap()
    }

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    #[tokio::test]
    async fn only_a_connection_that_opens_with_the_whole_http2_preface_is_http2() {
        // the preface whole, then a frame: HTTP/2, and hyper reads it all, in order
        let (mut io, shared, mut client) = connection();
        client.write_all(PREFACE).await.unwrap();
        client.write_all(b"frame").await.unwrap();
        assert!(opening(&mut io).await, "the preface");
        assert!(flag(&shared.activity.h2));
        let mut got = read(&mut io, 256).await;
        got.extend(read(&mut io, 256).await);
        assert_eq!(got, [PREFACE, b"frame"].concat());

        // the preface in pieces: known once the last piece came; the first 18 bytes end with
        // CRLF CRLF, yet the connection is not one to park meanwhile
        let (mut io, shared, mut client) = connection();
        client.write_all(&PREFACE[..18]).await.unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        // (polled until the 18 bytes were read: the runtime's reactor runs while this sleeps)
        let t0 = std::time::Instant::now();
        while !flag(&shared.activity.read_seen) && t0.elapsed() < BOUND {
            assert!(
                io.poll_opening(&mut cx).is_pending(),
                "18 bytes of the preface tell nothing yet"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(flag(&shared.activity.read_seen), "the 18 bytes were read");
        assert!(flag(&shared.activity.partial), "a piece of the preface");
        client.write_all(&PREFACE[18..]).await.unwrap();
        assert!(opening(&mut io).await);
        assert!(flag(&shared.activity.h2));
        assert_eq!(read(&mut io, 256).await, PREFACE);

        // an HTTP/1 request: HTTP/1 at its first byte, and not a byte lost
        let (mut io, shared, mut client) = connection();
        let request = b"GET /a/long/enough/path HTTP/1.1\r\nHost: a\r\n\r\n";
        client.write_all(request).await.unwrap();
        assert!(!opening(&mut io).await);
        assert!(!flag(&shared.activity.h2));
        let mut got = Vec::new();
        while got.len() < request.len() {
            got.extend(read(&mut io, 256).await);
        }
        assert_eq!(got, request);
        assert!(!flag(&shared.activity.partial), "the head ended");

        // a request that starts like the preface (a method named PRI) is HTTP/1
        let (mut io, shared, mut client) = connection();
        client.write_all(b"PRI * HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(!opening(&mut io).await);
        assert!(!flag(&shared.activity.h2));
        assert_eq!(read(&mut io, 256).await, b"PRI * HTTP/1.1\r\n\r\n");

        // the preface later in an HTTP/1 connection (a request's body) is no preface
        let (mut io, shared, mut client) = connection();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(!opening(&mut io).await);
        read(&mut io, 256).await;
        client.write_all(PREFACE).await.unwrap();
        assert_eq!(read(&mut io, 256).await, PREFACE);
        assert!(!flag(&shared.activity.h2));
    }

    #[tokio::test]
    async fn the_first_bytes_are_given_to_a_small_buffer_piece_by_piece() {
        let (mut io, _shared, mut client) = connection();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(!opening(&mut io).await);
        assert_eq!(read(&mut io, 5).await, b"GET /");
        assert_eq!(read(&mut io, 5).await, b" HTTP");
        assert_eq!(read(&mut io, 256).await, b"/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn a_peer_that_closes_or_a_park_before_any_byte_is_http1_at_its_end() {
        let (mut io, shared, client) = connection();
        drop(client);
        assert!(
            !opening(&mut io).await,
            "closed: HTTP/1, which sees the end"
        );
        assert_eq!(read(&mut io, 256).await, b"");
        drop(io);
        assert!(shared.take_parked().expect("handed back").peer_closed);

        // the task parks a connection that sent nothing while its first bytes are awaited
        let (mut io, shared, _client) = connection();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(io.poll_opening(&mut cx).is_pending());
        shared.activity.park.store(true, Ordering::SeqCst);
        assert!(
            matches!(io.poll_opening(&mut cx), Poll::Ready(Ok(false))),
            "parked: HTTP/1, which sees the end"
        );
        assert!(flag(&shared.activity.parked));
        assert_eq!(
            poll_read_now(&mut io),
            Poll::Ready(Vec::new()),
            "hyper sees the end"
        );
        drop(io);
        assert!(
            !shared.take_parked().expect("handed back").peer_closed,
            "kept open"
        );
    }

    #[tokio::test]
    async fn the_peer_closing_is_seen_and_the_stream_is_parked_as_closed_when_dropped() {
        let (mut io, shared, client) = connection();
        drop(client);
        assert_eq!(read(&mut io, 256).await, b"");
        assert!(
            !flag(&shared.activity.read_seen),
            "end-of-file brings nothing"
        );
        drop(io);
        let parked = shared.take_parked().expect("the stream, handed back");
        assert!(parked.peer_closed, "nothing to linger for");
        assert!(shared.take_parked().is_none(), "handed back once");
    }

    #[tokio::test]
    async fn a_read_into_a_full_buffer_is_not_the_peer_closing() {
        let (mut io, shared, mut client) = connection();
        client.write_all(b"GET").await.unwrap();
        assert_eq!(read(&mut io, 1).await, b"G");
        // hyper's buffer full: nothing read, but the peer did not close
        assert_eq!(read(&mut io, 0).await, b"");
        drop(io);
        let mut parked = shared.take_parked().expect("the stream, handed back");
        assert!(!parked.peer_closed, "the peer is still there: linger");
        // and the stream is open, with what the peer sent
        let mut rest = [0; 2];
        parked.io.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"ET");
        drop(client);
    }

    #[tokio::test]
    async fn nothing_readable_is_waited_for_unless_the_task_parks_then_hyper_sees_a_close() {
        let (mut io, shared, mut client) = connection();
        assert!(poll_read_now(&mut io).is_pending(), "not asked to park");
        assert!(!flag(&shared.activity.parked));
        shared.activity.park.store(true, Ordering::SeqCst);
        assert_eq!(poll_read_now(&mut io), Poll::Ready(Vec::new()), "parked");
        assert!(flag(&shared.activity.parked));
        // hyper then shuts the connection down: the stream stays open for the parked
        // connection, which answers the peer's next request
        poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx))
            .await
            .unwrap();
        drop(io);
        let mut parked = shared.take_parked().expect("the stream, handed back");
        assert!(!parked.peer_closed);
        parked.io.write_all(b"still here").await.unwrap();
        let mut got = [0; 10];
        tokio::time::timeout(BOUND, client.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"still here");
    }

    #[tokio::test]
    async fn a_shutdown_not_parking_closes_the_peers_side() {
        let (mut io, _shared, mut client) = connection();
        poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx))
            .await
            .unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(BOUND, client.read_to_end(&mut got))
            .await
            .expect("end-of-file, not silence")
            .unwrap();
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn writes_reach_the_peer_and_a_write_it_does_not_take_is_blocked() {
        let (mut io, shared, mut client) = connection();
        let n = poll_fn(|cx| Pin::new(&mut io).poll_write(cx, b"hello"))
            .await
            .unwrap();
        assert_eq!(n, 5);
        let slices = [
            std::io::IoSlice::new(b", "),
            std::io::IoSlice::new(b"world"),
        ];
        let n = poll_fn(|cx| Pin::new(&mut io).poll_write_vectored(cx, &slices))
            .await
            .unwrap();
        assert_eq!(n, 7);
        let mut got = [0; 12];
        tokio::time::timeout(BOUND, client.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"hello, world");
        assert!(!flag(&shared.activity.write_blocked));
        // the peer reads nothing more: the socket's buffers fill up (bounded: a few MiB)
        let chunk = vec![b'x'; 64 * 1024];
        let mut cx = Context::from_waker(Waker::noop());
        let mut blocked = false;
        for _ in 0..1024 {
            if Pin::new(&mut io).poll_write(&mut cx, &chunk).is_pending() {
                blocked = true;
                break;
            }
        }
        assert!(blocked, "a peer that does not read blocks the writer");
        assert!(flag(&shared.activity.write_blocked));
        let slices = [std::io::IoSlice::new(&chunk)];
        assert!(Pin::new(&mut io)
            .poll_write_vectored(&mut cx, &slices)
            .is_pending());
        assert!(flag(&shared.activity.write_blocked), "vectored too");
    }

    #[tokio::test]
    async fn a_flush_reaches_the_stream_below() {
        // a TLS stream holds what it encrypted until flushed; a BufWriter stands in for it
        let (server, mut client) = UnixStream::pair().unwrap();
        let (mut io, _shared) = wrap(BufWriter::new(server));
        let n = poll_fn(|cx| Pin::new(&mut io).poll_write(cx, b"hello"))
            .await
            .unwrap();
        assert_eq!(n, 5);
        poll_fn(|cx| Pin::new(&mut io).poll_flush(cx))
            .await
            .unwrap();
        let mut got = [0; 5];
        tokio::time::timeout(BOUND, client.read_exact(&mut got))
            .await
            .expect("flushed")
            .unwrap();
        assert_eq!(&got, b"hello");
    }

    /// A stream that writes one buffer at a time (AsyncWrite's default `is_write_vectored`).
    struct OneAtATime(UnixStream);

    impl AsyncWrite for OneAtATime {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_flush(cx)
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn vectored_writes_are_offered_as_the_stream_below_offers_them() {
        // hyper writes a head and a body in one syscall only when offered
        let (io, _shared, client) = connection();
        assert!(io.is_write_vectored(), "a Unix stream writes vectored");
        let (io, _shared) = wrap(OneAtATime(client));
        assert!(!io.is_write_vectored(), "this one does not");
    }
}
