//! What a baton server is configured with: listen addresses, the hand-off socket, timeouts, the
//! PID file, the TLS certificate and key.
//!
//! [`Settings::from_env`] reads the `BATON_*` variables the `baton` command reads, with the same
//! names, formats and defaults, so a program configured only by its environment behaves like
//! `baton serve`. Programs that configure in code start from [`Settings::default`] and use the
//! setters. The `baton` command adds its JSON file and command line on top (see its man page).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::listen::spec::ListenSpec;
#[cfg(feature = "tls")]
use crate::tls::TlsFiles;

pub use crate::listen::spec::{
    ListenSpec as ListenAddr, Scheme, SpecError, Target as ListenTarget,
};

/// Default drain budget.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default successor start budget.
pub const DEFAULT_CHILD_TIMEOUT: Duration = Duration::from_secs(10);
/// The default idle timeout of a connection (`BATON_IDLE_TIMEOUT`).
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// No timeout may be longer than a day.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The settings of one baton server. Cheap to clone; every field has a default.
///
/// ```
/// use std::time::Duration;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let settings = baton_server::Settings::default()
///     .listen(["127.0.0.1:3000".parse()?])
///     .shutdown_timeout(Duration::from_secs(10));
/// # let _ = settings; Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub(crate) listen: Vec<ListenSpec>,
    pub(crate) listen_explicit: bool,
    /// Listened on even when systemd or a predecessor decides the other listeners (the `baton`
    /// command's admin listener).
    pub(crate) always_listen: Vec<ListenSpec>,
    pub(crate) handoff_socket: Option<PathBuf>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) child_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) pid_file: Option<PathBuf>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<TlsFiles>,
    pub(crate) access_log: bool,
    pub(crate) http2_keepalive: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: vec![default_listen()],
            listen_explicit: false,
            always_listen: Vec::new(),
            handoff_socket: None,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            child_timeout: DEFAULT_CHILD_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            pid_file: None,
            #[cfg(feature = "tls")]
            tls: None,
            access_log: false,
            http2_keepalive: true,
        }
    }
}

/// `127.0.0.1:8000`: the listen address used when none is configured and systemd passed none.
fn default_listen() -> ListenSpec {
    ListenSpec::from_socket_addr(std::net::SocketAddr::from(([127, 0, 0, 1], 8000)))
}

/// Whether a server logs every request ([`Settings::access_log`]; `BATON_ACCESS_LOG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLog {
    /// No access log: requests pass through nothing extra (the default).
    #[default]
    Off,
    /// One `tracing` event per request, target `baton::access`, level INFO.
    On,
}

/// Whether HTTP/2 connections are sent keep-alive PINGs ([`Settings::http2_keepalive`];
/// `BATON_HTTP2_KEEPALIVE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Http2KeepAlive {
    /// A PING after `idle_timeout` without a frame from the peer; no answer within 20 s (or
    /// `idle_timeout` when shorter) closes the connection (the default).
    #[default]
    On,
    /// No PINGs: a peer that stopped answering while a stream of its connection stays open
    /// keeps that connection until the stream ends, TCP gives up on the peer, or a drain's
    /// `shutdown_timeout` cuts it.
    Off,
}

/// A setting with a bad value. One line: where the value came from, the setting, the problem.
/// As an [`Error`](crate::Error) it is of [`ErrorKind::Config`](crate::ErrorKind::Config)
/// (exit code 78).
///
/// ```
/// let e = baton_server::Settings::from_vars(|name| {
///     (name == "BATON_SHUTDOWN_TIMEOUT").then(|| "soon".to_owned())
/// })
/// .unwrap_err();
/// assert_eq!(e.origin, "BATON_SHUTDOWN_TIMEOUT");
/// assert_eq!(e.field, "shutdown_timeout");
/// assert!(e.to_string().starts_with("BATON_SHUTDOWN_TIMEOUT: shutdown_timeout: "));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {field}: {problem}")]
pub struct SettingsError {
    /// Where the value came from: `BATON_LISTEN`, `--listen/BATON_LISTEN`, `config FILE`, `code`.
    pub origin: String,
    /// The setting (with an index for lists: `listen[1]`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl SettingsError {
    pub(crate) fn new(origin: &str, field: &str, problem: impl Into<String>) -> Self {
        SettingsError {
            origin: origin.to_owned(),
            field: field.to_owned(),
            problem: problem.into(),
        }
    }
}

