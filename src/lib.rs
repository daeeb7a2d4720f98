//! baton: serve HTTP with tokio + hyper and restart without dropping a connection, under systemd.
//!
//! On `SIGHUP` (`systemctl reload`) the program's binary on disk is started again, the
//! listening sockets are handed to that successor, and the old process drains and exits once the
//! successor serves. If the successor fails, the old process serves on.
//!
//! For an axum (or any tower) app, `baton_server::serve` replaces `axum::serve` and needs no listener:
//!
//! ```no_run
//! use axum::{routing::get, Router};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), baton_server::Error> {
//!     let app = Router::new().route("/", get(|| async { "Hello, world!" }));
//!     baton_server::serve(app).await?;
//!     Ok(())
//! }
//! ```
//!
//! Settings come from the `BATON_*` variables ([`Settings::from_env`]) or from code
//! ([`Server::bind`]). [`DrainSignal`] tells the app when its process retires;
//! [`Serve::on_handoff`] and [`Server::inherited_state`] carry application state across a
//! hand-off.
//!
//! # Feature flags
//!
//! * `tls` (on): `https://` listeners, socket-activated listeners named `https`,
//!   `Settings::tls` and `BATON_TLS_CERT`/`BATON_TLS_KEY`, served with rustls on the *ring*
//!   crypto provider. Without it neither rustls nor ring is compiled, and a configuration that
//!   asks for TLS fails to start ([`ErrorKind::Config`], exit code 78) with one line naming the
//!   listener.
//! * `axum` (off): axum's `ConnectInfo` for the client's address ([`IncomingConnection`]).
//! * `metrics` (off): reloads, hand-off durations, connections and the generation through the
//!   [`metrics`](https://docs.rs/metrics) facade: `baton_reloads_requested_total`, `baton_reloads_succeeded_total`,
//!   `baton_reloads_failed_total`, `baton_handoff_duration_seconds`, `baton_connections_open`,
//!   `baton_connections_draining`, `baton_generation`, each recorded by the process it is about
//!   (a successful reload is counted by the process that retires). Install your exporter's
//!   recorder; baton installs none. [`Serve::on_reload`] tells reload outcomes in code.
//! * `cli` (on): the `baton` command (it turns `tls` on); a library user turns it off:
//!   `--no-default-features --features tls` (and `axum`, `metrics` as needed).
//!
//! Data flows one way: [`settings`](Settings) → `listen` (activation, bind) → `handoff` (the
//! import from a predecessor, and later the hand-off to a successor) → `http` (serving) →
//! `lifecycle` (a pure state machine of the ordering rules, driven by the process's signals,
//! successor and systemd). The hand-off protocol is specified in `docs/handoff-protocol.md`.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub(crate) mod access_log;
mod connection;
mod drain;
mod error;
pub(crate) mod exit;
pub(crate) mod fds;
pub(crate) mod handoff;
pub(crate) mod http;
pub(crate) mod lifecycle;
pub(crate) mod listen;
pub(crate) mod notify;
pub(crate) mod observe;
pub(crate) mod pidfile;
pub mod reload;
pub(crate) mod runtime_dir;
pub(crate) mod safe_fs;
mod server;
mod settings;
mod startup;
pub(crate) mod supervisor;
pub(crate) mod text;
#[cfg(feature = "tls")]
pub(crate) mod tls;

/// The `baton` command's implementation (used by its `main`); not a library API.
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod test_util;

