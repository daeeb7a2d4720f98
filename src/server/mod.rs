//! The library's entry points: [`serve`] for the one-line swap from `axum::serve`, and
//! [`Server`] for programs that want the inherited state before they build their app.

use std::future::{Future, IntoFuture};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tracing::{warn, Instrument};

use crate::connection::PerConnection;
use crate::drain::DrainSignal;
use crate::error::{Error, Inner};
use crate::handoff::child;
use crate::handoff::parent::StateFn;
use crate::handoff::protocol::{GENERATION_ENV, PREDECESSOR_ENV};
use crate::handoff::spawn::Executable;
use crate::http::{self, HttpService, MakeHttp, TlsConfig};
use crate::lifecycle::{
    self, Finish, Machine, Parts, Process, ProcessWorld, ShutdownFuture, Signals, StopReason,
};
use crate::settings::Settings;
use crate::startup::Acquired;

mod listeners;

pub use listeners::ListenerName;
use listeners::{describe, start_serving, tls_config};

/// Serve `app` on the listeners the settings of the `BATON_*` variables name (or that systemd or
/// a predecessor passed), until a successor takes over or a stop is requested.
///
/// `app` is an axum `Router` or any `tower::Service<http::Request<hyper::body::Incoming>>` that
/// is `Clone + Send + 'static` and answers with an `http_body::Body`. The returned [`Serve`] is
/// awaited on the caller's runtime:
///
/// ```no_run
/// # async fn demo() -> Result<(), baton_server::Error> {
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
/// baton_server::serve(app).await?;
/// # Ok(()) }
/// ```
///
/// On `SIGHUP` the program's binary on disk is started again with the same arguments; that new
/// process runs the program's `main` from the start and, when it reaches `baton_server::serve`, takes
/// over the listeners. Do not hold listening sockets of your own and do not call `serve` twice in
/// one process; the listeners belong to baton.
pub fn serve<A, K>(app: A) -> Serve<A::MakeService>
where
    A: ServeApp<K>,
{
    Serve::new(None, app.into_make_service())
}

/// What [`serve`], [`Server::serve`] and [`Serve::listener`] accept, as `axum::serve` does: a
/// per-request service (an axum `Router`, a `tower::service_fn`, any
/// `tower::Service<http::Request<hyper::body::Incoming>>` that is `Clone + Send + 'static`), or a
/// make-service called once per connection with its [`IncomingConnection`](crate::IncomingConnection) (axum's
/// `Router::into_make_service` and `into_make_service_with_connect_info::<C>`, any
/// `tower::Service<IncomingConnection>` answering with such a per-request service).
///
/// Implemented for every type that fits; `Kind` ([`app_kind`]) only tells the two apart.
///
/// ```no_run
/// # async fn demo() -> Result<(), baton_server::Error> {
/// let router = axum::Router::new();
/// // Either form (`into_make_service_with_connect_info::<SocketAddr>()` needs the `axum`
/// // feature: see `IncomingConnection`):
/// # let r2 = router.clone();
/// baton_server::serve(router).await?;
/// baton_server::serve(r2.into_make_service()).await?;
/// # Ok(()) }
/// ```
pub trait ServeApp<Kind>: Sized {
    /// The make-service baton calls per connection.
    type MakeService: MakeHttp;
    /// Turn the app into its make-service.
    fn into_make_service(self) -> Self::MakeService;
}

/// The two kinds of [`ServeApp`], only there to tell its two blanket implementations apart;
/// never named in user code (the compiler infers them).
pub mod app_kind {
    /// A per-request service: every connection gets a clone.
    #[derive(Debug)]
    pub enum Service {}
    /// A make-service: called once per connection.
    #[derive(Debug)]
    pub enum MakeService {}
}

impl<S> ServeApp<app_kind::Service> for S
where
    S: HttpService,
{
    type MakeService = PerConnection<S>;
    fn into_make_service(self) -> PerConnection<S> {
        PerConnection(self)
    }
}

impl<M> ServeApp<app_kind::MakeService> for M
where
    M: MakeHttp,
{
    type MakeService = M;
    fn into_make_service(self) -> M {
        self
    }
}

