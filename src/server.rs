//! The library's entry points: [`serve`] for the one-line swap from `axum::serve`, and
//! [`Server`] for programs that want the inherited state before they build their app.

use std::future::{Future, IntoFuture};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use tracing::{warn, Instrument};

use crate::access_log::AccessLog;
use crate::drain::DrainSignal;
use crate::error::{Error, Inner};
use crate::handoff::child;
use crate::handoff::parent::StateFn;
use crate::handoff::protocol::{GENERATION_ENV, PREDECESSOR_ENV};
use crate::handoff::spawn::Executable;
use crate::http::{self, BoxError};
use crate::lifecycle::{self, Machine, Parts, ProcessWorld, ShutdownFuture, Signals};
use crate::listen::spec::Scheme;
use crate::listen::{Listener, Origin};
use crate::settings::{Settings, SettingsError};
use crate::startup::Acquired;
use crate::tls::ServerConfig;

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
/// baton_server::serve(app).await
/// # }
/// ```
///
/// On `SIGHUP` the program's binary on disk is started again with the same arguments; that new
/// process runs the program's `main` from the start and, when it reaches `baton_server::serve`, takes
/// over the listeners. Do not hold listening sockets of your own and do not call `serve` twice in
/// one process; the listeners belong to baton.
pub fn serve<S>(app: S) -> Serve<S> {
    Serve {
        server: None,
        app,
        drain: DrainSignal::new(),
        state: None,
        shutdown: None,
    }
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
/// server.serve(app).await
/// # }
/// ```
pub struct Server {
    settings: Settings,
    exe: Executable,
    generation: u64,
    handoff_socket: PathBuf,
    predecessor_socket: Option<PathBuf>,
    acquired: Acquired,
    tls: Option<Arc<ServerConfig>>,
    signals: Signals,
    span: tracing::Span,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("generation", &self.generation)
            .field("listeners", &self.acquired.listeners)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Acquire the listeners: socket activation, else the import from a running predecessor,
    /// else a fresh bind. A successor that fails here tells its predecessor why.
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

    /// [`Server::bind`] with [`Settings::from_env`].
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
        let start = match predecessor_socket {
            Some(_) => crate::tls::Start::Reload,
            None => crate::tls::Start::First,
        };
        let tls = tls_config(&settings, &acquired.listeners, start)?;
        // Only stdio and the listeners may reach a successor.
        match crate::fds::close_inherited_on_exec() {
            Ok(how) => tracing::debug!(how, "inherited descriptors marked close-on-exec"),
            Err(e) => warn!(error = %e, "cannot mark inherited descriptors close-on-exec"),
        }
        Ok(Server {
            tls,
            handoff_socket: settings.handoff_socket_or_default(),
            settings,
            exe,
            generation,
            predecessor_socket,
            acquired,
            signals,
            span,
        })
    }

    /// The application state the predecessor handed over ([`Serve::on_handoff`]); `None` on a
    /// first start or when the predecessor had none.
    pub fn inherited_state(&self) -> Option<&[u8]> {
        self.acquired.state.as_deref()
    }

    /// How many hand-offs came before this process (0 for a first start).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The addresses served, as configured or as found on the passed sockets.
    pub fn listen_addrs(&self) -> Vec<String> {
        self.acquired
            .listeners
            .iter()
            .map(|l| l.spec.to_string())
            .collect()
    }

    /// Serve `app` on the acquired listeners; see [`serve`].
    pub fn serve<S>(self, app: S) -> Serve<S> {
        Serve {
            server: Some(self),
            app,
            drain: DrainSignal::new(),
            state: None,
            shutdown: None,
        }
    }
}

/// A server about to serve an app: await it (it is an [`IntoFuture`]). Returned by [`serve`] and
/// [`Server::serve`].
#[must_use = "a Serve does nothing until it is awaited"]
pub struct Serve<S> {
    server: Option<Server>,
    app: S,
    drain: DrainSignal,
    state: Option<StateFn>,
    shutdown: Option<ShutdownFuture>,
}

impl<S> std::fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl<S> Serve<S> {
    /// Trigger `drain` when this process retires or stops, so the app can close long-lived
    /// connections (WebSockets, streams). The process exits once they are closed, or at the
    /// shutdown timeout.
    pub fn with_drain_signal(mut self, drain: DrainSignal) -> Self {
        self.drain = drain;
        self
    }

    /// Hand application state to the successor: `state` runs in this process when the successor
    /// asks, during a hand-off, and its bytes (at most 16 MiB) reach the successor's
    /// [`Server::inherited_state`]. What this process serves after that moment is not in them.
    pub fn on_handoff<F>(mut self, state: F) -> Self
    where
        F: Fn() -> Vec<u8> + Send + Sync + 'static,
    {
        self.state = Some(Arc::new(state));
        self
    }

