//! The `baton` command's configuration: command-line options and `BATON_*` variables (clap reads
//! both) over a JSON file over the defaults, merged into the library's [`Settings`] plus what
//! only the command has (the default handler's body).
//!
//! The same code backs `baton check`, and a successor re-reads the file, so editing the file and
//! reloading applies it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use super::args::Overrides;
use crate::settings::{self, Settings, SettingsError};

/// The body of the default handler, as in the article baton grew from.
pub const DEFAULT_BODY: &str = "Hello, world!";
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The validated configuration of the `baton` command.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// What the library serves with.
    pub settings: Settings,
    /// Body of the default handler.
    pub response_body: String,
    /// Asked for a supervisor process (see [`crate::supervisor`]).
    pub supervise: bool,
    /// The threads that serve (`None`: one per CPU this process may use).
    pub threads: Option<std::num::NonZeroUsize>,
    /// The admin listener serving baton's metrics, if any.
    pub admin: Option<AdminListen>,
    /// The file this was read from, if any.
    pub file: Option<PathBuf>,
}

/// Where the admin listener is: an address baton listens on, or a socket systemd passes.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminListen {
    /// An address (in [`Settings`]' `always_listen`).
    Address(crate::settings::ListenAddr),
    /// The `FileDescriptorName=` of a socket systemd passes.
    Socket(String),
}

impl AdminListen {
    /// The listener's name, as [`crate::Serve::listener`] matches it.
    pub fn name(&self) -> &str {
        match self {
            AdminListen::Address(spec) => spec.as_str(),
            AdminListen::Socket(name) => name,
        }
    }
}

impl std::fmt::Display for AdminListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminListen::Address(spec) => write!(f, "{spec}"),
            AdminListen::Socket(name) => write!(f, "the socket named {name:?}"),
        }
    }
}