/// How [`Serve`] ended, when it returns `Ok`: what code after `serve(app).await` needs to tell a
/// retirement from a stop.
///
/// ```no_run
/// # async fn demo() -> Result<(), baton_server::Error> {
/// # let app = axum::Router::new();
/// match baton_server::serve(app).await? {
///     baton_server::Ended::HandedOff { successor } => {
///         eprintln!("pid {successor} serves now; this process retires")
///     }
///     other => eprintln!("stopped: {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ended {
    /// A successor took over (a reload): it serves as main, this process drained.
    HandedOff {
        /// The successor's pid.
        successor: u32,
    },
    /// Stopped by a signal (`systemctl stop`, Ctrl-C), after draining.
    Signal(StopSignal),
    /// The future given to [`Serve::with_graceful_shutdown`] resolved; drained.
    Shutdown,
    /// A successor was stopped before it took over and passed the stop on to this process
    /// (`systemctl stop` during a reload); drained.
    StopPassedOn,
}

/// The façade's name for how the lifecycle finished.
fn ended(finish: Finish) -> Ended {
    match finish {
        Finish::HandedOff { successor } => Ended::HandedOff { successor },
        Finish::Stopped(Some(StopReason::Sigterm)) => Ended::Signal(StopSignal::Term),
        Finish::Stopped(Some(StopReason::Sigint)) => Ended::Signal(StopSignal::Int),
        Finish::Stopped(Some(StopReason::Requested)) => Ended::Shutdown,
        Finish::Stopped(Some(StopReason::SuccessorStopped)) => Ended::StopPassedOn,
        // A retirement without a recorded successor, or a stop with no recorded reason: not
        // reached by the machine; called a stop.
        Finish::Stopped(None) => Ended::Shutdown,
    }
}

/// The signal that stopped a server ([`Ended::Signal`]).
///
/// ```no_run
/// # async fn demo() -> Result<(), baton_server::Error> {
/// use baton_server::{Ended, StopSignal};
/// # let app = axum::Router::new();
/// if let Ended::Signal(StopSignal::Int) = baton_server::serve(app).await? {
///     eprintln!("interrupted (Ctrl-C)");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopSignal {
    /// `SIGTERM`.
    Term,
    /// `SIGINT`.
    Int,
}

