//! The server side of a TLS handshake on an accepted connection, bounded in time.

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete the handshake after the connection was accepted.
/// A client that connects and sends nothing, or trickles its hello, is dropped after it.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A completed handshake.
#[derive(Debug)]
pub struct Accepted<IO> {
    /// The encrypted stream, ready for HTTP.
    pub stream: TlsStream<IO>,
    /// ALPN chose `h2`: serve HTTP/2 (otherwise `http/1.1`, or no ALPN at all).
    pub h2: bool,
}

/// Why a handshake did not complete. The connection is closed either way.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not finish within the timeout.
    #[error("TLS handshake not completed within {0:?}")]
    TimedOut(Duration),
    /// The client spoke something else, offered nothing we support, or went away.
    #[error("TLS handshake failed: {0}")]
    Failed(#[source] std::io::Error),
}

/// Perform the server side of the handshake on `io` (an accepted TCP or Unix stream) with
/// `config`, giving up after `timeout` (normally [`HANDSHAKE_TIMEOUT`]); on timeout or failure
/// `io` is dropped, which closes the connection.
///
/// Run it in the connection's own task, never in the accept loop: a slow client must delay
/// nobody but itself.
pub async fn handshake<IO>(
    io: IO,
    config: Arc<ServerConfig>,
    timeout: Duration,
) -> Result<Accepted<IO>, HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    match tokio::time::timeout(timeout, acceptor.accept(io)).await {
        Err(_) => Err(HandshakeError::TimedOut(timeout)),
        Ok(Err(e)) => Err(HandshakeError::Failed(e)),
        Ok(Ok(stream)) => {
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            Ok(Accepted { stream, h2 })
        }
    }
}
