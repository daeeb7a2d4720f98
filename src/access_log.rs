//! The access log ([`Settings::access_log`](crate::Settings::access_log)): one `tracing` event per
//! request, at INFO level with target [`TARGET`], once its response body has been sent (or the
//! request ended without one). Fields: `method`, `path`, `status` (0: no response — the handler
//! failed or the client went away first), `bytes` (response body bytes sent), `duration_us`
//! (from the request reaching the app to the end of the response), `peer` (the client's
//! `ip:port`, or `unix` on a Unix socket) and `generation`. The message is the same in one line.
//!
//! [`AccessLog`] wraps the application only when the log is on: with it off, requests go through
//! nothing extra, and the HTTP layer does not record the peer address either.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Method, Request, Response, Version};

/// The `tracing` target of access-log events.
pub const TARGET: &str = "baton::access";

/// The client of a connection, as the HTTP layer inserts it into each request's extensions
/// when the access log is on. `None` on a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerAddr(pub(crate) Option<SocketAddr>);

/// A tower service that logs every request to the service it wraps.
#[derive(Debug, Clone)]
pub(crate) struct AccessLog<S> {
    inner: S,
    generation: u64,
}

impl<S> AccessLog<S> {
    /// Log the requests `inner` serves, as generation `generation`.
    pub(crate) fn new(inner: S, generation: u64) -> Self {
        AccessLog { inner, generation }
    }
}

/// What is known of a request before its response.
struct Record {
    method: Method,
    path: String,
    version: Version,
    peer: Option<SocketAddr>,
    generation: u64,
    start: Instant,
    logged: bool,
}

impl Record {
    fn log(&mut self, status: u16, bytes: u64) {
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        let elapsed = self.start.elapsed();
        let peer = match self.peer {
            Some(addr) => addr.to_string(),
            None => "unix".to_owned(),
        };
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
            generation = self.generation,
            "{peer} \"{} {} {:?}\" {status} {bytes} {:.3}ms",
            self.method,
            crate::text::quoted_field(&self.path),
            self.version,
            elapsed.as_secs_f64() * 1000.0,
        );
    }
}

impl Drop for Record {
    /// A request dropped before its response (the client went away, the connection was cut).
    fn drop(&mut self) {
        self.log(0, 0);
    }
}

impl<S, B> tower_service::Service<Request<Incoming>> for AccessLog<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<LoggedBody<B>>;
    type Error = S::Error;
    type Future = LoggedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let record = Record {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            version: req.version(),
            peer: req.extensions().get::<PeerAddr>().and_then(|p| p.0),
            generation: self.generation,
            start: Instant::now(),
            logged: false,
        };
        LoggedFuture {
            inner: self.inner.call(req),
            record: Some(record),
        }
    }
}

pin_project_lite::pin_project! {
    /// The wrapped service's future; hands the record to the response body.
    pub(crate) struct LoggedFuture<F> {
        #[pin]
        inner: F,
        record: Option<Record>,
    }
}

impl<F, B, E> Future for LoggedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<LoggedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let record = this.record.take();
        Poll::Ready(result.map(|res| {
            let status = res.status().as_u16();
            res.map(|body| LoggedBody {
                inner: body,
                record,
                status,
                bytes: 0,
            })
        }))
        // On an error the record is dropped here, which logs status 0.
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts what it yields and logs the request when it is dropped
    /// (hyper drops it once it is sent, or when the connection ends).
    pub(crate) struct LoggedBody<B> {
        #[pin]
        inner: B,
        record: Option<Record>,
        status: u16,
        bytes: u64,
    }

    impl<B> PinnedDrop for LoggedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(record) = this.record.as_mut() {
                record.log(*this.status, *this.bytes);
            }
        }
    }
}

impl<B: Body> Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                *this.bytes += data.remaining() as u64;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[test]
    fn the_body_counts_bytes_and_keeps_the_size_hint() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let body = LoggedBody {
            inner: Full::new(bytes::Bytes::from_static(b"hello")),
            record: None,
            status: 200,
            bytes: 0,
        };
        assert_eq!(body.size_hint().exact(), Some(5));
        let mut body = Box::pin(body);
        let collected = rt.block_on(async {
            let mut all = Vec::new();
            while let Some(frame) = body.frame().await {
                all.extend_from_slice(frame.unwrap().data_ref().unwrap());
            }
            all
        });
        assert_eq!(collected, b"hello");
        assert_eq!(body.bytes, 5);
    }
}
