//! Serving HTTP/1.1 (with upgrades) and HTTP/2 on the listeners, and draining.
//!
//! * `accept`: the accept loop, generic over the listener and its stream type; it only accepts
//!   (a TLS handshake happens in the connection's task, so a slow client delays nobody else).
//! * `conn`: one connection's task: the TLS handshake (bounded by
//!   `crate::tls::HANDSHAKE_TIMEOUT` and the idle timeout), the idle bound while serving, the
//!   drain steps, the lingering close. A connection counts as open from its accept, handshake
//!   included, so a drain waits for connections still in their handshake.
//! * `io`: the I/O wrapper that records activity, reads the first bytes to tell HTTP/2 from
//!   HTTP/1 (and gives them to hyper), keeps the connection counted while it lives (upgraded
//!   connections included) and hands the stream back for the lingering close.
//! * `protocol`: hyper's HTTP/1 or HTTP/2 connection on a stream, chosen by its first bytes.
//! * `stream`: every accepted connection as one stream type (TCP or Unix, plain or TLS), so that
//!   hyper's and h2's connection code is compiled once;
//! * `body`: the service wrapper that counts a request in flight until its response body has
//!   ended, and asks HTTP/1 clients to close while draining.
//! * `park`: idle HTTP/1 keep-alive connections (without TLS) parked as their socket alone, in
//!   one table per process watched by one task through one epoll instance: served again by a
//!   fresh connection task when readable, handed back to the drain's path when the drain
//!   begins, closed at the idle timeout. A parked connection keeps its tracker token (the drain
//!   waits for it) and costs some hundreds of bytes instead of hyper's buffers and a task.
//!
//! A drain stops accepting (the listening sockets stay open in the successor); a stop first
//! accepts what is already queued on each listening socket (see `accept::sweep`), then:
//! * HTTP/1: each connection is closed after its current response (`Connection: close`), or once
//!   it stayed idle for [`IDLE_GRACE`];
//! * HTTP/2: GOAWAY with the maximal stream id and a PING; once the PING is answered, the final
//!   GOAWAY names the last stream processed (hyper's h2 does these two steps); every stream
//!   accepted is answered; the connection closes once they are;
//! * every connection baton closes is closed by a lingering close: our FIN first, then what the
//!   client still sends is read and dropped until its FIN, for at most [`LINGER`], so that frames
//!   already on their way do not make the kernel reset the connection over answers the client
//!   has not read yet;
//! * upgraded connections (WebSockets) belong to the application: they are waited for, up to the
//!   shutdown timeout;
//! * a connection closed while the process drains is kept (and the process with it) until the
//!   peer has acknowledged everything sent on it, our FIN included (`TIOCOUTQ` is 0), or it was
//!   reset — up to the shutdown timeout: a response handed to the kernel is not finished while it
//!   sits in the socket's send queue, and in a container the network goes away with the process.
//!
//! Closing an idle HTTP/1 keep-alive connection races with a request the client may already be
//! sending (the client then sees a reset). The grace period makes that race practically
//! disappear for busy clients: they send a request within the grace, get `Connection: close` and
//! reconnect — to the successor, which shares the listening socket.
//!
//! Baton's own cost per request is a few relaxed atomic operations and a reference count; its
//! timers are per connection (a one-second check). An HTTP/2 stream starts on its connection's
//! task, not on a task of its own (`exec`). hyper's HTTP/2 keep-alive, enabled for dead-peer
//! detection, takes a mutex and reads the clock per received frame and per poll of the
//! connection: about 400 user-space instructions of an h2c request (callgrind, `h2load -c4
//! -m10`, 2026-12-07: 17,577 with it, 17,175 without), some 100 fewer than with hyper-util's
//! timer, since its sleep is polled only when it fired (`keepalive`); HTTP/1 is not affected.

mod accept;
mod body;
mod conn;
mod control;
mod exec;
mod io;
mod keepalive;
mod park;
mod protocol;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::connection::IncomingConnection;
use crate::listen::Socket;
use crate::settings::DEFAULT_IDLE_TIMEOUT;
use std::convert::Infallible;

/// How long an HTTP/1 connection must stay quiet during a drain before it is closed.
pub const IDLE_GRACE: Duration = Duration::from_secs(1);
/// The longest a lingering close waits for the client's FIN.
pub const LINGER: Duration = Duration::from_secs(2);
/// After a GOAWAY, the longest a connection with nothing in flight may take to answer the PING
/// and close (a dead peer never does); the idle timeout when that is shorter.
pub const GOAWAY_WAIT: Duration = Duration::from_secs(5);
/// How long an HTTP/2 keep-alive PING may stay unanswered before the connection is closed; the
/// idle timeout when that is shorter.
pub const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// How connections are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Slowloris and idle bound: a connection on which no request arrives for this long while
    /// nothing is in flight (a response body still streaming counts as in flight) is closed;
    /// HTTP/2 gets a GOAWAY first. Also the interval of HTTP/2 keep-alive PINGs, which close a
    /// connection whose peer stopped answering.
    pub idle_timeout: Duration,
    /// Whether HTTP/2 connections are sent keep-alive PINGs (`Settings::http2_keepalive`).
    pub http2_keepalive: bool,
    /// The access log: `Some(generation)` logs every request (one line once its response has
    /// ended); off, it costs nothing.
    pub access_log: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            http2_keepalive: true,
            access_log: None,
        }
    }
}

