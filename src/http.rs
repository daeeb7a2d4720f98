//! Serving HTTP/1.1 and h2c on the listeners, and draining: stop accepting, finish what is in
//! flight, answer with `Connection: close` and close each HTTP/1 connection after its current
//! response, close connections that stay idle after a short grace, send GOAWAY on HTTP/2.
//!
//! Closing an idle keep-alive connection races with a request the client may already be sending
//! (the client then sees a reset). The grace period makes that race practically disappear for
//! busy clients: they send a request within the grace, get `Connection: close` and reconnect — to
//! the successor, which shares the listening socket.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Incoming};
use hyper::header::{HeaderValue, CONNECTION};
use hyper::service::Service;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::access_log::PeerAddr;
use crate::listen::Socket;

/// How long an HTTP/1 connection must stay quiet during a drain before it is closed.
pub const IDLE_GRACE: Duration = Duration::from_secs(1);
/// Slowloris and idle keep-alive bound: an HTTP/1 connection on which no request reaches the
/// service for this long, while none is in flight, is closed (what hyper's 30 s header-read
/// timeout does, checked once a second per connection instead of a timer per request).
pub const REQUEST_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a connection checks the bound above.
const WAIT_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often a draining connection checks whether it is idle.
const DRAIN_CHECK_EVERY: Duration = Duration::from_millis(50);

/// The accept loops and connections of one process.
pub struct Serving {
    stop_accepting: CancellationToken,
    /// Accept loops run while this is true; a pause parks them (see [`Serving::pause_accepting`]).
    accepting: watch::Sender<bool>,
    /// How many accept loops are parked.
    parked: watch::Sender<usize>,
    loops: usize,
    draining: watch::Sender<bool>,
    connections: TaskTracker,
    acceptors: TaskTracker,
}

/// Errors a service or body may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A hyper service baton can serve: what [`start`] accepts (the library wraps tower services).
/// Implemented for every hyper service that fits.
pub trait HttpService:
    Service<
        Request<Incoming>,
        Response = Response<Self::Body>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + 'static
{
    /// The response body.
    type Body: Body<Data: Send, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> HttpService for S
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;
}

/// A listening socket the accept loop can take connections from.
trait Acceptor: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, PeerAddr)>> + Send;
}

impl Acceptor for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, PeerAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, PeerAddr(Some(peer))))
    }
}

impl Acceptor for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, PeerAddr)> {
        tokio::net::UnixListener::accept(self)
            .await
            .map(|(stream, _)| (stream, PeerAddr(None)))
    }
}

/// Start serving `service` on every socket (each a duplicate of a listener the caller keeps).
/// With `peer_addr`, every request carries its client's [`PeerAddr`] as an extension.
pub fn start<S: HttpService>(
    sockets: Vec<Socket>,
    service: S,
    peer_addr: bool,
) -> std::io::Result<Serving> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No hyper header-read timer: it arms a timer for every request. The connection task
    // enforces the same bound once a second instead (see `REQUEST_WAIT_TIMEOUT`).
    builder.http1().keep_alive(true).header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let (draining, _) = watch::channel(false);
    let serving = Serving {
        stop_accepting: CancellationToken::new(),
        accepting: watch::channel(true).0,
        parked: watch::channel(0).0,
        loops: sockets.len(),
        draining,
        connections: TaskTracker::new(),
        acceptors: TaskTracker::new(),
    };
    for socket in sockets {
        let ctx = ConnContext {
            builder: builder.clone(),
            draining: serving.draining.subscribe(),
            connections: serving.connections.clone(),
            peer_addr,
        };
        match socket {
            Socket::Tcp(l) => {
                l.set_nonblocking(true)?;
                serving.accept_on(tokio::net::TcpListener::from_std(l)?, ctx, service.clone());
            }
            Socket::Unix(l) => {
                l.set_nonblocking(true)?;
                serving.accept_on(tokio::net::UnixListener::from_std(l)?, ctx, service.clone());
            }
        }
    }
    serving.acceptors.close();
    Ok(serving)
}