/// Read an `admin_listen` value: with a `:`, an address; without, a socket name (systemd's
/// `FileDescriptorName=` cannot hold a `:`).
fn parse_admin(
    text: &str,
    listen: &[crate::settings::ListenAddr],
    origin: &str,
) -> Result<AdminListen, SettingsError> {
    let field = "admin_listen";
    if text.is_empty() || text.len() > 255 || text.chars().any(|c| c.is_control() || c == ' ') {
        return Err(SettingsError::new(
            origin,
            field,
            format!(
                "{:?}: neither an address nor a socket name (1 to 255 characters, no spaces)",
                crate::text::one_line(text)
            ),
        ));
    }
    if !text.contains(':') {
        return Ok(AdminListen::Socket(text.to_owned()));
    }
    let spec = settings::parse_listen(&[text], origin)
        .map_err(|e| SettingsError::new(origin, field, e.problem))?
        .remove(0);
    if matches!(spec.target(), crate::settings::ListenTarget::Name { .. }) {
        return Err(SettingsError::new(
            origin,
            field,
            format!(
                "{text:?}: write an IP address, not a host name (the admin listener is one socket)"
            ),
        ));
    }
    if let Some(main) = listen.iter().find(|l| l.same_socket(&spec)) {
        return Err(SettingsError::new(
            origin,
            field,
            format!("{text:?} is also a listen address ({main}): the admin listener needs its own"),
        ));
    }
    Ok(AdminListen::Address(spec))
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
    /// A setting has a bad value.
    #[error(transparent)]
    Field(#[from] SettingsError),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Vec<String>>,
    handoff_socket: Option<PathBuf>,
    shutdown_timeout: Option<FileDuration>,
    child_timeout: Option<FileDuration>,
    idle_timeout: Option<FileDuration>,
    pid_file: Option<PathBuf>,
    response_body: Option<String>,
    admin_listen: Option<String>,
    supervise: Option<bool>,
    threads: Option<serde_json::Value>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    access_log: Option<bool>,
    http2_keepalive: Option<bool>,
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
        let mut s = Settings::default();

        // The file first, then what clap found on the command line or in the environment.
        if let Some(list) = &file.listen {
            let texts: Vec<&str> = list.iter().map(String::as_str).collect();
            s = s.listen(settings::parse_listen(&texts, &file_origin)?);
        }
        if !overrides.listen.is_empty() {
            let texts: Vec<&str> = overrides.listen.iter().map(String::as_str).collect();
            s = s.listen(settings::parse_listen(&texts, "--listen/BATON_LISTEN")?);
        }

        let timeout = |cli: &Option<String>,
                       env_name: &str,
                       from_file: &Option<FileDuration>,
                       field: &str|
         -> Result<Option<std::time::Duration>, SettingsError> {
            match (cli, from_file) {
                (Some(text), _) => {
                    let origin = format!("--{}/{env_name}", field.replace('_', "-"));
                    settings::parse_timeout(text, &origin, field).map(Some)
                }
                (None, Some(FileDuration::Text(text))) => {
                    settings::parse_timeout(text, &file_origin, field).map(Some)
                }
                (None, Some(FileDuration::Seconds(secs))) => {
                    settings::timeout_from_secs(*secs, &file_origin, field).map(Some)
                }
                (None, None) => Ok(None),
            }
        };
        if let Some(t) = timeout(
            &overrides.shutdown_timeout,
            "BATON_SHUTDOWN_TIMEOUT",
            &file.shutdown_timeout,
            "shutdown_timeout",
        )? {
            s = s.shutdown_timeout(t);
        }
        if let Some(t) = timeout(
            &overrides.child_timeout,
            "BATON_CHILD_TIMEOUT",
            &file.child_timeout,
            "child_timeout",
        )? {
            s = s.child_timeout(t);
        }
        if let Some(t) = timeout(
            &overrides.idle_timeout,
            "BATON_IDLE_TIMEOUT",
            &file.idle_timeout,
            "idle_timeout",
        )? {
            s = s.idle_timeout(t);
        }

        type Check = fn(&Path, &str, &str) -> Result<PathBuf, SettingsError>;
        let path_setting = |cli: &Option<PathBuf>,
                            from_file: &Option<PathBuf>,
                            origin: &str,
                            field: &str,
                            check: Check|
         -> Result<Option<PathBuf>, SettingsError> {
            match (cli, from_file) {
                (Some(p), _) => check(p, origin, field).map(Some),
                (None, Some(p)) => check(p, &file_origin, field).map(Some),
                (None, None) => Ok(None),
            }
        };
        if let Some(p) = path_setting(
            &overrides.handoff_socket,
            &file.handoff_socket,
            "--handoff-socket/BATON_HANDOFF_SOCKET",
            "handoff_socket",
            settings::check_socket_path,
        )? {
            s = s.handoff_socket(p);
        }
        if let Some(p) = path_setting(
            &overrides.pid_file,
            &file.pid_file,
            "--pid-file/BATON_PID_FILE",
            "pid_file",
            settings::check_path,
        )? {
            s = s.pid_file(p);
        }

        let pick_tls = |cli: &Option<PathBuf>, from_file: &Option<PathBuf>, origin: &str| match (
            cli, from_file,
        ) {
            (Some(p), _) => Some((p.clone(), origin.to_owned())),
            (None, Some(p)) => Some((p.clone(), file_origin.clone())),
            (None, None) => None,
        };
        let tls = settings::pair_tls(
            pick_tls(
                &overrides.tls_cert,
                &file.tls_cert,
                "--tls-cert/BATON_TLS_CERT",
            ),
            pick_tls(&overrides.tls_key, &file.tls_key, "--tls-key/BATON_TLS_KEY"),
        )?;
        if let Some(files) = tls {
            s = s.tls(files.cert, files.key);
        }
        // An https listener needs the pair. (A socket-activated listener named `https` is
        // only known at start: the server refuses it there.)
        let listen_origin = if !overrides.listen.is_empty() {
            "--listen/BATON_LISTEN"
        } else {
            &file_origin
        };
        settings::check_https_has_tls(&s.listen, s.tls.is_some(), listen_origin)?;

        if overrides.access_log.or(file.access_log).unwrap_or(false) {
            s = s.access_log(crate::AccessLog::On);
        }
        if !overrides
            .http2_keepalive
            .or(file.http2_keepalive)
            .unwrap_or(true)
        {
            s = s.http2_keepalive(crate::Http2KeepAlive::Off);
        }
        let admin = match (&overrides.admin_listen, &file.admin_listen) {
            (Some(text), _) => Some(parse_admin(
                text,
                &s.listen,
                "--admin-listen/BATON_ADMIN_LISTEN",
            )?),
            (None, Some(text)) => Some(parse_admin(text, &s.listen, &file_origin)?),
            (None, None) => None,
        };
        if let Some(AdminListen::Address(spec)) = &admin {
            s.always_listen.push(spec.clone());
        }
        let threads = match (&overrides.threads, file.threads) {
            (Some(text), _) => Some(parse_threads(text, "--threads/BATON_THREADS")?),
            (None, Some(value)) => Some(match value.as_u64() {
                Some(n) => threads_in_range(n, &n.to_string(), &file_origin)?,
                None => return Err(not_a_thread_count(&value.to_string(), &file_origin).into()),
            }),
            (None, None) => None,
        };
        s.validate()?;
        Ok(Config {
            settings: s,
            response_body: file
                .response_body
                .unwrap_or_else(|| DEFAULT_BODY.to_owned()),
            supervise: overrides.supervise.or(file.supervise).unwrap_or(false),
            threads,
            admin,
            file: path.map(Path::to_path_buf),
        })
    }
}

