//! The benchmark's reference point: the plainest hyper server that answers like baton's default
//! handler, with none of baton's machinery (no hand-off, no notify, no drain, no connection
//! tracking, no logging).
//!
//! * same stack: the runtime the `baton` command picks on the same CPUs and the same
//!   `BATON_THREADS` (src/cli: tokio's current-thread scheduler for one thread, else the
//!   multi-thread one with that many workers; by default one per CPU), hyper 1 through
//!   hyper-util's `auto` builder (HTTP/1.1 and h2c on the same port);
//! * same bytes as baton's default handler: `200 OK`, `content-type: text/plain; charset=utf-8`,
//!   body `Hello, world!` (hyper adds `content-length` and `date`, as it does for baton);
//! * same socket setting baton applies to accepted connections: `TCP_NODELAY`;
//! * with `--tls CERT KEY`, the same TLS as baton's `https://` listeners (src/tls/mod.rs,
//!   `Pair::server_config`): rustls on the *ring* provider, TLS 1.2 and 1.3, ALPN `h2` then
//!   `http/1.1`, stateless tickets and a session cache of 1,024 entries; nothing else (no
//!   handshake deadline, no certificate checks, no reload of the pair).
//!
//! Usage: `cargo run --release -p baton-test-programs --bin bare_hyper [ADDR] [--tls CERT KEY]`
//! (default `127.0.0.1:8001`). `bench/run` and `bench/tls` compare baton against this.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use rustls::server::ServerSessionMemoryCache;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

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

/// The runtime `baton` runs on the same CPUs with the same `BATON_THREADS` (see `runtime` in
/// src/cli/mod.rs): a comparison pinned to one CPU, or of one thread each, compares like with
/// like.
fn main() {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let threads = match std::env::var("BATON_THREADS") {
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                eprintln!("bare_hyper: BATON_THREADS: {text:?} is not a whole number from 1");
                std::process::exit(78);
            }
        },
        Err(_) => cpus,
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
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

/// What the command line asks for: the address, and the certificate chain and key for TLS.
struct Args {
    addr: SocketAddr,
    tls: Option<(String, String)>,
}

fn usage(problem: &str) -> ! {
    eprintln!("bare_hyper: {problem} (usage: bare_hyper [HOST:PORT] [--tls CERT KEY])");
    std::process::exit(64);
}

fn args() -> Args {
    let mut addr = None;
    let mut tls = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--tls" {
            match (args.next(), args.next()) {
                (Some(cert), Some(key)) => tls = Some((cert, key)),
                _ => usage("--tls needs a certificate chain and a key file"),
            }
        } else if addr.is_none() {
            addr = Some(arg);
        } else {
            usage(&format!("unexpected argument {arg:?}"));
        }
    }
    let addr = addr.as_deref().unwrap_or(DEFAULT_ADDR);
    match addr.parse() {
        Ok(addr) => Args { addr, tls },
        Err(e) => usage(&format!("bad listen address {addr:?}: {e}")),
    }
}

/// The server configuration baton's `Pair::server_config` builds, from two PEM files.
fn tls_config(cert: &str, key: &str) -> Arc<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = match CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
    {
        Ok(chain) => chain,
        Err(e) => usage(&format!("cannot read the certificate chain {cert}: {e}")),
    };
    let key = match PrivateKeyDer::from_pem_file(key) {
        Ok(key) => key,
        Err(e) => usage(&format!("cannot read the key {key}: {e}")),
    };
    // The provider baton uses (deprecated in rustls 0.23.48 for want of post-quantum key
    // exchange; baton keeps it, so its peer does too).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(chain, key)
                .map_err(|e| e.to_string())
        });
    let mut config = match config {
        Ok(config) => config,
        Err(e) => usage(&format!("cannot use {cert} and its key: {e}")),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = match rustls::crypto::ring::Ticketer::new() {
        Ok(ticketer) => ticketer,
        Err(e) => usage(&format!("cannot make a session ticketer: {e}")),
    };
    config.session_storage = ServerSessionMemoryCache::new(1024);
    Arc::new(config)
}

async fn serve() {
    let Args { addr, tls } = args();
    let tls = tls.map(|(cert, key)| TlsAcceptor::from(tls_config(&cert, &key)));
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bare_hyper: cannot listen on {addr}: {e}");
            std::process::exit(69);
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("bare_hyper: serving on {scheme}://{addr}");

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
        let tls = tls.clone();
        tokio::spawn(async move {
            // Errors here are the client's (resets, garbage, failed handshakes); nothing to do
            // but drop it.
            let service = service_fn(hello);
            match tls {
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            }
        });
    }
}
