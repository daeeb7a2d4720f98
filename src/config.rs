//! Configuration: command-line options, `BATON_*` environment variables and a JSON file, merged
//! into one validated [`Config`]. Precedence: option > environment > file > default.
//!
//! The same code backs `baton check`, and a successor re-reads the file, so editing the file and
//! reloading applies it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::listen::spec::ListenSpec;

/// The listen address used when none is configured and systemd passed none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
/// The body of the default handler, as in the article baton grew from.
pub const DEFAULT_BODY: &str = "Hello, world!";
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CHILD_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Settings as given on the command line or in `BATON_*` variables, not yet validated.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Address to listen on: host:port, [v6]:port, :port (all interfaces) or unix:/path.
    /// Repeatable; the variable takes a comma-separated list.
    #[arg(
        long = "listen",
        env = "BATON_LISTEN",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    pub listen: Vec<String>,
    /// Unix socket a successor dials to take over the listeners.
    #[arg(long, env = "BATON_HANDOFF_SOCKET", value_name = "PATH")]
    pub handoff_socket: Option<PathBuf>,
    /// JSON configuration file, re-read by every successor.
    #[arg(long, env = "BATON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How long a draining process may finish in-flight requests (e.g. 30s).
    #[arg(long, env = "BATON_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,
    /// How long a successor may take to serve before the reload is abandoned (e.g. 10s).
    #[arg(long, env = "BATON_CHILD_TIMEOUT", value_name = "DURATION")]
    pub child_timeout: Option<String>,
    /// File the serving main process writes its pid to.
    #[arg(long, env = "BATON_PID_FILE", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Listeners to serve, in order.
    pub listen: Vec<ListenSpec>,
    /// True when `listen` came from the operator rather than the default.
    pub listen_explicit: bool,
    /// The hand-off socket path.
    pub handoff_socket: PathBuf,
    /// Drain budget.
    pub shutdown_timeout: Duration,
    /// Successor start budget.
    pub child_timeout: Duration,
    /// PID file, if any.
    pub pid_file: Option<PathBuf>,
    /// Body of the default handler.
    pub response_body: String,
    /// The file this was read from, if any.
    pub file: Option<PathBuf>,
}