/// baton's version (`BATON_VERSION` at build time when the packaging set it), as `STATUS=` says.
pub(crate) const VERSION: &str = match option_env!("BATON_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

pub use connection::{ClientAddr, IncomingConnection, PerConnection};
pub use drain::DrainSignal;
pub use error::{Error, ErrorKind};
pub use http::{BoxError, HttpService, MakeHttp};
pub use observe::ReloadOutcome;
pub use server::{app_kind, serve, Ended, ListenerName, Serve, ServeApp, Server, StopSignal};
pub use settings::{
    AccessLog, Http2KeepAlive, ListenAddr, ListenTarget, Scheme, Settings, SettingsError, SpecError,
};

pub use reload::{ReloadError, Reloaded};

/// Ask the running server to reload and wait for the outcome: what `baton reload` does, for a
/// program's own `reload` subcommand (`ExecReload=/usr/bin/my-app reload` in its unit), so that
/// `systemctl reload` fails when the reload fails. The process is `$MAINPID` (systemd sets it
/// for `ExecReload=`), else the pid in `settings`' PID file; the request and its answer go
/// over the service's control socket ([`reload::request`], which also takes an explicit pid).
/// Returns the retired and the successor's pid; an error says why (a failed hand-off: the successor's own error; the old process serves on).
/// `timeout` bounds the wait (the settings' `child_timeout` plus a few seconds is enough).
///
/// ```no_run
/// use std::process::ExitCode;
/// use std::time::Duration;
///
/// fn main() -> ExitCode {
///     if std::env::args().nth(1).as_deref() == Some("reload") {
///         let settings = baton_server::Settings::from_env().expect("settings");
///         return match baton_server::request_reload(&settings, Duration::from_secs(15)) {
///             Ok(done) => { println!("reloaded: pid {} serves", done.successor); ExitCode::SUCCESS }
///             Err(e) => { eprintln!("my-app reload: {e}"); ExitCode::FAILURE }
///         };
///     }
///     // ... serve
///     # ExitCode::SUCCESS
/// }
/// ```
pub fn request_reload(
    settings: &Settings,
    timeout: std::time::Duration,
) -> Result<Reloaded, ReloadError> {
    reload::request(&reload::Target::for_settings(settings), timeout)
}

/// When [`supervise`] makes this process the supervisor.
///
/// ```no_run
/// # fn main() -> std::process::ExitCode {
/// # let settings = baton_server::Settings::default();
/// // Under runit, s6 or supervisord, which follow the pid they started:
/// if let Some(code) = baton_server::supervise(&settings, baton_server::Supervise::Always) {
///     return std::process::ExitCode::from(code);
/// }
/// # std::process::ExitCode::SUCCESS
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Supervise {
    /// Only when this process is PID 1 (a container's entry point) or `BATON_SUPERVISE=1` is set.
    WhenPid1,
    /// Always (under a supervisor that follows one pid: supervisord, runit, s6), except under
    /// systemd.
    Always,
}

/// Become the stable parent of every generation when this process is PID 1 (a container's
/// entry point), when `BATON_SUPERVISE` is `1`/`true`, or when `when` is [`Supervise::Always`]:
/// call it first in `main`, before a runtime or any thread starts. Returns `Some(exit code)`
/// when this process was the supervisor and the service is over (exit with it), `None` when
/// this process goes on to serve. Under systemd it does nothing (systemd follows `MAINPID=`
/// itself). See the README, "Containers and supervisors that follow one pid".
///
/// A container entry point (`ENTRYPOINT ["/usr/local/bin/my-app"]`):
///
/// ```no_run
/// use std::process::ExitCode;
///
/// fn main() -> ExitCode {
///     let settings = match baton_server::Settings::from_env() {
///         Ok(settings) => settings,
///         Err(e) => {
///             eprintln!("my-app: {e}");
///             return ExitCode::from(78);
///         }
///     };
///     if let Some(code) = baton_server::supervise(&settings, baton_server::Supervise::WhenPid1) {
///         return ExitCode::from(code); // the supervisor: the service is over
///     }
///     // A generation: build the runtime and serve.
///     let rt = tokio::runtime::Runtime::new().expect("runtime");
///     rt.block_on(async {
///         let app = axum::Router::new();
///         match baton_server::Server::bind(settings).await {
///             Ok(server) => match server.serve(app).await {
///                 Ok(_) => ExitCode::SUCCESS,
///                 Err(e) => ExitCode::from(e.exit_code()),
///             },
///             Err(e) => ExitCode::from(e.exit_code()),
///         }
///     })
/// }
/// ```
pub fn supervise(settings: &Settings, when: Supervise) -> Option<u8> {
    let from_env = std::env::var("BATON_SUPERVISE")
        .map(|v| matches!(v.as_str(), "1" | "true"))
        .unwrap_or(false);
    let asked = when == Supervise::Always || from_env;
    supervisor::enter(asked, &settings.handoff_socket_or_default())
}
