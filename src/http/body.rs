//! The service wrapper: counts requests, keeps each one in flight until its response body has
//! ended (or was dropped), adds `Connection: close` to HTTP/1 responses while draining, and
//! carries each request's access-log record when the log is on.
//! Per request: a few relaxed atomic operations and a reference count, no allocation, no timer,
//! no clock (the access log, when on, adds its record: one allocation and a clock read).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Buf;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderValue, CONNECTION};
use hyper::service::Service;
use hyper::{Request, Response, Version};

use super::io::Shared;
use super::BoxError;
use crate::access_log::{LogAs, Record};

/// Wraps the application's (tower) service for one connection, as the hyper service hyper
/// calls: per request it clones the application's service, as hyper-util's tower adapter does,
/// but calls it at once when it is ready (nearly always: a router, a handler), so the request
/// is not moved through an adapter's state machine first.
pub(super) struct DrainAware<S, I> {
    pub inner: S,
    pub shared: Arc<Shared<I>>,
    /// The access log, when it is on: each request gets a [`Record`], which its response body
    /// keeps until it is dropped. One wrapper type whether the log is on or off: hyper's
    /// connection code is compiled once (see `stream`).
    pub log: Option<LogAs>,
    /// Inserted into every request as axum's `ConnectInfo`, so that its extractor works on a
    /// plain `Router`.
    #[cfg(feature = "axum")]
    pub client: crate::connection::ClientAddr,
}

impl<S, R, B, I> Service<Request<R>> for DrainAware<S, I>
where
    S: tower_service::Service<Request<R>, Response = Response<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<TrackedBody<B, I>>;
    type Error = BoxError;
    type Future = DrainAwareFuture<S, Request<R>, I>;

    fn call(&self, req: Request<R>) -> Self::Future {
        let record = self.log.map(|who| Record::new(&req, who));
        #[cfg(feature = "axum")]
        let req = {
            let mut req = req;
            insert_connect_info(req.extensions_mut(), &self.client);
            req
        };
        let activity = &self.shared.activity;
        let h1 = req.version() < Version::HTTP_2;
        activity.requests.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut service = self.inner.clone();
        // tower's contract: poll_ready before call. A service that is not ready yet registered
        // this no-op waker; the future polls it again with the task's.
        let state = match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => State::Called {
                future: service.call(req),
            },
            Poll::Ready(Err(e)) => State::Failed {
                error: Some(e.into()),
            },
            Poll::Pending => State::NotReady {
                service,
                request: Some(req),
            },
        };
        DrainAwareFuture {
            state,
            in_flight: Some(InFlight(self.shared.clone())),
            record,
            h1,
        }
    }
}