/// What was wrong with the configuration. One line, naming the source, field and problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The path is not a regular file (a FIFO, a device, a directory): refused without reading,
    /// so that nothing hangs.
    #[error("config {path}: {what}")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        what: String,
    },
    /// The file is larger than 1 MiB.
    #[error("config {path}: larger than 1 MiB")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("config {path}: line {line} column {column}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// A field has a bad value.
    #[error("{origin}: {field}: {problem}")]
    Field {
        /// Where the value came from: `--listen/BATON_LISTEN` or `config /etc/baton/baton.json`.
        origin: String,
        /// Which field (with index for lists).
        field: String,
        /// What is wrong.
        problem: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Vec<String>>,
    handoff_socket: Option<PathBuf>,
    shutdown_timeout: Option<FileDuration>,
    child_timeout: Option<FileDuration>,
    pid_file: Option<PathBuf>,
    response_body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileDuration {
    Seconds(f64),
    Text(String),
}

impl Config {
    /// Merge `overrides` with the file they name (if any) and validate.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        match &overrides.config {
            Some(path) => Config::from_text(overrides, path, &read_text(path)?),
            None => Config::resolve(overrides, FileConfig::default(), None),
        }
    }

    /// Validate `text` as the contents of the configuration file `path`, under `overrides`
    /// (whose own `config` is ignored). What `baton check` and every start run.
    pub fn from_text(
        overrides: &Overrides,
        path: &Path,
        text: &str,
    ) -> Result<Config, ConfigError> {
        let file: FileConfig = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })?;
        Config::resolve(overrides, file, Some(path))
    }

    fn resolve(
        overrides: &Overrides,
        file: FileConfig,
        path: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let file_origin = path
            .map(|p| format!("config {}", p.display()))
            .unwrap_or_default();
        let field_err = |origin: &str, field: &str, problem: String| ConfigError::Field {
            origin: origin.to_owned(),
            field: field.to_owned(),
            problem,
        };

        let (listen_texts, listen_origin, listen_explicit) = if !overrides.listen.is_empty() {
            (
                overrides.listen.clone(),
                "--listen/BATON_LISTEN".to_owned(),
                true,
            )
        } else if let Some(list) = &file.listen {
            (list.clone(), file_origin.clone(), true)
        } else {
            (vec![DEFAULT_LISTEN.to_owned()], "default".to_owned(), false)
        };
        let mut listen: Vec<ListenSpec> = Vec::with_capacity(listen_texts.len());
        for (i, text) in listen_texts.iter().enumerate() {
            let spec: ListenSpec = text.parse().map_err(|e: crate::listen::spec::SpecError| {
                field_err(&listen_origin, &format!("listen[{i}]"), e.to_string())
            })?;
            if let Some(dup) = listen.iter().find(|s| s.same_socket(&spec)) {
                return Err(field_err(
                    &listen_origin,
                    &format!("listen[{i}]"),
                    format!("{text:?} names the same socket as {:?}", dup.as_str()),
                ));
            }
            listen.push(spec);
        }
        if listen_explicit && listen.is_empty() {
            return Err(field_err(&listen_origin, "listen", "empty list".into()));
        }

        let duration = |cli: &Option<String>,
                        env_name: &str,
                        from_file: &Option<FileDuration>,
                        field: &str,
                        default: Duration|
         -> Result<Duration, ConfigError> {
            let (value, origin) = match (cli, from_file) {
                (Some(text), _) => (
                    parse_duration(text),
                    format!("--{}/{env_name}", field.replace('_', "-")),
                ),
                (None, Some(FileDuration::Text(text))) => {
                    (parse_duration(text), file_origin.clone())
                }
                (None, Some(FileDuration::Seconds(secs))) => (seconds(*secs), file_origin.clone()),
                (None, None) => return Ok(default),
            };
            let value = value.map_err(|p| field_err(&origin, field, p))?;
            if value.is_zero() || value > MAX_TIMEOUT {
                return Err(field_err(
                    &origin,
                    field,
                    "must be more than 0 and at most 24h".into(),
                ));
            }
            Ok(value)
        };
        let shutdown_timeout = duration(
            &overrides.shutdown_timeout,
            "BATON_SHUTDOWN_TIMEOUT",
            &file.shutdown_timeout,
            "shutdown_timeout",
            DEFAULT_SHUTDOWN_TIMEOUT,
        )?;
        let child_timeout = duration(
            &overrides.child_timeout,
            "BATON_CHILD_TIMEOUT",
            &file.child_timeout,
            "child_timeout",
            DEFAULT_CHILD_TIMEOUT,
        )?;

        let handoff_socket = match (&overrides.handoff_socket, &file.handoff_socket) {
            (Some(p), _) => {
                check_socket_path(p, "--handoff-socket/BATON_HANDOFF_SOCKET", "handoff_socket")?
            }
            (None, Some(p)) => check_socket_path(p, &file_origin, "handoff_socket")?,
            (None, None) => check_socket_path(
                &default_handoff_socket(),
                "default (from RUNTIME_DIRECTORY, XDG_RUNTIME_DIR or TMPDIR)",
                "handoff_socket",
            )?,
        };
        let pid_file = match (&overrides.pid_file, &file.pid_file) {
            (Some(p), _) => Some(check_path(p, "--pid-file/BATON_PID_FILE", "pid_file")?),
            (None, Some(p)) => Some(check_path(p, &file_origin, "pid_file")?),
            (None, None) => None,
        };

        Ok(Config {
            listen,
            listen_explicit,
            handoff_socket,
            shutdown_timeout,
            child_timeout,
            pid_file,
            response_body: file
                .response_body
                .unwrap_or_else(|| DEFAULT_BODY.to_owned()),
            file: path.map(Path::to_path_buf),
        })
    }
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    // O_NONBLOCK open and a file-type check: a FIFO or a device must not block us.
    let file = crate::safe_fs::open_regular_for_reading(path).map_err(|e| match e {
        crate::safe_fs::FsError::Io { source, .. } => read_err(source),
        crate::safe_fs::FsError::Unsafe { problem, .. } => ConfigError::NotAFile {
            path: path.to_owned(),
            what: problem,
        },
    })?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

/// serde_json appends " at line L column C"; we print the position ourselves. Control
/// characters (from field names in the file) are escaped so the error stays on one line.
fn strip_position(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    let mut line = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<f64>() {
        return seconds(secs);
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 30s or 500ms: {e}"))
}

fn seconds(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{secs} is not a number of seconds"))
}

fn check_path(path: &Path, origin: &str, field: &str) -> Result<PathBuf, ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(ConfigError::Field {
            origin: origin.to_owned(),
            field: field.to_owned(),
            problem: "empty path".into(),
        });
    }
    Ok(path.to_owned())
}

/// A hand-off socket path must fit a `sockaddr_un`, and so must the per-hand-off sockets baton
/// makes in its directory (`<dir>/handoff.<pid>.<random>/handoff.sock`).
fn check_socket_path(path: &Path, origin: &str, field: &str) -> Result<PathBuf, ConfigError> {
    use crate::safe_fs::{sockaddr_len, MAX_SOCKET_PATH};
    let path = check_path(path, origin, field)?;
    let problem = |problem: String| ConfigError::Field {
        origin: origin.to_owned(),
        field: field.to_owned(),
        problem,
    };
    let len = sockaddr_len(&path);
    if len > MAX_SOCKET_PATH {
        return Err(problem(format!(
            "{:?} is {len} bytes; a Unix socket address holds at most {MAX_SOCKET_PATH}",
            path.display().to_string()
        )));
    }
    let dir = crate::handoff::runtime_dir(&path);
    let needed = sockaddr_len(&dir) + crate::handoff::parent::PATH_SUFFIX_MAX;
    if needed > MAX_SOCKET_PATH {
        return Err(problem(format!(
            "the hand-off sockets made in its directory {:?} take up to {needed} bytes; a Unix socket address holds at most {MAX_SOCKET_PATH}",
            dir.display().to_string()
        )));
    }
    Ok(path)
}