impl Settings {
    /// The defaults, overridden by the `BATON_*` variables of this process:
    /// `BATON_LISTEN` (comma-separated), `BATON_HANDOFF_SOCKET`, `BATON_SHUTDOWN_TIMEOUT`,
    /// `BATON_CHILD_TIMEOUT`, `BATON_IDLE_TIMEOUT`, `BATON_PID_FILE`, `BATON_ACCESS_LOG` and
    /// `BATON_HTTP2_KEEPALIVE` (`1`/`0`, `true`/`false`), `BATON_TLS_CERT` and `BATON_TLS_KEY`
    /// (both or neither; see `Settings::tls`; with the `tls` feature only: without it they are
    /// refused, as is an `https://` address). Durations read like `30s`, `500ms` or a number of seconds.
    /// `BATON_CONFIG` names the `baton` command's JSON file, which the library does
    /// not read: it is reported in the log and otherwise ignored. `BATON_LOG_FORMAT` is the
    /// command's too (a program sets up its own `tracing` subscriber), and so is `BATON_THREADS`
    /// (a program builds its own runtime); `BATON_SUPERVISE` is
    /// read by [`supervise`](crate::supervise), `BATON_LISTEN_FDS_WITHOUT_PID` by the socket
    /// activation of [`Server::bind`](crate::Server::bind).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), baton_server::SettingsError> {
    /// // BATON_LISTEN=127.0.0.1:3000,127.0.0.1:9100 BATON_SHUTDOWN_TIMEOUT=10s
    /// let settings = baton_server::Settings::from_env()?;
    /// # let _ = settings; Ok(()) }
    /// ```
    pub fn from_env() -> Result<Settings, SettingsError> {
        Settings::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Settings::from_env`] with the variables looked up by `var` instead of the environment.
    ///
    /// ```
    /// use std::collections::HashMap;
    ///
    /// let vars = HashMap::from([("BATON_LISTEN", "127.0.0.1:3000,unix:/run/my-app/http.sock")]);
    /// let settings = baton_server::Settings::from_vars(|name| vars.get(name).map(|v| v.to_string()))?;
    /// # let _ = settings;
    /// # Ok::<(), baton_server::SettingsError>(())
    /// ```
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let mut settings = Settings::default();
        if let Some(list) = var("BATON_LISTEN") {
            let texts: Vec<&str> = list.split(',').collect();
            settings = settings.listen(parse_listen(&texts, "BATON_LISTEN")?);
        }
        if let Some(path) = var("BATON_HANDOFF_SOCKET") {
            settings.handoff_socket = Some(check_path(
                Path::new(&path),
                "BATON_HANDOFF_SOCKET",
                "handoff_socket",
            )?);
        }
        if let Some(text) = var("BATON_SHUTDOWN_TIMEOUT") {
            settings.shutdown_timeout =
                parse_timeout(&text, "BATON_SHUTDOWN_TIMEOUT", "shutdown_timeout")?;
        }
        if let Some(text) = var("BATON_CHILD_TIMEOUT") {
            settings.child_timeout = parse_timeout(&text, "BATON_CHILD_TIMEOUT", "child_timeout")?;
        }
        if let Some(text) = var("BATON_IDLE_TIMEOUT") {
            settings.idle_timeout = parse_timeout(&text, "BATON_IDLE_TIMEOUT", "idle_timeout")?;
        }
        if let Some(path) = var("BATON_PID_FILE") {
            settings.pid_file = Some(check_path(Path::new(&path), "BATON_PID_FILE", "pid_file")?);
        }
        if let Some(text) = var("BATON_ACCESS_LOG") {
            settings.access_log = parse_bool(&text, "BATON_ACCESS_LOG", "access_log")?;
        }
        if let Some(text) = var("BATON_HTTP2_KEEPALIVE") {
            settings.http2_keepalive =
                parse_bool(&text, "BATON_HTTP2_KEEPALIVE", "http2_keepalive")?;
        }
        #[cfg(feature = "tls")]
        {
            let tls = pair_tls(
                var("BATON_TLS_CERT").map(|p| (PathBuf::from(p), "BATON_TLS_CERT".to_owned())),
                var("BATON_TLS_KEY").map(|p| (PathBuf::from(p), "BATON_TLS_KEY".to_owned())),
            )?;
            if let Some(files) = tls {
                settings = settings.tls(files.cert, files.key);
            }
        }
        #[cfg(not(feature = "tls"))]
        for name in ["BATON_TLS_CERT", "BATON_TLS_KEY"] {
            if var(name).is_some() {
                return Err(SettingsError::new(
                    name,
                    "tls",
                    format!("a certificate is set, but {NO_TLS_FEATURE}"),
                ));
            }
        }
        check_https_has_tls(&settings.listen, settings.has_tls(), "BATON_LISTEN")?;
        if let Some(file) = var("BATON_CONFIG") {
            tracing::warn!(
                file,
                "BATON_CONFIG is read by the baton command only; this program takes its settings from code and BATON_* variables"
            );
        }
        Ok(settings)
    }

