//! The `baton` command (the `cli` feature, on by default): parse the command line, set up
//! logging and the runtime, serve the hello handler through the library, map errors to sysexits
//! codes. `src/main.rs` only calls `main`.

mod admin;
pub(crate) mod args;
mod config_file;
mod hello;
mod logging;
mod run;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::exit;
use crate::Server;
use args::{Cli, Command, Overrides, ReloadArgs};
use config_file::Config;
use hello::{Answer, Hello, Immediate};

#[cfg(test)]
pub(crate) use config_file::{Config as FileConfig, Overrides as FileOverrides};

/// Run the `baton` command with this process's arguments; returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let code = match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(o)) => serve(&o),
        Some(Command::Check(o)) => check(&o),
        Some(Command::Reload(r)) => reload_cmd(&r),
        Some(Command::Run(r)) => run::main(&r),
    };
    ExitCode::from(code)
}

fn serve(overrides: &Overrides) -> u8 {
    // Before this process opens a descriptor of its own (see check_passed_fds_open).
    let passed = crate::listen::check_passed_fds_open(
        &crate::supervisor::activation_env(),
        std::process::id(),
    );
    let config = Config::load(overrides);
    logging::init(overrides.log.log_format);
    if let Err(e) = passed {
        let e = crate::Error::from(e);
        return fail(&e.to_string(), e.exit_code());
    }
    // As PID 1 or when asked: this process stays as the generations' stable parent.
    if let Ok(c) = &config {
        if let Some(code) =
            crate::supervisor::enter(c.supervise, &c.settings.handoff_socket_or_default())
        {
            return code;
        }
    }
    let threads = config.as_ref().ok().and_then(|c| c.threads);
    let runtime = match runtime(threads) {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}"), exit::OSERR),
    };
    let result = runtime.block_on(async {
        let config = match config {
            Ok(c) => c,
            Err(e) => {
                let e = e.to_string();
                crate::server::report_early_failure_text(&e).await;
                return Err((e, exit::CONFIG));
            }
        };
        let served = match Server::bind(config.settings).await {
            Ok(server) => match &config.admin {
                Some(admin) => serve_with_admin(server, config.response_body, admin).await,
                None => {
                    server
                        .serve(Immediate(Handler::Hello(Hello::new(config.response_body))))
                        .await
                }
            },
            Err(e) => Err(e),
        };
        served.map_err(|e| (e.to_string(), e.exit_code()))
    });
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(_) => exit::OK,
        Err((message, code)) => fail(&message, code),
    }
}

/// Serve the hello handler, and baton's metrics on the admin listener: install the command's
/// recorder, start from the counters the predecessor handed over, hand them to the successor.
async fn serve_with_admin(
    server: Server,
    body: String,
    admin: &config_file::AdminListen,
) -> Result<crate::Ended, crate::Error> {
    let registry = admin::Registry::default();
    if metrics::set_global_recorder(registry.clone()).is_err() {
        tracing::warn!("a metrics recorder was installed already: /metrics shows nothing of it");
    }
    crate::observe::register_all();
    // Known before the first request is served (the library sets it again once serving).
    crate::observe::generation(server.generation());
    if let Some(bytes) = server.inherited_state() {
        match serde_json::from_slice::<admin::Carried>(bytes) {
            Ok(carried) => registry.inherit(carried),
            Err(e) => {
                tracing::warn!(error = %e, "the predecessor's metrics are unreadable: counting from 0")
            }
        }
    }
    let carry = registry.clone();
    server
        .serve(Immediate(Handler::Hello(Hello::new(body))))
        .listener(
            admin.name(),
            Immediate(Handler::Admin(admin::Admin::new(registry))),
        )
        .on_handoff(move || serde_json::to_vec(&carry.carried()).unwrap_or_default())
        .await
}

/// The command's handlers as one type: every listener serves an `Immediate<Handler>`, so that
/// hyper's connection code is compiled once for the command's service instead of once per
/// handler (see `src/http/stream.rs` for why that matters per request).
#[derive(Clone)]
enum Handler {
    /// The hello body, on the main listeners.
    Hello(Hello),
    /// The metrics, on the admin listener.
    Admin(admin::Admin),
}

