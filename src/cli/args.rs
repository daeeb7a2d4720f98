//! The `baton` command line, as clap definitions. Self-contained (clap and std only): `build.rs`
//! includes this file to generate the man pages and shell completions from the same definition
//! the binary parses with.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// What `--version` prints: the package version when the packaging build set `BATON_VERSION`.
pub const VERSION: &str = match option_env!("BATON_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// An HTTP server that restarts without dropping a connection, made to live under systemd.
///
/// SIGHUP (`systemctl reload`) starts the binary on disk again, hands it the listening sockets,
/// and retires the old process once the new one serves. SIGTERM drains and exits.
#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version = VERSION,
    about = "HTTP server that restarts without dropping a connection",
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The options of `serve`, when no subcommand is given.
    #[command(flatten)]
    pub serve: Overrides,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP until stopped; SIGHUP hands over to a fresh process (the default)
    Serve(Overrides),
    /// Hand the running server over to a fresh process and wait for the outcome
    Reload(ReloadArgs),
    /// Validate the configuration and listen addresses, like `nginx -t`
    Check(Overrides),
    /// Run COMMAND (a server in any language) on baton's listeners; SIGHUP starts a new one
    /// and retires the old one once the new one is ready
    Run(RunArgs),
}

/// The options of `baton run`.
///
/// COMMAND gets the listeners as fds 3, 4, … with `LISTEN_FDS`, `LISTEN_PID` (its own pid) and
/// `LISTEN_FDNAMES`, as systemd's socket activation gives them, and a `NOTIFY_SOCKET` of
/// baton's own. baton stays the main process for the life of the service.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Address to listen on: host:port, `[v6]:port`, :port or unix:/path (TLS is the
    /// application's business). Repeatable; the variable takes a comma-separated list
    /// [default: what systemd passed, else 127.0.0.1:8000]
    #[arg(
        short,
        long = "listen",
        env = "BATON_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub listen: Vec<String>,
    /// When a new COMMAND counts as ready: `notify` (it sends READY=1 to $NOTIFY_SOCKET, as
    /// gunicorn and puma do), or `delay:DURATION` for one that never notifies (ready when it
    /// still runs after DURATION: a guess, and said to be one)
    #[arg(
        long,
        env = "BATON_RUN_READY",
        value_name = "HOW",
        default_value = "notify"
    )]
    pub ready: String,
    /// How long a new COMMAND may take to become ready before it is stopped and the reload
    /// fails
    #[arg(
        long,
        env = "BATON_RUN_READY_TIMEOUT",
        value_name = "DURATION",
        default_value = "60s"
    )]
    pub ready_timeout: String,
    /// The signal that asks a COMMAND to finish its requests and exit (TERM, QUIT, INT, USR2,
    /// … or a number)
    #[arg(
        long,
        env = "BATON_RUN_STOP_SIGNAL",
        value_name = "SIGNAL",
        default_value = "TERM"
    )]
    pub stop_signal: String,
    /// How long a COMMAND may take to exit after its stop signal before SIGKILL
    #[arg(
        long,
        env = "BATON_RUN_GRACE",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub grace: String,
    /// Where a fresh start looks for a running baton to take the listeners from (the documented
    /// import); its directory holds the control socket for `baton reload` [default: as for serve]
    #[arg(long, env = "BATON_HANDOFF_SOCKET", value_name = "PATH")]
    pub handoff_socket: Option<PathBuf>,
    /// The log's format (shared with `serve`).
    #[command(flatten)]
    pub log: LogArgs,
    /// The server to run, and its arguments (after `--`)
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

/// The options of `baton reload`.
#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    /// The process to reload [default: $MAINPID, else the pid file]
    #[arg(short, long, value_name = "PID")]
    pub pid: Option<u32>,
    /// How long to wait for the outcome [default: the child timeout plus 5s]
    #[arg(short, long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// The settings of the server to reload (they locate its hand-off socket and pid file).
    #[command(flatten)]
    pub settings: Overrides,
}

/// The options about baton's own log, the same for `serve` (and `check`, `reload`) and `run`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Format of the log on standard error
    #[arg(
        long,
        env = "BATON_LOG_FORMAT",
        value_name = "FORMAT",
        value_enum,
        default_value_t = LogFormat::Auto
    )]
    pub log_format: LogFormat,
}

