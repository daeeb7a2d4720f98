//! Serve your own hyper service with baton's machinery: socket activation, the SIGHUP hand-off,
//! the drain and the systemd notifications all come with `baton::Server`.
//!
//! ```sh
//! cargo run --example custom_service -- --listen 127.0.0.1:8080
//! curl 127.0.0.1:8080/anything   # "you asked for /anything (served by pid N)"
//! kill -HUP <pid>                # a fresh process takes over without dropping a request
//! ```

use std::convert::Infallible;
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn, Request, Response};

use baton::config::{Config, Overrides};
use baton::Server;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    settings: Overrides,
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = format!(
        "you asked for {} (served by pid {})\n",
        req.uri().path(),
        std::process::id()
    );
    Ok(Response::new(Full::new(Bytes::from(body))))
}

fn main() -> ExitCode {
    baton::logging::init();
    let args = Args::parse();
    let config = match Config::load(&args.settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("custom_service: {e}");
            return ExitCode::from(baton::exit::CONFIG);
        }
    };
    let result = Server::new(config).and_then(|server| server.run(|_config| service_fn(answer)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custom_service: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