/// `$RUNTIME_DIRECTORY/handoff.sock`, else `$XDG_RUNTIME_DIR/baton/handoff.sock`, else
/// `<tmp>/baton-<uid>/handoff.sock`.
pub fn default_handoff_socket() -> PathBuf {
    let non_empty = |k| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(dirs) = non_empty("RUNTIME_DIRECTORY") {
        // systemd separates several RuntimeDirectory= entries with ':'
        let first = dirs
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        return PathBuf::from(first).join("handoff.sock");
    }
    if let Some(xdg) = non_empty("XDG_RUNTIME_DIR") {
        return PathBuf::from(xdg).join("baton").join("handoff.sock");
    }
    std::env::temp_dir()
        .join(format!("baton-{}", nix::unistd::getuid()))
        .join("handoff.sock")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_json(json: &str) -> Result<Config, ConfigError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(json.as_bytes()).unwrap();
        Config::load(&Overrides {
            config: Some(f.path().to_owned()),
            ..Default::default()
        })
    }

    #[test]
    fn defaults_serve_the_article_address() {
        let c = Config::load(&Overrides::default()).unwrap();
        assert_eq!(c.listen[0].as_str(), "127.0.0.1:8000");
        assert!(!c.listen_explicit);
        assert_eq!(c.response_body, "Hello, world!");
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    }

    #[test]
    fn file_fields_and_precedence() {
        let c = load_json(
            r#"{"listen":[":9000","unix:/tmp/x.sock"],"shutdown_timeout":2.5,"child_timeout":"750ms","response_body":"hi"}"#,
        )
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert!(c.listen_explicit);
        assert_eq!(c.shutdown_timeout, Duration::from_millis(2500));
        assert_eq!(c.child_timeout, Duration::from_millis(750));
        assert_eq!(c.response_body, "hi");

        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(br#"{"listen":[":9000"],"child_timeout":"1s"}"#)
            .unwrap();
        let c = Config::load(&Overrides {
            config: Some(f.path().to_owned()),
            listen: vec!["127.0.0.1:1".into()],
            child_timeout: Some("3s".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.listen[0].as_str(), "127.0.0.1:1");
        assert_eq!(c.child_timeout, Duration::from_secs(3));
    }

    #[test]
    fn errors_name_file_position_and_field() {
        let e = load_json("{\n  \"listen\": [\"nope\"]\n}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("listen[0]") && e.contains("\"nope\"") && e.starts_with("config "),
            "{e}"
        );
        let e = load_json("{\n  \"listen\": [\n").unwrap_err().to_string();
        assert!(e.contains("line 3 column"), "{e}");
        let e = load_json(r#"{"colour":1}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = load_json(r#"{"shutdown_timeout":"soon"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shutdown_timeout") && e.contains("\"soon\""),
            "{e}"
        );
        let e = load_json(r#"{"child_timeout":0}"#).unwrap_err().to_string();
        assert!(e.contains("child_timeout"), "{e}");
        let e = load_json(r#"{"listen":["127.0.0.1:1","localhost:1"]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen[1]") && e.contains("same socket"), "{e}");
        let e = Config::load(&Overrides {
            config: Some("/nonexistent/baton.json".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("config /nonexistent/baton.json: cannot read"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn a_config_that_is_not_a_regular_file_is_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("baton.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (path, what) in [
            (fifo.as_path(), "is a FIFO"),
            (dir.path(), "is a directory"),
            (Path::new("/dev/null"), "is a character device"),
        ] {
            let e = Config::load(&Overrides {
                config: Some(path.to_owned()),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
            assert_eq!(
                e,
                format!("config {}: {what}, not a regular file", path.display())
            );
        }
    }

    #[test]
    fn hand_off_paths_must_fit_a_socket_address() {
        let load = |p: String| {
            Config::load(&Overrides {
                handoff_socket: Some(p.into()),
                ..Default::default()
            })
        };
        let e = load(format!("/run/{}/h.sock", "d".repeat(100)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("handoff_socket") && e.contains("at most 107"),
            "{e}"
        );
        // Fits itself, but the sockets made in its directory would not.
        let dir = format!("/run/{}", "d".repeat(70));
        let e = load(format!("{dir}/h.sock")).unwrap_err().to_string();
        assert!(
            e.contains("made in its directory") && e.contains(&dir),
            "{e}"
        );
        load("/run/baton/handoff.sock".into()).unwrap();
    }
}
