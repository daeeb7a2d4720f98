//! A plain tower service served by baton, configured in code rather than by `BATON_*` variables.
//!
//! ```sh
//! PORT=3000 cargo run --example tower       # http://127.0.0.1:3000/anything
//! kill -HUP <pid>                           # a fresh process takes over, nothing is dropped
//! ```

use std::convert::Infallible;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = format!(
        "you asked for {} (served by pid {})\n",
        req.uri().path(),
        std::process::id()
    );
    Ok(Response::new(Full::new(Bytes::from(body))))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_target(false).init();
    // The port from `PORT` (default 3000), as a platform that assigns ports would set it.
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
    let listen = match format!("127.0.0.1:{port}").parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("tower example: {e}");
            return ExitCode::from(78);
        }
    };
    let settings = baton_server::Settings::default()
        .listen([listen])
        .shutdown_timeout(Duration::from_secs(10));
    let served = match baton_server::Server::bind(settings).await {
        Ok(server) => server.serve(tower::service_fn(answer)).await,
        Err(e) => Err(e),
    };
    match served {
        Ok(_ended) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tower example: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
