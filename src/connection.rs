//! What baton knows about one accepted connection: the client's address and the listener it
//! came in on. A make-service (axum's `into_make_service_with_connect_info`, or any
//! `tower::Service<IncomingConnection>`) receives it once per connection.

use std::convert::Infallible;
use std::future::Ready;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The client's address of one connection.
///
/// ```
/// # fn demo(conn: &baton_server::IncomingConnection) {
/// match conn.client_addr() {
///     baton_server::ClientAddr::Tcp(addr) => println!("client {addr}"),
///     baton_server::ClientAddr::Unix(addr) => println!("client on a Unix socket: {addr:?}"),
///     _ => {}
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientAddr {
    /// A TCP client (IPv4 or IPv6), TLS or not.
    Tcp(SocketAddr),
    /// A client of a Unix-socket listener (usually unnamed), as tokio reports it.
    Unix(tokio::net::unix::SocketAddr),
}

impl ClientAddr {
    /// The TCP address, `None` for a Unix-socket client.
    ///
    /// ```
    /// let addr = baton_server::ClientAddr::Tcp("127.0.0.1:4000".parse().unwrap());
    /// assert_eq!(addr.tcp(), Some("127.0.0.1:4000".parse().unwrap()));
    /// ```
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            ClientAddr::Tcp(addr) => Some(*addr),
            ClientAddr::Unix(_) => None,
        }
    }
}

/// One accepted connection, as a make-service sees it: baton calls a
/// `tower::Service<IncomingConnection>` once per connection to get the service that answers
/// its requests (what `axum::serve` does with its `IncomingStream`).
///
/// With the `axum` feature, `std::net::SocketAddr`, `tokio::net::unix::SocketAddr` and
/// [`ClientAddr`] implement axum's `Connected<IncomingConnection>`, so
/// `router.into_make_service_with_connect_info::<SocketAddr>()` works with
/// [`serve`](crate::serve):
///
/// ```no_run
/// # #[cfg(feature = "axum")]
/// # async fn demo() -> Result<(), baton_server::Error> {
/// use std::net::SocketAddr;
/// use axum::{extract::ConnectInfo, routing::get, Router};
///
/// let app = Router::new().route(
///     "/",
///     get(|ConnectInfo(client): ConnectInfo<SocketAddr>| async move { format!("you are {client}\n") }),
/// );
/// baton_server::serve(app.into_make_service_with_connect_info::<SocketAddr>()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct IncomingConnection {
    pub(crate) client: ClientAddr,
    pub(crate) listener: Arc<str>,
}

impl IncomingConnection {
    /// The client's address.
    ///
    /// ```
    /// # fn demo(conn: &baton_server::IncomingConnection) {
    /// println!("{:?}", conn.client_addr().tcp());
    /// # }
    /// ```
    pub fn client_addr(&self) -> &ClientAddr {
        &self.client
    }

    /// The name of the listener it came in on: its `LISTEN_FDNAMES` name (systemd's
    /// `FileDescriptorName=`) for a socket-activated listener, else the address as configured
    /// (see [`Serve::listener`](crate::Serve::listener)).
    ///
    /// ```
    /// # fn demo(conn: &baton_server::IncomingConnection) {
    /// if conn.listener_name() == "admin" { /* ... */ }
    /// # }
    /// ```
    pub fn listener_name(&self) -> &str {
        &self.listener
    }
}

/// A per-request service (an axum `Router`, a `tower::service_fn`) used as a make-service: every
/// connection gets a clone. What [`serve`](crate::serve) makes of an app that is not a
/// make-service ([`ServeApp::into_make_service`](crate::ServeApp::into_make_service)); user
/// code rarely names it:
///
/// ```
/// use baton_server::{PerConnection, ServeApp};
///
/// let router = axum::Router::new();
/// let make: PerConnection<axum::Router> = ServeApp::into_make_service(router);
/// # let _ = make;
/// ```
#[derive(Debug, Clone)]
pub struct PerConnection<S>(pub(crate) S);

impl<S: Clone> tower_service::Service<IncomingConnection> for PerConnection<S> {
    type Response = S;
    type Error = Infallible;
    type Future = Ready<Result<S, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _conn: IncomingConnection) -> Self::Future {
        std::future::ready(Ok(self.0.clone()))
    }
}

#[cfg(feature = "axum")]
mod axum_impls {
    use super::{ClientAddr, IncomingConnection};
    use axum::extract::connect_info::Connected;

    /// The TCP client's address; on a Unix-socket listener `0.0.0.0:0` (ask for
    /// `tokio::net::unix::SocketAddr` or [`ClientAddr`] there).
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    impl Connected<IncomingConnection> for std::net::SocketAddr {
        fn connect_info(conn: IncomingConnection) -> Self {
            conn.client
                .tcp()
                .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
        }
    }

    /// What axum gives for its Unix listener; on a TCP listener an unnamed address.
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    impl Connected<IncomingConnection> for tokio::net::unix::SocketAddr {
        fn connect_info(conn: IncomingConnection) -> Self {
            match conn.client {
                ClientAddr::Unix(addr) => addr,
                ClientAddr::Tcp(_) => super::unnamed_unix(),
            }
        }
    }

    /// Either kind, for apps with both TCP and Unix-socket listeners.
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    impl Connected<IncomingConnection> for ClientAddr {
        fn connect_info(conn: IncomingConnection) -> Self {
            conn.client
        }
    }
}

/// An unnamed Unix socket address (what a Unix client that did not bind has).
#[cfg(feature = "axum")]
fn unnamed_unix() -> tokio::net::unix::SocketAddr {
    match std::os::unix::net::SocketAddr::from_pathname("") {
        Ok(addr) => addr.into(),
        // An empty path always fits; this arm is never taken.
        Err(_) => unreachable_unnamed(),
    }
}

#[cfg(feature = "axum")]
fn unreachable_unnamed() -> tokio::net::unix::SocketAddr {
    // A socket that is not bound has an unnamed local address.
    std::os::unix::net::UnixDatagram::unbound()
        .and_then(|s| s.local_addr())
        .map(Into::into)
        .unwrap_or_else(|_| panic!("no unnamed Unix socket address can be made"))
}