    /// Listen on these addresses (replacing the default `127.0.0.1:8000`). Under socket
    /// activation systemd's sockets are served as well; an empty list serves only those.
    ///
    /// ```
    /// use std::net::Ipv4Addr;
    /// use baton_server::{ListenAddr, Settings};
    ///
    /// let settings = Settings::default().listen([
    ///     ListenAddr::tcp((Ipv4Addr::LOCALHOST, 3000)),
    ///     ListenAddr::unix("/run/my-app/http.sock")?,
    ///     "[::1]:9100".parse()?, // what an operator writes parses too
    /// ]);
    /// # let _ = settings;
    /// # Ok::<(), baton_server::SpecError>(())
    /// ```
    pub fn listen(mut self, addrs: impl IntoIterator<Item = ListenAddr>) -> Self {
        self.listen = addrs.into_iter().collect();
        self.listen_explicit = true;
        self
    }

    /// The Unix socket a successor dials to take over (default: see `docs/handoff-protocol.md`).
    /// Its directory also holds the control socket [`request_reload`](crate::request_reload)
    /// talks to.
    ///
    /// ```
    /// let settings = baton_server::Settings::default().handoff_socket("/run/my-app/handoff.sock");
    /// # let _ = settings;
    /// ```
    pub fn handoff_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.handoff_socket = Some(path.into());
        self
    }

    /// How long a retiring or stopping process may finish in-flight work (default 30 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let settings = baton_server::Settings::default().shutdown_timeout(Duration::from_secs(120));
    /// # let _ = settings;
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long a successor may take to serve before a reload is abandoned (default 10 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// // An app that warms a cache before it serves.
    /// let settings = baton_server::Settings::default().child_timeout(Duration::from_secs(60));
    /// # let _ = settings;
    /// ```
    pub fn child_timeout(mut self, timeout: Duration) -> Self {
        self.child_timeout = timeout;
        self
    }

    /// How long a connection may wait for a request while nothing is in flight (a response
    /// body still streaming counts as in flight) before it is closed; also the interval of
    /// HTTP/2 keep-alive PINGs (default 30 s; see [`Settings::http2_keepalive`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// let settings = baton_server::Settings::default().idle_timeout(Duration::from_secs(75));
    /// # let _ = settings;
    /// ```
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The file the main process writes its pid to (default: none). A file that cannot be
    /// written makes the start fail.
    ///
    /// ```
    /// let settings = baton_server::Settings::default().pid_file("/run/my-app/my-app.pid");
    /// # let _ = settings;
    /// ```
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.pid_file = Some(path.into());
        self
    }

    /// Log one `tracing` event per request (target `baton::access`, level INFO): method, path,
    /// status, bytes, duration, peer and generation (default: [`AccessLog::Off`]). When off,
    /// requests pass through nothing extra.
    ///
    /// ```
    /// use baton_server::{AccessLog, Settings};
    ///
    /// let settings = Settings::default().access_log(AccessLog::On);
    /// # let _ = settings;
    /// ```
    pub fn access_log(mut self, log: AccessLog) -> Self {
        self.access_log = log == AccessLog::On;
        self
    }

    /// Send HTTP/2 connections keep-alive PINGs (default: [`Http2KeepAlive::On`]). They find a
    /// peer that stopped answering while one of its streams stays open; they cost hyper a
    /// mutex and a clock read for every frame received, about 4–7 % of the server CPU per
    /// HTTP/2 request measured on a 2-core machine (bench/HISTORY.md, round 9). Off suits a
    /// server whose clients are watched by something else (a load balancer's health checks,
    /// TCP keepalive): idle connections are still closed after `idle_timeout`.
    ///
    /// ```
    /// use baton_server::{Http2KeepAlive, Settings};
    ///
    /// let settings = Settings::default().http2_keepalive(Http2KeepAlive::Off);
    /// # let _ = settings;
    /// ```
    pub fn http2_keepalive(mut self, pings: Http2KeepAlive) -> Self {
        self.http2_keepalive = pings == Http2KeepAlive::On;
        self
    }

    /// Serve TLS on the `https://` listeners (and on socket-activated ones named `https`) with
    /// this PEM certificate chain (leaf first) and private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    ///
    /// Each is a path, or `credential:NAME` for the file `NAME` in `$CREDENTIALS_DIRECTORY`
    /// (systemd's `LoadCredential=`); a bare `NAME` without `/` is looked up there too when that
    /// variable is set. The files are read when the server starts — by every successor again,
    /// so replacing them and reloading rotates the certificate; a pair that does not load (or a
    /// key that does not match the leaf) makes the start fail, and a reload fail while the old
    /// process serves on.
    ///
    /// ```
    /// use std::net::Ipv6Addr;
    /// use baton_server::{ListenAddr, Settings};
    ///
    /// let settings = Settings::default()
    ///     .listen([ListenAddr::https((Ipv6Addr::UNSPECIFIED, 8443))])
    ///     .tls("/etc/my-app/fullchain.pem", "credential:tls.key");
    /// assert!(settings.validate().is_ok());
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls = Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// Check what the setters cannot: durations in range, no two addresses naming one socket, a
    /// hand-off socket path (configured or default) that fits a Unix socket address, certificate
    /// and key named properly, and present when an address is `https://`.
    /// [`Server::bind`](crate::Server::bind) calls it; call it to report a mistake earlier.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let settings = baton_server::Settings::default().child_timeout(Duration::ZERO);
    /// let e = settings.validate().unwrap_err();
    /// assert_eq!(e.field, "child_timeout");
    /// ```
    pub fn validate(&self) -> Result<(), SettingsError> {
        match &self.handoff_socket {
            Some(path) => check_socket_path(path, "code", "handoff_socket")?,
            None => check_socket_path(
                &default_handoff_socket(),
                "default (from RUNTIME_DIRECTORY, XDG_RUNTIME_DIR or TMPDIR)",
                "handoff_socket",
            )?,
        };
        for (field, value) in [
            ("shutdown_timeout", self.shutdown_timeout),
            ("child_timeout", self.child_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            check_timeout(value).map_err(|p| SettingsError::new("code", field, p))?;
        }
        check_distinct(&self.listen, "code")?;
        if let Some(path) = &self.pid_file {
            check_path(path, "code", "pid_file")?;
        }
        #[cfg(feature = "tls")]
        if let Some(files) = &self.tls {
            for (field, path) in [("tls_cert", &files.cert), ("tls_key", &files.key)] {
                check_tls_path(path, "code", field)?;
            }
        }
        check_https_has_tls(&self.listen, self.has_tls(), "code")
    }

    /// True when a certificate and key are configured (never without the `tls` feature).
    pub(crate) fn has_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        return false;
    }

    /// The hand-off socket to use: the configured one, else the default.
    pub(crate) fn handoff_socket_or_default(&self) -> PathBuf {
        self.handoff_socket
            .clone()
            .unwrap_or_else(default_handoff_socket)
    }
}

