//! Which HTTP a connection speaks, and hyper's connection that serves it.
//!
//! A connection that opens with HTTP/2's preface is served by hyper's HTTP/2 connection, any
//! other by its HTTP/1 connection (with upgrades: WebSocket). hyper-util's `auto` connection
//! does the same, but reads the first bytes into a buffer of its own and hands hyper a stream
//! wrapped in another layer (`Rewind`) that gives them back; every read and write of the
//! connection's life then goes through that layer and the auto connection's dispatch. Here the
//! first bytes stay in [`ConnIo`], which sees every read anyway (see [`ConnIo::poll_opening`]).
//! Measured with callgrind (each count the difference of a run with 40,000 and one with 20,000
//! requests, per request, 2026-12-07): `ab -k -c4` on one CPU 9,815 → 9,736 user-space
//! instructions per keep-alive request, unpinned (two workers) 10,339 → 10,257; h2c
//! `h2load -c16 -m1` on one CPU 24,837 → 24,807.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};

use super::exec::StreamExecutor;
use super::io::ConnIo;
use super::keepalive::KeepAliveTimer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How every connection of a process is served: hyper's HTTP/1 and HTTP/2 settings.
pub(super) struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<StreamExecutor>,
}

/// HTTP/2 keep-alive PINGs: one after `interval` without a frame from the peer; the connection
/// is closed when its answer takes longer than `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Protocols {
    /// With `keepalive`, HTTP/2 connections are sent keep-alive PINGs; without, hyper is given
    /// no timer, and keeps no clock of the frames it receives.
    pub fn new(keepalive: Option<KeepAlive>) -> Protocols {
        let mut http1 = http1::Builder::new();
        // No hyper header-read timer: it arms a timer for every request. The connection task
        // enforces the idle bound once a second instead (see `Options::idle_timeout`).
        // One write buffer instead of a queue of buffers sent with writev: headers and a small
        // body are one contiguous write. Measured with callgrind (`ab -k`, one CPU): 10,318 →
        // 9,858 user-space instructions per keep-alive request; a large body is copied into the
        // buffer (up to hyper's buffer limit) instead of being handed to writev as it is.
        http1
            .keep_alive(true)
            .header_read_timeout(None)
            .writev(false);
        let mut http2 = http2::Builder::new(StreamExecutor);
        if let Some(keepalive) = keepalive {
            http2
                .timer(KeepAliveTimer)
                .keep_alive_interval(keepalive.interval)
                .keep_alive_timeout(keepalive.timeout);
        }
        Protocols { http1, http2 }
    }

    /// Serve `io` with `service`: its first bytes tell which HTTP.
    pub fn serve<I, S>(self: &Arc<Self>, io: ConnIo<I>, service: S) -> Connection<I, S>
    where
        S: HttpService<Incoming>,
    {
        Connection::Opening {
            io: Some(io),
            service: Some(service),
            protocols: self.clone(),
            cancelled: false,
        }
    }
}

pin_project! {
    /// hyper's connection on one stream, chosen once its first bytes are read.
    #[project = Serving]
    pub(super) enum Connection<I, S>
    where
        S: HttpService<Incoming>,
    {
        /// Reading the first bytes; `cancelled`: a graceful shutdown came first (the
        /// connection ends without serving anything).
        Opening {
            io: Option<ConnIo<I>>,
            service: Option<S>,
            protocols: Arc<Protocols>,
            cancelled: bool,
        },
        Http1 {
            #[pin]
            conn: http1::UpgradeableConnection<TokioIo<ConnIo<I>>, S>,
        },
        Http2 {
            #[pin]
            conn: http2::Connection<TokioIo<ConnIo<I>>, S, StreamExecutor>,
        },
    }
}

impl<I, S, B> Connection<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    StreamExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    /// Start a graceful shutdown: HTTP/1 closes after the response in progress, if any; HTTP/2
    /// sends GOAWAY and finishes the streams it accepted; a connection whose first bytes are
    /// still awaited ends. Keep polling the connection until it does.
    pub fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            Serving::Opening { cancelled, .. } => *cancelled = true,
            Serving::Http1 { conn } => conn.graceful_shutdown(),
            Serving::Http2 { conn } => conn.graceful_shutdown(),
        }
    }
}

impl<I, S, B> Future for Connection<I, S>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    StreamExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project() {
                Serving::Http1 { conn } => return poll_out_of_line(conn, cx),
                Serving::Http2 { conn } => return poll_out_of_line(conn, cx),
                Serving::Opening {
                    io,
                    service,
                    protocols,
                    cancelled,
                } => {
                    if *cancelled {
                        return Poll::Ready(Ok(()));
                    }
                    // (Both are taken only here, as the state changes.)
                    let h2 = match io.as_mut() {
                        Some(io) => ready!(io.poll_opening(cx))?,
                        None => return Poll::Ready(Ok(())),
                    };
                    let (Some(io), Some(service)) = (io.take(), service.take()) else {
                        return Poll::Ready(Ok(()));
                    };
                    let io = TokioIo::new(io);
                    if h2 {
                        Connection::Http2 {
                            conn: protocols.http2.serve_connection(io, service),
                        }
                    } else {
                        Connection::Http1 {
                            conn: protocols
                                .http1
                                .serve_connection(io, service)
                                .with_upgrades(),
                        }
                    }
                }
            };
            self.set(next);
        }
    }
}

/// Poll hyper's connection in a function of its own: with hyper's HTTP/1 connection inlined
/// into [`Connection`]'s poll, callgrind counted 9,795 instead of 9,736 instructions per
/// keep-alive request (`ab -k -c4`, one CPU); the compiler's inlining choices, not the work.
#[inline(never)]
fn poll_out_of_line<F>(conn: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
where
    F: Future<Output = Result<(), hyper::Error>>,
{
    conn.poll(cx).map_err(Into::into)
}
