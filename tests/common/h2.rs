//! HTTP/2 clients for the stories: h2c with prior knowledge, or over TLS with ALPN `h2`.
//!
//! * [`H2Load`]: hyper's HTTP/2 client under multiplexed load, behaving as RFC 9113 asks of a
//!   client: a connection that got GOAWAY takes no new stream, the client reconnects, and a
//!   request the server did not process — refused with `REFUSED_STREAM`, above the last stream
//!   id of a GOAWAY, or never sent because the connection was closing — is sent again. Anything
//!   else (a reset or a close after the server accepted the stream, a wrong body, a refused
//!   connection) is a FAILED request.
//! * [`RawH2`]: one connection driven frame by frame (preface, SETTINGS, one GET), that records
//!   every frame the server sends: to see GOAWAY, PING and the close on the wire.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::http::Response;
use super::load::{Check, Tally};

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Counters {
    tally: Tally,
    /// Never sent: the connection was already closing (GOAWAY received).
    retried_unsent: AtomicU64,
    /// Sent, and refused by the server with `REFUSED_STREAM`.
    retried_refused: AtomicU64,
    /// Sent, and above the last stream id of the server's final GOAWAY (not processed).
    retried_above_goaway: AtomicU64,
    connections: AtomicU64,
}

/// What an [`H2Load`] run saw.
#[derive(Debug, Clone)]
pub struct H2Report {
    pub ok: u64,
    pub failed: u64,
    pub retried_unsent: u64,
    pub retried_refused: u64,
    pub retried_above_goaway: u64,
    pub connections: u64,
    pub errors: Vec<String>,
    pub bodies: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl H2Report {
    /// Panics unless every request succeeded and there were some.
    pub fn assert_no_failures(&self) {
        assert!(self.ok > 0, "no successful HTTP/2 request: {self:?}");
        assert_eq!(self.failed, 0, "failed HTTP/2 requests: {:#?}", self.errors);
    }

    /// After `reloads` reloads: every request succeeded, and each reload moved the clients to
    /// new connections. Returns the line to print (only figures asserted here; the requests
    /// sent again are in the Debug output of a failure).
    pub fn assert_across_reloads(&self, reloads: usize) -> String {
        self.assert_no_failures();
        assert!(
            self.connections > reloads as u64,
            "each reload must move the clients to new connections: {self:?}"
        );
        format!(
            "{reloads} reloads: {} requests ok, {} failed, on {} connections",
            self.ok, self.failed, self.connections
        )
    }
}

/// `connections` HTTP/2 connections with `streams` concurrent streams each, every response
/// checked; stop with [`H2Load::stop`].
pub struct H2Load {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
    started: Instant,
}

/// How a request ended.
enum Outcome {
    Ok,
    /// Not processed by the server: send it again, on a connection that is not closing.
    Retry,
    Failed,
}

/// A running HTTP/2 load's answers so far are its [`Tally`] (`ok()`, `failed()`, `wait_more_ok(..)`).
impl std::ops::Deref for H2Load {
    type Target = Tally;
    fn deref(&self) -> &Tally {
        &self.counters.tally
    }
}

impl H2Load {
    /// After reload number `reload`: 200 more requests succeed, and none has failed.
    pub fn wait_after_reload(&self, reload: usize) {
        self.wait_more_ok(200, super::DEADLINE);
        assert_eq!(
            self.failed(),
            0,
            "failed HTTP/2 requests after reload {reload}"
        );
    }

    pub fn start(addr: SocketAddr, connections: usize, streams: usize, check: Check) -> H2Load {
        H2Load::start_with(Target { addr, tls: None }, connections, streams, check)
    }

    /// [`H2Load::start`] over TLS: each connection is a handshake with `config` (which must
    /// offer ALPN `h2`); a failed handshake is a failed request.
    pub fn start_tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        connections: usize,
        streams: usize,
        check: Check,
    ) -> H2Load {
        let target = Target {
            addr,
            tls: Some(config),
        };
        H2Load::start_with(target, connections, streams, check)
    }