impl Answer for Handler {
    fn answer(
        &mut self,
        req: &hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
        match self {
            Handler::Hello(h) => h.answer(req),
            Handler::Admin(a) => a.answer(req),
        }
    }
}

/// The command's runtime: `threads` worker threads (`--threads`; by default one per CPU this
/// process may use: its affinity and its cgroup's CPU quota), and for one thread the
/// current-thread scheduler: with one worker there is nothing to steal and no other worker to
/// wake, and the multi-thread scheduler's cross-thread queues and bookkeeping cost about 510
/// instructions per keep-alive request (callgrind: 8,040 against 7,529 on one CPU), and one
/// thread start per generation. A process of one thread also pays less for every system call:
/// glibc's send, recv and epoll_wait skip their cancellation bookkeeping while a process has a
/// single thread (about 110 instructions per keep-alive request, callgrind 2026-12-07).
fn runtime(threads: Option<std::num::NonZeroUsize>) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, std::num::NonZero::get);
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build()
}

/// Report a fatal error once: through the log (journald or stderr).
fn fail(message: &str, code: u8) -> u8 {
    tracing::error!("{message}");
    code
}

fn check(overrides: &Overrides) -> u8 {
    match Config::load(overrides) {
        Ok(config) => {
            // What `serve` refuses before binding, `check` refuses too.
            if let Some(path) = &config.settings.pid_file {
                let runtime_dir =
                    crate::runtime_dir::configured(&config.settings.handoff_socket_or_default());
                if let Err(e) = crate::pidfile::check_writable(path, &runtime_dir, false) {
                    let e = crate::Error::pid_file(path, e);
                    eprintln!("baton: {e}");
                    return e.exit_code();
                }
            }
            let tls_findings = match &config.settings.tls {
                Some(files) => {
                    let creds = crate::tls::CredentialsDir::from_process();
                    match crate::tls::check(files, &creds, std::time::SystemTime::now()) {
                        Ok(findings) => findings,
                        Err(e) => {
                            eprintln!("baton: {e}");
                            return e.kind().exit_code();
                        }
                    }
                }
                None => Vec::new(),
            };
            let where_ = config
                .file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "options and environment".into());
            let listen: Vec<&str> = config.settings.listen.iter().map(|l| l.as_str()).collect();
            let resolved = match crate::listen::resolve_blocking(&config.settings.listen) {
                Ok(resolved) => resolved,
                Err(e) => {
                    eprintln!("baton: {e}");
                    return exit::CONFIG;
                }
            };
            let resolved: Vec<&str> = resolved.iter().map(|l| l.as_str()).collect();
            let resolved = if resolved == listen {
                String::new()
            } else {
                format!(" (resolved: {})", resolved.join(", "))
            };
            let admin = config
                .admin
                .as_ref()
                .map(|a| format!("; metrics on {a}"))
                .unwrap_or_default();
            // Said only when set: the default (a worker per CPU) depends on where it runs.
            let threads = config
                .threads
                .map(|n| format!("; threads {n}"))
                .unwrap_or_default();
            println!(
                "baton: configuration ok ({where_}): listen {}{resolved}{admin}{threads}",
                listen.join(", ")
            );
            // one line each: the pair on stdout, warnings (exit code unchanged) on stderr
            for finding in tls_findings {
                if finding.is_warning() {
                    eprintln!("baton: warning: {finding}");
                } else {
                    println!("baton: {finding}");
                }
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("baton: {e}");
            exit::CONFIG
        }
    }
}

fn reload_cmd(args: &ReloadArgs) -> u8 {
    let config = match Config::load(&args.settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("baton reload: {e}");
            return exit::CONFIG;
        }
    };
    let settings = &config.settings;
    let timeout = match args.timeout.as_deref().map(humantime::parse_duration) {
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            eprintln!("baton reload: --timeout: {e}");
            return exit::USAGE;
        }
        None => settings.child_timeout + Duration::from_secs(5),
    };
    let target = crate::reload::Target {
        handoff_socket: settings.handoff_socket_or_default(),
        pid: args.pid,
        pid_file: settings.pid_file.clone(),
    };
    match crate::reload::request(&target, timeout) {
        Ok(r) => {
            println!("reloaded: {} -> {}", r.retired, r.successor);
            exit::OK
        }
        Err(e) => {
            eprintln!("baton reload: {e}");
            e.exit_code()
        }
    }
}
