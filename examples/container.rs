//! A container's entry point (`ENTRYPOINT ["/usr/local/bin/my-app"]`): an axum app that, as PID
//! 1, keeps its first process as the stable parent of every generation
//! (`baton_server::supervise`), so that `docker kill --signal HUP` (or `podman kill`) reloads
//! without ending the container. `supervise` runs first, before the tokio runtime starts.
//!
//! ```sh
//! BATON_LISTEN=0.0.0.0:3000 cargo run --example container --features axum,metrics
//! ```

use std::process::ExitCode;

use axum::{routing::get, Router};

fn main() -> ExitCode {
    let settings = match baton_server::Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("container example: {e}");
            return ExitCode::from(78);
        }
    };
    // PID 1 (or BATON_SUPERVISE=1): this process becomes the supervisor and returns the
    // service's exit code when it is over; a generation gets `None` and serves.
    if let Some(code) = baton_server::supervise(&settings, baton_server::Supervise::WhenPid1) {
        return ExitCode::from(code);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("container example: tokio runtime: {e}");
            return ExitCode::from(71);
        }
    };
    runtime.block_on(async {
        let server = match baton_server::Server::bind(settings).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("container example: {e}");
                return ExitCode::from(e.exit_code());
            }
        };
        let generation = server.generation();
        let app = Router::new().route(
            "/",
            get(move || async move {
                format!(
                    "Hello from pid {} (generation {generation})\n",
                    std::process::id()
                )
            }),
        );
        match server.serve(app).await {
            Ok(_ended) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("container example: {e}");
                ExitCode::from(e.exit_code())
            }
        }
    })
}