/// The format of the log lines on standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// journald when standard error is the journal, else text
    #[default]
    Auto,
    /// readable lines
    Text,
    /// one JSON object per line
    Json,
}

/// Settings as given on the command line or in `BATON_*` variables, not yet validated.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Address to listen on: host:port (an IP address or a host name, resolved at start),
    /// `[v6]:port`, :port (all interfaces) or unix:/path; https://host:port serves TLS (http:// or
    /// no scheme: plain). Repeatable; the variable takes a comma-separated list [default:
    /// 127.0.0.1:8000, or what systemd passed]
    #[arg(
        short,
        long = "listen",
        env = "BATON_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub listen: Vec<String>,
    /// Serve baton's metrics (`GET /metrics`, Prometheus text format) on this listener, and
    /// nothing else: an address (host:port with an IP address, `[v6]:port`, :port or unix:/path),
    /// bound by baton even under socket activation, or the name of a socket systemd passes
    /// (`FileDescriptorName=`, e.g. admin). Handed over on every reload like the others
    /// [default: none]
    #[arg(long, env = "BATON_ADMIN_LISTEN", value_name = "ADDR|NAME")]
    pub admin_listen: Option<String>,
    /// JSON configuration file, re-read by every successor
    #[arg(short, long, env = "BATON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Unix socket a successor dials to take over the listeners [default:
    /// $RUNTIME_DIRECTORY/handoff.sock, else $XDG_RUNTIME_DIR/baton/handoff.sock, else
    /// $TMPDIR/baton-UID/handoff.sock]
    #[arg(long, env = "BATON_HANDOFF_SOCKET", value_name = "PATH")]
    pub handoff_socket: Option<PathBuf>,
    /// How long a draining process may finish in-flight requests [default: 30s]
    #[arg(long, env = "BATON_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,
    /// How long a successor may take to serve before the reload is abandoned [default: 10s]
    #[arg(long, env = "BATON_CHILD_TIMEOUT", value_name = "DURATION")]
    pub child_timeout: Option<String>,
    /// How long a connection may wait for a request while nothing is in flight before it is
    /// closed; also the HTTP/2 keep-alive PING interval [default: 30s]
    #[arg(long, env = "BATON_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Threads that serve: tokio's multi-thread runtime with N worker threads, or with 1 its
    /// current-thread runtime on the process's main thread (as nginx's `worker_processes`, from 1
    /// to 1024; a successor reads it again) [default: the CPUs this process may use: its
    /// affinity and its cgroup's CPU quota]
    #[arg(long, env = "BATON_THREADS", value_name = "N")]
    pub threads: Option<String>,
    /// File the serving main process writes its pid to [default: none]
    #[arg(long, env = "BATON_PID_FILE", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Keep the first process as a stable parent of every generation (always on as PID 1;
    /// ignored under systemd). `--supervise` alone means true [default: false]
    #[arg(
        long,
        env = "BATON_SUPERVISE",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub supervise: Option<bool>,
    /// Log one line (or journald entry) per request: method, path, status, bytes, duration,
    /// peer, generation. `--access-log` alone means true [default: false]
    #[arg(
        long,
        env = "BATON_ACCESS_LOG",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub access_log: Option<bool>,
    /// Send HTTP/2 connections a keep-alive PING after the idle timeout without a frame from
    /// the peer, and close those whose answer does not come within 20 s (a peer that stopped
    /// answering while a stream stays open). false saves their cost, about 4-7 % of the
    /// server CPU per HTTP/2 request [default: true]
    #[arg(
        long,
        env = "BATON_HTTP2_KEEPALIVE",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub http2_keepalive: Option<bool>,
    /// PEM certificate chain (leaf first) for https listeners and sockets named https.
    /// credential:NAME, or a bare NAME while $CREDENTIALS_DIRECTORY is set, reads
    /// $CREDENTIALS_DIRECTORY/NAME [default: none]
    #[arg(long, env = "BATON_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, RSA or EC) matching the certificate; found like --tls-cert
    /// [default: none]
    #[arg(long, env = "BATON_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The log's format (shared with `run`).
    #[command(flatten)]
    pub log: LogArgs,
}