/// axum's `ConnectInfo` for this request's client: `ConnectInfo<SocketAddr>` on TCP,
/// `ConnectInfo<tokio::net::unix::SocketAddr>` on a Unix socket (what `axum::serve` gives on
/// its listeners). (`ConnectInfo<ClientAddr>` comes from
/// `into_make_service_with_connect_info::<ClientAddr>()`.)
#[cfg(feature = "axum")]
fn insert_connect_info(ext: &mut hyper::http::Extensions, client: &crate::connection::ClientAddr) {
    use crate::connection::ClientAddr;
    use axum::extract::ConnectInfo;
    match client {
        ClientAddr::Tcp(addr) => {
            ext.insert(ConnectInfo(*addr));
        }
        ClientAddr::Unix(addr) => {
            ext.insert(ConnectInfo(addr.clone()));
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
    /// The application's service for one request: its future once called.
    #[project = StateProj]
    enum State<S, R, F> {
        Called { #[pin] future: F },
        NotReady { service: S, request: Option<R> },
        Failed { error: Option<BoxError> },
    }
}

pin_project_lite::pin_project! {
    /// The application's future, plus the bookkeeping of [`DrainAware`].
    pub(super) struct DrainAwareFuture<S, R, I>
    where
        S: tower_service::Service<R>,
    {
        #[pin]
        state: State<S, R, S::Future>,
        in_flight: Option<InFlight<I>>,
        record: Option<Box<Record>>,
        h1: bool,
    }
}

impl<S, R, B, I> Future for DrainAwareFuture<S, R, I>
where
    S: tower_service::Service<R, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<TrackedBody<B, I>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let res = loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    break std::task::ready!(future.poll(cx)).map_err(Into::into)
                }
                StateProj::NotReady { service, request } => {
                    if let Err(e) = std::task::ready!(service.poll_ready(cx)) {
                        break Err(e.into());
                    }
                    let Some(request) = request.take() else {
                        return Poll::Pending; // (never: the state changes right below)
                    };
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
                StateProj::Failed { error } => match error.take() {
                    Some(e) => break Err(e),
                    None => return Poll::Pending, // polled again after it failed
                },
            }
        };
        let in_flight = this.in_flight.take();
        // (On an error the record is dropped here: its line says status 0.)
        let mut record = this.record.take();
        Poll::Ready(res.map(|mut res| {
            if let Some(record) = record.as_mut() {
                record.status = res.status().as_u16();
            }
            if let Some(InFlight(shared)) = in_flight.as_ref() {
                if *this.h1 && shared.activity.draining.load(Ordering::Relaxed) {
                    res.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
            }
            res.map(|inner| TrackedBody {
                inner,
                record,
                in_flight,
            })
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it has ended or was dropped, and
    /// its access-log record (counting the bytes sent) until it is dropped.
    pub(super) struct TrackedBody<B, I> {
        #[pin]
        inner: B,
        // (Before `in_flight`: the line is written before the request stops counting.)
        record: Option<Box<Record>>,
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
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(record), Some(data)) = (this.record.as_mut(), frame.data_ref()) {
                    record.bytes += data.remaining() as u64;
                }
            }
            _ => *this.in_flight = None,
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
    use std::sync::atomic::{AtomicBool, AtomicUsize};
    use std::sync::{Arc, Mutex};
    use std::task::Wake;

    use super::*;

    /// A service that is not ready until its gate opens (then it wakes whoever polled it).
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<AtomicBool>,
        waiting: Arc<Mutex<Option<Waker>>>,
        calls: Arc<AtomicUsize>,
    }

    impl Gate {
        fn open(&self) {
            self.open.store(true, Ordering::SeqCst);
            if let Some(w) = self.waiting.lock().unwrap().take() {
                w.wake();
            }
        }
    }

    impl tower_service::Service<Request<()>> for Gate {
        type Response = Response<String>;
        type Error = std::io::Error;
        type Future = std::future::Ready<Result<Response<String>, std::io::Error>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(Ok(()));
            }
            *self.waiting.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }

        fn call(&mut self, req: Request<()>) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Response::new(req.uri().path().to_owned())))
        }
    }

    #[derive(Default)]
    struct Woken(AtomicUsize);

    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn wrap(gate: &Gate) -> (DrainAware<Gate, ()>, Arc<Shared<()>>) {
        let shared = Shared::new();
        let service = DrainAware {
            inner: gate.clone(),
            shared: shared.clone(),
            log: None,
            #[cfg(feature = "axum")]
            client: crate::connection::ClientAddr::Tcp(([127, 0, 0, 1], 1).into()),
        };
        (service, shared)
    }

    #[test]
    fn a_ready_service_is_called_at_once() {
        let gate = Gate::default();
        gate.open();
        let (service, shared) = wrap(&gate);
        let fut = service.call(Request::builder().uri("/a").body(()).unwrap());
        assert_eq!(gate.calls.load(Ordering::SeqCst), 1, "called by call()");
        assert_eq!(shared.activity.in_flight.load(Ordering::SeqCst), 1);
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Ok(res)) = fut.as_mut().poll(&mut cx) else {
            panic!("a ready service answers on the first poll");
        };
        assert_eq!(res.into_body().inner, "/a");
        assert_eq!(shared.activity.requests.load(Ordering::SeqCst), 1);
        assert_eq!(shared.activity.in_flight.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_service_not_ready_is_polled_with_the_task_waker_and_called_once_ready() {
        let gate = Gate::default();
        let (service, shared) = wrap(&gate);
        let fut = service.call(Request::builder().uri("/b").body(()).unwrap());
        assert_eq!(
            gate.calls.load(Ordering::SeqCst),
            0,
            "not called before it is ready"
        );
        let mut fut = std::pin::pin!(fut);
        let woken = Arc::new(Woken::default());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
        gate.open();
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            1,
            "the task's waker, not the no-op one, was registered"
        );
        let Poll::Ready(Ok(res)) = fut.as_mut().poll(&mut cx) else {
            panic!("answered once ready");
        };
        assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
        assert_eq!(res.into_body().inner, "/b");
        assert_eq!(shared.activity.in_flight.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_request_dropped_while_the_service_is_not_ready_leaves_nothing_in_flight() {
        let gate = Gate::default();
        let (service, shared) = wrap(&gate);
        let fut = service.call(Request::builder().uri("/c").body(()).unwrap());
        assert_eq!(shared.activity.in_flight.load(Ordering::SeqCst), 1);
        drop(fut);
        assert_eq!(shared.activity.in_flight.load(Ordering::SeqCst), 0);
        assert_eq!(gate.calls.load(Ordering::SeqCst), 0);
    }

    /// A response body of the given frames, then its end.
    struct Frames(std::collections::VecDeque<Result<Frame<bytes::Bytes>, std::io::Error>>);

    impl Body for Frames {
        type Data = bytes::Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.get_mut().0.pop_front())
        }
    }

    fn in_flight(shared: &Shared<()>) -> usize {
        shared.activity.in_flight.load(Ordering::SeqCst)
    }

    /// `inner` as the body of one request in flight.
    fn tracked<B>(inner: B, shared: &Arc<Shared<()>>) -> TrackedBody<B, ()> {
        shared.activity.in_flight.fetch_add(1, Ordering::SeqCst);
        TrackedBody {
            inner,
            record: None,
            in_flight: Some(InFlight(shared.clone())),
        }
    }

    fn data(bytes: &'static [u8]) -> Result<Frame<bytes::Bytes>, std::io::Error> {
        Ok(Frame::data(bytes::Bytes::from_static(bytes)))
    }

    #[test]
    fn a_streaming_body_stays_in_flight_until_its_end_not_its_first_frame() {
        // The drain waits for nothing in flight: a body released at its first frame would be
        // cut short by the reload it streams across.
        let shared = Shared::new();
        let frames = Frames(
            [
                data(b"one"),
                data(b"two"),
                Ok(Frame::trailers(hyper::HeaderMap::new())),
            ]
            .into(),
        );
        let mut body = std::pin::pin!(tracked(frames, &shared));
        let mut cx = Context::from_waker(Waker::noop());
        for frame in 0..3 {
            assert!(matches!(
                body.as_mut().poll_frame(&mut cx),
                Poll::Ready(Some(Ok(_)))
            ));
            assert_eq!(
                in_flight(&shared),
                1,
                "after frame {frame}: still streaming"
            );
        }
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx),
            Poll::Ready(None)
        ));
        assert_eq!(in_flight(&shared), 0, "ended");
    }

    #[test]
    fn a_body_that_fails_leaves_nothing_in_flight() {
        let shared = Shared::new();
        let frames = Frames([data(b"one"), Err(std::io::Error::other("gone"))].into());
        let mut body = std::pin::pin!(tracked(frames, &shared));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert_eq!(in_flight(&shared), 1);
        assert!(matches!(
            body.as_mut().poll_frame(&mut cx),
            Poll::Ready(Some(Err(_)))
        ));
        assert_eq!(in_flight(&shared), 0, "a failed body is over");
    }

    #[test]
    fn the_wrapper_tells_hyper_the_inner_bodys_end_and_size() {
        // hyper sends an empty body's end with the head (HTTP/2: END_STREAM on HEADERS) and a
        // known size as Content-Length.
        use http_body_util::Full;
        let shared = Shared::new();
        let empty = tracked(Full::new(bytes::Bytes::new()), &shared);
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        let hello = tracked(Full::new(bytes::Bytes::from_static(b"hello")), &shared);
        assert!(!hello.is_end_stream());
        assert_eq!(hello.size_hint().exact(), Some(5));
    }

    /// The response of a ready service to a request of `version`.
    fn answer(
        service: &DrainAware<Gate, ()>,
        version: Version,
    ) -> Response<TrackedBody<String, ()>> {
        let req = Request::builder()
            .version(version)
            .uri("/")
            .body(())
            .unwrap();
        let mut fut = std::pin::pin!(service.call(req));
        let Poll::Ready(Ok(res)) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        else {
            panic!("a ready service answers on the first poll");
        };
        res
    }

    #[test]
    fn while_draining_http1_responses_say_connection_close_and_http2_ones_do_not() {
        let gate = Gate::default();
        gate.open();
        let (service, shared) = wrap(&gate);
        let versions = [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2];
        for version in versions {
            let res = answer(&service, version);
            assert_eq!(
                res.headers().get(CONNECTION),
                None,
                "{version:?}, not draining"
            );
        }
        shared.activity.draining.store(true, Ordering::SeqCst);
        for version in [Version::HTTP_10, Version::HTTP_11] {
            let res = answer(&service, version);
            assert_eq!(
                res.headers().get(CONNECTION).unwrap(),
                "close",
                "{version:?}, draining"
            );
        }
        // HTTP/2 ends with GOAWAY; a connection header is malformed there (RFC 9113, 8.2.2).
        let res = answer(&service, Version::HTTP_2);
        assert_eq!(res.headers().get(CONNECTION), None, "HTTP/2, draining");
    }

    #[test]
    fn with_the_access_log_on_the_body_keeps_a_record_of_the_status_and_the_bytes_sent() {
        let gate = Gate::default();
        gate.open();
        let (mut service, _shared) = wrap(&gate);
        let res = answer(&service, Version::HTTP_11);
        assert!(res.into_body().record.is_none(), "log off: no record");
        service.log = Some(LogAs {
            generation: 7,
            peer: None,
        });
        let req = Request::builder().uri("/hello").body(()).unwrap();
        let mut fut = std::pin::pin!(service.call(req));
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Ok(res)) = fut.as_mut().poll(&mut cx) else {
            panic!("a ready service answers on the first poll");
        };
        let mut body = std::pin::pin!(res.into_body());
        let record = |b: &TrackedBody<String, ()>| {
            let r = b.record.as_ref().expect("log on: a record");
            (r.status, r.bytes)
        };
        assert_eq!(record(&body), (200, 0));
        while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(&mut cx) {
            frame.unwrap();
        }
        assert_eq!(record(&body), (200, 6), "\"/hello\" sent");
    }

    #[cfg(feature = "axum")]
    #[test]
    fn the_application_sees_its_tcp_client_as_axums_connect_info() {
        use axum::extract::ConnectInfo;
        use std::net::SocketAddr;

        /// Answers with the `ConnectInfo<SocketAddr>` its request carries.
        #[derive(Clone)]
        struct Who;

        impl tower_service::Service<Request<()>> for Who {
            type Response = Response<String>;
            type Error = std::convert::Infallible;
            type Future = std::future::Ready<Result<Response<String>, Self::Error>>;

            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, req: Request<()>) -> Self::Future {
                let who = req.extensions().get::<ConnectInfo<SocketAddr>>();
                std::future::ready(Ok(Response::new(format!("{:?}", who.map(|c| c.0)))))
            }
        }

        let service = DrainAware {
            inner: Who,
            shared: Shared::<()>::new(),
            log: None,
            client: crate::connection::ClientAddr::Tcp(([192, 0, 2, 7], 4711).into()),
        };
        let mut fut = std::pin::pin!(service.call(Request::new(())));
        let Poll::Ready(Ok(res)) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        else {
            panic!("a ready service answers on the first poll");
        };
        assert_eq!(res.into_body().inner, "Some(192.0.2.7:4711)");
    }
}
