//! The benchmark's reference point: the plainest hyper server that answers like baton's default
//! handler, with none of baton's machinery (no hand-off, no notify, no drain, no connection
//! tracking, no logging).
//!
//! * same stack: the runtime the `baton` command picks on the same CPUs (src/cli: tokio's
//!   current-thread scheduler when the process may use one CPU, else the multi-thread one with
//!   a worker per CPU), hyper 1 through hyper-util's `auto` builder (HTTP/1.1 and h2c on the
//!   same port);
//! * same bytes as baton's default handler: `200 OK`, `content-type: text/plain; charset=utf-8`,
//!   body `Hello, world!` (hyper adds `content-length` and `date`, as it does for baton);
//! * same socket setting baton applies to accepted connections: `TCP_NODELAY`.
//!
//! Usage: `cargo run --release -p baton-test-programs --bin bare_hyper [ADDR]` (default `127.0.0.1:8001`).
//! `bench/run` compares baton's throughput against this.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;

const DEFAULT_ADDR: &str = "127.0.0.1:8001";
const BODY: &[u8] = b"Hello, world!";

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from_static(BODY)));
    res.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(res)
}

/// The runtime `baton` runs on the same CPUs (see `runtime` in src/cli/mod.rs): a comparison
/// pinned to one CPU compares like with like.
fn main() {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cpus);
        b
    };
    match builder.enable_all().build() {
        Ok(rt) => rt.block_on(serve()),
        Err(e) => {
            eprintln!("bare_hyper: cannot start the runtime: {e}");
            std::process::exit(71);
        }
    }
}

async fn serve() {
    let arg = std::env::args().nth(1);
    let addr: SocketAddr = match arg.as_deref().unwrap_or(DEFAULT_ADDR).parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bare_hyper: bad listen address: {e} (usage: bare_hyper [HOST:PORT])");
            std::process::exit(64);
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bare_hyper: cannot listen on {addr}: {e}");
            std::process::exit(69);
        }
    };
    eprintln!("bare_hyper: serving on {addr}");

    let builder = Builder::new(TokioExecutor::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                stream
            }
            Err(e) => {
                // EMFILE and friends: back off a little instead of spinning.
                eprintln!("bare_hyper: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let builder = builder.clone();
        tokio::spawn(async move {
            // Errors here are the client's (resets, garbage); nothing to do but drop it.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service_fn(hello))
                .await;
        });
    }
}