/// A baton server whose listeners are acquired but which does not serve yet: the place to read
/// the state a predecessor handed over before building the app.
///
/// ```no_run
/// # async fn demo() -> Result<(), baton_server::Error> {
/// let server = baton_server::Server::bind(baton_server::Settings::from_env()?).await?;
/// let visits: u64 = server
///     .inherited_state()
///     .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
///     .unwrap_or(0);
/// # let app = axum::Router::new();
/// server.serve(app).await?;
/// # Ok(()) }
/// ```
pub struct Server {
    process: Process,
    predecessor_socket: Option<PathBuf>,
    acquired: Acquired,
    tls: Option<TlsConfig>,
    span: tracing::Span,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("generation", &self.process.generation)
            .field("listeners", &self.acquired.listeners)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Acquire the listeners: socket activation, else the import from a running predecessor,
    /// else a fresh bind. A successor that fails here tells its predecessor why.
    ///
    /// Settings from code:
    ///
    /// ```no_run
    /// use std::net::Ipv4Addr;
    /// use std::time::Duration;
    /// use baton_server::{ListenAddr, Server, Settings};
    ///
    /// # async fn demo() -> Result<(), baton_server::Error> {
    /// let settings = Settings::default()
    ///     .listen([ListenAddr::tcp((Ipv4Addr::LOCALHOST, 3000))])
    ///     .shutdown_timeout(Duration::from_secs(10));
    /// let server = Server::bind(settings).await?;
    /// server.serve(axum::Router::new()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn bind(settings: Settings) -> Result<Server, Error> {
        let predecessor_socket = predecessor_from_env();
        let generation = generation_from_env();
        let span = tracing::info_span!("baton", pid = std::process::id(), generation);
        let bound = Server::acquire(
            settings,
            predecessor_socket.clone(),
            generation,
            span.clone(),
        )
        .instrument(span)
        .await;
        if let (Err(e), Some(path)) = (&bound, &predecessor_socket) {
            child::report_failure(path, &e.to_string()).await;
        }
        bound
    }

    /// [`Server::bind`] with [`Settings::from_env`]; a bad variable is an error of
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) naming it.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), baton_server::Error> {
    /// // BATON_LISTEN=127.0.0.1:3000
    /// let server = baton_server::Server::from_env().await?;
    /// server.serve(axum::Router::new()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn from_env() -> Result<Server, Error> {
        match Settings::from_env() {
            Ok(settings) => Server::bind(settings).await,
            Err(e) => Err(report_early_failure(e.into()).await),
        }
    }

    async fn acquire(
        settings: Settings,
        predecessor_socket: Option<PathBuf>,
        generation: u64,
        span: tracing::Span,
    ) -> Result<Server, Error> {
        settings.validate()?;
        // A PID file asked for must be writable: refused before anything is bound, not skipped
        // with a log line nobody may see (a library app without a subscriber).
        if let Some(path) = &settings.pid_file {
            let runtime_dir = crate::runtime_dir::configured(&settings.handoff_socket_or_default());
            crate::pidfile::check_writable(path, &runtime_dir, true)
                .map_err(|e| Error::pid_file(path, e))?;
        }
        if std::process::id() == 1 {
            warn!("this process is PID 1: a reload would end the container with it (the kernel kills the successor when PID 1 exits); call baton_server::supervise(&settings, Supervise::WhenPid1) first in main");
        }
        let signals = Signals::install().map_err(Inner::Signals)?;
        let exe = Executable::current().map_err(Inner::Executable)?;
        let acquired = crate::startup::acquire(
            &settings,
            &crate::supervisor::activation_env(),
            std::process::id(),
            predecessor_socket.as_deref(),
        )
        .await?;
        // Before anything is reported ready: a pair that does not load fails this start (and,
        // in a successor, the reload, while the predecessor serves on).
        let tls = tls_config(&settings, &acquired.listeners, predecessor_socket.is_some())?;
        // Only stdio and the listeners may reach a successor.
        match crate::fds::close_inherited_on_exec() {
            Ok(how) => tracing::debug!(how, "inherited descriptors marked close-on-exec"),
            Err(e) => warn!(error = %e, "cannot mark inherited descriptors close-on-exec"),
        }
        Ok(Server {
            tls,
            process: Process {
                handoff_socket: settings.handoff_socket_or_default(),
                settings,
                exe,
                generation,
                signals,
            },
            predecessor_socket,
            acquired,
            span,
        })
    }

    /// The application state the predecessor handed over ([`Serve::on_handoff`]); `None` on a
    /// first start or when the predecessor had none.
    ///
    /// ```no_run
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    ///
    /// # async fn demo() -> Result<(), baton_server::Error> {
    /// let server = baton_server::Server::from_env().await?;
    /// let visits: u64 = server
    ///     .inherited_state()
    ///     .and_then(|bytes| std::str::from_utf8(bytes).ok()?.parse().ok())
    ///     .unwrap_or(0);
    /// let visits = Arc::new(AtomicU64::new(visits));
    /// let handed = visits.clone();
    /// server
    ///     .serve(axum::Router::new())
    ///     .on_handoff(move || handed.load(Ordering::SeqCst).to_string().into_bytes())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn inherited_state(&self) -> Option<&[u8]> {
        self.acquired.state.as_deref()
    }

    /// How many hand-offs came before this process (0 for a first start).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), baton_server::Error> {
    /// let server = baton_server::Server::from_env().await?;
    /// if server.generation() == 0 {
    ///     eprintln!("first start: nothing inherited");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn generation(&self) -> u64 {
        self.process.generation
    }

    /// The addresses served, as configured or as found on the passed sockets (for a port 0,
    /// the port the kernel chose is in what was found).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), baton_server::Error> {
    /// let server = baton_server::Server::from_env().await?;
    /// for addr in server.listen_addrs() {
    ///     eprintln!("serving on {addr} ({})", addr.scheme());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn listen_addrs(&self) -> Vec<crate::ListenAddr> {
        self.acquired
            .listeners
            .iter()
            .map(|l| l.spec.clone())
            .collect()
    }

    /// Serve `app` on the acquired listeners; see [`serve`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), baton_server::Error> {
    /// let server = baton_server::Server::from_env().await?;
    /// server.serve(axum::Router::new()).await?;
    /// # Ok(()) }
    /// ```
    pub fn serve<A, K>(self, app: A) -> Serve<A::MakeService>
    where
        A: ServeApp<K>,
    {
        Serve::new(Some(self), app.into_make_service())
    }
}

