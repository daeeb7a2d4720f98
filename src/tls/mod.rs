//! TLS with rustls: the certificate chain and key from PEM files, the server configuration, the
//! handshake, and what `baton check` says about the pair.
//!
//! Entry points:
//! - [`load`]: read and validate the pair, build the `Arc<ServerConfig>` a process serves with,
//!   and log each warning (key readable by others, leaf expired or expiring) once.
//! - [`handshake`]: the server side of one connection, bounded by a timeout, telling whether
//!   ALPN chose `h2`.
//! - [`check()`]: the same validation for `baton check`, as [`Finding`]s to print one per line.
//!
//! Every generation calls [`load`] afresh (from `Server::bind`, before it reports ready), so
//! replacing the files and reloading rotates the certificate; a pair that does not load — or, in
//! a successor, a leaf that has expired or is not valid yet ([`Start`]) — makes the successor
//! fail and the old process serve on. The handshake runs in each connection's task (`http::conn`).
//!
//! # Crypto provider
//!
//! rustls runs on *ring*. It builds with the C compiler alone (no cmake, no nasm, no Go), in a
//! third of the time of aws-lc-rs on this 2-core machine (a crate with only rustls: debug build
//! 13 s with ring against 35 s with aws-lc-rs, release 32 s against 81 s), and it covers what a
//! web server's certificates use: RSA 2048–8192, ECDSA P-256/P-384, Ed25519. aws-lc-rs would add
//! FIPS mode, P-521 keys and post-quantum key exchange; [`provider`] is the one place to change.
//!
//! Files: see [`source`] for how paths and `credential:NAME` are found, [`check`](mod@check) for the
//! findings and their thresholds, [`accept`] for the handshake, [`x509`] for what is read from
//! the leaf (validity, names, serial).

pub mod accept;
// `baton check` (the command) is what reads the findings whole.
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
pub mod check;
pub mod source;
pub(crate) mod x509;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::ServerSessionMemoryCache;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
pub use rustls::ServerConfig;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use accept::{handshake, HANDSHAKE_TIMEOUT};

#[cfg(any(feature = "cli", test))]
pub use check::check;
pub use check::Finding;
pub use source::{CredentialsDir, Role};

/// ALPN protocol ids the server offers, in order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// TLS 1.2 sessions resumed by id (clients without tickets) kept in memory, per process.
pub const SESSION_CACHE_ENTRIES: usize = 1024;

/// The certificate chain and key as configured (`--tls-cert`/`--tls-key`, `BATON_TLS_CERT`/
/// `BATON_TLS_KEY`, `tls_cert`/`tls_key`): paths, bare credential names or `credential:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`).
    pub key: PathBuf,
}

