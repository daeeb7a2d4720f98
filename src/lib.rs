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
//!     baton_server::serve(app).await
//! }
//! ```
//!
//! Settings come from the `BATON_*` variables ([`Settings::from_env`]) or from code
//! ([`Server::bind`]). [`DrainSignal`] tells the app when its process retires;
//! [`Serve::on_handoff`] and [`Server::inherited_state`] carry application state across a
//! hand-off.
//!
//! Data flows one way: [`settings`](Settings) → `listen` (activation, bind) → `handoff` (the
//! import from a predecessor, and later the hand-off to a successor) → `http` (serving) →
//! `lifecycle` (a pure state machine of the ordering rules, driven by the process's signals,
//! successor and systemd). The hand-off protocol is specified in `docs/handoff-protocol.md`.

#![warn(missing_docs)]

pub(crate) mod access_log;
mod drain;
mod error;
pub(crate) mod exit;
pub(crate) mod fds;
pub(crate) mod handoff;
pub(crate) mod http;
pub(crate) mod lifecycle;
pub(crate) mod listen;
pub(crate) mod notify;
pub(crate) mod pidfile;
pub mod reload;
pub(crate) mod runtime_dir;
pub(crate) mod safe_fs;
mod server;
mod settings;
mod startup;
pub(crate) mod supervisor;
pub(crate) mod text;
pub(crate) mod tls;

#[cfg(feature = "cli")]
pub mod cli;

#[cfg(test)]
mod fuzz;

/// baton's version (`BATON_VERSION` at build time when the packaging set it), as `STATUS=` says.
pub(crate) const VERSION: &str = match option_env!("BATON_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

pub use drain::DrainSignal;
pub use error::{Error, ErrorKind};
pub use server::{serve, Serve, Server};
pub use settings::{ListenAddr, Scheme, Settings, SettingsError, SpecError};

/// Become the stable parent of every generation when this process is PID 1 (a container's
/// entry point) or when `asked`: call it first in `main`, before a runtime or any thread starts.
/// Returns `Some(exit code)` when this process was the supervisor and the service is over (exit
/// with it), `None` when this process goes on to serve. Under systemd it does nothing (systemd
/// follows `MAINPID=` itself). See the README, "Containers and pid-following supervisors".
pub fn supervise(settings: &Settings, asked: bool) -> Option<u8> {
    supervisor::enter(asked, &settings.handoff_socket_or_default())
}