/// Out of descriptors or a transient network error: log, wait a little, go on.
async fn accept_backoff(e: std::io::Error) {
    warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

impl Serving {
    fn accept_on<A: Acceptor, S: HttpService>(&self, listener: A, ctx: ConnContext, service: S) {
        let stop = self.stop_accepting.clone();
        let mut accepting = self.accepting.subscribe();
        let parked = self.parked.clone();
        self.acceptors.spawn(async move {
            loop {
                if !*accepting.borrow_and_update() {
                    // Paused: connections wait in the backlog for whoever accepts next.
                    parked.send_modify(|n| *n += 1);
                    let resumed = tokio::select! {
                        _ = stop.cancelled() => false,
                        changed = accepting.changed() => changed.is_ok(),
                    };
                    parked.send_modify(|n| *n -= 1);
                    if resumed {
                        continue;
                    }
                    break;
                }
                let accepted = tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = accepting.changed() => continue,
                    a = listener.accept() => a,
                };
                match accepted {
                    Ok((io, peer)) => ctx.spawn(io, peer, service.clone()),
                    Err(e) => accept_backoff(e).await,
                }
            }
        });
    }

    /// Stop accepting until [`Serving::resume_accepting`]; returns once no accept loop can take
    /// another connection. The listening sockets stay open: a successor accepts on them, and
    /// what arrives meanwhile waits in the shared backlog.
    pub async fn pause_accepting(&self) {
        self.accepting.send_replace(false);
        let mut parked = self.parked.subscribe();
        let loops = self.loops;
        let stopped = self.stop_accepting.clone();
        tokio::select! {
            _ = parked.wait_for(|n| *n == loops) => {}
            _ = stopped.cancelled() => {}
        }
    }

    /// Accept again after [`Serving::pause_accepting`].
    pub fn resume_accepting(&self) {
        self.accepting.send_replace(true);
    }

    /// Stop accepting for good; the listening sockets stay open in the caller (and the
    /// successor), so queued connections are accepted by the successor.
    pub async fn stop_accepting(&self) {
        self.stop_accepting.cancel();
        self.acceptors.wait().await;
    }

    /// Drain: stop accepting, close keep-alive connections as described in the module docs, and
    /// wait for every connection up to `timeout`. Returns false when the timeout cut it short.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.stop_accepting().await;
        self.draining.send_replace(true);
        self.connections.close();
        let done = tokio::time::timeout(timeout, self.connections.wait())
            .await
            .is_ok();
        if !done {
            warn!(
                open = self.connections.len(),
                ?timeout,
                "shutdown timeout reached; cutting connections"
            );
        }
        done
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }
}

#[derive(Clone)]
struct ConnContext {
    builder: Arc<auto::Builder<TokioExecutor>>,
    draining: watch::Receiver<bool>,
    connections: TaskTracker,
    peer_addr: bool,
}

/// What a connection did lately, shared by its I/O wrapper, its service wrapper and its task.
/// Only cheap stores on the hot path; the task reads them on its periodic checks.
#[derive(Default)]
struct Activity {
    /// Set by every read that returned bytes; cleared by the task when it looks.
    read_seen: AtomicBool,
    /// Requests that reached the service.
    requests: AtomicU64,
    /// Requests whose response is not produced yet.
    in_flight: AtomicUsize,
    /// The connection speaks HTTP/2.
    h2: AtomicBool,
    /// The process is draining: HTTP/1 responses get `Connection: close`.
    draining: AtomicBool,
}

