//! A tiny HTTP/1.1 client over `std::net::TcpStream`, strict about what counts as a failure.
//!
//! * A keep-alive connection the server closed while idle, noticed *before* a request is written,
//!   is simply replaced (that is the normal end of a keep-alive connection) — except by a
//!   [`Client::strict`] one, which behaves as Python's `http.client` and most HTTP libraries do:
//!   it reuses the connection it holds, and only a `Connection: close` from the server ends it,
//!   so a server that closes an idle connection unannounced shows up as a failed request.
//! * A request that was written and then met a reset or EOF before a complete response is a
//!   FAILED request: that is what a client of a restarting server must never see.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long a request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A parsed response.
#[derive(Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The server announced it closes the connection after this response.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .map(|v| v.to_ascii_lowercase().contains("close"))
            .unwrap_or(false)
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} body={:?}",
            self.status,
            self.headers,
            self.text()
        )
    }
}

/// Why a request failed.
#[derive(Debug)]
pub enum HttpError {
    /// Could not connect at all.
    Connect(io::Error),
    /// The request could not be written.
    Write(io::Error),
    /// The request was written but the connection was reset, hit EOF, or timed out before a
    /// complete response.
    Read(String),
    /// The response was not HTTP/1.x as expected.
    Malformed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "connect: {e}"),
            HttpError::Write(e) => write!(f, "write: {e}"),
            HttpError::Read(e) => write!(f, "read: {e}"),
            HttpError::Malformed(e) => write!(f, "malformed: {e}"),
        }
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream, HttpError> {
    let s = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(HttpError::Connect)?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(HttpError::Connect)?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))
        .map_err(HttpError::Connect)?;
    s.set_nodelay(true).map_err(HttpError::Connect)?;
    Ok(s)
}

/// The request bytes for a GET.
pub fn get_request(path: &str, close: bool) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: baton.test\r\nUser-Agent: baton-tests\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    )
}

/// Reads one response from `r`.
pub fn read_response(r: &mut impl BufRead) -> Result<Response, HttpError> {
    let mut line = String::new();
    let n = r
        .read_line(&mut line)
        .map_err(|e| HttpError::Read(format!("status line: {e}")))?;
    if n == 0 {
        return Err(HttpError::Read("EOF before any response byte".into()));
    }
    if !line.ends_with('\n') {
        return Err(HttpError::Read(format!(
            "EOF inside the status line {line:?}"
        )));
    }
    let mut parts = line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!("status line {line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Malformed(format!("status line {line:?}")))?;
    let mut headers = Vec::new();
    let mut head_len = line.len();
    loop {
        let mut h = String::new();
        let n = r
            .read_line(&mut h)
            .map_err(|e| HttpError::Read(format!("headers: {e}")))?;
        if n == 0 || !h.ends_with('\n') {
            return Err(HttpError::Read("EOF inside the headers".into()));
        }
        head_len += n;
        if head_len > 64 * 1024 {
            return Err(HttpError::Malformed("response head over 64 KiB".into()));
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| HttpError::Malformed(format!("header line {h:?}")))?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let chunked = resp
        .header("transfer-encoding")
        .map(|v| v.eq_ignore_ascii_case("chunked"))
        .unwrap_or(false);
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)
                .map_err(|e| HttpError::Read(format!("chunk size: {e}")))?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| HttpError::Malformed(format!("chunk size {size:?}")))?;
            if size == 0 {
                // trailers until the empty line
                loop {
                    let mut t = String::new();
                    let n = r
                        .read_line(&mut t)
                        .map_err(|e| HttpError::Read(format!("trailer: {e}")))?;
                    if n == 0 || t.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = resp.body.len();
            resp.body.resize(start + size, 0);
            r.read_exact(&mut resp.body[start..])
                .map_err(|e| HttpError::Read(format!("chunk: {e}")))?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)
                .map_err(|e| HttpError::Read(format!("chunk end: {e}")))?;
        }
    } else if let Some(len) = resp.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| HttpError::Malformed(format!("content-length {len:?}")))?;
        resp.body.resize(len, 0);
        r.read_exact(&mut resp.body)
            .map_err(|e| HttpError::Read(format!("body: {e}")))?;
    } else if status >= 200 && status != 204 && status != 304 {
        r.read_to_end(&mut resp.body)
            .map_err(|e| HttpError::Read(format!("body to EOF: {e}")))?;
    }
    Ok(resp)
}

/// True if the server has closed (or reset) this idle connection: nothing was written on it yet
/// for the next request, so replacing it loses nothing.
fn closed_while_idle(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let closed = match s.peek(&mut b) {
        Ok(0) => true,
        // Unsolicited bytes on an idle connection (e.g. a 408): the connection is unusable.
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    if s.set_nonblocking(false).is_err() {
        return true;
    }
    closed
}

/// A keep-alive client: one connection reused until the server closes it.
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    /// Connections opened.
    pub connects: u64,
    /// Idle connections found closed by the server and replaced before writing.
    pub replaced_idle: u64,
    /// Never replace an idle connection the server closed: write on it and fail.
    strict: bool,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            conn: None,
            connects: 0,
            replaced_idle: 0,
            strict: false,
        }
    }

    /// A client that leaves a connection only after the server's `Connection: close`: a
    /// connection closed while idle without one is a failed request (`RemoteDisconnected` in
    /// Python), never silently replaced.
    pub fn strict(addr: SocketAddr) -> Client {
        Client {
            strict: true,
            ..Client::new(addr)
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// GET on the kept-alive connection (opening one if needed).
    pub fn get(&mut self, path: &str) -> Result<Response, HttpError> {
        if let Some(c) = self.conn.as_ref().filter(|_| !self.strict) {
            if closed_while_idle(c.get_ref()) {
                self.conn = None;
                self.replaced_idle += 1;
            }
        }
        if self.conn.is_none() {
            self.conn = Some(BufReader::new(connect(self.addr)?));
            self.connects += 1;
        }
        let conn = self.conn.as_mut().expect("connection");
        let result = conn
            .get_mut()
            .write_all(get_request(path, false).as_bytes())
            .map_err(HttpError::Write)
            .and_then(|_| read_response(conn));
        match &result {
            Ok(r) if !r.closes() => {}
            _ => self.conn = None,
        }
        result
    }
}

/// GET on a fresh connection with `Connection: close`.
pub fn get_fresh(addr: SocketAddr, path: &str) -> Result<Response, HttpError> {
    let mut s = connect(addr)?;
    s.write_all(get_request(path, true).as_bytes())
        .map_err(HttpError::Write)?;
    read_response(&mut BufReader::new(s))
}

/// A raw connection for clients that misbehave on purpose (slow senders).
pub struct RawConn {
    pub stream: TcpStream,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> RawConn {
        RawConn {
            stream: connect(addr).expect("connect"),
        }
    }

    /// Writes bytes now.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads a complete response.
    pub fn response(&mut self) -> Result<Response, HttpError> {
        read_response(&mut BufReader::new(&mut self.stream))
    }
}
