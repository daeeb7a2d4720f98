//! One connection's task: the TLS handshake on a TLS listener, then serve it, park it while it
//! is idle (HTTP/1 without TLS: see `park`), close it when it stays idle, drain it, close it
//! lingering.

use std::future::Future;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::body::DrainAware;
use super::control::ControlHandle;
use super::exec::poll_serving;
use super::io::{Activity, ConnIo, Shared};
use super::park::{Lot, Resume, Wake};
use super::protocol::Protocols;
use super::stream::Stream;
use super::{HttpService, TlsConfig, GOAWAY_WAIT, IDLE_GRACE, LINGER};
use crate::access_log::LogAs;
use crate::connection::ClientAddr;
#[cfg(feature = "tls")]
use crate::tls::{self, HANDSHAKE_TIMEOUT};
use std::convert::Infallible;

/// How often a connection checks the idle bound (and, after a GOAWAY, whether it is done).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How soon a connection without TLS that asked at most once is looked at again (parked when
/// it read nothing meanwhile): a burst of clients that ask once and then wait never holds a
/// burst of hyper's states for long. (5 ms until 2026-12-07: with 2 ms and the boxes made when
/// a task starts, see `Resume`, `bench/run --only idle-conns` measured 782 bytes of RSS per idle
/// connection where it had measured 1,487 and 1,678 that day.)
const QUICK_CHECK: Duration = Duration::from_millis(2);
/// How soon a connection whose park a request interrupted is looked at again. Parking and
/// serving again costs some 8 µs of CPU: with [`QUICK_CHECK`] here, 20 clients asking every
/// 3 ms cost 20.5 µs of server CPU per request instead of 13.7 (one was parked after 140 of 300
/// requests 4 ms apart, instead of after 1 to 7).
const LOOK_AGAIN: Duration = Duration::from_millis(5);
/// How often a connection of a process about to exit checks whether the peer has everything.
const SEND_QUEUE_CHECK: Duration = Duration::from_millis(20);
/// How often a draining HTTP/1 connection checks whether it is idle.
const DRAIN_CHECK_EVERY: Duration = Duration::from_millis(50);

/// What every connection task of one process shares.
#[derive(Clone)]
pub(super) struct ConnContext {
    pub protocols: Arc<Protocols>,
    pub draining: watch::Receiver<bool>,
    pub connections: TaskTracker,
    pub idle_timeout: Duration,
    /// The access log, with the generation it names (off: `None`).
    pub access_log: Option<u64>,
    /// Where idle HTTP/1 connections are parked.
    pub lot: Arc<Lot>,
}

/// Why a connection that is still open is being closed.
enum Closing {
    /// Nothing in flight and no request for the idle timeout.
    Idle,
    /// The process retires or stops.
    Drain,
}

impl ConnContext {
    /// Serve one accepted connection on its own task, after a TLS handshake when `tls` is given.
    /// The connection counts as open (for the drain) from now until its stream is closed,
    /// wherever the stream is by then: a connection still in its handshake is waited for too.
    /// `make` gives the connection's service (an app's make-service future; ready at once for a
    /// plain app).
    /// Every listener's connections are served as one [`Stream`] type (see `stream`).
    pub(super) fn spawn<F, S>(
        &self,
        io: Stream,
        client: ClientAddr,
        tls: Option<&TlsConfig>,
        make: F,
    ) where
        F: Future<Output = Result<S, Infallible>> + Send + 'static,
        S: HttpService,
    {
        let token = self.connections.token();
        let ctx = self.clone();
        // The socket's descriptor, to ask the kernel what it still holds for the peer; it stays
        // open as long as the stream, which the task owns to the end.
        let fd = io.as_raw_fd();
        match tls {
            None => {
                tokio::spawn(async move {
                    let Ok(service) = make.await;
                    ctx.run(io, fd, client, token, service, true).await
                });
            }
            #[cfg(not(feature = "tls"))]
            Some(no_tls) => match **no_tls {},
            #[cfg(feature = "tls")]
            Some(config) => {
                let config = config.clone();
                // A client that does not complete its handshake holds nothing for long.
                let timeout = HANDSHAKE_TIMEOUT.min(self.idle_timeout);
                tokio::spawn(async move {
                    let Ok(service) = make.await;
                    match tls::handshake(io, config, timeout).await {
                        Ok(accepted) => {
                            debug!(h2 = accepted.h2, "TLS handshake completed");
                            let stream = Stream::Tls(Box::new(accepted.stream));
                            ctx.run(stream, fd, client, token, service, false).await
                        }
                        // Scanners, plain HTTP on the TLS port, clients that distrust the
                        // certificate: the client's business, not the operator's.
                        Err(e) => debug!(error = %e, "TLS handshake failed; connection closed"),
                    }
                });
            }
        }
    }