impl ConnContext {
    fn spawn<I, S>(&self, io: I, peer: PeerAddr, service: S)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: HttpService,
    {
        let builder = self.builder.clone();
        let mut draining = self.draining.clone();
        let peer_addr = self.peer_addr;
        self.connections.spawn(async move {
            let activity = Arc::new(Activity::default());
            let io = TokioIo::new(ActivityIo {
                inner: io,
                activity: activity.clone(),
            });
            let service = DrainAware {
                inner: service,
                activity: activity.clone(),
                peer: peer_addr.then_some(peer),
            };
            let conn = builder.serve_connection(io, service);
            tokio::pin!(conn);

            // Serving: close an HTTP/1 connection that waits too long for a request.
            let mut check = tokio::time::interval(WAIT_CHECK_EVERY);
            let mut seen_requests = 0;
            let mut waiting_since = Instant::now();
            loop {
                tokio::select! {
                    res = conn.as_mut() => return log_end(res),
                    _ = draining.wait_for(|d| *d) => break,
                    now = check.tick() => {
                        let requests = activity.requests.load(Ordering::Relaxed);
                        if requests != seen_requests || activity.in_flight.load(Ordering::Relaxed) > 0 {
                            seen_requests = requests;
                            waiting_since = now.into_std();
                        } else if !activity.h2.load(Ordering::Relaxed)
                            && waiting_since.elapsed() >= REQUEST_WAIT_TIMEOUT
                        {
                            debug!("no request within {REQUEST_WAIT_TIMEOUT:?}; closing the connection");
                            return;
                        }
                    }
                }
            }

            // Draining: HTTP/1 closes after its current response (`Connection: close`) or once
            // it stayed idle for the grace period; HTTP/2 gets GOAWAY at once.
            activity.draining.store(true, Ordering::Relaxed);
            if !activity.h2.load(Ordering::Relaxed) {
                let mut check = tokio::time::interval(DRAIN_CHECK_EVERY);
                let mut last_read = Instant::now();
                loop {
                    tokio::select! {
                        res = conn.as_mut() => return log_end(res),
                        _ = check.tick() => {
                            if activity.read_seen.swap(false, Ordering::Relaxed) {
                                last_read = Instant::now();
                            } else if activity.in_flight.load(Ordering::Relaxed) == 0
                                && last_read.elapsed() >= IDLE_GRACE
                            {
                                break;
                            }
                        }
                    }
                }
            }
            conn.as_mut().graceful_shutdown();
            log_end(conn.await);
        });
    }
}

fn log_end(res: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = res {
        debug!(error = %e, "connection ended with an error");
    }
}

/// Records read activity for the drain's idle check.
struct ActivityIo<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for ActivityIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read_seen.store(true, Ordering::Relaxed);
        }
        res
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ActivityIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Counts requests and adds `Connection: close` to HTTP/1 responses while draining.
struct DrainAware<S> {
    inner: S,
    activity: Arc<Activity>,
    /// Inserted into every request (only when the access log is on).
    peer: Option<PeerAddr>,
}

impl<S, B> Service<Request<Incoming>> for DrainAware<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = DrainAwareFuture<S::Future>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(peer);
        }
        let h1 = req.version() < Version::HTTP_2;
        if !h1 {
            self.activity.h2.store(true, Ordering::Relaxed);
        }
        self.activity.requests.fetch_add(1, Ordering::Relaxed);
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        DrainAwareFuture {
            inner: self.inner.call(req),
            in_flight: Some(InFlight(self.activity.clone())),
            h1,
        }
    }
}

/// Decrements the in-flight count however the request ends (answered or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future, plus the bookkeeping of [`DrainAware`].
    pub struct DrainAwareFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
        h1: bool,
    }
}

impl<F, B, E> Future for DrainAwareFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = std::task::ready!(this.inner.poll(cx));
        if let Some(InFlight(activity)) = this.in_flight.as_ref() {
            if *this.h1 && activity.draining.load(Ordering::Relaxed) {
                if let Ok(res) = res.as_mut() {
                    res.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
            }
        }
        *this.in_flight = None;
        Poll::Ready(res)
    }
}
