//! Which app and which TLS configuration serve each listener, and how the listeners are
//! described to systemd: [`start_serving`] attaches the apps [`Serve::listener`](super::Serve::listener) named
//! ([`ListenerName`]) and the main app to every listener, [`tls_config`] reads the certificate
//! when a listener serves https, [`describe`] makes the `STATUS=` line.

use std::sync::Arc;

use super::Attach;
use crate::error::{Error, Inner};
use crate::http::{self, MakeHttp, TlsConfig};
use crate::listen::spec::Scheme;
use crate::listen::{Listener, Origin};
use crate::settings::{Settings, SettingsError};

/// Serve every listener: with the app [`Serve::listener`](super::Serve::listener) gave for its name, else `make`.
pub(super) fn start_serving<M: MakeHttp>(
    listeners: &[Listener],
    tls: Option<&TlsConfig>,
    make: M,
    listener_apps: &[(ListenerName, Attach)],
    options: &http::Options,
) -> Result<http::Serving, Error> {
    if let Some((name, _)) = listener_apps
        .iter()
        .find(|(name, _)| !listeners.iter().any(|l| named(l, name)))
    {
        let known: Vec<String> = listeners.iter().map(|l| format!("{:?}", l.name)).collect();
        return Err(SettingsError::new(
            "code",
            "listener",
            format!(
                "no listener is named \"{name}\" (the listeners: {})",
                known.join(", ")
            ),
        )
        .into());
    }
    let mut serving = http::Serving::new(options);
    for l in listeners {
        let tls = match l.scheme() {
            Scheme::Https => tls.cloned(),
            Scheme::Http => None,
        };
        let on = http::Endpoint {
            socket: l.socket.try_clone().map_err(Inner::Serve)?,
            tls,
            name: Arc::from(l.name.as_str()),
            holders: match l.origin {
                Origin::Systemd => http::Holders::Systemd,
                Origin::Config => http::Holders::OnlyBaton,
            },
        };
        match listener_apps.iter().find(|(n, _)| named(l, n)) {
            Some((_, attach)) => attach(&mut serving, on),
            None => serving.serve_on(on, make.clone()),
        }
        .map_err(Inner::Serve)?;
    }
    serving.all_started();
    Ok(serving)
}

/// True when `l` is the listener `name` names: its name, or its address as configured (an
/// address given as a [`ListenAddr`](crate::ListenAddr): the same socket, however written).
pub(super) fn named(l: &Listener, name: &ListenerName) -> bool {
    match &name.0 {
        Named::Text(name) => l.name == *name || l.spec.as_str() == name,
        Named::Addr(addr) => l.spec.as_str() == addr.as_str() || l.spec.same_socket(addr),
    }
}

/// Which listener [`Serve::listener`](super::Serve::listener) attaches an app to: a name (`&str`, `String`) — its
/// `LISTEN_FDNAMES` name when socket-activated, else its address as configured — or a
/// [`ListenAddr`](crate::ListenAddr), which names the listener on the same socket.
///
/// ```
/// use std::net::Ipv4Addr;
/// use baton_server::{ListenAddr, ListenerName};
///
/// let by_fd_name = ListenerName::from("admin");
/// let by_addr = ListenerName::from(ListenAddr::tcp((Ipv4Addr::LOCALHOST, 9100)));
/// assert_eq!(by_fd_name.to_string(), "admin");
/// assert_eq!(by_addr.to_string(), "127.0.0.1:9100");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerName(Named);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Named {
    Text(String),
    Addr(crate::ListenAddr),
}

impl From<&str> for ListenerName {
    fn from(name: &str) -> Self {
        ListenerName(Named::Text(name.to_owned()))
    }
}

impl From<String> for ListenerName {
    fn from(name: String) -> Self {
        ListenerName(Named::Text(name))
    }
}

impl From<crate::ListenAddr> for ListenerName {
    fn from(addr: crate::ListenAddr) -> Self {
        ListenerName(Named::Addr(addr))
    }
}

impl From<&crate::ListenAddr> for ListenerName {
    fn from(addr: &crate::ListenAddr) -> Self {
        ListenerName(Named::Addr(addr.clone()))
    }
}

impl std::fmt::Display for ListenerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Named::Text(name) => f.write_str(name),
            Named::Addr(addr) => write!(f, "{addr}"),
        }
    }
}