    fn start_with(target: Target, connections: usize, streams: usize, check: Check) -> H2Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (s, c) = (stop.clone(), counters.clone());
        let thread = thread::Builder::new()
            .name("h2load".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let mut slots = Vec::new();
                    for _ in 0..connections {
                        slots.push(tokio::spawn(slot(
                            target.clone(),
                            streams,
                            s.clone(),
                            c.clone(),
                            check.clone(),
                        )));
                    }
                    for s in slots {
                        let _ = s.await;
                    }
                });
            })
            .expect("h2load thread");
        H2Load {
            stop,
            counters,
            thread: Some(thread),
            started: Instant::now(),
        }
    }

    /// Stops sending new requests, lets every request owed (refused, to be sent again) finish,
    /// and reports.
    pub fn stop(mut self) -> H2Report {
        self.finish()
    }

    fn finish(&mut self) -> H2Report {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let c = &self.counters;
        H2Report {
            ok: c.tally.ok(),
            failed: c.tally.failed(),
            retried_unsent: c.retried_unsent.load(Ordering::Relaxed),
            retried_refused: c.retried_refused.load(Ordering::Relaxed),
            retried_above_goaway: c.retried_above_goaway.load(Ordering::Relaxed),
            connections: c.connections.load(Ordering::Relaxed),
            errors: c.tally.errors(),
            bodies: c.tally.bodies(),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for H2Load {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.finish();
        }
    }
}

/// One connection after another; `streams` workers multiplexed on each.
/// Where the load goes, and how.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    fn uri(&self) -> String {
        match self.tls {
            None => format!("http://{}/", self.addr),
            Some(_) => format!("https://{}:{}/", super::tls::SERVER_NAME, self.addr.port()),
        }
    }
}

async fn slot(
    target: Target,
    streams: usize,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    check: Check,
) {
    // Per worker: does it owe a request the server did not process?
    let mut owed = vec![false; streams];
    loop {
        if stop.load(Ordering::SeqCst) && !owed.iter().any(|o| *o) {
            return;
        }
        let sender = match connect(&target).await {
            Ok(s) => s,
            Err(why) => {
                counters.tally.fail(format!("connect/handshake: {why}"));
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let mut workers = Vec::new();
        for owes in owed.iter() {
            workers.push(tokio::spawn(worker(
                target.uri(),
                sender.clone(),
                *owes,
                stop.clone(),
                counters.clone(),
                check.clone(),
            )));
        }
        drop(sender);
        for (i, w) in workers.into_iter().enumerate() {
            owed[i] = w.await.unwrap_or(false);
        }
    }
}

async fn connect(target: &Target) -> Result<SendRequest<Empty<Bytes>>, String> {
    let tcp = tokio::net::TcpStream::connect(target.addr)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let Some(config) = &target.tls else {
        return h2_handshake(tcp).await;
    };
    let name = rustls::pki_types::ServerName::try_from(super::tls::SERVER_NAME)
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    if alpn.as_deref() != Some(b"h2") {
        return Err(format!(
            "ALPN chose {:?}, not h2",
            alpn.map(|p| String::from_utf8_lossy(&p).into_owned())
        ));
    }
    h2_handshake(tls).await
}

async fn h2_handshake<I>(io: I) -> Result<SendRequest<Empty<Bytes>>, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends requests on one connection until it closes; returns whether a request is owed.
async fn worker(
    uri: String,
    mut sender: SendRequest<Empty<Bytes>>,
    mut owes: bool,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    check: Check,
) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) && !owes {
            return false;
        }
        // A connection that got GOAWAY (or closed) takes no new stream: reconnect.
        if sender.ready().await.is_err() {
            return owes;
        }
        let req = Request::get(uri.as_str())
            .body(Empty::new())
            .expect("request");
        let outcome = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            request(&mut sender, req, &counters, &check),
        )
        .await
        {
            Ok(o) => o,
            Err(_) => {
                counters
                    .tally
                    .fail(format!("no complete answer within {REQUEST_TIMEOUT:?}"));
                Outcome::Failed
            }
        };
        owes = matches!(outcome, Outcome::Retry);
    }
}

