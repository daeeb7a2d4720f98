//! The accept loop, generic over the listener: a TCP or Unix listener. On a TLS listener the
//! loop still only accepts; the handshake happens in the connection's own task (see
//! `conn::ConnContext::spawn`), which then serves the decrypted stream like any other: HTTP/2
//! recognised by its preface, which a client sends after ALPN chose `h2`.

use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::conn::ConnContext;
use super::stream::Stream;
use super::{MakeHttp, TlsConfig};
use crate::connection::{ClientAddr, IncomingConnection};

/// A listening socket the accept loop can take connections from.
pub(crate) trait Acceptor: Send + Sync + 'static {
    /// The stream of one accepted connection.
    type Io: Into<Stream> + Send + 'static;
    /// The next connection and its client's address.
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, ClientAddr)>> + Send;
    /// A connection already queued, without waiting: `None` when the backlog is empty.
    fn try_accept(&self) -> Option<std::io::Result<(Self::Io, ClientAddr)>>;
    /// From now on, let no new client complete a handshake on this socket, while handshakes
    /// already under way complete and queue (see [`sweep`]). `Ok(false)`: the kind of socket
    /// cannot do that.
    fn hold_new_handshakes(&self) -> std::io::Result<bool>;
}

/// Who else keeps a listening socket open once this process lets go of it: decides what a stop
/// does to the clients still arriving (see [`sweep`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holders {
    /// baton's processes alone (a fresh bind, or an import from a predecessor). When the last
    /// copy closes, the kernel resets every connection still queued on it.
    OnlyBaton,
    /// systemd too (socket activation): what arrives after a stop waits in the backlog for the
    /// next start, and the socket must reach that start unchanged.
    Systemd,
}

