//! Loading and checking real certificates and keys, made in the test with rcgen and the openssl
//! command (for RSA keys, which ring cannot generate, and for the PKCS#1/SEC1 encodings).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SignatureAlgorithm,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256,
};

use super::*;

/// A test CA that signs leaves.
pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "baton test CA");
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `localhost` with `key`, valid from `not_before` to `not_after` (y, m, d).
    pub(crate) fn leaf(
        &self,
        key: &KeyPair,
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
    ) -> String {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        params.signed_by(key, &self.issuer).unwrap().pem()
    }

    /// A leaf valid from 2020 to 2099.
    pub(crate) fn long_leaf(&self, key: &KeyPair) -> String {
        self.leaf(key, (2020, 1, 1), (2099, 1, 1))
    }
}

/// Run openssl with `args`, feeding `input`; its standard output.
fn openssl_raw(args: &[&str], input: &str) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl command");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// [`openssl_raw`] for PEM output.
fn openssl(args: &[&str], input: &str) -> String {
    String::from_utf8(openssl_raw(args, input)).unwrap()
}

/// A key of each kind, with its PEM in every encoding this test covers.
struct TestKey {
    pair: KeyPair,
    pkcs8: String,
}

impl TestKey {
    fn generate(alg: &'static SignatureAlgorithm) -> TestKey {
        let pair = KeyPair::generate_for(alg).unwrap();
        TestKey {
            pkcs8: pair.serialize_pem(),
            pair,
        }
    }

    fn rsa() -> TestKey {
        let pkcs8 = openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            "",
        );
        TestKey {
            pair: KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, &PKCS_RSA_SHA256).unwrap(),
            pkcs8,
        }
    }
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Write `text` to `name` with `mode`.
    fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn pair(&self, cert: &str, key: &str) -> TlsFiles {
        TlsFiles {
            cert: self.file("cert.pem", cert, 0o644),
            key: self.file("key.pem", key, 0o600),
        }
    }
}

fn no_creds() -> CredentialsDir {
    CredentialsDir(None)
}

fn read(files: &TlsFiles) -> Result<Pair, TlsError> {
    Pair::read(files, &no_creds())
}