async fn request(
    sender: &mut SendRequest<Empty<Bytes>>,
    req: Request<Empty<Bytes>>,
    counters: &Counters,
    check: &Check,
) -> Outcome {
    let res = match sender.try_send_request(req).await {
        Ok(res) => res,
        Err(mut e) => {
            if e.take_message().is_some() {
                counters.retried_unsent.fetch_add(1, Ordering::Relaxed);
                return Outcome::Retry;
            }
            let err = e.into_error();
            match not_processed(&err) {
                Some(NotProcessed::Refused) => {
                    counters.retried_refused.fetch_add(1, Ordering::Relaxed);
                    return Outcome::Retry;
                }
                Some(NotProcessed::AboveLastStreamId) => {
                    counters
                        .retried_above_goaway
                        .fetch_add(1, Ordering::Relaxed);
                    return Outcome::Retry;
                }
                None => {}
            }
            counters.tally.fail(format!("request: {err} ({err:?})"));
            return Outcome::Failed;
        }
    };
    let (parts, body) = res.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(err) => {
            // The server answered the head: it processed the stream, so losing the body is a
            // failure whatever the reason.
            counters.tally.fail(format!("body: {err} ({err:?})"));
            return Outcome::Failed;
        }
    };
    let response = Response {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: body.to_vec(),
    };
    match check(&response) {
        Ok(()) => {
            counters.tally.pass(response.text());
            Outcome::Ok
        }
        Err(why) => {
            counters.tally.fail(why);
            Outcome::Failed
        }
    }
}

enum NotProcessed {
    Refused,
    AboveLastStreamId,
}

/// RFC 9113 §8.7: a stream refused with `REFUSED_STREAM`, or above the last stream id of a
/// GOAWAY (h2 reports those, and only those, as a GOAWAY error from the remote), was not
/// processed.
fn not_processed(err: &hyper::Error) -> Option<NotProcessed> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(h2e) = e.downcast_ref::<h2::Error>() {
            if h2e.reason() == Some(h2::Reason::REFUSED_STREAM) {
                return Some(NotProcessed::Refused);
            }
            if h2e.is_go_away() && h2e.is_remote() {
                return Some(NotProcessed::AboveLastStreamId);
            }
            return None;
        }
        source = e.source();
    }
    None
}

// ---------------------------------------------------------------------------------------------

pub const FRAME_DATA: u8 = 0;
pub const FRAME_HEADERS: u8 = 1;
pub const FRAME_RST_STREAM: u8 = 3;
pub const FRAME_SETTINGS: u8 = 4;
pub const FRAME_PING: u8 = 6;
pub const FRAME_GOAWAY: u8 = 7;
pub const FLAG_ACK: u8 = 1;
pub const FLAG_END_STREAM: u8 = 1;

/// One frame as it came off the wire.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
    /// When it was read.
    pub at: Instant,
}

impl Frame {
    /// A GOAWAY's last stream id.
    pub fn last_stream_id(&self) -> Option<u32> {
        (self.kind == FRAME_GOAWAY && self.payload.len() >= 8).then(|| {
            u32::from_be_bytes([
                self.payload[0],
                self.payload[1],
                self.payload[2],
                self.payload[3],
            ]) & 0x7fff_ffff
        })
    }

    /// A GOAWAY's or RST_STREAM's error code.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            FRAME_GOAWAY => 4,
            FRAME_RST_STREAM => 0,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn describe(&self) -> String {
        match self.kind {
            FRAME_GOAWAY => format!(
                "GOAWAY(last={:?}, error={:?})",
                self.last_stream_id(),
                self.error_code()
            ),
            FRAME_PING if self.flags & FLAG_ACK != 0 => "PING(ack)".into(),
            FRAME_PING => "PING".into(),
            FRAME_SETTINGS if self.flags & FLAG_ACK != 0 => "SETTINGS(ack)".into(),
            FRAME_SETTINGS => "SETTINGS".into(),
            FRAME_HEADERS => format!("HEADERS(stream {})", self.stream),
            FRAME_DATA => format!(
                "DATA(stream {}, {} bytes{})",
                self.stream,
                self.payload.len(),
                if self.flags & FLAG_END_STREAM != 0 {
                    ", end"
                } else {
                    ""
                }
            ),
            FRAME_RST_STREAM => format!(
                "RST_STREAM(stream {}, error={:?})",
                self.stream,
                self.error_code()
            ),
            k => format!("frame type {k}"),
        }
    }
}

/// An h2c connection driven frame by frame.
pub struct RawH2 {
    pub stream: TcpStream,
    /// Every frame read so far.
    pub frames: Vec<Frame>,
    /// Answer the server's PINGs (a live peer does; a dead one does not).
    pub ack_pings: bool,
    /// The server closed the connection (EOF or reset).
    pub closed: Option<(Instant, String)>,
}