/// Errors a service or body may return: anything that converts into it (`std::io::Error`,
/// `Infallible`, axum's errors) will do.
///
/// ```
/// let e: baton_server::BoxError = std::io::Error::other("upstream closed").into();
/// assert_eq!(e.to_string(), "upstream closed");
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A service baton can serve: what `Serving::serve_on` accepts through a [`MakeHttp`]. A tower service (an axum `Router`, a
/// `tower::Service`) answering requests with an `http_body::Body`; baton adapts it to hyper
/// itself. Implemented for every service that fits; name it to write functions generic over
/// an app:
///
/// ```no_run
/// use baton_server::{Ended, Error, HttpService};
///
/// async fn serve_any<S: HttpService>(app: S) -> Result<Ended, Error> {
///     baton_server::serve(app).await
/// }
/// # async fn demo() -> Result<(), Error> {
/// serve_any(axum::Router::new()).await?;
/// let plain = tower::service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
///     Ok::<_, std::convert::Infallible>(hyper::Response::new(String::from("hello\n")))
/// });
/// serve_any(plain).await?;
/// # Ok(()) }
/// ```
pub trait HttpService:
    tower_service::Service<
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
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    type Body = B;
}

/// A make-service baton can serve: called once per connection with its
/// [`IncomingConnection`], it gives the [`HttpService`] that answers the connection's requests.
/// Implemented for every `tower::Service<IncomingConnection>` that fits (axum's
/// `IntoMakeService` and `IntoMakeServiceWithConnectInfo`, [`PerConnection`](crate::PerConnection)).
///
/// A make-service of one's own, which sees each connection's client and listener:
///
/// ```no_run
/// use std::convert::Infallible;
/// use baton_server::IncomingConnection;
///
/// # async fn demo() -> Result<(), baton_server::Error> {
/// let router = axum::Router::new();
/// let make = tower::service_fn(move |conn: IncomingConnection| {
///     eprintln!("{:?} on {}", conn.client_addr(), conn.listener_name());
///     let router = router.clone();
///     async move { Ok::<_, Infallible>(router) }
/// });
/// baton_server::serve(make).await?;
/// # Ok(()) }
/// ```
pub trait MakeHttp:
    tower_service::Service<
        IncomingConnection,
        Response = Self::Service,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
    /// The per-connection service.
    type Service: HttpService;
}

impl<M, S> MakeHttp for M
where
    M: tower_service::Service<IncomingConnection, Response = S, Error = Infallible>
        + Clone
        + Send
        + 'static,
    M::Future: Send + 'static,
    S: HttpService,
{
    type Service = S;
}

/// The accept loops and connections of one process.
pub struct Serving {
    stop_accepting: CancellationToken,
    /// Accept loops run while this is true; a pause parks them (see [`Serving::pause_accepting`]).
    accepting: watch::Sender<bool>,
    /// How many accept loops are parked.
    parked: watch::Sender<usize>,
    loops: usize,
    draining: watch::Sender<bool>,
    /// One token per open connection, held by its I/O (so an upgraded connection counts until
    /// the application drops it) and, after that, by its lingering close.
    connections: TaskTracker,
    acceptors: TaskTracker,
    /// Set on a stop: each accept loop takes the connections already queued before it ends.
    sweep: Arc<std::sync::atomic::AtomicBool>,
    ctx: conn::ConnContext,
}

/// A TLS listener's configuration: certificate, key, ALPN.
#[cfg(feature = "tls")]
pub type TlsConfig = Arc<crate::tls::ServerConfig>;

/// Without the `tls` feature no listener serves TLS: the configuration cannot be made, so
/// every `Option<TlsConfig>` is `None` (a listener that asks for TLS fails the start first).
#[cfg(not(feature = "tls"))]
pub type TlsConfig = Arc<NoTls>;

/// The uninhabited TLS configuration of a build without the `tls` feature.
#[cfg(not(feature = "tls"))]
#[derive(Debug)]
pub enum NoTls {}

pub(crate) use accept::Holders;

