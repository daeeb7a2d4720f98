//! baton: serve HTTP with tokio + hyper and restart without dropping a connection, under systemd.
//!
//! On `SIGHUP` (`systemctl reload`) the program's binary on disk is started again, the
//! listening sockets are handed to that successor, and the old process drains and exits once the
//! successor serves. If the successor fails, the old process serves on.
//!
//! For an axum (or any tower) app, `baton::serve` replaces `axum::serve` and needs no listener:
//!
//! ```no_run
//! use axum::{routing::get, Router};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), baton::Error> {
//!     let app = Router::new().route("/", get(|| async { "Hello, world!" }));
//!     baton::serve(app).await
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

mod drain;
mod error;
pub(crate) mod handoff;
pub(crate) mod http;
pub(crate) mod lifecycle;
pub(crate) mod listen;
pub(crate) mod notify;
pub(crate) mod pidfile;
pub(crate) mod reload;
mod server;
mod settings;

#[cfg(feature = "cli")]
pub mod cli;

#[cfg(test)]
mod fuzz;

pub use drain::DrainSignal;
pub use error::{Error, ErrorKind};
pub use server::{serve, Serve, Server};
pub use settings::{ListenAddr, Settings, SettingsError, SpecError};