/// Parse a list of listen addresses from `origin`; errors name the index.
pub(crate) fn parse_listen(texts: &[&str], origin: &str) -> Result<Vec<ListenSpec>, SettingsError> {
    let mut listen = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let spec: ListenSpec = text.parse().map_err(|e: SpecError| {
            SettingsError::new(origin, &format!("listen[{i}]"), e.to_string())
        })?;
        listen.push(spec);
    }
    if listen.is_empty() {
        return Err(SettingsError::new(origin, "listen", "empty list"));
    }
    check_distinct(&listen, origin)?;
    Ok(listen)
}

fn check_distinct(listen: &[ListenSpec], origin: &str) -> Result<(), SettingsError> {
    for (i, spec) in listen.iter().enumerate() {
        if let Some(dup) = listen[..i].iter().find(|s| s.same_socket(spec)) {
            return Err(SettingsError::new(
                origin,
                &format!("listen[{i}]"),
                format!(
                    "{:?} names the same socket as {:?}",
                    spec.as_str(),
                    dup.as_str()
                ),
            ));
        }
    }
    Ok(())
}

/// Why TLS is refused by a build without the `tls` feature.
#[cfg(not(feature = "tls"))]
pub(crate) const NO_TLS_FEATURE: &str =
    "this program is built without TLS (baton-server's `tls` feature, on by default)";