/// A server about to serve an app: await it (it is an [`IntoFuture`]). Returned by [`serve`] and
/// [`Server::serve`]; its methods add to it before it is awaited.
///
/// ```no_run
/// # async fn demo() -> Result<(), baton_server::Error> {
/// use axum::{routing::get, Router};
///
/// let app = Router::new().route("/", get(|| async { "hello\n" }));
/// let drain = baton_server::DrainSignal::new();
/// let ended = baton_server::serve(app)
///     .with_drain_signal(drain.clone())
///     .on_reload(|outcome| eprintln!("reload: {outcome:?}"))
///     .await?;
/// eprintln!("{ended:?}");
/// # Ok(()) }
/// ```
#[must_use = "a Serve does nothing until it is awaited"]
pub struct Serve<M> {
    server: Option<Server>,
    make: M,
    drain: DrainSignal,
    state: Option<StateFn>,
    shutdown: Option<ShutdownFuture>,
    listener_apps: Vec<(ListenerName, Attach)>,
    on_reload: Option<crate::observe::ReloadHook>,
}

/// Serves one listener with an app of [`Serve::listener`] (its type erased).
pub(super) type Attach =
    Box<dyn Fn(&mut http::Serving, http::Endpoint) -> std::io::Result<()> + Send>;

impl<M> std::fmt::Debug for Serve<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&ListenerName> = self.listener_apps.iter().map(|(n, _)| n).collect();
        f.debug_struct("Serve")
            .field("server", &self.server)
            .field("listener_apps", &names)
            .finish_non_exhaustive()
    }
}

impl<M> Serve<M> {
    fn new(server: Option<Server>, make: M) -> Self {
        Serve {
            server,
            make,
            drain: DrainSignal::new(),
            state: None,
            shutdown: None,
            listener_apps: Vec::new(),
            on_reload: None,
        }
    }

    /// Serve `app` instead of the main app on the listener named `name`: its `LISTEN_FDNAMES`
    /// name (systemd's `FileDescriptorName=`) when socket-activated, else its address as
    /// configured (`BATON_LISTEN=127.0.0.1:8080,127.0.0.1:9100` names `127.0.0.1:9100`). The
    /// other listeners serve the main app. Every listener, whatever it serves, is handed to the
    /// successor together on a reload. A name that matches no listener makes the start fail
    /// (exit code 78, like any configuration error).
    ///
    /// An admin or metrics router on its own port:
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), baton_server::Error> {
    /// use axum::{routing::get, Router};
    /// // BATON_LISTEN=127.0.0.1:3000,127.0.0.1:9100
    /// let app = Router::new().route("/", get(|| async { "hello\n" }));
    /// let admin = Router::new().route("/metrics", get(|| async { "up 1\n" }));
    /// baton_server::serve(app)
    ///     .listener("127.0.0.1:9100", admin)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// With the addresses in code, the address itself names its listener:
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), baton_server::Error> {
    /// use std::net::Ipv4Addr;
    /// use baton_server::{ListenAddr, Server, Settings};
    ///
    /// let admin_addr = ListenAddr::tcp((Ipv4Addr::LOCALHOST, 9100));
    /// let settings = Settings::default()
    ///     .listen([ListenAddr::tcp((Ipv4Addr::LOCALHOST, 3000)), admin_addr.clone()]);
    /// Server::bind(settings)
    ///     .await?
    ///     .serve(axum::Router::new())
    ///     .listener(admin_addr, axum::Router::new())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn listener<A, K>(mut self, name: impl Into<ListenerName>, app: A) -> Self
    where
        A: ServeApp<K>,
    {
        let make = app.into_make_service();
        let attach: Attach = Box::new(move |serving, on| serving.serve_on(on, make.clone()));
        self.listener_apps.push((name.into(), attach));
        self
    }

    /// Trigger `drain` when this process retires or stops, so the app can close long-lived
    /// connections (WebSockets, streams). The process exits once they are closed, or at the
    /// shutdown timeout.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), baton_server::Error> {
    /// let drain = baton_server::DrainSignal::new();
    /// let sse_drain = drain.clone(); // give it to the handlers that hold streams open
    /// # let _ = sse_drain;
    /// baton_server::serve(axum::Router::new())
    ///     .with_drain_signal(drain)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn with_drain_signal(mut self, drain: DrainSignal) -> Self {
        self.drain = drain;
        self
    }

    /// Hand application state to the successor: `state` runs in this process when the successor
    /// asks, during a hand-off, and its bytes (at most 16 MiB) reach the successor's
    /// [`Server::inherited_state`]. What this process serves after that moment is not in them.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), baton_server::Error> {
    /// let started = std::time::SystemTime::now();
    /// baton_server::serve(axum::Router::new())
    ///     .on_handoff(move || format!("{started:?}").into_bytes())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// See [`Server::inherited_state`] for the successor's side.
    pub fn on_handoff<F>(mut self, state: F) -> Self
    where
        F: Fn() -> Vec<u8> + Send + Sync + 'static,
    {
        self.state = Some(Arc::new(state));
        self
    }

    /// Call `hook` in this process with the outcome of every reload it attempts: a hand-off to
    /// a successor (then this process retires) or a failure (it serves on). See
    /// [`ReloadOutcome`](crate::ReloadOutcome) for the outcomes.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), baton_server::Error> {
    /// use baton_server::ReloadOutcome;
    ///
    /// baton_server::serve(axum::Router::new())
    ///     .on_reload(|outcome| {
    ///         if let ReloadOutcome::Failed { reason, .. } = outcome {
    ///             eprintln!("reload failed, serving on: {reason}");
    ///         }
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn on_reload<F>(mut self, hook: F) -> Self
    where
        F: Fn(&crate::ReloadOutcome) + Send + Sync + 'static,
    {
        self.on_reload = Some(Arc::new(hook));
        self
    }

    /// Stop (drain and return [`Ended::Shutdown`]) when `signal` resolves, as on `SIGTERM`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), baton_server::Error> {
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// # let _ = stop;
    /// baton_server::serve(axum::Router::new())
    ///     .with_graceful_shutdown(async move {
    ///         let _ = stopped.await;
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shutdown = Some(Box::pin(signal));
        self
    }
}

