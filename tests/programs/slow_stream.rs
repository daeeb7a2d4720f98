//! A long streamed response served by baton: `GET /stream?lines=N&every_ms=M` answers N lines,
//! one every M milliseconds (`line i of N from pid P`), then `end`; `GET /panic` panics in
//! its handler. Any other request gets `pid P`. A request counts as in flight until its body has ended, so neither the idle bound
//! nor a reload cuts the stream.
//!
//! ```sh
//! BATON_LISTEN=127.0.0.1:3000 cargo run -p baton-test-programs --bin slow_stream
//! curl -N '127.0.0.1:3000/stream?lines=40&every_ms=1000'   # 40 s of lines
//! ```

use std::convert::Infallible;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};

/// `lines` chunks, one per tick, then `end\n`.
struct Lines {
    tick: tokio::time::Interval,
    next: u64,
    lines: u64,
    done: bool,
}

impl Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.next == self.lines {
            self.done = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"end\n")))));
        }
        std::task::ready!(self.tick.poll_tick(cx));
        self.next += 1;
        let line = format!(
            "line {} of {} from pid {}\n",
            self.next,
            self.lines,
            std::process::id()
        );
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(line)))))
    }
}

fn query(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

type AnyBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(req: Request<Incoming>) -> Result<Response<AnyBody>, Infallible> {
    if req.uri().path() == "/panic" {
        panic!("GET /panic: a handler's bug");
    }
    if req.uri().path() != "/stream" {
        let body = format!("pid {}", std::process::id());
        return Ok(Response::new(Full::new(Bytes::from(body)).boxed()));
    }
    let lines = query(&req, "lines").unwrap_or(10);
    let every = Duration::from_millis(query(&req, "every_ms").unwrap_or(1000));
    let mut tick = tokio::time::interval(every);
    tick.reset(); // the first line after one interval, not at once
    let body = Lines {
        tick,
        next: 0,
        lines,
        done: false,
    };
    Ok(Response::new(body.boxed()))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_target(false).init();
    // Settings from the BATON_* variables, like the baton command.
    match baton_server::serve(tower::service_fn(answer)).await {
        Ok(_ended) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slow_stream: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