/// `tls_cert` and `tls_key`, each with where it came from: both or neither, each a path or
/// `credential:NAME`.
#[cfg(feature = "tls")]
pub(crate) fn pair_tls(
    cert: Option<(PathBuf, String)>,
    key: Option<(PathBuf, String)>,
) -> Result<Option<TlsFiles>, SettingsError> {
    if let Some((path, origin)) = &cert {
        check_tls_path(path, origin, "tls_cert")?;
    }
    if let Some((path, origin)) = &key {
        check_tls_path(path, origin, "tls_key")?;
    }
    let missing = |origin: &str, field: &str, other: &str| {
        SettingsError::new(
            origin,
            field,
            format!("missing: {other} is set, and the two go together"),
        )
    };
    match (cert, key) {
        (Some((cert, _)), Some((key, _))) => Ok(Some(TlsFiles { cert, key })),
        (Some((_, origin)), None) => Err(missing(&origin, "tls_key", "tls_cert")),
        (None, Some((_, origin))) => Err(missing(&origin, "tls_cert", "tls_key")),
        (None, None) => Ok(None),
    }
}

#[cfg(feature = "tls")]
fn check_tls_path(path: &Path, origin: &str, field: &str) -> Result<(), SettingsError> {
    if let Some(problem) = nul_in_path(path) {
        return Err(SettingsError::new(origin, field, problem));
    }
    crate::tls::source::validate_configured(path).map_err(|problem| {
        SettingsError::new(
            origin,
            field,
            format!("{:?}: {problem}", path.display().to_string()),
        )
    })
}

/// An `https://` address needs the certificate and key. (A socket-activated listener named
/// `https` is only known at start: the server refuses it there.)
pub(crate) fn check_https_has_tls(
    listen: &[ListenSpec],
    have_tls: bool,
    origin: &str,
) -> Result<(), SettingsError> {
    if have_tls {
        return Ok(());
    }
    #[cfg(feature = "tls")]
    let problem = "serves TLS but no certificate is configured (tls_cert and tls_key, --tls-cert and --tls-key)";
    #[cfg(not(feature = "tls"))]
    let problem = format!("serves TLS, but {NO_TLS_FEATURE}");
    match listen.iter().position(|l| l.scheme() == Scheme::Https) {
        Some(i) => Err(SettingsError::new(
            origin,
            &format!("listen[{i}]"),
            format!("{:?} {problem}", listen[i].as_str()),
        )),
        None => Ok(()),
    }
}

/// Parse a boolean written as `1`/`0`, `true`/`false`, `yes`/`no` or `on`/`off`.
pub(crate) fn parse_bool(text: &str, origin: &str, field: &str) -> Result<bool, SettingsError> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(SettingsError::new(
            origin,
            field,
            format!("{text:?} is not a boolean (1/0, true/false, yes/no, on/off)"),
        )),
    }
}

/// Parse a timeout written as `30s`, `500ms`, `2m` or a number of seconds.
pub(crate) fn parse_timeout(
    text: &str,
    origin: &str,
    field: &str,
) -> Result<Duration, SettingsError> {
    let value = match text.parse::<f64>() {
        Ok(secs) => seconds(secs),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration like 30s or 500ms: {e}")),
    };
    timeout_in_range(value, origin, field)
}

/// A timeout given as a number of seconds (the JSON file allows that).
#[cfg(feature = "cli")]
pub(crate) fn timeout_from_secs(
    secs: f64,
    origin: &str,
    field: &str,
) -> Result<Duration, SettingsError> {
    timeout_in_range(seconds(secs), origin, field)
}

fn timeout_in_range(
    value: Result<Duration, String>,
    origin: &str,
    field: &str,
) -> Result<Duration, SettingsError> {
    let value = value.map_err(|p| SettingsError::new(origin, field, p))?;
    check_timeout(value).map_err(|p| SettingsError::new(origin, field, p))?;
    Ok(value)
}