impl RawH2 {
    /// Connects and sends the preface and an empty SETTINGS frame.
    pub fn connect(addr: SocketAddr) -> io::Result<RawH2> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")?;
        write_frame(&mut stream, FRAME_SETTINGS, 0, 0, &[])?;
        Ok(RawH2 {
            stream,
            frames: Vec::new(),
            ack_pings: true,
            closed: None,
        })
    }

    /// Sends `GET <path>` (END_STREAM) on stream `id` (odd).
    pub fn get(&mut self, id: u32, authority: &str, path: &str) -> io::Result<()> {
        // HPACK: :method GET (static 2), :scheme http (static 6), then :path and :authority as
        // literals without indexing, with indexed names (static 4 and 1), no Huffman coding.
        let mut block = vec![0x82, 0x86];
        for (index, value) in [(4u8, path), (1u8, authority)] {
            assert!(value.len() < 127, "header value too long for this encoder");
            block.push(index);
            block.push(value.len() as u8);
            block.extend_from_slice(value.as_bytes());
        }
        // END_STREAM | END_HEADERS
        write_frame(&mut self.stream, FRAME_HEADERS, 0x5, id, &block)
    }

    /// Reads frames until `until` returns true for one, EOF, or `timeout`. Answers SETTINGS
    /// (and PINGs when `ack_pings`). Returns whether `until` matched.
    pub fn read_until(&mut self, timeout: Duration, until: impl Fn(&Frame) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.read_frame(left) {
                Ok(Some(f)) => {
                    let hit = until(&f);
                    self.frames.push(f);
                    if hit {
                        return true;
                    }
                }
                Ok(None) => return false,
                Err(e) => {
                    self.closed = Some((Instant::now(), format!("error: {e}")));
                    return false;
                }
            }
        }
        false
    }

    /// Reads until the server closes the connection (or `timeout`); true if it did.
    pub fn read_to_close(&mut self, timeout: Duration) -> bool {
        self.read_until(timeout, |_| false);
        self.closed.is_some()
    }

    /// Read until the DATA frame that ends stream `id` (END_STREAM) or `timeout`; whether it
    /// came.
    pub fn read_to_end_of(&mut self, id: u32, timeout: Duration) -> bool {
        self.read_until(timeout, |f| {
            f.kind == FRAME_DATA && f.stream == id && f.flags & FLAG_END_STREAM != 0
        })
    }

    /// The payload of stream `id`'s DATA frames read so far, as text.
    pub fn body(&self, id: u32) -> String {
        let bytes: Vec<u8> = self
            .frames
            .iter()
            .filter(|f| f.kind == FRAME_DATA && f.stream == id)
            .flat_map(|f| f.payload.iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The server sent a PING that asks for an answer (not an ack).
    pub fn pinged(&self) -> bool {
        self.frames
            .iter()
            .any(|f| f.kind == FRAME_PING && f.flags & FLAG_ACK == 0)
    }

    /// The frames read so far, described.
    pub fn transcript(&self) -> Vec<String> {
        let mut t: Vec<String> = self.frames.iter().map(Frame::describe).collect();
        if let Some((_, how)) = &self.closed {
            t.push(format!("closed ({how})"));
        }
        t
    }

    /// Ok(None) when no frame came within `timeout`; the close is recorded in `closed`.
    fn read_frame(&mut self, timeout: Duration) -> io::Result<Option<Frame>> {
        self.stream.set_read_timeout(Some(timeout))?;
        let mut head = [0u8; 9];
        match read_exact_or_eof(&mut self.stream, &mut head) {
            Ok(true) => {}
            Ok(false) => {
                self.closed = Some((Instant::now(), "EOF".into()));
                return Ok(None);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        self.stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        self.stream.read_exact(&mut payload)?;
        let f = Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
            at: Instant::now(),
        };
        if f.kind == FRAME_SETTINGS && f.flags & FLAG_ACK == 0 {
            write_frame(&mut self.stream, FRAME_SETTINGS, FLAG_ACK, 0, &[])?;
        }
        if f.kind == FRAME_PING && f.flags & FLAG_ACK == 0 && self.ack_pings {
            write_frame(&mut self.stream, FRAME_PING, FLAG_ACK, 0, &f.payload)?;
        }
        Ok(Some(f))
    }
}

/// Ok(false) on EOF before the first byte.
fn read_exact_or_eof(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if got > 0 && e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn write_frame(
    s: &mut TcpStream,
    kind: u8,
    flags: u8,
    stream: u32,
    payload: &[u8],
) -> io::Result<()> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    s.write_all(&f)
}
