//! The accept loop, generic over the listener: a TCP or Unix listener. On a TLS listener the
//! loop still only accepts; the handshake happens in the connection's own task (see
//! `conn::ConnContext::spawn`), which then serves the decrypted stream like any other: HTTP/2
//! recognised by its preface, which a client sends after ALPN chose `h2`.

use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::conn::ConnContext;
use super::{MakeHttp, TlsConfig};
use crate::connection::{ClientAddr, IncomingConnection};

/// A listening socket the accept loop can take connections from.
pub(crate) trait Acceptor: Send + Sync + 'static {
    /// The stream of one accepted connection.
    type Io: AsyncRead + AsyncWrite + std::os::fd::AsRawFd + Unpin + Send + 'static;
    /// The next connection and its client's address.
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, ClientAddr)>> + Send;
    /// A connection already queued, without waiting: `None` when the backlog is empty.
    fn try_accept(&self) -> Option<std::io::Result<(Self::Io, ClientAddr)>>;
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
        sweep(&listener, tls.as_ref(), &ctx, &mut make, &name).await;
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
    I: AsyncRead + AsyncWrite + std::os::fd::AsRawFd + Unpin + Send + 'static,
{
    // The make-service's readiness (axum's are always ready).
    let ready = std::future::poll_fn(|cx| make.poll_ready(cx)).await;
    let Ok(()) = ready;
    let service = make.call(IncomingConnection {
        client: client.clone(),
        listener: name.clone(),
    });
    ctx.spawn(io, client, tls, service)
}

/// A stop: every connection the kernel already queued for us (a client that completed its
/// handshake and waits) is accepted and served — with `Connection: close`, the process drains —
/// instead of being reset when the listener closes; accepting stops at the first empty backlog
/// (`EAGAIN`). The listening socket is never shut down: under socket activation it is systemd's
/// too, and what arrives later waits there for the next start.
async fn sweep<A: Acceptor, M: MakeHttp>(
    listener: &A,
    tls: Option<&TlsConfig>,
    ctx: &ConnContext,
    make: &mut M,
    name: &std::sync::Arc<str>,
) {
    let mut swept = 0usize;
    // Bounded: a flood that outpaces us cannot keep the loop going for ever.
    while swept < SWEEP_MAX {
        match listener.try_accept() {
            Some(Ok((io, client))) => {
                serve_one(io, client, tls, ctx, make, name).await;
                swept += 1;
            }
            Some(Err(e)) => {
                warn!(error = %e, "accept failed while taking the queued connections");
                break;
            }
            None => break,
        }
    }
    if swept > 0 {
        debug!(swept, "stop: connections already queued accepted");
    }
}

/// The most connections one stop's sweep accepts from one listener (a full default backlog).
const SWEEP_MAX: usize = 4096;

/// Out of descriptors or a transient network error: log, wait a little, go on.
async fn accept_backoff(e: std::io::Error) {
    warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