fn check_timeout(value: Duration) -> Result<(), String> {
    if value.is_zero() || value > MAX_TIMEOUT {
        return Err("must be more than 0 and at most 24h".into());
    }
    Ok(())
}

fn seconds(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{secs} is not a number of seconds"))
}

/// A path setting must not be empty, and must not hold a NUL byte (no system call takes one:
/// refused here, so that `baton check` and a starting server agree).
pub(crate) fn check_path(path: &Path, origin: &str, field: &str) -> Result<PathBuf, SettingsError> {
    if path.as_os_str().is_empty() {
        return Err(SettingsError::new(origin, field, "empty path"));
    }
    if let Some(problem) = nul_in_path(path) {
        return Err(SettingsError::new(origin, field, problem));
    }
    Ok(path.to_owned())
}

/// The complaint about a path holding a NUL byte, naming the path (escaped), if it holds one.
pub(crate) fn nul_in_path(path: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str().as_bytes().contains(&0).then(|| {
        format!(
            "\"{}\": a path cannot contain a NUL byte",
            crate::text::one_line(&path.to_string_lossy())
        )
    })
}

/// A hand-off socket path must fit a `sockaddr_un`, and so must the per-hand-off sockets baton
/// makes in its directory (`<dir>/handoff.<pid>.<random>/handoff.sock`).
pub(crate) fn check_socket_path(
    path: &Path,
    origin: &str,
    field: &str,
) -> Result<PathBuf, SettingsError> {
    use crate::safe_fs::{sockaddr_len, MAX_SOCKET_PATH};
    let path = check_path(path, origin, field)?;
    let len = sockaddr_len(&path);
    if len > MAX_SOCKET_PATH {
        return Err(SettingsError::new(
            origin,
            field,
            format!(
                "{:?} is {len} bytes; a Unix socket address holds at most {MAX_SOCKET_PATH}",
                path.display().to_string()
            ),
        ));
    }
    let dir = crate::runtime_dir::configured(&path);
    let needed = sockaddr_len(&dir) + crate::runtime_dir::PATH_SUFFIX_MAX;
    if needed > MAX_SOCKET_PATH {
        return Err(SettingsError::new(
            origin,
            field,
            format!(
                "the hand-off sockets made in its directory {:?} take up to {needed} bytes; a Unix socket address holds at most {MAX_SOCKET_PATH}",
                dir.display().to_string()
            ),
        ));
    }
    Ok(path)
}

