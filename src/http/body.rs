//! The service wrapper: counts requests, keeps each one in flight until its response body has
//! ended (or was dropped), and adds `Connection: close` to HTTP/1 responses while draining.
//! Per request: a few relaxed atomic operations and a reference count, no allocation, no timer,
//! no clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONNECTION};
use hyper::service::Service;
use hyper::{Request, Response, Version};

use super::io::Shared;
use crate::access_log::PeerAddr;

/// Wraps the application's service for one connection.
pub(super) struct DrainAware<S, I> {
    pub inner: S,
    pub shared: Arc<Shared<I>>,
    /// Inserted into every request (only when the access log is on).
    pub peer: Option<PeerAddr>,
}

impl<S, B, I> Service<Request<Incoming>> for DrainAware<S, I>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B, I>>;
    type Error = S::Error;
    type Future = DrainAwareFuture<S::Future, I>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(peer);
        }
        let activity = &self.shared.activity;
        let h1 = req.version() < Version::HTTP_2;
        if !h1 {
            activity.h2.store(true, Ordering::Relaxed);
        }
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        DrainAwareFuture {
            inner: self.inner.call(req),
            in_flight: Some(InFlight(self.shared.clone())),
            h1,
        }
    }
}

/// One request in flight; the count goes down however it ends (answered, failed, dropped).
pub(super) struct InFlight<I>(Arc<Shared<I>>);

impl<I> Drop for InFlight<I> {
    fn drop(&mut self) {
        self.0.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future, plus the bookkeeping of [`DrainAware`].
    pub(super) struct DrainAwareFuture<F, I> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight<I>>,
        h1: bool,
    }
}

impl<F, B, E, I> Future for DrainAwareFuture<F, I>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B, I>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx));
        let in_flight = this.in_flight.take();
        Poll::Ready(res.map(|mut res| {
            if let Some(InFlight(shared)) = in_flight.as_ref() {
                if *this.h1 && shared.activity.draining.load(Ordering::Relaxed) {
                    res.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
            }
            res.map(|inner| TrackedBody { inner, in_flight })
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it has ended or was dropped.
    pub(super) struct TrackedBody<B, I> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight<I>>,
    }
}

impl<B: Body, I> Body for TrackedBody<B, I> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            *this.in_flight = None;
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