/// Why the certificate or key cannot be used. One line, naming the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file does not exist.
    #[error("tls {role} {path}: no such file")]
    Missing {
        /// Which file.
        role: Role,
        /// The path read.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("tls {role} {path}: cannot read: {source}")]
    Read {
        /// Which file.
        role: Role,
        /// The path read.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A directory, FIFO or device where a file was expected: refused without reading, so that
    /// nothing hangs.
    #[error("tls {role} {path}: {what}")]
    NotAFile {
        /// Which file.
        role: Role,
        /// The path.
        path: PathBuf,
        /// What it is instead (`is a FIFO, not a regular file`).
        what: String,
    },
    /// More than [`source::MAX_FILE_BYTES`].
    #[error("tls {role} {path}: larger than 1 MiB")]
    TooLarge {
        /// Which file.
        role: Role,
        /// The path.
        path: PathBuf,
    },
    /// The file is not PEM, or a PEM section is damaged.
    #[error("tls {role} {path}: not PEM: {problem}")]
    NotPem {
        /// Which file.
        role: Role,
        /// The path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// PEM, but without a `CERTIFICATE` section.
    #[error("tls certificate {path}: no CERTIFICATE section{found}")]
    NoCertificate {
        /// The path.
        path: PathBuf,
        /// `" (found: …)"` listing the sections that were there, or empty.
        found: String,
    },
    /// The first certificate is not a usable X.509 certificate.
    #[error("tls certificate {path}: the leaf is not a valid X.509 certificate: {problem}")]
    BadCertificate {
        /// The path.
        path: PathBuf,
        /// What the parser said.
        problem: String,
    },
    /// PEM, but without a private key section.
    #[error("tls key {path}: no private key (a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section){found}")]
    NoKey {
        /// The path.
        path: PathBuf,
        /// `" (found: …)"` listing the sections that were there, or empty.
        found: String,
    },
    /// More than one private key in the key file.
    #[error(
        "tls key {path}: {count} private keys; keep only the one that matches the certificate"
    )]
    ManyKeys {
        /// The path.
        path: PathBuf,
        /// How many.
        count: usize,
    },
    /// A key that is encrypted, of a kind rustls does not read, or damaged.
    #[error("tls key {path}: unsupported key: {problem}")]
    UnsupportedKey {
        /// The path.
        path: PathBuf,
        /// What kind, or what the provider said.
        problem: String,
    },
    /// The key is not the leaf certificate's.
    #[error("tls key {key} does not match the leaf certificate in {cert}")]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// A successor was given a leaf that has expired (see [`Start::Reload`]).
    #[error("tls certificate {path}: the leaf expired {not_after}; the running process keeps its certificate (renew it, or restart to serve the expired one)")]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// `notAfter`, in UTC.
        not_after: String,
    },
    /// A successor was given a leaf whose `notBefore` is still to come (see [`Start::Reload`]):
    /// every verifying client would refuse it.
    #[error("tls certificate {path}: the leaf is not valid before {not_before}; the running process keeps its certificate (install it once it is valid, or check the clock)")]
    NotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// `notBefore`, in UTC.
        not_before: String,
    },
    /// `credential:NAME` that cannot be resolved.
    #[error("tls {role} {configured}: {problem}")]
    Credential {
        /// Which file.
        role: Role,
        /// As configured.
        configured: String,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused to build the configuration (not expected with the built-in provider).
    #[error("tls: cannot build the server configuration: {0}")]
    Config(#[source] rustls::Error),
}

impl TlsError {
    /// What kind of failure it is: permission denied when a file may not be read, another OS
    /// error for other I/O errors, configuration for everything about the files' contents.
    pub fn kind(&self) -> crate::exit::ErrorKind {
        use crate::exit::ErrorKind;
        match self {
            TlsError::Read { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                ErrorKind::PermissionDenied
            }
            TlsError::Read { .. } => ErrorKind::Os,
            _ => ErrorKind::Config,
        }
    }
}

/// The crypto provider: *ring* (see the module docs for why).
pub fn provider() -> Arc<CryptoProvider> {
    // rustls 0.23.48 deprecates the *ring* provider (it has no post-quantum key exchange); the
    // alternative, aws-lc-rs, needs cmake and a longer build. Kept on purpose until baton moves.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and the key that matches its leaf, with what was learnt reading them.
#[derive(Debug)]
pub struct Pair {
    /// Chain and signing key, ready for rustls.
    pub certified: Arc<CertifiedKey>,
    /// The certificate file read.
    pub cert_path: PathBuf,
    /// The key file read.
    pub key_path: PathBuf,
    /// Facts about the leaf.
    pub leaf: check::Leaf,
    /// The key file's permission bits.
    pub key_mode: u32,
    /// The key file has a POSIX ACL.
    pub key_acl: bool,
    /// Who else can read the key file.
    pub key_exposure: Option<source::Exposure>,
}

impl Pair {
    /// Read both files (resolved through `creds`) and check that the key matches the leaf.
    pub fn read(files: &TlsFiles, creds: &CredentialsDir) -> Result<Pair, TlsError> {
        let cert_path = creds.resolve(Role::Certificate, &files.cert)?;
        let key_path = creds.resolve(Role::Key, &files.key)?;
        let cert_file = source::read(Role::Certificate, &cert_path)?;
        let chain = parse_chain(&cert_path, &cert_file.bytes)?;
        let leaf = check::Leaf::parse(&chain[0]).map_err(|problem| TlsError::BadCertificate {
            path: cert_path.clone(),
            problem,
        })?;
        let key_file = source::read(Role::Key, &key_path)?;
        let key_exposure = source::exposure_of(&key_file);
        let key = parse_key(&key_path, &key_file.bytes)?;
        let signing_key = provider().key_provider.load_private_key(key).map_err(|e| {
            TlsError::UnsupportedKey {
                path: key_path.clone(),
                problem: format!(
                    "{} (ring takes RSA 2048-8192 bits, ECDSA P-256 or P-384, Ed25519)",
                    match e {
                        rustls::Error::General(text) => text,
                        other => other.to_string(),
                    }
                ),
            }
        })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            // Unknown: the key cannot tell its public half; ring's keys all can.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(TlsError::KeyMismatch {
                    key: key_path,
                    cert: cert_path,
                })
            }
            Err(e) => {
                return Err(TlsError::BadCertificate {
                    path: cert_path,
                    problem: e.to_string(),
                })
            }
        }
        Ok(Pair {
            certified: Arc::new(certified),
            cert_path,
            key_path,
            leaf,
            key_mode: key_file.mode,
            key_acl: key_file.acl,
            key_exposure,
        })
    }

    /// The server configuration serving this pair: TLS 1.2 and 1.3, ALPN `h2` then
    /// `http/1.1`, no client certificates, resumption by stateless tickets (keys random per
    /// process, rotated every 6 hours) and by a session-id cache of [`SESSION_CACHE_ENTRIES`]
    /// for TLS 1.2 clients without tickets; no 0-RTT data (it can be replayed).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(self.certified.clone())));
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Config)?;
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        Ok(Arc::new(config))
    }

    /// The warnings about this pair at `now`: key readable by others, leaf expired, expiring
    /// within [`check::EXPIRY_WARNING`] or not valid yet.
    pub fn warnings(&self, now: SystemTime) -> Vec<Finding> {
        check::warnings(self, now)
    }
}

