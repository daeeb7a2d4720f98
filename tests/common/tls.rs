//! TLS for the stories: a test CA that issues leaves (rcgen), installed as the files baton reads
//! the way certbot updates them (written aside, renamed over), and real TLS clients (rustls):
//! a blocking HTTP/1.1 client over TLS, with keep-alive, that tells which leaf it was served.

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SerialNumber};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::http::{self, HttpError, Response, REQUEST_TIMEOUT};

/// The name every test leaf is issued for (and every client asks for).
pub const SERVER_NAME: &str = "localhost";

/// A test certificate authority: the one certificate builder of the tests (roots,
/// intermediates, leaves with chosen validity).
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate (a client's root when it is one).
    pub root: CertificateDer<'static>,
    /// Its certificate, PEM (for `curl --cacert`, or after a leaf in a chain file).
    pub pem: String,
}

/// A leaf certificate and its key.
#[derive(Clone)]
pub struct Leaf {
    /// The serial number we gave it.
    pub serial: u64,
    /// The certificate, DER: what a client is served.
    pub der: CertificateDer<'static>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The key, PKCS#8 PEM.
    pub key_pem: String,
}

impl Ca {
    /// A root CA.
    pub fn new() -> Ca {
        Ca::named("baton test CA", None)
    }

    /// An intermediate CA issued by this one: its [`Ca::pem`] follows a leaf in a chain file.
    pub fn intermediate(&self, name: &str) -> Ca {
        Ca::named(name, Some(self))
    }

    fn named(name: &str, issuer: Option<&Ca>) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = match issuer {
            None => params.self_signed(&key),
            Some(ca) => params.signed_by(&key, &ca.issuer),
        }
        .expect("CA certificate");
        Ca {
            root: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for localhost and 127.0.0.1 with `serial`, valid 2020–2099.
    pub fn leaf(&self, serial: u64) -> Leaf {
        self.leaf_valid(serial, (2020, 1, 1), (2099, 1, 1))
    }

    /// A leaf valid from `not_before` to `not_after` (year, month, day).
    pub fn leaf_valid(
        &self,
        serial: u64,
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
    ) -> Leaf {
        self.leaf_with(serial, |params| {
            params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
            params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        })
    }

    /// A leaf whose validity begins `ahead` from now (to the second) and ends in 2099: what an
    /// issuer whose clock runs fast produces, or a certificate installed before its time.
    pub fn leaf_not_yet_valid(&self, serial: u64, ahead: std::time::Duration) -> Leaf {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970");
        let start = std::time::Duration::from_secs(now.as_secs()) + ahead;
        self.leaf_with(serial, |params| {
            params.not_before = rcgen::date_time_ymd(1970, 1, 1) + start;
            params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        })
    }

    fn leaf_with(&self, serial: u64, validity: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(vec![SERVER_NAME.to_owned(), "127.0.0.1".to_owned()])
                .expect("leaf params");
        params.serial_number = Some(SerialNumber::from(serial));
        validity(&mut params);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            serial,
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the root certificate to `path` (for `curl --cacert`).
    pub fn write_root(&self, path: &Path) {
        std::fs::write(path, &self.pem).expect("write the CA certificate");
    }

    /// A client configuration trusting this CA only, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root.clone()).expect("add the root");
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Leaf {
    /// Installs this pair as `cert` and `key` the way certbot renews: each file written aside
    /// (the key `0600`) and renamed over the old one, so a reader sees the old or the new file,
    /// never half of one.
    pub fn install(&self, cert: &Path, key: &Path) {
        write_atomically(cert, &self.cert_pem, 0o644);
        write_atomically(key, &self.key_pem, 0o600);
    }
}

/// Writes `text` to a fresh file beside `path` with `mode`, then renames it over `path`.
pub fn write_atomically(path: &Path, text: &str, mode: u32) {
    let tmp: PathBuf = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .expect("create the new file");
    f.write_all(text.as_bytes()).expect("write");
    drop(f);
    std::fs::rename(&tmp, path).expect("rename over");
}

/// A TLS stream over TCP.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Why a TLS connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP connect failed.
    Tcp(io::Error),
    /// The handshake failed (or timed out).
    Handshake(io::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Tcp(e) => write!(f, "connect: {e}"),
            ConnectError::Handshake(e) => write!(f, "TLS handshake: {e}"),
        }
    }
}

/// Connects to `addr` and completes the handshake (the chain is verified against the CA).
pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> Result<TlsStream, ConnectError> {
    let tcp = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(ConnectError::Tcp)?;
    handshake_on(tcp, config)
}

/// Completes a handshake on a TCP connection that is already open.
pub fn handshake_on(tcp: TcpStream, config: &Arc<ClientConfig>) -> Result<TlsStream, ConnectError> {
    tcp.set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(ConnectError::Tcp)?;
    tcp.set_write_timeout(Some(REQUEST_TIMEOUT))
        .map_err(ConnectError::Tcp)?;
    tcp.set_nodelay(true).map_err(ConnectError::Tcp)?;
    let name = ServerName::try_from(SERVER_NAME).expect("server name");
    let conn = ClientConnection::new(config.clone(), name)
        .map_err(|e| ConnectError::Handshake(io::Error::other(e)))?;
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(ConnectError::Handshake)?;
    }
    Ok(stream)
}