/// `$RUNTIME_DIRECTORY/handoff.sock`, else `$XDG_RUNTIME_DIR/baton/handoff.sock`, else
/// `<tmp>/baton-<uid>/handoff.sock`.
pub(crate) fn default_handoff_socket() -> PathBuf {
    let non_empty = |k| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dirs) = non_empty("RUNTIME_DIRECTORY") {
        // systemd separates several RuntimeDirectory= entries with ':'
        let first = dirs
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        return PathBuf::from(first).join("handoff.sock");
    }
    if let Some(xdg) = non_empty("XDG_RUNTIME_DIR") {
        return PathBuf::from(xdg).join("baton").join("handoff.sock");
    }
    std::env::temp_dir()
        .join(format!("baton-{}", nix::unistd::getuid()))
        .join("handoff.sock")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_serve_the_article_address() {
        let s = from(&[]).unwrap();
        assert_eq!(s.listen[0].as_str(), "127.0.0.1:8000");
        assert!(!s.listen_explicit);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(s.child_timeout, Duration::from_secs(10));
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn variables_override_defaults() {
        let s = from(&[
            ("BATON_LISTEN", "127.0.0.1:1,unix:/tmp/x.sock"),
            ("BATON_SHUTDOWN_TIMEOUT", "2.5"),
            ("BATON_CHILD_TIMEOUT", "750ms"),
            ("BATON_IDLE_TIMEOUT", "2s"),
            ("BATON_PID_FILE", "/run/x.pid"),
            ("BATON_HANDOFF_SOCKET", "/run/h.sock"),
            ("BATON_ACCESS_LOG", "1"),
            ("BATON_HTTP2_KEEPALIVE", "off"),
        ])
        .unwrap();
        assert_eq!(s.listen.len(), 2);
        assert!(s.listen_explicit);
        assert_eq!(s.shutdown_timeout, Duration::from_millis(2500));
        assert_eq!(s.child_timeout, Duration::from_millis(750));
        assert_eq!(s.idle_timeout, Duration::from_secs(2));
        assert_eq!(s.pid_file.as_deref(), Some(Path::new("/run/x.pid")));
        assert_eq!(s.handoff_socket_or_default(), Path::new("/run/h.sock"));
        assert!(s.access_log);
        assert!(!from(&[]).unwrap().access_log);
        let e = from(&[("BATON_ACCESS_LOG", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("BATON_ACCESS_LOG: access_log: \"maybe\""),
            "{e}"
        );
        assert!(!s.http2_keepalive);
        assert!(from(&[]).unwrap().http2_keepalive);
        let e = from(&[("BATON_HTTP2_KEEPALIVE", "sometimes")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("BATON_HTTP2_KEEPALIVE: http2_keepalive: \"sometimes\""),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_the_variable_and_the_setting() {
        let e = from(&[("BATON_LISTEN", "nope")]).unwrap_err().to_string();
        assert!(e.starts_with("BATON_LISTEN: listen[0]: "), "{e}");
        let e = from(&[("BATON_CHILD_TIMEOUT", "soon")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("BATON_CHILD_TIMEOUT: child_timeout: \"soon\""),
            "{e}"
        );
        let e = from(&[("BATON_SHUTDOWN_TIMEOUT", "0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 0"), "{e}");
        let e = from(&[("BATON_LISTEN", "127.0.0.1:1,127.0.0.1:01")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen[1]") && e.contains("same socket"), "{e}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_files_from_variables_or_code() {
        let s = from(&[
            ("BATON_LISTEN", "https://127.0.0.1:8443,127.0.0.1:8080"),
            ("BATON_TLS_CERT", "/etc/ssl/fullchain.pem"),
            ("BATON_TLS_KEY", "credential:tls.key"),
        ])
        .unwrap();
        assert_eq!(
            s.tls,
            Some(TlsFiles {
                cert: "/etc/ssl/fullchain.pem".into(),
                key: "credential:tls.key".into()
            })
        );
        assert_eq!(s.listen[0].scheme(), Scheme::Https);
        assert!(s.validate().is_ok());
        let e = from(&[("BATON_TLS_KEY", "/k.pem")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "BATON_TLS_KEY: tls_cert: missing: tls_key is set, and the two go together"
        );
        let e = from(&[("BATON_LISTEN", "https://127.0.0.1:1")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "BATON_LISTEN: listen[0]: \"https://127.0.0.1:1\" serves TLS but no certificate"
            ),
            "{e}"
        );
        let e = from(&[("BATON_TLS_CERT", "credential:"), ("BATON_TLS_KEY", "/k")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("BATON_TLS_CERT: tls_cert: \"credential:\": "),
            "{e}"
        );

        let https: ListenAddr = "https://127.0.0.1:1".parse().unwrap();
        let e = Settings::default()
            .listen([https.clone()])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("code: listen[0]: "), "{e}");
        let s = Settings::default()
            .listen([https])
            .tls("cert.pem", "key.pem");
        assert!(s.validate().is_ok());
        let e = Settings::default()
            .tls("credential:a/b", "k")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("code: tls_cert: "), "{e}");
    }

    /// Without the `tls` feature, an `https://` address or a certificate is refused in one
    /// line naming it, rather than served as plain HTTP or ignored.
    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_asked_of_a_build_without_tls_is_refused() {
        let e = from(&[("BATON_LISTEN", "127.0.0.1:1,https://127.0.0.1:2")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "BATON_LISTEN: listen[1]: \"https://127.0.0.1:2\" serves TLS, but this program is built without TLS (baton-server's `tls` feature, on by default)"
        );
        let e = from(&[("BATON_TLS_CERT", "/c.pem"), ("BATON_TLS_KEY", "/k.pem")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "BATON_TLS_CERT: tls: a certificate is set, but this program is built without TLS"
            ),
            "{e}"
        );
        let https: ListenAddr = "https://127.0.0.1:1".parse().unwrap();
        let e = Settings::default().listen([https]).validate().unwrap_err();
        assert!(e.to_string().starts_with("code: listen[0]: "), "{e}");
    }

    #[test]
    fn code_settings_are_validated() {
        let s = Settings::default().child_timeout(Duration::ZERO);
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("child_timeout"));
        assert!(Settings::default().validate().is_ok());
    }
}
