//! The handshake with real peers: a test CA, an intermediate and a leaf made here (rcgen),
//! loaded from PEM files by [`load`], served over loopback by [`handshake`], and a real rustls
//! client (tokio-rustls) that verifies the chain and speaks HTTP/2 or HTTP/1.1 through hyper, as
//! ALPN chose. Then the clients that must not hold a connection: one that sends nothing, one that
//! speaks plain HTTP, one that does not trust the chain.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::accept::HandshakeError;
use super::{handshake, load, TlsFiles};

/// The generous deadline for what should happen soon on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(20);

/// Root CA → intermediate → leaf for localhost; the files hold leaf + intermediate and the key.
struct Pki {
    _dir: tempfile::TempDir,
    files: TlsFiles,
    root: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
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
    let not_after = (2099, 1, 1);
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("baton test root");
    let root = root_params.self_signed(&root_key).unwrap();
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

    let (dir, cert) = crate::test_util::temp_path("fullchain.pem");
    let key = dir.path().join("privkey.pem");
    std::fs::write(&cert, format!("{}{}", leaf.pem(), mid.pem())).unwrap();
    write_private(&key, &leaf_key.serialize_pem());
    Pki {
        _dir: dir,
        files: TlsFiles { cert, key },
        root: root.der().clone(),
        leaf: leaf.der().clone(),
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

fn client_config(root: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// What the server saw of one connection.
#[derive(Debug)]
struct Served {
    h2: bool,
}

/// Accept one connection, hand-shake with `timeout`, serve HTTP on it (answering with the
/// request's HTTP version) and report the handshake's outcome.
async fn serve_one(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
) -> Result<Served, HandshakeError> {
    let (tcp, _) = listener.accept().await.unwrap();
    let accepted = handshake(tcp, config, timeout).await?;
    let h2 = accepted.h2;
    tokio::spawn(async move {
        let service =
            hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                    "{:?}",
                    req.version()
                )))))
            });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(accepted.stream), service)
            .await;
    });
    Ok(Served { h2 })
}

/// [`serve_one`] on a fresh listener with a 10 s handshake timeout: its address and the task.
async fn serving_one(
    config: Arc<rustls::ServerConfig>,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<Served, HandshakeError>>,
) {
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    (
        addr,
        tokio::spawn(serve_one(l, config, Duration::from_secs(10))),
    )
}

/// The served connection's handshake failed (within [`DEADLINE`]): the error.
async fn handshake_failed(
    server: tokio::task::JoinHandle<Result<Served, HandshakeError>>,
) -> HandshakeError {
    let outcome = tokio::time::timeout(DEADLINE, server)
        .await
        .unwrap()
        .unwrap();
    match outcome {
        Err(e @ HandshakeError::Failed(_)) => e,
        other => panic!("{other:?}"),
    }
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Connect with `alpn`, check the chain served, make one request; (ALPN chosen, response body).
async fn request(
    addr: std::net::SocketAddr,
    pki: &Pki,
    alpn: &[&[u8]],
) -> (Option<Vec<u8>>, String) {
    let connector = tokio_rustls::TlsConnector::from(client_config(&pki.root, alpn));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the client verifies the chain and completes the handshake");
    let (_, conn) = tls.get_ref();
    let chain = conn.peer_certificates().unwrap();
    assert_eq!(chain.len(), 2, "leaf and intermediate are served");
    assert_eq!(chain[0], pki.leaf, "the configured leaf is served");
    let alpn_chosen = conn.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    let req = Request::get("https://localhost/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = if alpn_chosen.as_deref() == Some(b"h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (alpn_chosen, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn alpn_chooses_h2_or_http11_and_each_serves() {
    let pki = pki();
    let config = load(&pki.files, super::Start::First).expect("the pair loads");

    for (offered, want_alpn, want_h2, want_version) in [
        (
            &[&b"h2"[..], b"http/1.1"][..],
            Some(&b"h2"[..]),
            true,
            "HTTP/2.0",
        ),
        (&[&b"h2"[..]][..], Some(&b"h2"[..]), true, "HTTP/2.0"),
        (
            &[&b"http/1.1"[..]][..],
            Some(&b"http/1.1"[..]),
            false,
            "HTTP/1.1",
        ),
        (&[][..], None, false, "HTTP/1.1"),
    ] {
        let l = listener().await;
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(serve_one(l, config.clone(), Duration::from_secs(10)));
        let (alpn, body) = request(addr, &pki, offered).await;
        let served = server.await.unwrap().expect("the handshake completes");
        let offered_text: Vec<_> = offered.iter().map(|p| String::from_utf8_lossy(p)).collect();
        println!(
            "client offered {offered_text:?}: ALPN {:?}, server h2={}, answered over {body}",
            alpn.as_deref().map(String::from_utf8_lossy),
            served.h2
        );
        assert_eq!(alpn.as_deref(), want_alpn, "offered {offered_text:?}");
        assert_eq!(served.h2, want_h2, "offered {offered_text:?}");
        assert_eq!(body, want_version, "offered {offered_text:?}");
    }
}

#[tokio::test]
async fn a_client_that_never_hands_shakes_is_dropped_at_the_timeout() {
    let pki = pki();
    let config = load(&pki.files, super::Start::First).unwrap();
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    let timeout = Duration::from_millis(300);
    let server = tokio::spawn(serve_one(l, config, timeout));
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let outcome = tokio::time::timeout(DEADLINE, server)
        .await
        .expect("the handshake gives up by itself")
        .unwrap();
    assert!(
        matches!(outcome, Err(HandshakeError::TimedOut(t)) if t == timeout),
        "{outcome:?}"
    );
    assert!(started.elapsed() >= timeout);
    // and the connection is closed: the client reads end of stream
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(DEADLINE, silent.read(&mut buf))
        .await
        .expect("closed, not left open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    println!(
        "silent client dropped after {:?} (timeout {timeout:?})",
        started.elapsed()
    );
}

#[tokio::test]
async fn plain_http_on_a_tls_listener_fails_the_handshake() {
    let pki = pki();
    let config = load(&pki.files, super::Start::First).unwrap();
    let (addr, server) = serving_one(config).await;
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    println!("{}", handshake_failed(server).await);
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_chain_is_refused() {
    let pki = pki();
    let other = self::pki(); // a different root
    let config = load(&pki.files, super::Start::First).unwrap();
    let (addr, server) = serving_one(config).await;
    let connector = tokio_rustls::TlsConnector::from(client_config(&other.root, &[b"h2"]));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(
        client.is_err(),
        "a client with another root must not connect"
    );
    handshake_failed(server).await;
}