    /// Serve the connection. A `parkable` connection (without TLS: a TLS stream's state lives
    /// above the socket) may be parked while idle.
    async fn run<I, S>(
        self,
        io: I,
        fd: RawFd,
        client: ClientAddr,
        token: TaskTrackerToken,
        service: S,
        parkable: bool,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: HttpService,
    {
        let served = Served {
            token,
            resume: parkable.then(|| Resumer::boxed(&self, &client, &service)),
            since: Instant::now(),
        };
        self.run_service(io, fd, client, served, service).await
    }

    async fn run_service<I, S>(
        mut self,
        mut io: I,
        fd: RawFd,
        client: ClientAddr,
        served: Served<S>,
        mut service: S,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: HttpService,
    {
        let Served {
            mut token,
            resume: mut again,
            mut since,
        } = served;
        // One turn per hyper connection on this stream: a second one only when the connection
        // was to be parked and could not be (out of descriptors, say); it is then served on by
        // a new hyper connection and never parked again (no retry every check period).
        loop {
            let shared = Shared::new();
            if *self.draining.borrow() {
                // It starts serving after the drain began (its TLS handshake ended late): the
                // first response already tells the client to reconnect, to the successor.
                shared.activity.draining.store(true, Ordering::Relaxed);
            }
            let conn_io = ConnIo::new(io, token, shared.clone());
            let drain_aware = DrainAware {
                inner: service,
                shared: shared.clone(),
                log: self.access_log.map(|generation| LogAs {
                    generation,
                    peer: client.tcp(),
                }),
                // (Kept for a parked connection's next task too.)
                #[cfg(feature = "axum")]
                client: client.clone(),
            };
            let draining = self.draining.clone();
            let idle_timeout = self.idle_timeout;
            let parkable = again.is_some();
            let parked_since = self
                .serve(conn_io, drain_aware, &shared.activity, since, parkable)
                .await;
            // Hyper is done with the stream (unless it now belongs to an upgrade). Parked while
            // idle (only the socket is kept), or unless the peer had closed already, closed
            // lingering.
            let Some(mut parked) = shared.take_parked() else {
                return;
            };
            if let (Some(idle_since), Some(next)) = (parked_since, again.take()) {
                // SAFETY: `fd` is the stream's socket, open while `parked.io` (which owns it)
                // lives; it is duplicated before the stream is dropped.
                let dup = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned();
                match dup {
                    Ok(socket) => {
                        // The stream's own descriptor is closed (and its registration with the
                        // runtime dropped); the socket stays open through the duplicate.
                        drop(parked.io);
                        // The box made when the task started: parking allocates nothing.
                        self.lot.park(socket, idle_since, parked.token, next);
                        debug!("idle connection parked: only its socket is kept");
                        return;
                    }
                    Err(e) => {
                        debug!(error = %e, "cannot park an idle connection; serving it on, unparked");
                        io = parked.io;
                        token = parked.token;
                        since = idle_since;
                        service = next.service;
                        continue;
                    }
                }
            }
            if !parked.peer_closed {
                linger(&mut parked.io).await;
            }
            // A process about to exit keeps the connection (and so itself) until the peer has
            // everything: what is still in the socket's send queue would otherwise be lost when
            // the network goes away with the process (a container's namespace). A peer that
            // stopped reading is given up on as one that does not answer a GOAWAY is — and one
            // that was given up on already is not waited for a second time.
            if *draining.borrow() && !shared.activity.gave_up.load(Ordering::Relaxed) {
                delivered(fd, GOAWAY_WAIT.min(idle_timeout)).await;
            }
            return;
        }
    }

    /// Serve until hyper's connection ends. `Some(instant)` when it ended because it was parked
    /// (`parkable`: HTTP/1 without TLS), idle since that instant; `idle_since` is when the
    /// connection went idle (now, or when it was parked before).
    async fn serve<I, S>(
        &mut self,
        io: ConnIo<I>,
        service: DrainAware<S, I>,
        activity: &Activity,
        idle_since: Instant,
        parkable: bool,
    ) -> Option<Instant>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: HttpService,
    {
        let conn = self.protocols.serve(io, service);
        tokio::pin!(conn);

        // Serving: close a connection that waits too long for a request. Only hyper's connection
        // is polled on its wake-ups; the timer and the drain notification when they fired.
        let closing = {
            let mut control = ControlHandle::new();
            let first = if parkable { QUICK_CHECK } else { CHECK_EVERY };
            let check = tokio::time::sleep(first);
            tokio::pin!(check);
            let drain = self.draining.wait_for(|d| *d);
            tokio::pin!(drain);
            let mut seen_requests = 0;
            let mut waiting_since = idle_since;
            let idle_timeout = self.idle_timeout;
            let closing = std::future::poll_fn(|cx| {
                let mut park = false;
                if let Some(mut ccx) = control.fired(cx) {
                    if drain.as_mut().poll(&mut ccx).is_ready() {
                        return Poll::Ready(Err(Closing::Drain));
                    }
                    while check.as_mut().poll(&mut ccx).is_ready() {
                        let now = check.deadline();
                        let requests = activity.requests.load(Ordering::Relaxed);
                        let read = activity.read_seen.swap(false, Ordering::Relaxed);
                        let in_flight = activity.in_flight.load(Ordering::Relaxed) > 0;
                        let asked = requests.wrapping_sub(seen_requests);
                        if asked > 0 || in_flight {
                            seen_requests = requests;
                            waiting_since = now;
                        } else if now.duration_since(waiting_since) >= idle_timeout {
                            return Poll::Ready(Err(Closing::Idle));
                        }
                        // A whole period without a byte, nothing in flight, the last bytes read
                        // ended a request head and every write went out: hyper holds no
                        // request, no part of one and nothing to send (it serves the requests
                        // its buffer holds at once unless it cannot write).
                        park = parkable
                            && asked == 0
                            && !read
                            && !in_flight
                            && !activity.partial.load(Ordering::Relaxed)
                            && !activity.write_blocked.load(Ordering::Relaxed)
                            && !activity.h2.load(Ordering::Relaxed);
                        // A connection that asked at most once in the period is looked at again
                        // soon (parked once it stays quiet for that long: a burst of clients
                        // that ask once and then idle does not hold a burst of hyper's states);
                        // a busy one once per check period (no timer work per request).
                        let quick = parkable && read && asked <= 1;
                        check
                            .as_mut()
                            .reset(now + if quick { QUICK_CHECK } else { CHECK_EVERY });
                    }
                }
                if park {
                    // Polled once with the request to park: hyper, waiting for a request,
                    // reads, and sees an end-of-file if that first read finds nothing (a read
                    // that brings a request cancels the park: see `ConnIo::poll_read`).
                    activity.park.store(true, Ordering::Relaxed);
                    let polled = conn.as_mut().poll(cx);
                    activity.park.store(false, Ordering::Relaxed);
                    let parked = activity.parked.load(Ordering::Relaxed);
                    if let Some(at) = look_after_park(polled.is_pending(), parked, Instant::now()) {
                        check.as_mut().reset(at);
                        let _ = check.as_mut().poll(&mut control.context());
                    }
                    return polled.map(Ok);
                }
                // HTTP/2 (its preface was read): the streams a poll starts are polled on this
                // task first (see `exec`). HTTP/1 starts none, and is not charged the check.
                if activity.h2.load(Ordering::Relaxed) {
                    return poll_serving(cx, |cx| conn.as_mut().poll(cx)).map(Ok);
                }
                conn.as_mut().poll(cx).map(Ok)
            })
            .await;
            match closing {
                Ok(res) => {
                    if activity.parked.load(Ordering::Relaxed) && res.is_ok() {
                        return Some(waiting_since);
                    }
                    // (A parked connection whose hyper connection failed: a request cut short
                    // before a whole quiet period, lost as when the idle timeout closes it.)
                    log_end(res);
                    return None;
                }
                Err(closing) => closing,
            }
        };

        match closing {
            Closing::Idle if !activity.h2.load(Ordering::Relaxed) => {
                debug!(idle_timeout = ?self.idle_timeout, "no request in time; closing the connection");
                return None;
            }
            Closing::Idle => {
                debug!(idle_timeout = ?self.idle_timeout, "idle HTTP/2 connection: GOAWAY");
            }
            Closing::Drain => {
                // HTTP/1 closes after its current response (`Connection: close`) or once it
                // stayed quiet for the grace period; HTTP/2 gets GOAWAY at once.
                activity.draining.store(true, Ordering::Relaxed);
                let mut check = tokio::time::interval(DRAIN_CHECK_EVERY);
                let mut last_read = Instant::now();
                while !activity.h2.load(Ordering::Relaxed) {
                    tokio::select! {
                        res = conn.as_mut() => { log_end(res); return None }
                        now = check.tick() => {
                            if activity.read_seen.swap(false, Ordering::Relaxed) {
                                last_read = now;
                            } else if activity.in_flight.load(Ordering::Relaxed) == 0
                                && now.duration_since(last_read) >= IDLE_GRACE
                            {
                                break;
                            }
                        }
                    }
                }
            }
        }

        // HTTP/2: GOAWAY (last stream id 2^31-1) and a PING; the PING's answer brings the final
        // GOAWAY with the last stream processed, and the connection closes once every accepted
        // stream is answered. A peer that never answers (dead, or not reading) is given up on
        // once nothing is in flight for a while. HTTP/1: close now (nothing is in flight).
        conn.as_mut().graceful_shutdown();
        let give_up_after = GOAWAY_WAIT.min(self.idle_timeout);
        let mut check = tokio::time::interval(CHECK_EVERY);
        let mut quiet_since = Instant::now();
        loop {
            tokio::select! {
                res = conn.as_mut() => { log_end(res); return None }
                now = check.tick() => {
                    if activity.in_flight.load(Ordering::Relaxed) > 0 {
                        quiet_since = now;
                    } else if now.duration_since(quiet_since) >= give_up_after {
                        debug!("no answer to GOAWAY; closing the connection");
                        activity.gave_up.store(true, Ordering::Relaxed);
                        return None;
                    }
                }
            }
        }
    }
}

/// When a connection that was just polled with the request to park is looked at next: hyper's
/// connection still `pending` and not `parked` means a request came between the look and
/// hyper's read, which cancelled the park (hyper serves it); such a connection is looked at
/// again [`LOOK_AGAIN`] after `now`, so that it is parked once quiet again, but not between
/// the requests of a client that asks every few milliseconds. `None`: the timer stays as it
/// is — a parked connection ends its hyper connection (the task parks it), and one whose hyper
/// connection ended is done with it.
fn look_after_park(pending: bool, parked: bool, now: Instant) -> Option<Instant> {
    (pending && !parked).then_some(now + LOOK_AGAIN)
}

/// Our FIN first, then read and drop what the peer still sends until its FIN (or [`LINGER`]):
/// closing a socket with unread data makes the kernel send a reset, which can destroy answers
/// the peer has received but not read yet.
async fn linger<I: AsyncRead + AsyncWrite + Unpin>(io: &mut I) {
    let _ = tokio::time::timeout(LINGER, async {
        let _ = io.shutdown().await;
        let mut buf = [0u8; 2048];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Wait until the peer has acknowledged every byte sent on the socket `fd`, our FIN included
/// (its send queue is empty), or the connection is gone, or the peer acknowledged nothing for
/// `stall` (it stopped reading: a slow reader makes progress, a stuck one never will). Bounded
/// besides by the caller's shutdown timeout, which ends the process.
async fn delivered(fd: RawFd, stall: Duration) {
    let started = Instant::now();
    let mut last = (usize::MAX, started);
    while let Some(queued) = unacknowledged(fd).filter(|bytes| *bytes > 0) {
        let now = Instant::now();
        if queued != last.0 {
            last = (queued, now);
        } else if now.duration_since(last.1) >= stall {
            debug!(
                queued,
                ?stall,
                "the peer stopped reading; closing with data unsent"
            );
            return;
        }
        tokio::time::sleep(SEND_QUEUE_CHECK).await;
    }
    if last.0 != usize::MAX {
        debug!(waited = ?started.elapsed(), "the peer acknowledged everything sent");
    }
}

/// Bytes sent on `fd` that the peer has not acknowledged yet (`TIOCOUTQ`/`SIOCOUTQ`: unsent
/// plus unacknowledged, the FIN counting as one), or `None` when that cannot be known or no
/// longer matters: the connection was reset or closed (the count then stays frozen), or the
/// call failed.
fn unacknowledged(fd: RawFd) -> Option<usize> {
    // libc: nix has neither a TCP_INFO socket option nor a TIOCOUTQ call.
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is the connection's socket, open while the caller holds its stream; the kernel
    // writes at most `len` bytes into `info`, which is ours and outlives the call.
    let tcp = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if tcp == 0 {
        // SAFETY: zero-initialised plain integers, partly filled by the kernel.
        let info = unsafe { info.assume_init() };
        if info.tcpi_state == TCP_CLOSE {
            return None;
        }
    }
    let mut queued: libc::c_int = 0;
    // SAFETY: as above; TIOCOUTQ writes one int into `queued`.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
    if rc != 0 {
        return None;
    }
    usize::try_from(queued).ok()
}

/// `TCP_CLOSE` of the kernel's TCP states (include/net/tcp_states.h).
const TCP_CLOSE: u8 = 7;

fn log_end(res: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = res {
        debug!(error = %e, "connection ended with an error");
    }
}

/// What a connection task needs besides its stream to park its connection: its tracker token,
/// what serves it again once parked (`None`: never parked, a TLS stream), and when it went
/// idle.
struct Served<S> {
    token: TaskTrackerToken,
    resume: Option<Box<Resumer<S>>>,
    since: Instant,
}

/// What serves a parked connection again: a fresh connection task on its socket (readable, or
/// the drain began), or a lingering close (the idle timeout). Boxed when the connection's task
/// starts, handed to the [`Lot`] as it is when the connection parks (see [`Resume`]).
struct Resumer<S> {
    ctx: ConnContext,
    client: ClientAddr,
    service: S,
}

impl<S: HttpService> Resumer<S> {
    fn boxed(ctx: &ConnContext, client: &ClientAddr, service: &S) -> Box<Self> {
        Box::new(Resumer {
            ctx: ctx.clone(),
            client: client.clone(),
            service: service.clone(),
        })
    }
}

impl<S: HttpService> Resume for Resumer<S> {
    fn resume(self: Box<Self>, socket: OwnedFd, token: TaskTrackerToken, wake: Wake) {
        let Resumer {
            ctx,
            client,
            service,
        } = *self;
        let since = Instant::now();
        tokio::spawn(async move {
            let fd = socket.as_raw_fd();
            let stream = match &client {
                ClientAddr::Tcp(_) => {
                    tokio::net::TcpStream::from_std(std::net::TcpStream::from(socket))
                        .map(Stream::Tcp)
                }
                ClientAddr::Unix(_) => {
                    tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(socket))
                        .map(Stream::Unix)
                }
            };
            let mut stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    debug!(error = %e, "cannot serve a parked connection again; closed");
                    return;
                }
            };
            match wake {
                Wake::Idle => {
                    debug!(idle_timeout = ?ctx.idle_timeout, "no request in time; closing the connection");
                    linger(&mut stream).await;
                    drop(token);
                }
                Wake::Readable | Wake::Drain | Wake::Refused => {
                    let resume = match wake {
                        Wake::Refused => None,
                        _ => Some(Resumer::boxed(&ctx, &client, &service)),
                    };
                    let served = Served {
                        token,
                        resume,
                        since,
                    };
                    Box::pin(ctx.run_service(stream, fd, client, served, service)).await
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::{Request, Response};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// After the poll that asked to park, only a connection a request kept from parking (still
    /// pending, not parked) is looked at again, and then [`LOOK_AGAIN`] later: not at once,
    /// not a whole [`CHECK_EVERY`] later.
    #[test]
    fn only_a_park_a_request_interrupted_is_looked_at_again_quick_check_later() {
        let now = Instant::now();
        assert_eq!(
            look_after_park(true, false, now),
            Some(now + LOOK_AGAIN),
            "pending and not parked: a request interrupted the park; looked at again in \
             LOOK_AGAIN, parked then if it stayed quiet"
        );
        assert_eq!(
            look_after_park(true, true, now),
            None,
            "pending and parked: hyper saw the end of the stream and shuts its connection down \
             (at once, in that same poll, on our stream); the task then parks it: no look"
        );
        assert_eq!(
            look_after_park(false, true, now),
            None,
            "ended and parked: the task parks the connection; its timer is dropped"
        );
        assert_eq!(
            look_after_park(false, false, now),
            None,
            "ended without being parked (closed by the client, or failed): the connection is \
             done; its timer is dropped"
        );
    }

    /// One GET on `client`, answered `hello` on the same connection.
    async fn ask(client: &mut TcpStream) {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: unit\r\n\r\n")
            .await
            .expect("send");
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.ends_with(b"hello") {
            let n = tokio::time::timeout(Duration::from_secs(20), client.read(&mut buf))
                .await
                .expect("an answer within 20 s")
                .expect("read");
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200 "), "{answer:?}");
    }

    /// A connection handed back by the table of parked connections because it could not be
    /// parked there (`Wake::Refused`: its epoll instance failed, out of descriptors or memory)
    /// is served on and never offered to the table again (no retry every few milliseconds);
    /// one woken because a request came (`Wake::Readable`) is parked again once quiet.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_the_table_refused_is_served_on_and_never_parked_again() {
        let (drain, _) = watch::channel(false);
        let idle_timeout = Duration::from_secs(30);
        let ctx = ConnContext {
            protocols: Arc::new(Protocols::new(None)),
            draining: drain.subscribe(),
            connections: TaskTracker::new(),
            idle_timeout,
            access_log: None,
            lot: Lot::new(idle_timeout, drain.subscribe()),
        };
        let service = tower::service_fn(|_: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        for (wake, parked) in [(Wake::Readable, 1), (Wake::Refused, 0)] {
            let mut client = TcpStream::connect(addr).await.expect("connect");
            let (server, peer) = listener.accept().await.expect("accept");
            let socket = OwnedFd::from(server.into_std().expect("std stream"));
            let resume = Resumer::boxed(&ctx, &ClientAddr::Tcp(peer), &service);
            resume.resume(socket, ctx.connections.token(), wake);
            ask(&mut client).await;
            // Quiet for a hundred park delays: parked once (woken by a request), or never.
            let t0 = Instant::now();
            while ctx.lot.parked() < 1 && t0.elapsed() < Duration::from_millis(500) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(ctx.lot.parked(), parked);
            ask(&mut client).await;
            drop(client);
            tokio::time::timeout(Duration::from_secs(20), async {
                while ctx.lot.parked() > 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the parked connection closed by its client is woken");
        }
    }
}