impl<M: MakeHttp> IntoFuture for Serve<M> {
    type Output = Result<Ended, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Ended, Error>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl<M: MakeHttp> Serve<M> {
    async fn run(self) -> Result<Ended, Error> {
        let server = match self.server {
            Some(server) => server,
            None => Server::from_env().await?,
        };
        let span = server.span.clone();
        let Server {
            process,
            predecessor_socket,
            acquired,
            tls,
            span: _,
        } = server;
        let Acquired {
            listeners,
            mut predecessor,
            state: _,
            control,
        } = acquired;
        let make = self.make;
        let listener_apps = self.listener_apps;
        let on_reload = self.on_reload;
        let drain = self.drain;
        let state = self.state;
        let shutdown = self.shutdown;
        async move {
            let generation = process.generation;
            let options = http::Options {
                idle_timeout: process.settings.idle_timeout,
                http2_keepalive: process.settings.http2_keepalive,
                access_log: process.settings.access_log.then_some(generation),
            };
            let serving = start_serving(&listeners, tls.as_ref(), make, &listener_apps, &options);
            let serving = match serving {
                Ok(serving) => serving,
                Err(e) => {
                    if let Some(path) = &predecessor_socket {
                        child::report_failure(path, &e.to_string()).await;
                    }
                    return Err(e);
                }
            };
            let pid = std::process::id();
            let serving_on = describe(&listeners, generation);
            let ready = match predecessor.as_mut() {
                Some(p) => Some(p.ready(pid).await),
                None => None,
            };
            let (machine, initial) = match ready {
                Some(Ok(())) => (Machine::successor(pid, serving_on), Vec::new()),
                Some(Err(e)) => {
                    warn!(error = %e, "predecessor gone before we could report ready; serving on as main");
                    predecessor = None;
                    Machine::main(pid, serving_on)
                }
                None => Machine::main(pid, serving_on),
            };
            let parts = Parts {
                listeners: Arc::new(listeners),
                serving,
                state,
                drain,
                shutdown,
                control,
                on_reload,
            };
            let mut world = ProcessWorld::new(process, parts, predecessor);
            lifecycle::drive(machine, initial, &mut world).await;
            Ok(ended(world.finish()))
        }
        .instrument(span)
        .await
    }
}

fn generation_from_env() -> u64 {
    std::env::var(GENERATION_ENV)
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

fn predecessor_from_env() -> Option<PathBuf> {
    std::env::var_os(PREDECESSOR_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// For a successor that fails before it has a [`Server`] (bad settings): tell the predecessor
/// that spawned it why, so the reload's failure names the cause. Returns the error.
pub(crate) async fn report_early_failure(e: Error) -> Error {
    report_early_failure_text(&e.to_string()).await;
    e
}

/// [`report_early_failure`] for an error that is only text (the command's configuration).
pub(crate) async fn report_early_failure_text(reason: &str) {
    if let Some(path) = predecessor_from_env() {
        child::report_failure(Path::new(&path), reason).await;
    }
}
