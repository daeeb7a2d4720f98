//! Configuration: command-line options, `BATON_*` environment variables and a JSON file, merged
//! into one validated [`Config`]. Precedence: option > environment > file > default.
//!
//! The same code backs `baton check`, and a successor re-reads the file, so editing the file and
//! reloading applies it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::listen::spec::{ListenSpec, Scheme};
use crate::tls::TlsFiles;

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
    /// Address to listen on: host:port, [v6]:port, :port (all interfaces) or unix:/path;
    /// https://host:port serves TLS (http:// or no scheme: plain). Repeatable; the variable
    /// takes a comma-separated list.
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
    /// PEM certificate chain (leaf first) for https listeners. credential:NAME, or a bare
    /// NAME while $CREDENTIALS_DIRECTORY is set, reads $CREDENTIALS_DIRECTORY/NAME.
    #[arg(long, env = "BATON_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, RSA or EC) matching the certificate; found like --tls-cert.
    #[arg(long, env = "BATON_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
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
    /// Certificate and key for https listeners, as configured (read by [`crate::tls::load`]).
    pub tls: Option<TlsFiles>,
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
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
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
                check_path(p, "--handoff-socket/BATON_HANDOFF_SOCKET", "handoff_socket")?
            }
            (None, Some(p)) => check_path(p, &file_origin, "handoff_socket")?,
            (None, None) => default_handoff_socket(),
        };
        let pid_file = match (&overrides.pid_file, &file.pid_file) {
            (Some(p), _) => Some(check_path(p, "--pid-file/BATON_PID_FILE", "pid_file")?),
            (None, Some(p)) => Some(check_path(p, &file_origin, "pid_file")?),
            (None, None) => None,
        };

        let tls = resolve_tls(overrides, &file, &file_origin, &listen, &listen_origin)?;

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
            tls,
        })
    }
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
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

/// `tls_cert` and `tls_key`: both or neither, each a valid path or `credential:NAME`, and both
/// when a listener is `https://`. (A socket-activated listener named `https` is only known at
/// start: serving must refuse it there when these are missing.)
fn resolve_tls(
    overrides: &Overrides,
    file: &FileConfig,
    file_origin: &str,
    listen: &[ListenSpec],
    listen_origin: &str,
) -> Result<Option<TlsFiles>, ConfigError> {
    let pick =
        |cli: &Option<PathBuf>, from_file: &Option<PathBuf>, flag: &str, env: &str, field: &str| {
            let (path, origin) = match (cli, from_file) {
                (Some(p), _) => (p, format!("--{flag}/{env}")),
                (None, Some(p)) => (p, file_origin.to_owned()),
                (None, None) => return Ok(None),
            };
            crate::tls::source::validate_configured(path).map_err(|problem| {
                ConfigError::Field {
                    origin: origin.clone(),
                    field: field.to_owned(),
                    problem: format!("{:?}: {problem}", path.display().to_string()),
                }
            })?;
            Ok(Some((path.clone(), origin)))
        };
    let cert = pick(
        &overrides.tls_cert,
        &file.tls_cert,
        "tls-cert",
        "BATON_TLS_CERT",
        "tls_cert",
    )?;
    let key = pick(
        &overrides.tls_key,
        &file.tls_key,
        "tls-key",
        "BATON_TLS_KEY",
        "tls_key",
    )?;
    let missing = |origin: &str, field: &str, other: &str| ConfigError::Field {
        origin: origin.to_owned(),
        field: field.to_owned(),
        problem: format!("missing: {other} is set, and the two go together"),
    };
    let tls = match (cert, key) {
        (Some((cert, _)), Some((key, _))) => Some(TlsFiles { cert, key }),
        (Some((_, origin)), None) => return Err(missing(&origin, "tls_key", "tls_cert")),
        (None, Some((_, origin))) => return Err(missing(&origin, "tls_cert", "tls_key")),
        (None, None) => None,
    };
    if tls.is_none() {
        if let Some(i) = listen.iter().position(|l| l.scheme() == Scheme::Https) {
            return Err(ConfigError::Field {
                origin: listen_origin.to_owned(),
                field: format!("listen[{i}]"),
                problem: format!(
                    "{:?} serves TLS but no certificate is configured (tls_cert and tls_key, --tls-cert and --tls-key)",
                    listen[i].as_str()
                ),
            });
        }
    }
    Ok(tls)
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
    fn tls_files_come_in_pairs_and_https_needs_them() {
        let c = load_json(
            r#"{"listen":["https://127.0.0.1:8443","127.0.0.1:8080"],"tls_cert":"/etc/baton/cert.pem","tls_key":"credential:tls.key"}"#,
        )
        .unwrap();
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "/etc/baton/cert.pem".into(),
                key: "credential:tls.key".into()
            })
        );
        assert_eq!(c.listen[0].scheme(), Scheme::Https);
        assert_eq!(c.listen[0].as_str(), "https://127.0.0.1:8443");
        assert_eq!(c.listen[1].scheme(), Scheme::Http);
        assert_eq!(Config::load(&Overrides::default()).unwrap().tls, None);

        // option over file, field by field
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(br#"{"tls_cert":"/file/cert.pem","tls_key":"/file/key.pem"}"#)
            .unwrap();
        let c = Config::load(&Overrides {
            config: Some(f.path().to_owned()),
            tls_key: Some("/cli/key.pem".into()),
            ..Default::default()
        })
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(
            (tls.cert.to_str(), tls.key.to_str()),
            (Some("/file/cert.pem"), Some("/cli/key.pem"))
        );

        let e = load_json(r#"{"tls_cert":"/c.pem"}"#).unwrap_err();
        assert!(
            e.to_string()
                .ends_with(": tls_key: missing: tls_cert is set, and the two go together"),
            "{e}"
        );
        let e = Config::load(&Overrides {
            tls_key: Some("/k.pem".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "--tls-key/BATON_TLS_KEY: tls_cert: missing: tls_key is set, and the two go together"
        );
        let e = load_json(r#"{"listen":[":80","https://:443"]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(": listen[1]: \"https://:443\" serves TLS but no certificate is configured (tls_cert and tls_key, --tls-cert and --tls-key)"),
            "{e}"
        );
        let e = Config::load(&Overrides {
            listen: vec!["https://127.0.0.1:1".into()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("--listen/BATON_LISTEN: listen[0]: "), "{e}");
        let e = load_json(r#"{"tls_cert":"credential:a/b","tls_key":"/k"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with(": tls_cert: \"credential:a/b\": a credential name is a plain file name (no /, not . or ..)"), "{e}");
        let e = load_json(r#"{"tls_cert":"/c","tls_key":""}"#)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with(": tls_key: \"\": empty path"), "{e}");
        let e = load_json(r#"{"listen":["https://1.2.3.4:443","http://1.2.3.4:443"],"tls_cert":"/c","tls_key":"/k"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen[1]") && e.contains("same socket"), "{e}");
    }
}
