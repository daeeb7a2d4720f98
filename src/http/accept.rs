//! The accept loop, generic over the listener: a TCP or Unix listener. On a TLS listener the
//! loop still only accepts; the handshake happens in the connection's own task (see
//! `conn::ConnContext::spawn`), which then serves the decrypted stream like any other: HTTP/2
//! recognised by its preface, which a client sends after ALPN chose `h2`.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::conn::ConnContext;
use super::{MakeHttp, TlsConfig};
use crate::connection::{ClientAddr, IncomingConnection};

/// A listening socket the accept loop can take connections from.
pub(crate) trait Acceptor: Send + 'static {
    /// The stream of one accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection and its client's address.
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Io, ClientAddr)>> + Send;
}

impl Acceptor for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, ClientAddr)> {
        let (stream, peer) = tokio::net::TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, ClientAddr::Tcp(peer)))
    }
}

impl Acceptor for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<(Self::Io, ClientAddr)> {
        tokio::net::UnixListener::accept(self)
            .await
            .map(|(stream, peer)| (stream, ClientAddr::Unix(peer)))
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
            Ok((io, client)) => {
                // The make-service's readiness (axum's are always ready).
                let ready = std::future::poll_fn(|cx| make.poll_ready(cx)).await;
                let Ok(()) = ready;
                let service = make.call(IncomingConnection {
                    client: client.clone(),
                    listener: name.clone(),
                });
                ctx.spawn(io, client, tls.as_ref(), service)
            }
            Err(e) => accept_backoff(e).await,
        }
    }
}

/// Out of descriptors or a transient network error: log, wait a little, go on.
async fn accept_backoff(e: std::io::Error) {
    warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