/// Read the certificate and key when a listener serves https: every process reads them afresh,
/// so replacing the files and reloading rotates the certificate. An https listener without
/// them is refused (a socket-activated one named `https` is only known here).
/// `reload`: this process is a successor (a leaf that expired or is not valid yet fails it).
#[cfg(feature = "tls")]
pub(super) fn tls_config(
    settings: &Settings,
    listeners: &[Listener],
    reload: bool,
) -> Result<Option<TlsConfig>, Error> {
    let start = if reload {
        crate::tls::Start::Reload
    } else {
        crate::tls::Start::First
    };
    let https = listeners.iter().find(|l| l.scheme() == Scheme::Https);
    match (&settings.tls, https) {
        (Some(files), Some(_)) => Ok(Some(crate::tls::load(files, start)?)),
        (None, Some(l)) => Err(https_refused(
            l,
            "serves TLS but no certificate is configured (tls_cert and tls_key, --tls-cert and --tls-key)",
        )),
        (Some(_), None) => {
            tracing::warn!("a TLS certificate is configured but no listener serves https (write https://HOST:PORT, or name the socket https); not reading it");
            Ok(None)
        }
        (None, None) => Ok(None),
    }
}

/// Without the `tls` feature, a listener that serves https (by its address, or a
/// socket-activated one named `https`) makes the start fail: one line naming it, exit code 78.
#[cfg(not(feature = "tls"))]
pub(super) fn tls_config(
    _settings: &Settings,
    listeners: &[Listener],
    _reload: bool,
) -> Result<Option<TlsConfig>, Error> {
    match listeners.iter().find(|l| l.scheme() == Scheme::Https) {
        Some(l) => Err(https_refused(
            l,
            &format!("serves TLS, but {}", crate::settings::NO_TLS_FEATURE),
        )),
        None => Ok(None),
    }
}

/// The configuration error for an https listener that cannot be served: one line naming it
/// (a socket-activated listener named `https` by its `LISTEN_FDNAMES` name).
fn https_refused(l: &Listener, problem: &str) -> Error {
    let (origin, how) = if l.origin == Origin::Systemd && l.spec.scheme() == Scheme::Http {
        ("LISTEN_FDNAMES", format!("{} (socket named https)", l.spec))
    } else {
        ("listen", l.spec.to_string())
    };
    SettingsError::new(origin, &l.name, format!("{how} {problem}")).into()
}

/// How many bytes of `STATUS=` the list of listeners may take: the rest are counted.
const LISTENERS_IN_STATUS: usize = 512;

pub(super) fn describe(listeners: &[Listener], generation: u64) -> String {
    let mut list = String::new();
    for (i, l) in listeners.iter().enumerate() {
        let item = format!("{} ({})", l.spec, l.source);
        if i > 0 && list.len() + item.len() + 2 > LISTENERS_IN_STATUS {
            list.push_str(&format!(" … and {} more", listeners.len() - i));
            break;
        }
        if i > 0 {
            list.push_str(", ");
        }
        list.push_str(&item);
    }
    format!(
        "baton {}: serving on {}; generation {generation}",
        crate::VERSION,
        crate::notify::bounded(&list, LISTENERS_IN_STATUS + 32)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::{Socket, Source};
    use crate::ListenAddr;

    fn listener(name: &str, spec: &str, origin: Origin) -> Listener {
        Listener {
            name: name.to_owned(),
            spec: spec.parse().unwrap(),
            source: Source::Bind,
            origin,
            socket: Socket::Tcp(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
        }
    }

    #[test]
    fn a_listener_is_named_by_its_name_its_text_or_an_address_of_the_same_socket() {
        let config = listener("127.0.0.1:09100", "127.0.0.1:09100", Origin::Config);
        let activated = listener("admin", "127.0.0.1:9200", Origin::Systemd);
        assert!(named(&config, &"127.0.0.1:09100".into()));
        assert!(
            !named(&config, &"127.0.0.1:9100".into()),
            "text is compared as written"
        );
        // An address names the listener on the same socket, however either is written.
        let addr = ListenAddr::tcp(([127, 0, 0, 1], 9100));
        assert!(named(&config, &addr.clone().into()));
        assert!(named(&config, &(&addr).into()));
        assert!(!named(&activated, &addr.into()));
        assert!(named(&activated, &"admin".into()));
        assert!(named(
            &activated,
            &ListenAddr::tcp(([127, 0, 0, 1], 9200)).into()
        ));
        assert!(!named(
            &activated,
            &ListenAddr::https(([127, 0, 0, 1], 9201)).into()
        ));
    }
}
