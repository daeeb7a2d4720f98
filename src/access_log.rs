//! The access log ([`Settings::access_log`](crate::Settings::access_log)): one `tracing` event per
//! request, at INFO level with target [`TARGET`], once its response body has been sent (or the
//! request ended without one). Fields: `method`, `path`, `status` (0: no response — the handler
//! failed or the client went away first), `bytes` (response body bytes sent), `duration_us`
//! (from the request reaching the app to the end of the response), `peer` (the client's
//! `ip:port`, or `unix` on a Unix socket) and `generation`. The message is the same in one line.
//!
//! The record of a request ([`Record`]) rides in the one service wrapper every connection has
//! (`http::body`): with the log off no record is made and nothing else is in the way, and every
//! connection is served by the same types whether the log is on or off (so hyper's connection
//! code is compiled once: see `http::stream`).

use std::net::SocketAddr;
use std::time::Instant;

use hyper::{Method, Request, Version};

/// The `tracing` target of access-log events.
pub const TARGET: &str = "baton::access";

/// What the access log names besides the request: the generation and the connection's client
/// (`None` on a Unix socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogAs {
    pub(crate) generation: u64,
    pub(crate) peer: Option<SocketAddr>,
}

/// One request's line of the access log, written when the record is dropped: with the status
/// and the body bytes counted by then (status 0: no response — the handler failed or the client
/// went away first). The response body holds it, so it is dropped once the body is sent (or the
/// connection ends).
#[derive(Debug)]
pub(crate) struct Record {
    method: Method,
    path: String,
    version: Version,
    who: LogAs,
    start: Instant,
    /// The response's status, once there is one.
    pub(crate) status: u16,
    /// Response body bytes sent.
    pub(crate) bytes: u64,
}

impl Record {
    /// The record of `req`, from now.
    pub(crate) fn new<B>(req: &Request<B>, who: LogAs) -> Box<Record> {
        Box::new(Record {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            version: req.version(),
            who,
            start: Instant::now(),
            status: 0,
            bytes: 0,
        })
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let peer = match self.who.peer {
            Some(addr) => addr.to_string(),
            None => "unix".to_owned(),
        };
        let (status, bytes) = (self.status, self.bytes);
        // The path is the client's: its controls, bidi marks and quotes are escaped as every
        // other line baton writes escapes what it quotes.
        tracing::info!(
            target: TARGET,
            method = %self.method,
            path = %crate::text::one_line(&self.path),
            status,
            bytes,
            duration_us = elapsed.as_micros() as u64,
            peer = %peer,
            generation = self.who.generation,
            "{peer} \"{} {} {:?}\" {status} {bytes} {:.3}ms",
            self.method,
            crate::text::quoted_field(&self.path),
            self.version,
            elapsed.as_secs_f64() * 1000.0,
        );
    }
}
