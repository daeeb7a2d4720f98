//! The `baton` command's own handler: `200`, `text/plain`, the configured body, for every path
//! (the article's hello world). A tower service, served like any application's.

use std::convert::Infallible;
use std::future::Ready;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};

/// Answers every request with the configured body.
#[derive(Debug, Clone)]
pub struct Hello {
    body: Bytes,
}

impl Hello {
    /// A handler answering `body`, for the rest of the process's life: the process serves one
    /// configuration, and its body is kept as static bytes, whose clone (per request, for the
    /// service and for the response) costs nothing; a shared `Bytes` would cost two atomic
    /// read-modify-writes on one counter per request, which every worker thread writes.
    pub fn new(body: String) -> Self {
        let body: &'static str = Box::leak(body.into_boxed_str());
        Hello {
            body: Bytes::from_static(body.as_bytes()),
        }
    }
}

impl Answer for Hello {
    fn answer(&mut self, _req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::new(self.body.clone()));
        res.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    }
}

/// A handler of the command's own (the hello body, the admin listener's metrics): it answers
/// every request at once, from its head alone.
pub trait Answer {
    /// The response to `req`.
    fn answer(&mut self, req: &Request<Incoming>) -> Response<Full<Bytes>>;
}

/// An [`Answer`] served as a tower service, like any application's.
#[derive(Debug, Clone)]
pub struct Immediate<A>(pub A);

impl<A: Answer> tower_service::Service<Request<Incoming>> for Immediate<A> {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        std::future::ready(Ok(self.0.answer(&req)))
    }
}
