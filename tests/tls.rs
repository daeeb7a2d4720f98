//! Stories of TLS with the real binary and real clients (rustls, curl, h2load): serve https,
//! rotate the certificate with a reload while a connection opened before it keeps working,
//! refuse broken pairs on reload while the old process serves on, change a port's scheme with a
//! reload, TLS on a socket systemd passed with the name `https`, and a library program
//! configured by `BATON_TLS_*`. Then `baton check` on good, broken and doubtful pairs, run as
//! root and as a second user (nobody) reading its key from a credentials directory made the way
//! systemd makes it. (The handshake alone, in process with a rustls client: `src/tls`.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::tls::{self as tlsc, Ca, Leaf, TlsClient};
use common::{http, procs, Baton, Sandbox, DEADLINE};
use serde_json::json;

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

fn pki() -> Pki {
    pki_until((2099, 1, 1))
}

/// [`pki`] with a leaf valid until `not_after` (y, m, d).
fn pki_until(not_after: (i32, u8, u8)) -> Pki {
    let mid = Ca::new().intermediate("baton test intermediate");
    let leaf = mid.leaf_valid(1, (2020, 1, 1), not_after);
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("fullchain.pem");
    let key = dir.path().join("privkey.pem");
    std::fs::write(&cert, format!("{}{}", leaf.cert_pem, mid.pem)).unwrap();
    write_private(&key, &leaf.key_pem);
    Pki {
        _dir: dir,
        files: Files { cert, key },
        leaf_pem: leaf.cert_pem,
        mid_pem: mid.pem,
        key_pem: leaf.key_pem,
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

/// Where a story keeps the certificate and key baton reads.
fn cert_path(sb: &Sandbox) -> PathBuf {
    sb.path("fullchain.pem")
}

fn key_path(sb: &Sandbox) -> PathBuf {
    sb.path("privkey.pem")
}

/// The usual configuration with TLS: `listen`, the sandbox's certificate and key, `body`.
fn write_tls_config(sb: &Sandbox, listen: &[String], body: &str) {
    sb.write_config(&json!({
        "listen": listen,
        "handoff_socket": sb.handoff_socket(),
        "pid_file": sb.pid_file(),
        "response_body": body,
        "shutdown_timeout": "10s",
        "tls_cert": cert_path(sb),
        "tls_key": key_path(sb),
    }));
}

fn https(sb: &Sandbox) -> String {
    format!("https://{}", sb.listen())
}

/// Starts `baton --config` with TLS on the sandbox port and waits for READY=1.
fn start_tls(sb: &Sandbox, leaf: &Leaf, body: &str) -> Baton {
    leaf.install(&cert_path(sb), &key_path(sb));
    write_tls_config(sb, &[https(sb)], body);
    let b = sb.spawn(sb.serve(&[]));
    b.wait_ready(&sb.notify);
    b
}

/// curl over TLS, verifying with `ca` only: (exit code, body, the certificate details curl
/// printed with -v, the HTTP version it used).
fn curl(sb: &Sandbox, ca: &Ca, extra: &[&str]) -> (i32, String, String, String) {
    let ca_file = sb.path("ca.pem");
    ca.write_root(&ca_file);
    let port = sb.port;
    let out = common::output(
        Command::new("curl")
            .args(["-sS", "-v", "--max-time", "20", "--cacert"])
            .arg(&ca_file)
            .arg("--resolve")
            .arg(format!("localhost:{port}:127.0.0.1"))
            .args(["-w", "\n%{http_version}"])
            .args(extra)
            .arg(format!("https://localhost:{port}/")),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = stdout.rsplit_once('\n').unwrap_or((&stdout, ""));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let details: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            l.contains("expire date:") || l.contains("ALPN") || l.contains("SSL connection")
        })
        .collect();
    (
        out.status.code().unwrap_or(-1),
        body.to_owned(),
        details.join("\n"),
        version.to_owned(),
    )
}

/// Which of `leaves` a served certificate is (by its DER bytes: a full fingerprint).
fn which(served: &rustls::pki_types::CertificateDer<'_>, leaves: &[&Leaf]) -> String {
    leaves
        .iter()
        .find(|l| l.der.as_ref() == served.as_ref())
        .map(|l| format!("serial {}", l.serial))
        .unwrap_or_else(|| "an unknown certificate".into())
}

#[test]
fn serves_https_and_a_reload_rotates_the_certificate() {
    let sb = Sandbox::new();
    let ca = Ca::new();
    let (old, new) = (
        ca.leaf(0x1001),
        ca.leaf_valid(0x1002, (2021, 1, 1), (2098, 1, 1)),
    );
    let baton = start_tls(&sb, &old, "generation one");
    let client = ca.client_config(&[b"http/1.1"]);

    // A real client verifies the chain and is served the configured leaf.
    let (leaf, r) = tlsc::get_fresh(sb.addr(), &client, "/").expect("https request");
    assert_eq!((r.status, r.text().as_str()), (200, "generation one"));
    assert_eq!(which(&leaf, &[&old, &new]), "serial 4097");
    let (code, body, details, version) = curl(&sb, &ca, &[]);
    assert_eq!((code, body.as_str()), (0, "generation one"), "{details}");
    assert!(
        details.contains("expire date: Jan  1 00:00:00 2099 GMT"),
        "{details}"
    );
    println!("curl --cacert before the reload (HTTP/{version}):\n{details}");

    // A keep-alive client that keeps asking, every 20 ms, across the reload.
    let kept = {
        let client = client.clone();
        let addr = sb.addr();
        std::thread::spawn(move || {
            let mut kept = TlsClient::new(addr, client);
            let mut seen = Vec::new();
            let mut new_ones = 0;
            let started = std::time::Instant::now();
            while new_ones < 3 && started.elapsed() < DEADLINE {
                let r = kept.get("/").map_err(|e| e.to_string());
                let leaf = kept.leaf.clone();
                if matches!(&r, Ok(r) if r.text() == "generation two") {
                    new_ones += 1;
                }
                let failed = r.is_err();
                seen.push((r.map(|r| (r.text(), r.closes())), leaf, kept.connects));
                if failed {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (seen, kept.connects, kept.replaced_idle)
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    // Renewal: new files, new configuration, reload.
    new.install(&cert_path(&sb), &key_path(&sb));
    write_tls_config(&sb, &[https(&sb)], "generation two");
    let reload = common::reload(&sb.notify, baton.pid);
    let (seen, connects, replaced_idle) = kept.join().expect("the keep-alive client");

    // Every request was answered: on the first connection by the old process with the old
    // leaf, the last of them with Connection: close once it drained; then on a second
    // connection by the new process with the new leaf.
    let mut lines = Vec::new();
    for (result, leaf, connection) in &seen {
        let (body, closes) = result
            .as_ref()
            .unwrap_or_else(|e| panic!("keep-alive request failed: {e}; seen {lines:#?}"));
        let serial = which(leaf.as_ref().unwrap(), &[&old, &new]);
        lines.push(format!(
            "connection {connection}: {body:?} closes={closes} ({serial})"
        ));
        let want = if *connection == 1 {
            ("generation one", "serial 4097")
        } else {
            ("generation two", "serial 4098")
        };
        assert_eq!((body.as_str(), serial.as_str()), want, "{lines:#?}");
    }
    let last_old = seen.iter().rposition(|(_, _, c)| *c == 1).unwrap();
    assert!(
        seen[last_old].0.as_ref().unwrap().1,
        "the old process closed the connection with Connection: close, not under a request: {lines:#?}"
    );
    assert_eq!((connects, replaced_idle), (2, 0), "{lines:#?}");
    println!(
        "keep-alive client across the reload: {} requests on the old connection (last one with \
         Connection: close), then {} on a new one",
        last_old + 1,
        seen.len() - last_old - 1
    );

    // New connections get the new leaf.
    let (leaf, r) = tlsc::get_fresh(sb.addr(), &client, "/").expect("https request");
    assert_eq!(r.text(), "generation two");
    assert_eq!(which(&leaf, &[&old, &new]), "serial 4098");
    let (code, body, details, _) = curl(&sb, &ca, &[]);
    assert_eq!((code, body.as_str()), (0, "generation two"), "{details}");
    assert!(
        details.contains("expire date: Jan  1 00:00:00 2098 GMT"),
        "{details}"
    );
    println!("curl --cacert after the reload:\n{details}");
    assert!(
        common::try_wait_until(DEADLINE, || (!procs::is_alive(reload.old)).then_some(())).is_some(),
        "the old process retires"
    );
    println!(
        "rotation: {} served serial 4097, reload to {} in {:?}, new connections served serial 4098",
        reload.old,
        reload.new,
        reload.handoff_time()
    );
}

/// A connection the old process accepted but whose client has not sent its hello yet when the
/// reload happens: the drain counts it, so the old process waits, completes the handshake with
/// its own certificate and answers (with Connection: close) before it exits.
#[test]
fn a_connection_still_in_its_handshake_is_served_by_the_old_process() {
    let sb = Sandbox::new();
    let ca = Ca::new();
    let (old, new) = (ca.leaf(31), ca.leaf(32));
    let baton = start_tls(&sb, &old, "old");
    let tcp = std::net::TcpStream::connect(sb.addr()).expect("connect");
    let client_port = tcp.local_addr().unwrap().port();
    let owner = common::wait_until("the old process to accept", DEADLINE, || {
        procs::connection_owner(baton.pid, sb.port, client_port)
    });
    assert_eq!(owner, baton.pid);

    new.install(&cert_path(&sb), &key_path(&sb));
    write_tls_config(&sb, &[https(&sb)], "new");
    let r = common::reload(&sb.notify, baton.pid);
    // The old process drains, counting the connection in its handshake as open.
    common::wait_until(
        "the old process to drain one open connection",
        DEADLINE,
        || {
            baton
                .log()
                .lines()
                .any(|l| l.contains("retiring: draining") && l.contains("open=1"))
                .then_some(())
        },
    );
    assert!(
        procs::is_alive(r.old),
        "the old process waits for the connection in its handshake"
    );

    let mut stream = tlsc::handshake_on(tcp, &ca.client_config(&[b"http/1.1"]))
        .expect("the old process completes the handshake");
    assert_eq!(
        which(&tlsc::served_leaf(&stream), &[&old, &new]),
        "serial 31"
    );
    std::io::Write::write_all(&mut stream, http::get_request("/", false).as_bytes()).unwrap();
    let resp = http::read_response(&mut std::io::BufReader::new(stream)).expect("answered");
    assert_eq!(resp.text(), "old");
    assert!(resp.closes(), "{resp:?}");
    assert!(
        common::try_wait_until(DEADLINE, || (!procs::is_alive(r.old)).then_some(())).is_some(),
        "and then the old process retires"
    );
    let (leaf, resp) = tlsc::get_fresh(sb.addr(), &ca.client_config(&[b"http/1.1"]), "/").unwrap();
    assert_eq!(
        (which(&leaf, &[&new]).as_str(), resp.text().as_str()),
        ("serial 32", "new")
    );
}

#[test]
fn http2_over_tls_is_chosen_by_alpn() {
    let sb = Sandbox::new();
    let ca = Ca::new();
    let _baton = start_tls(&sb, &ca.leaf(7), "over h2");

    let (code, body, details, version) = curl(&sb, &ca, &["--http2"]);
    assert_eq!(
        (code, body.as_str(), version.as_str()),
        (0, "over h2", "2"),
        "{details}"
    );
    assert!(details.contains("ALPN: server accepted h2"), "{details}");
    let (code, body, details, version) = curl(&sb, &ca, &["--http1.1"]);
    assert_eq!(
        (code, body.as_str(), version.as_str()),
        (0, "over h2", "1.1"),
        "{details}"
    );
    assert!(
        details.contains("ALPN: server accepted http/1.1"),
        "{details}"
    );

    // rustls clients offering one protocol each
    for (offer, want) in [(&b"h2"[..], &b"h2"[..]), (b"http/1.1", b"http/1.1")] {
        let stream = tlsc::connect(sb.addr(), &ca.client_config(&[offer])).expect("handshake");
        assert_eq!(tlsc::alpn(&stream).as_deref(), Some(want));
    }

    // nghttp2's h2load over https: ALPN h2, every request answered.
    ensure_h2load();
    let out = common::output(
        Command::new("h2load")
            .args(["-n", "2000", "-c", "4", "-m", "10"])
            .arg(format!("https://{}/", sb.listen())),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(
        text.contains("requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed"),
        "{text}"
    );
    println!(
        "{}",
        text.lines()
            .filter(|l| l.starts_with("TLS Protocol")
                || l.starts_with("Cipher")
                || l.starts_with("Application protocol")
                || l.starts_with("requests:")
                || l.starts_with("finished in"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// h2load (Debian's nghttp2-client, installed by .ci/run) must be there.
fn ensure_h2load() {
    assert!(
        Path::new("/usr/bin/h2load").exists(),
        "h2load is needed: apt-get install nghttp2-client (.ci/run installs it)"
    );
}

/// `baton reload` against the sandbox's configuration: (exit code, stdout + stderr).
fn baton_reload(sb: &Sandbox, pid: i32) -> (i32, String) {
    let out = common::output(
        sb.baton()
            .args(["reload", "--pid", &pid.to_string(), "--config"])
            .arg(sb.config_path()),
    );
    (out.status.code().unwrap_or(-1), common::text_of(&out))
}

#[test]
fn a_reload_with_a_bad_pair_fails_visibly_and_the_old_process_serves_on() {
    let sb = Sandbox::new();
    let ca = Ca::new();
    let good = ca.leaf(1);
    let baton = start_tls(&sb, &good, "still here");
    let client = ca.client_config(&[b"http/1.1"]);
    let (cert, key) = (cert_path(&sb), key_path(&sb));
    let other = ca.leaf(2);
    let expired = ca.leaf_valid(3, (2019, 1, 1), (2021, 6, 1));
    let check = |sb: &Sandbox| {
        let out = common::output(sb.baton().args(["check", "--config"]).arg(sb.config_path()));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    type Breaker<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Breaker, String, i32)> = vec![
        (
            "broken key",
            Box::new(|| tlsc::write_atomically(&key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 0o600)),
            format!("tls key {}: unsupported key", key.display()),
            78,
        ),
        (
            "mismatched pair",
            Box::new(|| tlsc::write_atomically(&key, &other.key_pem, 0o600)),
            format!("tls key {} does not match the leaf certificate in {}", key.display(), cert.display()),
            78,
        ),
        (
            "missing file",
            Box::new(|| std::fs::remove_file(&cert).unwrap()),
            format!("tls certificate {}: no such file", cert.display()),
            78,
        ),
        (
            "expired leaf",
            Box::new(|| expired.install(&cert, &key)),
            format!("tls certificate {}: the leaf expired 2021-06-01 00:00:00 UTC; the running process keeps its certificate", cert.display()),
            0,
        ),
    ];
    for (what, break_it, problem, check_code) in &cases {
        good.install(&cert, &key);
        break_it();
        // SIGHUP (systemctl reload with ExecReload=kill): systemd hears the failure ...
        let status = common::reload_expect_failure(&sb.notify, baton.pid);
        assert!(status.contains(problem.as_str()), "{what}: {status}");
        // ... and `baton reload` (the packaged ExecReload=) exits 1 naming it. Its answer is
        // written before the old process tells systemd (`READY=1` + `STATUS=reload failed: …`),
        // so that is waited for: the next case's SIGHUP must not read it as its own.
        let from = sb.notify.len();
        let (code, out) = baton_reload(&sb, baton.pid);
        assert_eq!(code, 1, "{what}: {out}");
        assert!(out.contains(problem.as_str()), "{what}: {out}");
        sb.notify.wait_for_after(
            from,
            DEADLINE,
            "READY=1 + STATUS=reload failed after baton reload",
            |n| {
                n.pid == baton.pid
                    && n.has("READY=1")
                    && n.get("STATUS").is_some_and(|st| {
                        st.starts_with("reload failed: ") && st.contains(problem.as_str())
                    })
            },
        );
        // The old process serves on, with its certificate.
        let (leaf, r) = tlsc::get_fresh(sb.addr(), &client, "/").expect("the old process serves");
        assert_eq!(r.text(), "still here");
        assert_eq!(which(&leaf, &[&good]), "serial 1", "{what}");
        // `baton check` says the same before any reload (an expired leaf: a warning).
        let (code, err) = check(&sb);
        assert_eq!(code, *check_code, "{what}: {err}");
        if *check_code == 0 {
            assert!(
                err.contains("warning: tls certificate") && err.contains("the leaf expired"),
                "{what}: {err}"
            );
        } else {
            let first = problem.split(';').next().unwrap();
            assert!(err.contains(first), "{what}: {err}");
        }
        println!("{what}: {status}");
    }
    // Fixed: the next reload works and serves the new leaf.
    let fixed = ca.leaf(4);
    fixed.install(&cert, &key);
    let r = common::reload(&sb.notify, baton.pid);
    let (leaf, _) = tlsc::get_fresh(sb.addr(), &client, "/").expect("after the fix");
    assert_eq!(which(&leaf, &[&fixed]), "serial 4");
    assert!(procs::is_alive(r.new));
}

#[test]
fn an_expired_leaf_is_served_at_a_first_start_with_a_warning() {
    let sb = Sandbox::new();
    let ca = Ca::new();
    let expired = ca.leaf_valid(9, (2019, 1, 1), (2021, 6, 1));
    let baton = start_tls(&sb, &expired, "late");
    // A client that checks dates refuses it; the server did its part and said so.
    let insecure = tlsc::connect(sb.addr(), &ca.client_config(&[b"http/1.1"]));
    assert!(insecure.is_err(), "an expired leaf does not verify");
    let log = common::wait_until("the expiry warning", DEADLINE, || {
        let log = baton.log();
        log.contains("the leaf expired 2021-06-01").then_some(log)
    });
    assert!(log.contains("WARN"), "{log}");
}

#[test]
fn a_reload_can_turn_a_plain_port_into_tls_and_back() {
    let sb = Sandbox::new();
    let ca = Ca::new();
    let leaf = ca.leaf(5);
    leaf.install(&cert_path(&sb), &key_path(&sb));
    let plain = sb.listen();
    write_tls_config(&sb, std::slice::from_ref(&plain), "plain");
    let baton = sb.spawn(sb.serve(&[]));
    baton.wait_ready(&sb.notify);
    assert_eq!(http::get_fresh(sb.addr(), "/").unwrap().text(), "plain");
    let inode = procs::listening_inodes_on_port(sb.port);

    write_tls_config(&sb, &[https(&sb)], "tls");
    let r = common::reload(&sb.notify, baton.pid);
    let client = ca.client_config(&[b"http/1.1"]);
    let (_, resp) = tlsc::get_fresh(sb.addr(), &client, "/").expect("TLS after the reload");
    assert_eq!(resp.text(), "tls");
    assert!(
        http::get_fresh(sb.addr(), "/").is_err(),
        "plain HTTP is refused now"
    );
    assert_eq!(
        procs::listening_inodes_on_port(sb.port),
        inode,
        "the same socket"
    );

    write_tls_config(&sb, std::slice::from_ref(&plain), "plain again");
    common::reload(&sb.notify, r.new);
    assert_eq!(
        http::get_fresh(sb.addr(), "/").unwrap().text(),
        "plain again"
    );
    assert_eq!(
        procs::listening_inodes_on_port(sb.port),
        inode,
        "the same socket"
    );
}

/// systemd's activator with `--fdname=NAME` and baton (configured by `config`) as its command.
fn activate(sb: &Sandbox, name: &str, config: serde_json::Value) -> Baton {
    sb.write_config(&config);
    let activator = sb.spawn(sb.socket_activate(name));
    let pid = activator.pid;
    common::wait_until("the activator to listen", DEADLINE, || {
        (procs::listening_tcp_of(pid).len() == 1).then_some(())
    });
    activator
}

#[test]
fn a_socket_systemd_names_https_serves_tls_in_every_generation() {
    let sb = Sandbox::new();
    let ca = Ca::new();
    let (first, second) = (ca.leaf(11), ca.leaf(12));
    first.install(&cert_path(&sb), &key_path(&sb));
    let config = json!({
        "handoff_socket": sb.handoff_socket(),
        "pid_file": sb.pid_file(),
        "response_body": "activated",
        "tls_cert": cert_path(&sb),
        "tls_key": key_path(&sb),
    });
    let baton = activate(&sb, "https", config);
    let client = ca.client_config(&[b"h2", b"http/1.1"]);
    // The first connection starts baton, which answers it over TLS.
    let (leaf, r) = tlsc::get_fresh(sb.addr(), &client, "/")
        .unwrap_or_else(|e| panic!("first request: {e}\n{}", baton.log()));
    assert_eq!(r.text(), "activated");
    assert_eq!(which(&leaf, &[&first]), "serial 11");
    second.install(&cert_path(&sb), &key_path(&sb));
    let r = common::reload(&sb.notify, baton.pid);
    let (leaf, _) = tlsc::get_fresh(sb.addr(), &client, "/").expect("after the reload");
    assert_eq!(
        which(&leaf, &[&second]),
        "serial 12",
        "the name travels with the socket"
    );
    assert!(procs::is_alive(r.new));
}

#[test]
fn a_socket_named_https_without_a_certificate_is_refused() {
    let sb = Sandbox::new();
    let config = json!({
        "handoff_socket": sb.handoff_socket(),
        "pid_file": sb.pid_file(),
    });
    let mut baton = activate(&sb, "https", config);
    let _ = std::net::TcpStream::connect(sb.addr()); // starts baton
    let st = baton.wait_exit(DEADLINE);
    let log = baton.log();
    assert_eq!(st.code(), Some(78), "{log}");
    assert!(
        log.contains("LISTEN_FDNAMES: https: 127.0.0.1:")
            && log.contains("(socket named https) serves TLS but no certificate is configured"),
        "{log}"
    );
}

#[test]
fn a_library_program_takes_tls_from_its_environment() {
    let sb = Sandbox::new();
    let ca = Ca::new();
    let (first, second) = (ca.leaf(21), ca.leaf(22));
    first.install(&cert_path(&sb), &key_path(&sb));
    let (cert, key) = (cert_path(&sb), key_path(&sb));
    let listen = https(&sb);
    let cmd = sb.app(
        "axum",
        &[
            ("BATON_LISTEN", listen.as_str()),
            ("BATON_TLS_CERT", cert.to_str().unwrap()),
            ("BATON_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    let app = sb.spawn(cmd);
    app.wait_ready(&sb.notify);
    let client = ca.client_config(&[b"h2", b"http/1.1"]);
    let (leaf, r) = tlsc::get_fresh(sb.addr(), &client, "/").expect("https from the library");
    assert_eq!(r.status, 200);
    assert_eq!(which(&leaf, &[&first]), "serial 21");
    second.install(&cert, &key);
    common::reload(&sb.notify, app.pid);
    let (leaf, _) = tlsc::get_fresh(sb.addr(), &client, "/").expect("after the reload");
    assert_eq!(which(&leaf, &[&second]), "serial 22");
}

/// `baton check ARGS` (the real binary) with a clean environment plus `env`, as `uid` when given.
/// `baton check` with `args` and `env`, as root, or as `user`: a uid and a copy of the binary
/// that uid can reach (the checkout may sit below a directory only root may enter).
fn baton_check(
    args: &[&str],
    env: &[(&str, &Path)],
    user: Option<(u32, &Path)>,
) -> (i32, String, String) {
    use std::os::unix::process::CommandExt;
    let exe = user.map_or_else(common::baton_exe, |(_, exe)| exe.to_path_buf());
    let mut cmd = std::process::Command::new(exe);
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
    if let Some((uid, _)) = user {
        cmd.uid(uid).gid(uid); // as root, std also drops the supplementary groups
    }
    let out = common::output(&mut cmd);
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
        format!("baton: tls certificate {cert} and key {key} match: localhost, 127.0.0.1 (2 in the chain), valid until 2099-01-01 00:00:00 UTC")
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
    let port = common::ports::reserve();
    let https = format!("https://127.0.0.1:{}", port.port);
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
    if !common::prereq::root("acting as a second user (nobody)") {
        return;
    }
    let pki = pki();
    let top = tempfile::tempdir().unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = top.path().join("baton");
    common::link_or_copy(&common::baton_exe(), &exe);
    let nobody = Some((NOBODY, exe.as_path()));
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
        common::prereq::missing("ACLs on the temporary directory's file system");
        return;
    }
    let (code, _, err) = baton_check(&[], &[], nobody);
    if code != 0 {
        common::prereq::missing(&format!("nobody cannot run {}: {err}", exe.display()));
        return;
    }
    let args = ["--tls-cert", "credential:tls.crt", "--tls-key", "tls.key"];
    let env = [("CREDENTIALS_DIRECTORY", creds.as_path())];

    let (code, out, err) = baton_check(&args, &env, nobody);
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
        nobody,
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