    /// Stop (drain and return) when `signal` resolves, as on `SIGTERM`.
    pub fn with_graceful_shutdown<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shutdown = Some(Box::pin(signal));
        self
    }
}

impl<S, B> IntoFuture for Serve<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = Result<(), Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl<S, B> Serve<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn run(self) -> Result<(), Error> {
        let server = match self.server {
            Some(server) => server,
            None => Server::from_env().await?,
        };
        let span = server.span.clone();
        let Server {
            settings,
            exe,
            generation,
            handoff_socket,
            predecessor_socket,
            acquired,
            tls,
            signals,
            span: _,
        } = server;
        let Acquired {
            listeners,
            mut predecessor,
            state: _,
            control,
        } = acquired;
        let app = self.app;
        let access_log = settings.access_log;
        let drain = self.drain;
        let state = self.state;
        let shutdown = self.shutdown;
        async move {
            let options = http::Options {
                idle_timeout: settings.idle_timeout,
                peer_addr: access_log,
            };
            // The access log wraps the app only when it is on: otherwise nothing is in the way.
            let serving = if access_log {
                start_serving(
                    &listeners,
                    tls.as_ref(),
                    AccessLog::new(app, generation),
                    &options,
                )
            } else {
                start_serving(
                    &listeners,
                    tls.as_ref(),
                    app,
                    &options,
                )
            };
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
                settings,
                exe,
                generation,
                handoff_socket,
                listeners: Arc::new(listeners),
                serving,
                state,
                drain,
                shutdown,
                signals,
                control,
            };
            let mut world = ProcessWorld::new(parts, predecessor);
            lifecycle::drive(machine, initial, &mut world).await;
            Ok(())
        }
        .instrument(span)
        .await
    }
}

fn start_serving<S>(
    listeners: &[Listener],
    tls: Option<&Arc<ServerConfig>>,
    service: S,
    options: &http::Options,
) -> Result<http::Serving, Error>
where
    S: http::HttpService,
{
    let sockets = listeners
        .iter()
        .map(|l| {
            let tls = match l.scheme() {
                Scheme::Https => tls.cloned(),
                Scheme::Http => None,
            };
            Ok((l.socket.try_clone()?, tls))
        })
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(Inner::Serve)?;
    Ok(http::start(sockets, service, options).map_err(Inner::Serve)?)
}

/// Read the certificate and key when a listener serves https: every process reads them afresh,
/// so replacing the files and reloading rotates the certificate. An https listener without
/// them is refused (a socket-activated one named `https` is only known here).
fn tls_config(
    settings: &Settings,
    listeners: &[Listener],
    start: crate::tls::Start,
) -> Result<Option<Arc<ServerConfig>>, Error> {
    let https = listeners.iter().find(|l| l.scheme() == Scheme::Https);
    match (&settings.tls, https) {
        (Some(files), Some(_)) => Ok(Some(crate::tls::load(files, start)?)),
        (None, Some(l)) => {
            let (origin, how) = if l.origin == Origin::Systemd && l.spec.scheme() == Scheme::Http {
                ("LISTEN_FDNAMES", format!("{} (socket named https)", l.spec))
            } else {
                ("listen", l.spec.to_string())
            };
            Err(SettingsError::new(
                origin,
                &l.name,
                format!(
                    "{how} serves TLS but no certificate is configured (tls_cert and tls_key, --tls-cert and --tls-key)"
                ),
            )
            .into())
        }
        (Some(_), None) => {
            warn!("a TLS certificate is configured but no listener serves https (write https://HOST:PORT, or name the socket https); not reading it");
            Ok(None)
        }
        (None, None) => Ok(None),
    }
}

/// How many bytes of `STATUS=` the list of listeners may take: the rest are counted.
const LISTENERS_IN_STATUS: usize = 512;

fn describe(listeners: &[Listener], generation: u64) -> String {
    let mut list = String::new();
    for (i, l) in listeners.iter().enumerate() {
        let item = format!("{} ({})", l.spec, l.source);
        if i > 0 && list.len() + item.len() + 2 > LISTENERS_IN_STATUS {
            list.push_str(&format!(" … and {} more", listeners.len() - i));
            break;
        }
        if i > 0 {
            list.push_str(", ");
        }
        list.push_str(&item);
    }
    format!(
        "baton {}: serving on {}; generation {generation}",
        crate::VERSION,
        crate::notify::bounded(&list, LISTENERS_IN_STATUS + 32)
    )
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