/// How a serving process came to read the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A first start: a leaf outside its validity — expired, or not valid yet (a certificate
    /// installed early, a clock set wrong at boot) — is served, with a warning, so that a
    /// certificate problem does not take the plain listeners down as well (what nginx and
    /// others do).
    First,
    /// A successor taking over from a running process: a leaf that has expired or is not valid
    /// yet is refused, so the reload fails and the running process serves on with the
    /// certificate it has.
    Reload,
}

/// Read the pair named in the configuration (credentials from this process's environment),
/// log each warning once per process, and build the server configuration. What a serving
/// process calls at start.
pub fn load(files: &TlsFiles, start: Start) -> Result<Arc<ServerConfig>, TlsError> {
    let pair = Pair::read(files, &CredentialsDir::from_process())?;
    let now = SystemTime::now();
    if start == Start::Reload {
        let now = check::unix_seconds(now);
        if pair.leaf.not_after <= now {
            return Err(TlsError::Expired {
                path: pair.cert_path,
                not_after: check::utc(pair.leaf.not_after),
            });
        }
        if pair.leaf.not_before > now {
            return Err(TlsError::NotYetValid {
                path: pair.cert_path,
                not_before: check::utc(pair.leaf.not_before),
            });
        }
    }
    let config = pair.server_config()?;
    for warning in pair.warnings(now) {
        warn_once(&warning);
    }
    tracing::info!(
        cert = %pair.cert_path.display(),
        key = %pair.key_path.display(),
        leaf = %pair.leaf.names(),
        serial = %pair.leaf.serial,
        not_after = %check::utc(pair.leaf.not_after),
        "tls certificate loaded"
    );
    Ok(config)
}

/// Log `finding` as a warning unless this process already did.
fn warn_once(finding: &Finding) {
    let line = finding.to_string();
    if first_time(&line) {
        tracing::warn!("{line}");
    }
}

