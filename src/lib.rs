//! baton: serve HTTP with tokio + hyper and restart without dropping a connection, under systemd.
//!
//! The machinery serves any hyper service:
//!
//! ```no_run
//! use baton::{config::{Config, Overrides}, Server};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load(&Overrides::default())?;
//! Server::new(config)?.run(|config| baton::http::HelloService::new(config.response_body.clone()))?;
//! # Ok(()) }
//! ```
//!
//! Data flows one way: [`config`] → [`listen`] (activation, import, bind) → [`http`] (serving)
//! → on SIGHUP [`handoff`] → drain → exit; [`lifecycle`] ties the steps together and [`notify`]
//! tells systemd. The hand-off protocol is specified in `docs/handoff-protocol.md`.

#![warn(missing_docs)]

pub mod config;
pub mod exit;
pub mod handoff;
pub mod http;
pub mod lifecycle;
pub mod listen;
pub mod logging;
pub mod notify;
pub mod pidfile;
pub mod reload;
pub mod tls;

pub use lifecycle::{Server, StartError};