/// The leaf the server presented on this connection.
pub fn served_leaf(stream: &TlsStream) -> CertificateDer<'static> {
    stream
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server presented a certificate")
        .clone()
        .into_owned()
}

/// The ALPN protocol chosen on this connection.
pub fn alpn(stream: &TlsStream) -> Option<Vec<u8>> {
    stream.conn.alpn_protocol().map(<[u8]>::to_vec)
}

/// A fresh TLS connection: the leaf served and one GET with `Connection: close`.
pub fn get_fresh(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    path: &str,
) -> Result<(CertificateDer<'static>, Response), HttpError> {
    let mut stream =
        connect(addr, config).map_err(|e| HttpError::Connect(io::Error::other(e.to_string())))?;
    let leaf = served_leaf(&stream);
    stream
        .write_all(http::get_request(path, true).as_bytes())
        .map_err(HttpError::Write)?;
    let response = http::read_response(&mut BufReader::new(stream))?;
    Ok((leaf, response))
}

/// True if the server closed this idle connection (close_notify, FIN or reset) or sent
/// something unasked: reading through TLS without blocking, so that the session tickets a TLS
/// 1.3 server sends after the handshake are taken for what they are.
fn closed_while_idle(stream: &mut TlsStream) -> bool {
    if stream.sock.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let closed = match stream.read(&mut b) {
        Ok(_) => true, // end of stream, or unsolicited bytes
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    if stream.sock.set_nonblocking(false).is_err() {
        return true;
    }
    closed
}

/// A keep-alive HTTP/1.1 client over TLS: one connection reused until the server closes it.
/// A failed handshake is a failed request.
pub struct TlsClient {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    conn: Option<BufReader<TlsStream>>,
    /// Connections opened (handshakes completed).
    pub connects: u64,
    /// Idle connections found closed by the server and replaced before writing.
    pub replaced_idle: u64,
    /// The leaf served on the current (or last) connection.
    pub leaf: Option<CertificateDer<'static>>,
}

impl TlsClient {
    pub fn new(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsClient {
        TlsClient {
            addr,
            config,
            conn: None,
            connects: 0,
            replaced_idle: 0,
            leaf: None,
        }
    }

    /// GET on the kept-alive connection (opening one if needed).
    pub fn get(&mut self, path: &str) -> Result<Response, HttpError> {
        if let Some(c) = &mut self.conn {
            if closed_while_idle(c.get_mut()) {
                self.conn = None;
                self.replaced_idle += 1;
            }
        }
        if self.conn.is_none() {
            let stream = connect(self.addr, &self.config)
                .map_err(|e| HttpError::Connect(io::Error::other(e.to_string())))?;
            self.leaf = Some(served_leaf(&stream));
            self.conn = Some(BufReader::new(stream));
            self.connects += 1;
        }
        let conn = self.conn.as_mut().expect("connection");
        let result = conn
            .get_mut()
            .write_all(http::get_request(path, false).as_bytes())
            .map_err(HttpError::Write)
            .and_then(|_| http::read_response(conn));
        match &result {
            Ok(r) if !r.closes() => {}
            _ => self.conn = None,
        }
        result
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// True while a connection is open.
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }
}