/// True the first time this process sees `line`.
fn first_time(line: &str) -> bool {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    match SEEN.lock() {
        Ok(mut seen) => seen
            .get_or_insert_with(HashSet::new)
            .insert(line.to_owned()),
        Err(_) => true,
    }
}

/// The PEM sections of `bytes`, or why they are not PEM.
fn sections(
    role: Role,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<(SectionKind, Vec<u8>)>, TlsError> {
    let not_pem = |problem: String| TlsError::NotPem {
        role,
        path: path.to_owned(),
        problem,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(not_pem("empty file".into()));
    }
    if labels(bytes).is_empty() {
        let convert = match role {
            Role::Certificate => "openssl x509 -inform DER -outform PEM",
            Role::Key => "openssl pkey -inform DER -outform PEM",
        };
        return Err(not_pem(format!(
            "no -----BEGIN line (a DER file? convert it: {convert})"
        )));
    }
    <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            not_pem(match e {
                rustls_pki_types::pem::Error::MissingSectionEnd { end_marker } => {
                    let label = String::from_utf8_lossy(&end_marker);
                    format!("a {label} section has no -----END {label}----- line")
                }
                rustls_pki_types::pem::Error::IllegalSectionStart { line } => {
                    format!("malformed line {:?}", String::from_utf8_lossy(&line))
                }
                rustls_pki_types::pem::Error::Base64Decode(e) => format!("bad base64: {e}"),
                other => other.to_string(),
            })
        })
}

/// The labels of every `-----BEGIN LABEL-----` line, known to rustls or not.
fn labels(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let label = line.strip_prefix(b"-----BEGIN ")?.strip_suffix(b"-----")?;
            Some(String::from_utf8_lossy(label).into_owned())
        })
        .collect()
}

/// `" (found: A, B)"`, or empty.
fn found(bytes: &[u8]) -> String {
    let labels = labels(bytes);
    if labels.is_empty() {
        String::new()
    } else {
        format!(" (found: {})", labels.join(", "))
    }
}

pub(crate) fn parse_chain(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = sections(Role::Certificate, path, bytes)?
        .into_iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
            found: found(bytes),
        });
    }
    Ok(chain)
}

pub(crate) fn parse_key(path: &Path, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    let unsupported = |problem: String| TlsError::UnsupportedKey {
        path: path.to_owned(),
        problem,
    };
    // Encrypted keys: PKCS#8 `ENCRYPTED PRIVATE KEY`, or a legacy PEM header in a PKCS#1/SEC1 key.
    let labels = labels(bytes);
    let encrypted = labels.iter().any(|l| l == "ENCRYPTED PRIVATE KEY")
        || bytes
            .windows(b"Proc-Type: 4,ENCRYPTED".len())
            .any(|w| w == b"Proc-Type: 4,ENCRYPTED");
    if encrypted {
        return Err(unsupported(
            "encrypted; store it decrypted where only baton can read it (openssl pkey -in KEY -out PLAIN)"
                .into(),
        ));
    }
    let mut keys: Vec<PrivateKeyDer<'static>> = sections(Role::Key, path, bytes)?
        .into_iter()
        .filter_map(|(kind, der)| match kind {
            SectionKind::PrivateKey => Some(PrivateKeyDer::Pkcs8(der.into())),
            SectionKind::RsaPrivateKey => Some(PrivateKeyDer::Pkcs1(der.into())),
            SectionKind::EcPrivateKey => Some(PrivateKeyDer::Sec1(der.into())),
            _ => None,
        })
        .collect();
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 => match labels.iter().find(|l| l.ends_with("PRIVATE KEY")) {
            Some(other) => Err(unsupported(format!(
                "{other} sections are not read; convert it to PKCS#8 (openssl pkcs8 -topk8 -nocrypt)"
            ))),
            None => Err(TlsError::NoKey {
                path: path.to_owned(),
                found: found(bytes),
            }),
        },
        count => Err(TlsError::ManyKeys {
            path: path.to_owned(),
            count,
        }),
    }
}

#[cfg(test)]
mod handshake_tests;
#[cfg(test)]
pub(crate) mod tests;