/// Make the kernel drop every segment that opens a new connection (SYN set, ACK clear) arriving
/// at the TCP listening socket `fd`: a classic BPF socket filter, which the kernel runs on every
/// segment for a listening socket, the final ACK of a handshake included, with the TCP header at
/// offset 0. A dropped SYN is retransmitted by its client after about a second, and by then the
/// socket is closed and the client is refused; the final ACK of a handshake already under way
/// passes, so that handshake completes and queues. The filter is never taken off: the socket is
/// closed right after (only [`Holders::OnlyBaton`] sockets get one).
fn drop_new_handshakes(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let program = hold_program();
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fd` is an open socket; `fprog` points at `program`, which outlives the call, and
    // its length is the program's; the kernel copies the program before returning.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::from_ref(&fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The classic BPF program of [`drop_new_handshakes`]: drop a segment with SYN set and ACK
/// clear, keep every other.
fn hold_program() -> [libc::sock_filter; 5] {
    use libc::{
        sock_filter, BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET,
    };
    /// Byte 13 of the TCP header: the flags CWR ECE URG ACK PSH RST SYN FIN.
    const FLAGS_BYTE: u32 = 13;
    const SYN: u32 = 0x02;
    const ACK: u32 = 0x10;
    let op = |code: u32, jt: u8, jf: u8, k: u32| sock_filter {
        // The BPF opcodes all fit in 16 bits.
        code: code as u16,
        jt,
        jf,
        k,
    };
    [
        op(BPF_LD | BPF_B | BPF_ABS, 0, 0, FLAGS_BYTE),
        op(BPF_ALU | BPF_AND | BPF_K, 0, 0, SYN | ACK),
        // A SYN without ACK: the next instruction (drop); anything else: skip it (keep all).
        op(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, SYN),
        op(BPF_RET | BPF_K, 0, 0, 0),
        op(BPF_RET | BPF_K, 0, 0, u32::MAX),
    ]
}

/// `accept4` on the listening socket `fd` now, without waiting and without asking tokio's
/// reactor (whose readiness may not have seen the newest connections yet): `None` on `EAGAIN`.
fn accept_now(fd: RawFd) -> Option<std::io::Result<OwnedFd>> {
    use nix::sys::socket::{accept4, SockFlag};
    loop {
        return match accept4(fd, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
            // SAFETY: accept4 just returned this descriptor; nothing else owns it.
            Ok(conn) => Some(Ok(unsafe { OwnedFd::from_raw_fd(conn) })),
            Err(Errno::EAGAIN) => None,
            Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(e) => Some(Err(e.into())),
        };
    }
}

impl Acceptor for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, ClientAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, ClientAddr::Tcp(peer)))
    }
    fn try_accept(&self) -> Option<std::io::Result<(Self::Io, ClientAddr)>> {
        accept_now(self.as_raw_fd()).map(|r| {
            let std = std::net::TcpStream::from(r?);
            let peer = std.peer_addr()?;
            let stream = tokio::net::TcpStream::from_std(std)?;
            let _ = stream.set_nodelay(true);
            Ok((stream, ClientAddr::Tcp(peer)))
        })
    }
    fn hold_new_handshakes(&self) -> std::io::Result<bool> {
        drop_new_handshakes(self.as_fd()).map(|()| true)
    }
}

impl Acceptor for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, ClientAddr)> {
        tokio::net::UnixListener::accept(self)
            .await
            .map(|(stream, peer)| (stream, ClientAddr::Unix(peer)))
    }
    fn try_accept(&self) -> Option<std::io::Result<(Self::Io, ClientAddr)>> {
        accept_now(self.as_raw_fd()).map(|r| {
            let stream =
                tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(r?))?;
            let peer = stream.peer_addr()?;
            Ok((stream, ClientAddr::Unix(peer)))
        })
    }
    fn hold_new_handshakes(&self) -> std::io::Result<bool> {
        // A Unix connect() completes at once, queued or refused: nothing is under way to wait for.
        Ok(false)
    }
}

/// How the process steers its accept loops.
pub(super) struct Control {
    /// Stop for good.
    pub(super) stop: CancellationToken,
    /// Accept while true; park while false.
    pub(super) accepting: watch::Receiver<bool>,
    /// Counts the parked loops.
    pub(super) parked: watch::Sender<usize>,
    /// On stop: accept what is already queued before the loop ends (see [`sweep`]).
    pub(super) sweep: Arc<AtomicBool>,
    /// Who else keeps the listening socket open.
    pub(super) holders: Holders,
}

/// Accept until stopped, handing each connection to its own task with the service `make` made
/// for it; park while paused.
pub(super) async fn accept_loop<A: Acceptor, M: MakeHttp>(
    listener: A,
    tls: Option<TlsConfig>,
    mut control: Control,
    ctx: ConnContext,
    mut make: M,
    name: std::sync::Arc<str>,
) {
    loop {
        if !*control.accepting.borrow_and_update() {
            // Paused: connections wait in the backlog for whoever accepts next.
            control.parked.send_modify(|n| *n += 1);
            let resumed = tokio::select! {
                _ = control.stop.cancelled() => false,
                changed = control.accepting.changed() => changed.is_ok(),
            };
            control.parked.send_modify(|n| *n -= 1);
            if resumed {
                continue;
            }
            break;
        }
        let accepted = tokio::select! {
            _ = control.stop.cancelled() => break,
            _ = control.accepting.changed() => continue,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((io, client)) => serve_one(io, client, tls.as_ref(), &ctx, &mut make, &name).await,
            Err(e) => accept_backoff(e).await,
        }
    }
    if control.sweep.load(Ordering::SeqCst) {
        let held = control.holders == Holders::OnlyBaton
            && listener.hold_new_handshakes().unwrap_or_else(|e| {
                warn!(error = %e, "could not hold new handshakes back for the stop");
                false
            });
        sweep(&listener, held, tls.as_ref(), &ctx, &mut make, &name).await;
    }
    // The listener is dropped here, right after the sweep.
}

/// Serve one accepted connection with the service `make` makes for it.
async fn serve_one<I, M: MakeHttp>(
    io: I,
    client: ClientAddr,
    tls: Option<&TlsConfig>,
    ctx: &ConnContext,
    make: &mut M,
    name: &std::sync::Arc<str>,
) where
    I: Into<Stream>,
{
    // The make-service's readiness (axum's are always ready).
    let ready = std::future::poll_fn(|cx| make.poll_ready(cx)).await;
    let Ok(()) = ready;
    let service = make.call(IncomingConnection {
        client: client.clone(),
        listener: name.clone(),
    });
    ctx.spawn(io.into(), client, tls, service)
}

/// A stop: every connection the kernel already queued for us (a client that completed its
/// handshake and waits) is accepted and served — with `Connection: close`, the process drains —
/// instead of being reset when the listener closes.
///
/// Closing the last copy of a listening socket resets what is queued on it, and a client that
/// completes its handshake between the last empty `accept` and the close would be reset too.
/// So, when baton's processes alone hold the socket, `held` is true: new handshakes were held
/// back first (see [`drop_new_handshakes`]), and the sweep goes on until no connection has
/// arrived for [`SWEEP_QUIET`] — the handshakes already under way complete and are served —
/// then the socket closes and later clients are refused. Under socket activation the socket is
/// systemd's too and is never touched: one pass up to the first empty backlog (`EAGAIN`), and
/// what arrives later waits there for the next start.
async fn sweep<A: Acceptor, M: MakeHttp>(
    listener: &A,
    held: bool,
    tls: Option<&TlsConfig>,
    ctx: &ConnContext,
    make: &mut M,
    name: &std::sync::Arc<str>,
) {
    let mut clock = SweepClock::new(Instant::now());
    // Bounded: a flood that outpaces us cannot keep the loop going for ever.
    'rounds: loop {
        while clock.may_take_another() {
            match listener.try_accept() {
                Some(Ok((io, client))) => {
                    serve_one(io, client, tls, ctx, make, name).await;
                    clock.took_one(Instant::now());
                }
                Some(Err(e)) => {
                    warn!(error = %e, "accept failed while taking the queued connections");
                    break 'rounds;
                }
                None => break,
            }
        }
        if clock.over(held, Instant::now()) {
            break;
        }
        tokio::time::sleep(SWEEP_ROUND).await;
    }
    if clock.swept > 0 {
        debug!(
            swept = clock.swept,
            "stop: connections already queued accepted"
        );
    }
}

/// Where a stop's sweep of one listener stands: when it began, how many connections it took and
/// when it took the last one. Pure bookkeeping, the clock read by the caller.
#[derive(Debug)]
struct SweepClock {
    started: Instant,
    last_arrival: Instant,
    swept: usize,
}

impl SweepClock {
    /// A sweep beginning at `now`, nothing taken yet.
    fn new(now: Instant) -> SweepClock {
        SweepClock {
            started: now,
            last_arrival: now,
            swept: 0,
        }
    }

    /// The bound [`SWEEP_MAX`] lets the sweep take one more connection.
    fn may_take_another(&self) -> bool {
        self.swept < SWEEP_MAX
    }

    /// One more connection taken, at `now`.
    fn took_one(&mut self, now: Instant) {
        self.swept += 1;
        self.last_arrival = now;
    }

    /// After a pass that ended on an empty backlog (or on the bound), at `now`: whether the
    /// sweep ends. Without a hold (`held` false) after that one pass; with it once the bound is
    /// reached, once nothing arrived for [`SWEEP_QUIET`], or after [`SWEEP_LONGEST`] in all.
    fn over(&self, held: bool, now: Instant) -> bool {
        !held
            || self.swept >= SWEEP_MAX
            || now - self.last_arrival >= SWEEP_QUIET
            || now - self.started >= SWEEP_LONGEST
    }
}

/// How long a held-back socket must stay without a new connection before it closes: longer than
/// a handshake under way takes on a local network.
const SWEEP_QUIET: Duration = Duration::from_millis(25);
/// How often a held-back socket is looked at again.
const SWEEP_ROUND: Duration = Duration::from_millis(5);
/// The longest a stop's sweep goes on.
const SWEEP_LONGEST: Duration = Duration::from_secs(1);

/// The most connections one stop's sweep accepts from one listener: a full backlog of the
/// default size, which Linux lets hold one connection more than the backlog it was given.
const SWEEP_MAX: usize = crate::listen::BACKLOG as usize + 1;

/// Out of descriptors or a transient network error: log, wait a little, go on.
async fn accept_backoff(e: std::io::Error) {
    warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// The filter a stop puts on a listening socket baton alone holds, on the kernel's real
    /// sockets: a connection queued before stays and its bytes pass; a new client's handshake
    /// never completes.
    #[test]
    fn a_held_back_listener_keeps_what_is_queued_and_lets_no_new_client_in() {
        held_back_on("127.0.0.1:0");
    }

    /// The same over IPv6, whose header the filter must not mistake for TCP's.
    #[test]
    fn a_held_back_ipv6_listener_lets_no_new_client_in() {
        held_back_on("[::1]:0");
    }

    /// The hold's verdict on a TCP segment whose flags byte is `flags`, the program run as the
    /// kernel runs classic BPF (net/core/filter.c) for the four instructions it may contain:
    /// the number of bytes to keep, 0 to drop. Any other instruction fails the test.
    fn verdict(flags: u8) -> u32 {
        use libc::{BPF_ABS, BPF_ALU, BPF_AND, BPF_B, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET};
        let program = hold_program();
        let mut header = [0u8; 20];
        header[13] = flags;
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let ins = program.get(pc).expect("the program ran past its end");
            pc += 1;
            let code = u32::from(ins.code);
            if code == BPF_LD | BPF_B | BPF_ABS {
                a = u32::from(*header.get(ins.k as usize).expect("a load past the header"));
            } else if code == BPF_ALU | BPF_AND | BPF_K {
                a &= ins.k;
            } else if code == BPF_JMP | BPF_JEQ | BPF_K {
                pc += usize::from(if a == ins.k { ins.jt } else { ins.jf });
            } else if code == BPF_RET | BPF_K {
                return ins.k;
            } else {
                panic!("instruction {pc}: opcode {code:#x} is none the hold uses");
            }
        }
    }

    /// Every combination of TCP flags: only an opening SYN (ACK clear) is dropped — the final
    /// ACK of a handshake under way, and everything on an established connection, pass whole.
    #[test]
    fn the_hold_drops_opening_syns_and_keeps_every_other_segment() {
        const SYN: u8 = 0x02;
        const ACK: u8 = 0x10;
        for flags in 0..=u8::MAX {
            let opening = flags & (SYN | ACK) == SYN;
            let kept = verdict(flags);
            if opening {
                assert_eq!(kept, 0, "flags {flags:#04x}: a new handshake got through");
            } else {
                assert_eq!(
                    kept,
                    u32::MAX,
                    "flags {flags:#04x}: a segment was cut or dropped"
                );
            }
        }
    }

    /// A sweep without a hold (socket activation, a Unix socket) ends after its first pass,
    /// whatever it took and however little time went by: what arrives later is not its own.
    #[test]
    fn a_sweep_without_a_hold_ends_after_one_pass() {
        let t0 = Instant::now();
        let mut clock = SweepClock::new(t0);
        assert!(clock.over(false, t0), "nothing taken, no time gone");
        clock.took_one(t0 + Duration::from_millis(1));
        assert!(
            clock.over(false, t0 + Duration::from_millis(1)),
            "one just taken"
        );
    }

    /// A held-back sweep goes on while connections keep arriving less than [`SWEEP_QUIET`]
    /// apart, and ends once none arrived for that long.
    #[test]
    fn a_held_sweep_ends_once_quiet_for_sweep_quiet() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut clock = SweepClock::new(t0);
        assert!(!clock.over(true, t0), "at its start");
        assert!(
            !clock.over(true, t0 + SWEEP_QUIET - ms(1)),
            "just before quiet"
        );
        clock.took_one(t0 + ms(20));
        let later = t0 + ms(20) + SWEEP_QUIET;
        assert!(
            !clock.over(true, later - ms(1)),
            "a connection 20 ms in pushes the end back"
        );
        assert!(
            clock.over(true, later),
            "quiet for SWEEP_QUIET since the last one"
        );
    }

    /// Connections that never stop arriving end a held-back sweep at [`SWEEP_LONGEST`].
    #[test]
    fn a_held_sweep_ends_at_sweep_longest_however_busy() {
        let step = SWEEP_QUIET / 2;
        let t0 = Instant::now();
        let mut clock = SweepClock::new(t0);
        let mut now = t0;
        while now - t0 + step < SWEEP_LONGEST {
            now += step;
            clock.took_one(now);
            assert!(!clock.over(true, now), "{:?} in, busy", now - t0);
        }
        now = t0 + SWEEP_LONGEST;
        clock.took_one(now);
        assert!(clock.over(true, now), "at SWEEP_LONGEST, busy");
    }

    /// The bound: exactly [`SWEEP_MAX`] connections, after which the sweep ends even while held
    /// and busy.
    #[test]
    fn a_sweep_takes_at_most_sweep_max_connections() {
        let t0 = Instant::now();
        let mut clock = SweepClock::new(t0);
        for n in 0..SWEEP_MAX {
            assert!(clock.may_take_another(), "after {n}");
            clock.took_one(t0);
        }
        assert_eq!(clock.swept, SWEEP_MAX);
        assert!(!clock.may_take_another(), "after SWEEP_MAX");
        assert!(
            clock.over(true, t0),
            "held and busy, but the bound is reached"
        );
    }

    /// Accepting is paused for a hand-off, resumed when the hand-off fails, and paused again for
    /// the next: the second pause, like the first, returns only once every accept loop parked,
    /// and while paused a client waits in the shared backlog, not taken by the process.
    #[tokio::test]
    async fn a_pause_after_a_resume_waits_again_for_every_accept_loop() {
        use super::super::{Endpoint, Options, Serving};
        use crate::listen::Socket;
        use std::convert::Infallible;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        const LOOPS: usize = 3;
        let make = tower::service_fn(|_: IncomingConnection| async {
            Ok::<_, Infallible>(tower::service_fn(
                |_: hyper::Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(hyper::Response::new(String::from("served")))
                },
            ))
        });
        let mut serving = Serving::new(&Options::default());
        let mut ours = Vec::new();
        for n in 0..LOOPS {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            ours.push(listener.try_clone().expect("dup"));
            let on = Endpoint {
                socket: Socket::Tcp(listener),
                tls: None,
                name: format!("l{n}").into(),
                holders: Holders::OnlyBaton,
            };
            serving.serve_on(on, make).expect("serve");
        }
        serving.all_started();
        let bound = Duration::from_secs(30);
        for round in 1..=3 {
            // Each loop accepts: a request on every listener is answered.
            for l in &ours {
                let addr = l.local_addr().expect("addr");
                let answer = tokio::time::timeout(bound, async {
                    let mut c = tokio::net::TcpStream::connect(addr).await?;
                    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .await?;
                    let mut got = Vec::new();
                    c.read_to_end(&mut got).await?;
                    std::io::Result::Ok(got)
                })
                .await
                .unwrap_or_else(|_| panic!("round {round}: no answer on {addr}"))
                .expect("request");
                assert!(answer.ends_with(b"served"), "round {round}: {answer:?}");
            }
            // The pause, polled once before any loop could run: it cannot be over yet.
            let mut pause = std::pin::pin!(serving.pause_accepting());
            let over_at_once = tokio::select! {
                biased;
                () = &mut pause => true,
                () = std::future::ready(()) => false,
            };
            assert!(
                !over_at_once,
                "round {round}: the pause returned before the accept loops had seen it"
            );
            tokio::time::timeout(bound, pause)
                .await
                .unwrap_or_else(|_| panic!("round {round}: the pause never returned"));
            // Paused: a client is left in the backlog, where our own copy finds it.
            for l in &ours {
                let addr = l.local_addr().expect("addr");
                let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
                tokio::time::sleep(Duration::from_millis(50)).await;
                l.set_nonblocking(true).expect("nonblocking");
                let waiting = l.accept();
                assert!(
                    waiting.is_ok(),
                    "round {round}: a client to {addr} was not left in the backlog: {waiting:?}"
                );
            }
            // The hand-off failed: accept again.
            serving.resume_accepting();
        }
        serving.stop_accepting().await;
    }

    /// A stop while accepting is paused (a `SIGTERM` during a hand-off's promotion): every
    /// client that queued during the pause, on a TCP and on a Unix listener, is taken by the
    /// stop's sweep and answered with `Connection: close`, none reset when the listeners close;
    /// a client after the stop is refused.
    #[tokio::test]
    async fn a_stop_while_paused_answers_every_client_queued_on_tcp_and_unix_listeners() {
        use super::super::{Endpoint, Options, Serving};
        use crate::listen::Socket;
        use std::convert::Infallible;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        const EACH: usize = 8;
        let make = tower::service_fn(|_: IncomingConnection| async {
            Ok::<_, Infallible>(tower::service_fn(
                |_: hyper::Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(hyper::Response::new(String::from("served")))
                },
            ))
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("http.sock");
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let addr = tcp.local_addr().expect("addr");
        let unix = std::os::unix::net::UnixListener::bind(&path).expect("bind unix");
        let mut serving = Serving::new(&Options::default());
        for (name, socket) in [("tcp", Socket::Tcp(tcp)), ("unix", Socket::Unix(unix))] {
            let on = Endpoint {
                socket,
                tls: None,
                name: name.into(),
                holders: Holders::OnlyBaton,
            };
            serving.serve_on(on, make).expect("serve");
        }
        serving.all_started();
        let bound = Duration::from_secs(30);
        tokio::time::timeout(bound, serving.pause_accepting())
            .await
            .expect("paused");

        const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut tcp_clients = Vec::new();
        let mut unix_clients = Vec::new();
        for _ in 0..EACH {
            let mut c = tokio::net::TcpStream::connect(addr).await.expect("tcp");
            c.write_all(REQUEST).await.expect("tcp request");
            tcp_clients.push(c);
            let mut c = tokio::net::UnixStream::connect(&path).await.expect("unix");
            c.write_all(REQUEST).await.expect("unix request");
            unix_clients.push(c);
        }
        tokio::time::timeout(bound, serving.stop_accepting_for_stop())
            .await
            .expect("the accept loops end");

        async fn answer(mut c: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<String> {
            let mut got = Vec::new();
            c.read_to_end(&mut got).await?;
            Ok(String::from_utf8_lossy(&got).into_owned())
        }
        let mut answers = Vec::new();
        for c in tcp_clients {
            answers.push(("tcp", tokio::time::timeout(bound, answer(c)).await));
        }
        for c in unix_clients {
            answers.push(("unix", tokio::time::timeout(bound, answer(c)).await));
        }
        for (kind, a) in answers {
            let text = a
                .unwrap_or_else(|_| panic!("a queued {kind} client got no answer"))
                .unwrap_or_else(|e| panic!("a queued {kind} client was reset: {e}"));
            assert!(
                text.starts_with("HTTP/1.1 200")
                    && text.to_ascii_lowercase().contains("connection: close")
                    && text.ends_with("served"),
                "a queued {kind} client: {text:?}"
            );
        }
        let late = std::net::TcpStream::connect(addr);
        assert!(
            late.is_err(),
            "a client after the stop was queued: {late:?}"
        );
        let late = std::os::unix::net::UnixStream::connect(&path);
        assert!(
            late.is_err(),
            "a client after the stop was queued: {late:?}"
        );
    }

    /// What a stop asks of each kind of listener baton alone holds: a TCP one holds new clients
    /// back (the filter is on: a new handshake never completes, so the sweep then waits for the
    /// handshakes under way); a Unix one cannot (`Ok(false)`: its sweep is one pass) and is left
    /// as it was.
    #[tokio::test]
    async fn a_tcp_listener_holds_new_clients_back_for_a_stop_and_a_unix_one_cannot() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tcp");
        let addr = tcp.local_addr().expect("addr");
        assert!(
            Acceptor::hold_new_handshakes(&tcp).expect("hold the tcp listener"),
            "a tcp listener says it holds"
        );
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            other => panic!("a new client got in after the hold: {other:?}"),
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("http.sock");
        let unix = tokio::net::UnixListener::bind(&path).expect("bind unix");
        assert!(
            !Acceptor::hold_new_handshakes(&unix).expect("ask the unix listener"),
            "a unix listener cannot hold new clients back"
        );
        std::os::unix::net::UnixStream::connect(&path).expect("a unix client still connects");
    }

    fn held_back_on(bind: &str) {
        let listener = TcpListener::bind(bind).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut queued = TcpStream::connect(addr).expect("connect before the hold");

        drop_new_handshakes(listener.as_fd()).expect("attach the filter");

        let late = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        match late {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            other => panic!("a new client got an answer while held back: {other:?}"),
        }
        let (mut conn, _) = listener.accept().expect("the queued connection");
        queued.write_all(b"ping").expect("write");
        let mut got = [0u8; 4];
        conn.read_exact(&mut got).expect("read through the filter");
        assert_eq!(&got, b"ping");
        conn.write_all(b"pong").expect("answer");
        queued.read_exact(&mut got).expect("read the answer");
        assert_eq!(&got, b"pong");
        listener.set_nonblocking(true).expect("nonblocking");
        assert!(
            accept_now(listener.as_raw_fd()).is_none(),
            "the late client was never queued"
        );
    }

    /// The bound is the kernel's: a listener bound as baton binds its own holds exactly
    /// `SWEEP_MAX` connections in its backlog before it refuses more (shown with a Unix
    /// listener, which refuses at once where TCP would drop SYNs silently).
    #[test]
    fn a_full_backlog_of_a_listener_baton_binds_is_sweep_max_connections() {
        use std::os::fd::AsRawFd;
        let (_dir, path) = crate::test_util::temp_path("backlog.sock");
        let spec: crate::listen::spec::ListenSpec =
            format!("unix:{}", path.display()).parse().unwrap();
        let _listener = crate::listen::bind(&spec).unwrap();
        let addr = nix::sys::socket::UnixAddr::new(&path).unwrap();
        let mut queued = Vec::new();
        loop {
            let fd = nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Stream,
                nix::sys::socket::SockFlag::SOCK_NONBLOCK,
                None,
            )
            .unwrap();
            match nix::sys::socket::connect(fd.as_raw_fd(), &addr) {
                Ok(()) => queued.push(fd),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => panic!("connect {}: {e}", queued.len() + 1),
            }
            assert!(queued.len() <= 2 * SWEEP_MAX, "no end to the backlog");
        }
        assert_eq!(
            queued.len(),
            SWEEP_MAX,
            "a stop's sweep must be able to take every connection a full backlog holds"
        );
    }
}
