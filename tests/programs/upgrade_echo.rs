//! An HTTP upgrade served by baton: a request with `Upgrade: echo` is answered `101 Switching
//! Protocols`, and from then on every byte the client sends comes back. Any other request gets
//! `pid N`. The upgraded connection belongs to this program: a retiring baton keeps serving it
//! until the client closes it (or `shutdown_timeout` ends it), and exits after that.
//!
//! ```sh
//! BATON_LISTEN=127.0.0.1:3000 cargo run -p baton-test-programs --bin upgrade_echo
//! curl -s 127.0.0.1:3000/                        # pid N
//! printf 'GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nhello' \
//!   | nc 127.0.0.1 3000                          # 101, then "hello" echoed
//! ```

use std::convert::Infallible;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONNECTION, UPGRADE};
use hyper::{body::Incoming, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn answer(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let wants_echo = req
        .headers()
        .get(UPGRADE)
        .map(|v| v.as_bytes().eq_ignore_ascii_case(b"echo"))
        .unwrap_or(false);
    if !wants_echo {
        let body = format!("pid {}", std::process::id());
        return Ok(Response::new(Full::new(Bytes::from(body))));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                eprintln!("upgrade_echo: upgrade failed: {e}");
                return;
            }
        };
        let mut io = TokioIo::new(upgraded);
        let mut buf = [0u8; 4096];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = io.shutdown().await;
    });
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    res.headers_mut()
        .insert(UPGRADE, HeaderValue::from_static("echo"));
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    Ok(res)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_target(false).init();
    // Settings from the BATON_* variables, like the baton command.
    match baton_server::serve(tower::service_fn(answer)).await {
        Ok(_ended) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upgrade_echo: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