fn err(files: &TlsFiles) -> String {
    let e = read(files).unwrap_err().to_string();
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

fn at(y: i32, m: u8, d: u8) -> SystemTime {
    let t = rcgen::date_time_ymd(y, m, d).unix_timestamp();
    UNIX_EPOCH + Duration::from_secs(t as u64)
}

#[test]
fn every_key_encoding_loads_and_matches_its_leaf() {
    let ca = Ca::new();
    let ec = TestKey::generate(&PKCS_ECDSA_P256_SHA256);
    let rsa = TestKey::rsa();
    let cases = [
        ("ECDSA P-256 PKCS#8", &ec, ec.pkcs8.clone(), "PRIVATE KEY"),
        (
            "ECDSA P-256 SEC1",
            &ec,
            openssl(&["ec"], &ec.pkcs8),
            "EC PRIVATE KEY",
        ),
        ("RSA PKCS#8", &rsa, rsa.pkcs8.clone(), "PRIVATE KEY"),
        (
            "RSA PKCS#1",
            &rsa,
            openssl(&["rsa", "-traditional"], &rsa.pkcs8),
            "RSA PRIVATE KEY",
        ),
    ];
    let p384 = TestKey::generate(&PKCS_ECDSA_P384_SHA384);
    let ed = TestKey::generate(&PKCS_ED25519);
    let more = [
        (
            "ECDSA P-384 PKCS#8",
            &p384,
            p384.pkcs8.clone(),
            "PRIVATE KEY",
        ),
        ("Ed25519 PKCS#8", &ed, ed.pkcs8.clone(), "PRIVATE KEY"),
    ];
    for (what, key, pem, label) in cases.iter().chain(more.iter()) {
        assert!(
            pem.starts_with(&format!("-----BEGIN {label}-----")),
            "{what}: {pem}"
        );
        let dir = Dir::new();
        let files = dir.pair(&ca.long_leaf(&key.pair), pem);
        let pair = read(&files).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(pair.leaf.names, ["localhost", "127.0.0.1"], "{what}");
        let config = pair.server_config().unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let findings = check(&files, &no_creds(), at(2030, 1, 1)).unwrap();
        assert_eq!(findings.len(), 1, "{what}: {findings:?}");
        let line = findings[0].to_string();
        assert!(!findings[0].is_warning());
        assert!(
            line.starts_with(&format!(
                "tls certificate {} and key {} match: localhost, 127.0.0.1 (1 in the chain), valid until 2099-01-01",
                files.cert.display(),
                files.key.display()
            )),
            "{what}: {line}"
        );
    }
}

#[test]
fn a_chain_and_a_combined_file_load() {
    let ca = Ca::new();
    let key = TestKey::generate(&PKCS_ECDSA_P256_SHA256);
    let leaf = ca.long_leaf(&key.pair);
    let intermediate = Ca::new().long_leaf(&KeyPair::generate().unwrap());
    let dir = Dir::new();
    let files = dir.pair(&format!("{leaf}{intermediate}"), &key.pkcs8);
    assert_eq!(read(&files).unwrap().certified.cert.len(), 2);
    // one file holding leaf and key, as some tools write it, named twice
    let both = dir.file("both.pem", &format!("{}{leaf}", key.pkcs8), 0o600);
    let files = TlsFiles {
        cert: both.clone(),
        key: both,
    };
    assert_eq!(read(&files).unwrap().certified.cert.len(), 1);
}

#[test]
fn a_key_that_is_not_the_leafs_is_refused() {
    let ca = Ca::new();
    let a = TestKey::generate(&PKCS_ECDSA_P256_SHA256);
    let b = TestKey::generate(&PKCS_ECDSA_P256_SHA256);
    let dir = Dir::new();
    let files = dir.pair(&ca.long_leaf(&a.pair), &b.pkcs8);
    assert_eq!(
        err(&files),
        format!(
            "tls key {} does not match the leaf certificate in {}",
            files.key.display(),
            files.cert.display()
        )
    );
    assert_eq!(
        read(&files).unwrap_err().kind().exit_code(),
        crate::exit::CONFIG
    );
    // a different key type too
    let rsa = TestKey::rsa();
    let files = dir.pair(&ca.long_leaf(&a.pair), &rsa.pkcs8);
    assert!(matches!(read(&files), Err(TlsError::KeyMismatch { .. })));
    // and the chain's second certificate's key does not count: only the leaf's
    let leaf_b = ca.long_leaf(&b.pair);
    let files = dir.pair(&format!("{}{leaf_b}", ca.long_leaf(&a.pair)), &b.pkcs8);
    assert!(matches!(read(&files), Err(TlsError::KeyMismatch { .. })));
}

#[test]
fn missing_files_are_named() {
    let dir = Dir::new();
    let ca = Ca::new();
    let key = TestKey::generate(&PKCS_ECDSA_P256_SHA256);
    let files = TlsFiles {
        cert: dir.dir.path().join("absent.pem"),
        key: dir.file("key.pem", &key.pkcs8, 0o600),
    };
    assert_eq!(
        err(&files),
        format!("tls certificate {}: no such file", files.cert.display())
    );
    let files = TlsFiles {
        cert: dir.file("cert.pem", &ca.long_leaf(&key.pair), 0o644),
        key: dir.dir.path().join("absent.key"),
    };
    assert_eq!(
        err(&files),
        format!("tls key {}: no such file", files.key.display())
    );
    assert_eq!(
        read(&files).unwrap_err().kind().exit_code(),
        crate::exit::CONFIG
    );
}

#[test]
fn garbage_is_refused_with_the_problem() {
    let ca = Ca::new();
    let key = TestKey::generate(&PKCS_ECDSA_P256_SHA256);
    let leaf = ca.long_leaf(&key.pair);
    let dir = Dir::new();
    let cert_err = |cert: &str| err(&dir.pair(cert, &key.pkcs8));
    let key_err = |k: &str| err(&dir.pair(&leaf, k));
    let cert_path = dir.dir.path().join("cert.pem").display().to_string();
    let key_path = dir.dir.path().join("key.pem").display().to_string();

    let e = cert_err("hello, world\n");
    assert_eq!(
        e,
        format!("tls certificate {cert_path}: not PEM: no -----BEGIN line (a DER file? convert it: openssl x509 -inform DER -outform PEM)")
    );
    let e = cert_err("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
    assert!(
        e.starts_with(&format!("tls certificate {cert_path}: not PEM: bad base64")),
        "{e}"
    );
    let e = cert_err(&leaf[..leaf.len() - 30]);
    assert!(
        e.contains("not PEM: a CERTIFICATE section has no -----END CERTIFICATE----- line"),
        "{e}"
    );
    let e = cert_err(&key.pkcs8);
    assert_eq!(
        e,
        format!("tls certificate {cert_path}: no CERTIFICATE section (found: PRIVATE KEY)")
    );
    let e = cert_err("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    assert!(
        e.starts_with(&format!(
            "tls certificate {cert_path}: the leaf is not a valid X.509 certificate"
        )),
        "{e}"
    );

    let e = key_err("");
    assert_eq!(e, format!("tls key {key_path}: not PEM: empty file"));
    let files = dir.pair(&leaf, "");
    std::fs::write(
        &files.key,
        openssl_raw(&["pkey", "-outform", "DER"], &key.pkcs8),
    )
    .unwrap();
    let e = err(&files);
    assert!(
        e.ends_with("(a DER file? convert it: openssl pkey -inform DER -outform PEM)"),
        "{e}"
    );
    let e = key_err(&leaf);
    assert_eq!(
        e,
        format!("tls key {key_path}: no private key (a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section) (found: CERTIFICATE)")
    );
    let other = TestKey::generate(&PKCS_ECDSA_P256_SHA256);
    let e = key_err(&format!("{}{}", key.pkcs8, other.pkcs8));
    assert_eq!(
        e,
        format!(
            "tls key {key_path}: 2 private keys; keep only the one that matches the certificate"
        )
    );
    let encrypted = openssl(
        &[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:secret",
        ],
        &key.pkcs8,
    );
    assert!(encrypted.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let e = key_err(&encrypted);
    assert!(
        e.starts_with(&format!("tls key {key_path}: unsupported key: encrypted")),
        "{e}"
    );
    let legacy = openssl(&["ec", "-aes256", "-passout", "pass:secret"], &key.pkcs8);
    assert!(legacy.contains("Proc-Type: 4,ENCRYPTED"), "{legacy}");
    let e = key_err(&legacy);
    assert!(e.contains("unsupported key: encrypted"), "{e}");
    let e =
        key_err("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n");
    assert!(
        e.contains("unsupported key: OPENSSH PRIVATE KEY sections are not read"),
        "{e}"
    );
    // a key ring does not use: P-521
    let p521 = openssl(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-521",
        ],
        "",
    );
    let e = key_err(&p521);
    assert_eq!(
        e,
        format!("tls key {key_path}: unsupported key: failed to parse private key as RSA, ECDSA, or EdDSA (ring takes RSA 2048-8192 bits, ECDSA P-256 or P-384, Ed25519)")
    );
    // damaged key body inside a good label
    let e = key_err("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    assert!(e.contains("unsupported key"), "{e}");
}

#[test]
fn an_expired_leaf_loads_with_a_warning() {
    let ca = Ca::new();
    let key = TestKey::generate(&PKCS_ECDSA_P256_SHA256);
    let dir = Dir::new();
    let files = dir.pair(&ca.leaf(&key.pair, (2019, 1, 1), (2021, 6, 1)), &key.pkcs8);
    let pair = read(&files).unwrap(); // serving goes on: the operator decides
    pair.server_config().unwrap();
    let findings = check(&files, &no_creds(), SystemTime::now()).unwrap();
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert!(findings[1].is_warning());
    let line = findings[1].to_string();
    assert!(
        line.starts_with(&format!(
            "tls certificate {}: the leaf expired 2021-06-01 00:00:00 UTC (",
            files.cert.display()
        )) && line.ends_with(" days ago)"),
        "{line}"
    );
}

#[test]
fn a_leaf_expiring_within_14_days_is_warned_about() {
    let ca = Ca::new();
    let key = TestKey::generate(&PKCS_ECDSA_P256_SHA256);
    let dir = Dir::new();
    let files = dir.pair(&ca.leaf(&key.pair, (2020, 1, 1), (2030, 1, 10)), &key.pkcs8);
    let warnings = |now| {
        check(&files, &no_creds(), now)
            .unwrap()
            .into_iter()
            .filter(Finding::is_warning)
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(warnings(at(2029, 12, 26)), Vec::<String>::new()); // 15 days left
    assert_eq!(
        warnings(at(2030, 1, 7)),
        [format!(
            "tls certificate {}: the leaf expires 2030-01-10 00:00:00 UTC (in 3 days)",
            files.cert.display()
        )]
    );
    assert_eq!(
        warnings(at(2019, 6, 1)),
        [format!(
            "tls certificate {}: the leaf is not valid before 2020-01-01 00:00:00 UTC",
            files.cert.display()
        )]
    );
}

#[test]
fn keys_come_from_the_credentials_directory() {
    let ca = Ca::new();
    let key = TestKey::generate(&PKCS_ECDSA_P256_SHA256);
    let creds_dir = Dir::new(); // what systemd makes for LoadCredential=tls.key:/etc/…
    let key_path = creds_dir.file("tls.key", &key.pkcs8, 0o400);
    let cert_path = creds_dir.file("tls.crt", &ca.long_leaf(&key.pair), 0o400);
    let creds = CredentialsDir(Some(creds_dir.dir.path().to_owned()));
    for (cert, key) in [
        ("credential:tls.crt", "credential:tls.key"),
        ("tls.crt", "tls.key"),
    ] {
        let files = TlsFiles {
            cert: cert.into(),
            key: key.into(),
        };
        let pair = Pair::read(&files, &creds).unwrap();
        assert_eq!(
            (pair.cert_path.as_path(), pair.key_path.as_path()),
            (cert_path.as_path(), key_path.as_path())
        );
        assert!(pair.warnings(SystemTime::now()).is_empty());
    }
    // an absolute certificate path beside a credential key
    let elsewhere = Dir::new();
    let files = TlsFiles {
        cert: elsewhere.file("cert.pem", &ca.long_leaf(&key.pair), 0o644),
        key: "credential:tls.key".into(),
    };
    Pair::read(&files, &creds).unwrap();
    // a credential that was not passed
    let files = TlsFiles {
        cert: cert_path.clone(),
        key: "credential:other.key".into(),
    };
    assert_eq!(
        Pair::read(&files, &creds).unwrap_err().to_string(),
        format!(
            "tls key {}: no such file",
            creds_dir.dir.path().join("other.key").display()
        )
    );
    // credential: without systemd
    let files = TlsFiles {
        cert: cert_path,
        key: "credential:tls.key".into(),
    };
    let e = Pair::read(&files, &no_creds()).unwrap_err().to_string();
    assert!(
        e.starts_with("tls key credential:tls.key: $CREDENTIALS_DIRECTORY is not set"),
        "{e}"
    );
}

#[test]
fn a_key_others_can_read_is_warned_about() {
    let ca = Ca::new();
    let key = TestKey::generate(&PKCS_ECDSA_P256_SHA256);
    let dir = Dir::new();
    let files = dir.pair(&ca.long_leaf(&key.pair), &key.pkcs8);
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let findings = check(&files, &no_creds(), at(2030, 1, 1)).unwrap();
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert_eq!(
        findings[1].to_string(),
        format!(
            "tls key {}: mode 0644 lets every local user read it (chmod 600, or pass it with LoadCredential=)",
            files.key.display()
        )
    );
    // the certificate may be world-readable: it is public
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(check(&files, &no_creds(), at(2030, 1, 1)).unwrap().len(), 1);
}

#[test]
fn each_warning_is_logged_once_per_process() {
    assert!(first_time("tls test warning a"));
    assert!(!first_time("tls test warning a"));
    assert!(first_time("tls test warning b"));
}

#[test]
fn permission_denied_is_exit_77() {
    let e = TlsError::Read {
        role: Role::Key,
        path: Path::new("/k").to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    };
    assert_eq!(e.kind().exit_code(), crate::exit::NOPERM);
}

/// The certificate facts baton reads agree with what openssl reads, for certificates openssl
/// made: RSA, a notAfter after 2049 (GeneralizedTime), a subject without subjectAltName.
#[test]
fn leaf_facts_agree_with_openssl() {
    let dir = Dir::new();
    for (what, args) in [
        (
            "RSA, 100 years, names",
            &[
                "-newkey",
                "rsa:2048",
                "-days",
                "36500",
                "-subj",
                "/CN=example.test",
                "-addext",
                "subjectAltName=DNS:example.test,DNS:www.example.test,IP:192.0.2.1,IP:2001:db8::1",
            ][..],
        ),
        (
            "EC, 1 day, common name only",
            &[
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-days",
                "1",
                "-subj",
                "/O=baton/CN=only.example.test",
            ][..],
        ),
    ] {
        let key = dir.dir.path().join("k.pem");
        let cert = dir.dir.path().join("c.pem");
        let mut full = vec![
            "req",
            "-x509",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ];
        full.extend_from_slice(args);
        openssl(&full, "");
        let pem = std::fs::read_to_string(&cert).unwrap();
        let der = parse_chain(&cert, pem.as_bytes()).unwrap().remove(0);
        let leaf = check::Leaf::parse(&der).unwrap_or_else(|e| panic!("{what}: {e}"));
        let facts = openssl(
            &[
                "x509",
                "-noout",
                "-serial",
                "-startdate",
                "-enddate",
                "-dateopt",
                "iso_8601",
                "-in",
                cert.to_str().unwrap(),
            ],
            "",
        );
        let field = |name: &str| {
            facts
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_owned()
        };
        let iso = |secs| check::utc(secs).replace(" UTC", "Z");
        assert_eq!(iso(leaf.not_before), field("notBefore"), "{what}");
        assert_eq!(iso(leaf.not_after), field("notAfter"), "{what}");
        let serial = leaf.serial.replace(':', "").to_uppercase();
        assert_eq!(
            serial.trim_start_matches('0'),
            field("serial").trim_start_matches('0'),
            "{what}"
        );
        if what.starts_with("RSA") {
            assert_eq!(
                leaf.names,
                [
                    "example.test",
                    "www.example.test",
                    "192.0.2.1",
                    "2001:db8::1"
                ]
            );
        } else {
            assert_eq!(leaf.names, ["CN=only.example.test"]);
        }
        println!(
            "{what}: {} ({} .. {}), serial {}",
            leaf.names(),
            check::utc(leaf.not_before),
            check::utc(leaf.not_after),
            leaf.serial
        );
    }
}
