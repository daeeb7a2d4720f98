//! TLS with the real binary. `baton check` on good, broken and doubtful pairs, run as root and
//! as a second user (nobody) reading its key from a credentials directory made the way systemd
//! makes it. (The handshake itself, in process with a real rustls client: `src/tls`.)

mod common;

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// The certificate chain file and the key file.
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

/// Root CA → intermediate → leaf for localhost; the files hold leaf + intermediate and the key.
struct Pki {
    _dir: tempfile::TempDir,
    files: Files,
    leaf_pem: String,
    mid_pem: String,
    key_pem: String,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params
}

fn pki() -> Pki {
    pki_until((2099, 1, 1))
}

/// [`pki`] with a leaf valid until `not_after` (y, m, d).
fn pki_until(not_after: (i32, u8, u8)) -> Pki {
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("baton test root");
    let root_issuer = Issuer::new(root_params, root_key);

    let mid_key = KeyPair::generate().unwrap();
    let mid_params = ca_params("baton test intermediate");
    let mid = mid_params.signed_by(&mid_key, &root_issuer).unwrap();
    let mid_issuer = Issuer::new(mid_params, mid_key);

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    leaf_params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let leaf = leaf_params.signed_by(&leaf_key, &mid_issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("fullchain.pem");
    let key = dir.path().join("privkey.pem");
    std::fs::write(&cert, format!("{}{}", leaf.pem(), mid.pem())).unwrap();
    write_private(&key, &leaf_key.serialize_pem());
    Pki {
        _dir: dir,
        files: Files { cert, key },
        leaf_pem: leaf.pem(),
        mid_pem: mid.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
}

/// `baton check ARGS` (the real binary) with a clean environment plus `env`, as `uid` when given.
fn baton_check(args: &[&str], env: &[(&str, &Path)], uid: Option<u32>) -> (i32, String, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(common::baton_exe());
    cmd.arg("check").args(args);
    for var in [
        "BATON_TLS_CERT",
        "BATON_TLS_KEY",
        "BATON_LISTEN",
        "BATON_CONFIG",
        "CREDENTIALS_DIRECTORY",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid); // as root, std also drops the supplementary groups
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn check_reports_a_good_pair_and_refuses_broken_ones() {
    let good = pki();
    let (cert, key) = (path_str(&good.files.cert), path_str(&good.files.key));
    let (code, out, err) = baton_check(&["--tls-cert", cert, "--tls-key", key], &[], None);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[1],
        format!("baton: tls certificate {cert} and key {key} match: localhost (2 in the chain), valid until 2099-01-01 00:00:00 UTC")
    );

    // a key that is not the leaf's
    let other = pki();
    let other_key = path_str(&other.files.key);
    let (code, out, err) = baton_check(&["--tls-cert", cert, "--tls-key", other_key], &[], None);
    assert_eq!(code, 78, "{out}{err}");
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!("baton: tls key {other_key} does not match the leaf certificate in {cert}\n")
    );

    // a missing file, and garbage
    let missing = good.files.cert.with_file_name("nope.pem");
    let (code, _, err) = baton_check(
        &["--tls-cert", path_str(&missing), "--tls-key", key],
        &[],
        None,
    );
    assert_eq!(
        (code, err),
        (
            78,
            format!(
                "baton: tls certificate {}: no such file\n",
                missing.display()
            )
        )
    );
    let garbage = good.files.cert.with_file_name("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let (code, _, err) = baton_check(
        &["--tls-cert", path_str(&garbage), "--tls-key", key],
        &[],
        None,
    );
    assert_eq!(code, 78);
    assert!(
        err.starts_with(&format!(
            "baton: tls certificate {}: not PEM: ",
            garbage.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // https without a certificate, a certificate without a key
    let port = common::free_port();
    let https = format!("https://127.0.0.1:{port}");
    let (code, _, err) = baton_check(&["--listen", &https], &[], None);
    assert_eq!(code, 78);
    assert_eq!(err, format!("baton: --listen/BATON_LISTEN: listen[0]: \"{https}\" serves TLS but no certificate is configured (tls_cert and tls_key, --tls-cert and --tls-key)\n"));
    let (code, _, err) = baton_check(&["--tls-cert", cert], &[], None);
    assert_eq!(code, 78);
    assert_eq!(err, "baton: --tls-cert/BATON_TLS_CERT: tls_key: missing: tls_cert is set, and the two go together\n");
    // and https with both is fine
    let (code, _, err) = baton_check(
        &["--listen", &https, "--tls-cert", cert, "--tls-key", key],
        &[],
        None,
    );
    assert_eq!((code, err.as_str()), (0, ""));
}

#[test]
fn check_warns_about_an_expired_leaf_and_a_readable_key() {
    let old = pki_until((2021, 6, 1));
    let (cert, key) = (path_str(&old.files.cert), path_str(&old.files.key));
    let (code, out, err) = baton_check(&["--tls-cert", cert, "--tls-key", key], &[], None);
    assert_eq!(code, 0, "a warning, not a failure: {err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        err.starts_with(&format!(
            "baton: warning: tls certificate {cert}: the leaf expired 2021-06-01 00:00:00 UTC ("
        )) && err.ends_with(" days ago)\n"),
        "{err}"
    );

    let good = pki();
    let (cert, key) = (path_str(&good.files.cert), path_str(&good.files.key));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = baton_check(&["--tls-cert", cert, "--tls-key", key], &[], None);
    assert_eq!(code, 0);
    assert_eq!(
        err,
        format!("baton: warning: tls key {key}: mode 0644 lets every local user read it (chmod 600, or pass it with LoadCredential=)\n")
    );
}

/// Set a POSIX access ACL granting `uid` `perm` (4 = r, 5 = r-x) on `path`, on top of its mode,
/// as systemd does for a credential and its directory. False when the file system has no ACLs.
fn grant(path: &Path, uid: u32, perm: u16) -> bool {
    use std::os::fd::AsRawFd;
    const NONE: u32 = u32::MAX;
    let mut value = 2u32.to_le_bytes().to_vec();
    for (tag, p, id) in [
        (0x01u16, perm, NONE),
        (0x02, perm, uid),
        (0x04, 0, NONE),
        (0x10, perm, NONE),
        (0x20, 0, NONE),
    ] {
        value.extend(tag.to_le_bytes());
        value.extend(p.to_le_bytes());
        value.extend(id.to_le_bytes());
    }
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: an open descriptor, a NUL-terminated name, a buffer of the length given.
    let rc = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            c"system.posix_acl_access".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    rc == 0
}

/// The systemd way, for real: a credentials directory owned by root (0500) with the key and
/// certificate 0400, readable by the service's user (nobody here) through ACLs, exactly as
/// systemd writes them for `LoadCredential=` with `User=`. That user reads them and hears no
/// warning; root hears that nobody can read the key; nobody cannot read a root-only key.
#[test]
fn check_reads_credentials_as_a_second_user() {
    use std::os::unix::fs::PermissionsExt;
    const NOBODY: u32 = 65534;
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root to act as a second user");
        return;
    }
    let pki = pki();
    let top = tempfile::tempdir().unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let creds = top.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let cert = creds.join("tls.crt");
    let key = creds.join("tls.key");
    std::fs::write(&cert, format!("{}{}", pki.leaf_pem, pki.mid_pem)).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    for f in [&cert, &key] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o500)).unwrap();
    if !(grant(&creds, NOBODY, 5) && grant(&cert, NOBODY, 4) && grant(&key, NOBODY, 4)) {
        println!("skipped: this file system takes no ACLs");
        return;
    }
    let (code, _, err) = baton_check(&[], &[], Some(NOBODY));
    if code != 0 {
        println!(
            "skipped: nobody cannot run {}: {err}",
            common::baton_exe().display()
        );
        return;
    }
    let args = ["--tls-cert", "credential:tls.crt", "--tls-key", "tls.key"];
    let env = [("CREDENTIALS_DIRECTORY", creds.as_path())];

    let (code, out, err) = baton_check(&args, &env, Some(NOBODY));
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(
        out.contains(&format!(
            "tls certificate {} and key {} match",
            cert.display(),
            key.display()
        )),
        "{out}"
    );

    let (code, _, err) = baton_check(&args, &env, None);
    assert_eq!(code, 0);
    assert_eq!(
        err,
        format!("baton: warning: tls key {}: mode 0440 and its ACL lets user nobody (uid 65534) read it (chmod 600, or pass it with LoadCredential=)\n", key.display())
    );

    // a key only root may read
    let private = top.path().join("root-only.key");
    std::fs::write(&private, &pki.key_pem).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = baton_check(
        &[
            "--tls-cert",
            path_str(&cert),
            "--tls-key",
            path_str(&private),
        ],
        &env,
        Some(NOBODY),
    );
    assert_eq!(code, 77, "{err}");
    assert_eq!(
        err,
        format!(
            "baton: tls key {}: cannot read: Permission denied (os error 13)\n",
            private.display()
        )
    );
}