/// The most threads `threads` may ask for.
const MAX_THREADS: u64 = 1024;

/// A thread count as written in an option or variable (`origin`): a whole number from 1 to
/// [`MAX_THREADS`].
fn parse_threads(text: &str, origin: &str) -> Result<std::num::NonZeroUsize, SettingsError> {
    match text.trim().parse::<u64>() {
        Ok(n) => threads_in_range(n, text, origin),
        Err(_) => Err(not_a_thread_count(&format!("{text:?}"), origin)),
    }
}

/// `shown` (a value as written) is no whole number.
fn not_a_thread_count(shown: &str, origin: &str) -> SettingsError {
    SettingsError::new(
        origin,
        "threads",
        format!("{shown} is not a whole number (1 to {MAX_THREADS})"),
    )
}

/// `n` (written `text`) when it is from 1 to [`MAX_THREADS`].
fn threads_in_range(
    n: u64,
    text: &str,
    origin: &str,
) -> Result<std::num::NonZeroUsize, SettingsError> {
    match usize::try_from(n)
        .ok()
        .and_then(std::num::NonZeroUsize::new)
    {
        Some(count) if n <= MAX_THREADS => Ok(count),
        _ => Err(SettingsError::new(
            origin,
            "threads",
            format!("{text} is out of range (1 to {MAX_THREADS})"),
        )),
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
    crate::text::one_line(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::spec::Scheme;
    use crate::tls::TlsFiles;
    use std::io::Write;
    use std::time::Duration;

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
        assert_eq!(c.settings, Settings::default());
        assert_eq!(c.response_body, "Hello, world!");
    }

    #[test]
    fn file_fields_and_precedence() {
        let c = load_json(
            r#"{"listen":[":9000","unix:/tmp/x.sock"],"shutdown_timeout":2.5,"child_timeout":"750ms","idle_timeout":"2s","response_body":"hi"}"#,
        )
        .unwrap();
        assert_eq!(c.settings.listen.len(), 2);
        assert!(c.settings.listen_explicit);
        assert_eq!(c.settings.shutdown_timeout, Duration::from_millis(2500));
        assert_eq!(c.settings.child_timeout, Duration::from_millis(750));
        assert_eq!(c.settings.idle_timeout, Duration::from_secs(2));
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
        assert_eq!(c.settings.listen[0].as_str(), "127.0.0.1:1");
        assert_eq!(c.settings.child_timeout, Duration::from_secs(3));
    }

    #[test]
    fn supervise_from_option_environment_or_file() {
        assert!(!Config::load(&Overrides::default()).unwrap().supervise);
        assert!(load_json(r#"{"supervise":true}"#).unwrap().supervise);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(br#"{"supervise":true}"#).unwrap();
        let c = Config::load(&Overrides {
            config: Some(f.path().to_owned()),
            supervise: Some(false),
            ..Default::default()
        })
        .unwrap();
        assert!(!c.supervise, "the option wins over the file");
        let e = load_json(r#"{"supervise":"yes"}"#).unwrap_err().to_string();
        assert!(e.contains("expected a boolean"), "{e}");
    }

    #[test]
    fn http2_keepalive_on_unless_the_option_environment_or_file_turn_it_off() {
        assert!(
            Config::load(&Overrides::default())
                .unwrap()
                .settings
                .http2_keepalive
        );
        let c = load_json(r#"{"http2_keepalive":false}"#).unwrap();
        assert!(!c.settings.http2_keepalive);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(br#"{"http2_keepalive":false}"#).unwrap();
        let c = Config::load(&Overrides {
            config: Some(f.path().to_owned()),
            http2_keepalive: Some(true),
            ..Default::default()
        })
        .unwrap();
        assert!(c.settings.http2_keepalive, "the option wins over the file");
        let e = load_json(r#"{"http2_keepalive":"off"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a boolean"), "{e}");
    }

    #[test]
    fn threads_from_option_environment_or_file_from_1_to_1024() {
        let threads = |c: Config| c.threads.map(std::num::NonZero::get);
        assert_eq!(threads(Config::load(&Overrides::default()).unwrap()), None);
        assert_eq!(threads(load_json(r#"{"threads":1}"#).unwrap()), Some(1));
        assert_eq!(
            threads(load_json(r#"{"threads":1024}"#).unwrap()),
            Some(1024)
        );
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(br#"{"threads":4}"#).unwrap();
        let c = Config::load(&Overrides {
            config: Some(f.path().to_owned()),
            threads: Some(" 2".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(threads(c), Some(2), "the option wins over the file");
        for (json, problem) in [("0", "0 is out of range"), ("1025", "1025 is out of range")] {
            let e = load_json(&format!(r#"{{"threads":{json}}}"#)).unwrap_err();
            let e = e.to_string();
            assert!(e.starts_with("config ") && e.contains(": threads: "), "{e}");
            assert!(e.contains(problem), "{e}");
        }
        for (json, shown) in [(r#""2""#, r#""2""#), ("2.5", "2.5"), ("-1", "-1")] {
            let e = load_json(&format!(r#"{{"threads":{json}}}"#)).unwrap_err();
            let e = e.to_string();
            assert!(e.starts_with("config ") && e.contains(": threads: "), "{e}");
            assert!(
                e.ends_with(&format!("{shown} is not a whole number (1 to 1024)")),
                "{e}"
            );
        }
        for text in ["", "x", "2.5", "-1", "1025", "0"] {
            let e = Config::load(&Overrides {
                threads: Some(text.into()),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
            assert!(e.starts_with("--threads/BATON_THREADS: threads: "), "{e}");
        }
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
        let e = load_json(r#"{"listen":["127.0.0.1:1","127.0.0.1:01"]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen[1]") && e.contains("same socket"), "{e}");
        let e = load_json(r#"{"listen":[]}"#).unwrap_err().to_string();
        assert!(e.contains("listen: empty list"), "{e}");
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
            c.settings.tls,
            Some(TlsFiles {
                cert: "/etc/baton/cert.pem".into(),
                key: "credential:tls.key".into()
            })
        );
        assert_eq!(c.settings.listen[0].scheme(), Scheme::Https);
        assert_eq!(c.settings.listen[0].as_str(), "https://127.0.0.1:8443");
        assert_eq!(c.settings.listen[1].scheme(), Scheme::Http);
        assert_eq!(
            Config::load(&Overrides::default()).unwrap().settings.tls,
            None
        );

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
        let tls = c.settings.tls.unwrap();
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

    #[test]
    fn admin_listen_is_an_address_baton_binds_or_a_socket_name() {
        let c =
            load_json(r#"{"listen":["127.0.0.1:8000"],"admin_listen":"127.0.0.1:9100"}"#).unwrap();
        let spec: crate::settings::ListenAddr = "127.0.0.1:9100".parse().unwrap();
        assert_eq!(c.admin, Some(AdminListen::Address(spec.clone())));
        assert_eq!(c.settings.always_listen, vec![spec]);
        assert_eq!(c.settings.listen.len(), 1, "not a main listener");
        let c = Config::load(&Overrides {
            admin_listen: Some("admin".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.admin, Some(AdminListen::Socket("admin".into())));
        assert!(c.settings.always_listen.is_empty());
        assert_eq!(load_json("{}").unwrap().admin, None);

        let e = load_json(r#"{"admin_listen":"127.0.0.1:8000"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(": admin_listen: \"127.0.0.1:8000\" is also a listen address (127.0.0.1:8000): the admin listener needs its own"),
            "{e}"
        );
        let e = load_json(r#"{"admin_listen":"localhost:9100"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("admin_listen: \"localhost:9100\": write an IP address"),
            "{e}"
        );
        let e = load_json(r#"{"admin_listen":"my admin"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("admin_listen: \"my admin\": neither an address nor a socket name"),
            "{e}"
        );
        let e = Config::load(&Overrides {
            admin_listen: Some("127.0.0.1:x".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("--admin-listen/BATON_ADMIN_LISTEN: admin_listen: "),
            "{e}"
        );
    }

    #[test]
    fn a_config_that_is_not_a_regular_file_is_refused_without_hanging() {
        let (dir, fifo) = crate::test_util::temp_path("baton.json");
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