/// One listening socket to serve, as [`Serving::serve_on`] takes it.
pub(crate) struct Endpoint {
    /// A duplicate of a listener the caller keeps.
    pub(crate) socket: Socket,
    /// The TLS configuration, when the listener is https.
    pub(crate) tls: Option<TlsConfig>,
    /// The listener's name, as [`crate::IncomingConnection::listener_name`] tells it.
    pub(crate) name: Arc<str>,
    /// Who else keeps the socket open (what a stop may do to it).
    pub(crate) holders: Holders,
}

impl Serving {
    /// Nothing served yet: add each listener with [`Serving::serve_on`], then call
    /// [`Serving::all_started`].
    pub fn new(options: &Options) -> Serving {
        let (draining, _) = watch::channel(false);
        let connections = TaskTracker::new();
        let ctx = conn::ConnContext {
            protocols: Arc::new(protocol::Protocols::new(options.http2_keepalive.then(
                || protocol::KeepAlive {
                    interval: options.idle_timeout,
                    timeout: PING_TIMEOUT.min(options.idle_timeout),
                },
            ))),
            draining: draining.subscribe(),
            connections: connections.clone(),
            idle_timeout: options.idle_timeout,
            access_log: options.access_log,
            lot: park::Lot::new(options.idle_timeout, draining.subscribe()),
        };
        Serving {
            stop_accepting: CancellationToken::new(),
            accepting: watch::channel(true).0,
            parked: watch::channel(0).0,
            loops: 0,
            draining,
            connections,
            acceptors: TaskTracker::new(),
            sweep: Arc::default(),
            ctx,
        }
    }

    /// Serve on `on.socket` (a duplicate of a listener the caller keeps), with TLS when
    /// `on.tls` is given, each connection answered by the service `make` makes for it.
    pub fn serve_on<M: MakeHttp>(&mut self, on: Endpoint, make: M) -> std::io::Result<()> {
        let Endpoint {
            socket,
            tls,
            name,
            holders,
        } = on;
        match socket {
            Socket::Tcp(l) => {
                l.set_nonblocking(true)?;
                let listener = tokio::net::TcpListener::from_std(l)?;
                self.accept_on(listener, tls, make, name, holders);
            }
            Socket::Unix(l) => {
                l.set_nonblocking(true)?;
                let listener = tokio::net::UnixListener::from_std(l)?;
                self.accept_on(listener, tls, make, name, holders);
            }
        }
        Ok(())
    }

    /// Every listener is served.
    pub fn all_started(&self) {
        self.acceptors.close();
        #[cfg(feature = "metrics")]
        self.report_connections();
    }

    /// Report the open and draining connections through the `metrics` facade once a second,
    /// until the drain is over.
    #[cfg(feature = "metrics")]
    fn report_connections(&self) {
        let connections = self.connections.clone();
        let draining = self.draining.subscribe();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                let drain = *draining.borrow();
                crate::observe::connections(connections.len(), drain);
                if drain && connections.is_empty() {
                    break;
                }
            }
        });
    }

    fn accept_on<A: accept::Acceptor, M: MakeHttp>(
        &mut self,
        listener: A,
        tls: Option<TlsConfig>,
        make: M,
        name: Arc<str>,
        holders: Holders,
    ) {
        self.loops += 1;
        let control = accept::Control {
            stop: self.stop_accepting.clone(),
            accepting: self.accepting.subscribe(),
            parked: self.parked.clone(),
            sweep: self.sweep.clone(),
            holders,
        };
        self.acceptors.spawn(accept::accept_loop(
            listener,
            tls,
            control,
            self.ctx.clone(),
            make,
            name,
        ));
    }

    /// Stop accepting until [`Serving::resume_accepting`]; returns once no accept loop can take
    /// another connection. The listening sockets stay open: a successor accepts on them, and
    /// what arrives meanwhile waits in the shared backlog.
    pub async fn pause_accepting(&self) {
        self.accepting.send_replace(false);
        let mut parked = self.parked.subscribe();
        let loops = self.loops;
        tokio::select! {
            _ = parked.wait_for(|n| *n == loops) => {}
            _ = self.stop_accepting.cancelled() => {}
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

    /// A stop (not a retirement, where the successor accepts from the shared backlog): stop
    /// accepting, but first take every connection already queued, to be answered with
    /// `Connection: close`. Once this returns, the accept loops hold no listening socket: the
    /// caller closes its own copies, so that later clients are refused (or, under socket
    /// activation, wait in systemd's backlog) instead of being queued and reset at exit.
    pub async fn stop_accepting_for_stop(&self) {
        self.draining.send_replace(true);
        self.sweep.store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop_accepting().await;
    }

    /// Drain: stop accepting, close connections as described in the module docs, and wait for
    /// every connection (upgraded ones included) up to `timeout`. Returns false when the timeout
    /// cut it short.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.draining.send_replace(true);
        self.stop_accepting().await;
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

    /// Connections currently open (upgraded ones and lingering closes included).
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }
}
