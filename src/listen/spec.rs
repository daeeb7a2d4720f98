//! Listen address specifications: what an operator writes after `--listen`.
//!
//! Accepted forms: `host:port` (an IPv4 literal or a host name, resolved when the listeners are
//! set up, see [`crate::listen::resolve`]), `[v6]:port`, `:port` (every interface, IPv4 and
//! IPv6) and `unix:/absolute/path`. A TCP form may carry a scheme: `https://host:port` serves
//! TLS, `http://host:port` is the same as no scheme (plain HTTP). The original string is kept,
//! scheme and all: it is what the documented hand-off compares (see
//! `docs/handoff-protocol.md`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// Where a listener listens (`ListenAddr` at the crate root): a TCP address, a host name, or a
/// Unix socket path, served as plain HTTP or TLS. Made by [`ListenAddr::tcp`](crate::ListenAddr::tcp),
/// [`ListenAddr::https`](crate::ListenAddr::https) and [`ListenAddr::unix`](crate::ListenAddr::unix),
/// or parsed ([`FromStr`]) from what an operator writes: `host:port`, `[v6]:port`, `:port`
/// (every interface), `unix:/absolute/path`, and `http://` or `https://` in front of a TCP form.
/// The text is kept as written: it names the listener ([`Serve::listener`](crate::Serve::listener))
/// and is compared on a hand-off.
///
/// ```
/// use baton_server::{ListenAddr, ListenTarget, Scheme};
///
/// let addr: ListenAddr = "https://:8443".parse()?;
/// assert_eq!(addr.scheme(), Scheme::Https);
/// assert!(matches!(addr.target(), ListenTarget::Tcp { any: true, .. }));
/// assert_eq!(addr.to_string(), "https://:8443");
/// assert!("unix:relative.sock".parse::<ListenAddr>().is_err());
/// # Ok::<(), baton_server::SpecError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    text: String,
    scheme: Scheme,
    target: Target,
}

/// What a listener speaks.
///
/// ```
/// use baton_server::{ListenAddr, Scheme};
///
/// let addr: ListenAddr = "http://127.0.0.1:80".parse()?;
/// assert_eq!(addr.scheme(), Scheme::Http);
/// assert_eq!(Scheme::Https.to_string(), "https");
/// # Ok::<(), baton_server::SpecError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// Plain HTTP/1.1 and h2c: no scheme, or `http://`.
    #[default]
    Http,
    /// TLS (`https://`), HTTP/1.1 and HTTP/2 chosen by ALPN.
    Https,
}

impl Scheme {
    /// The scheme a socket-activated listener serves, from its `FileDescriptorName=`
    /// (`LISTEN_FDNAMES` entry): exactly `https` means TLS, any other name plain HTTP.
    ///
    /// ```
    /// use baton_server::Scheme;
    ///
    /// assert_eq!(Scheme::for_fd_name("https"), Scheme::Https);
    /// assert_eq!(Scheme::for_fd_name("admin"), Scheme::Http);
    /// ```
    pub fn for_fd_name(name: &str) -> Scheme {
        if name == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        })
    }
}

/// The address family and address of a [`ListenAddr`](crate::ListenAddr) (`ListenTarget` at
/// the crate root).
///
/// ```
/// use baton_server::{ListenAddr, ListenTarget};
///
/// let addr: ListenAddr = "localhost:3000".parse()?;
/// match addr.target() {
///     ListenTarget::Tcp { addr, .. } => println!("TCP {addr}"),
///     ListenTarget::Name { host, port } => println!("{host}, resolved at start, port {port}"),
///     ListenTarget::Unix(path) => println!("Unix socket {}", path.display()),
/// }
/// # Ok::<(), baton_server::SpecError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A TCP address. `any` is true for `:port`, which binds every interface.
    Tcp {
        /// The socket address to bind.
        addr: SocketAddr,
        /// Written as `:port`: every interface, dual-stack where the kernel allows.
        any: bool,
    },
    /// A Unix stream socket at an absolute path.
    Unix(PathBuf),
    /// A host name to resolve; every address it resolves to is a TCP listener.
    Name {
        /// The name, as written.
        host: String,
        /// The port.
        port: u16,
    },
}

/// Why a listen address did not parse. The message names the offending text.
///
/// ```
/// let e = "127.0.0.1".parse::<baton_server::ListenAddr>().unwrap_err();
/// assert_eq!(e.text, "127.0.0.1");
/// assert!(e.to_string().starts_with("invalid listen address \"127.0.0.1\": "));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid listen address {text:?}: {reason}")]
pub struct SpecError {
    /// The address as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ListenSpec {
    /// The address exactly as configured.
    ///
    /// ```
    /// let addr: baton_server::ListenAddr = "127.0.0.1:09".parse()?;
    /// assert_eq!(addr.as_str(), "127.0.0.1:09");
    /// # Ok::<(), baton_server::SpecError>(())
    /// ```
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// What it listens on ([`ListenTarget`](crate::ListenTarget)).
    ///
    /// ```
    /// let addr: baton_server::ListenAddr = "unix:/run/app.sock".parse().unwrap();
    /// assert!(matches!(addr.target(), baton_server::ListenTarget::Unix(_)));
    /// ```
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// What the listener speaks, as written (`https://` or not). A socket-activated listener
    /// may also be TLS by its name: see [`Scheme::for_fd_name`].
    ///
    /// ```
    /// use baton_server::{ListenAddr, Scheme};
    ///
    /// let addr: ListenAddr = "https://[::1]:8443".parse()?;
    /// assert_eq!(addr.scheme(), Scheme::Https);
    /// # Ok::<(), baton_server::SpecError>(())
    /// ```
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// True when `other` names the same socket, even if written differently
    /// (`127.0.0.1:09` and `127.0.0.1:9`; `http://` and `https://` on one port too).
    ///
    /// ```
    /// use baton_server::ListenAddr;
    ///
    /// let a: ListenAddr = "127.0.0.1:09".parse()?;
    /// assert!(a.same_socket(&"https://127.0.0.1:9".parse()?));
    /// # Ok::<(), baton_server::SpecError>(())
    /// ```
    pub fn same_socket(&self, other: &ListenSpec) -> bool {
        self.target == other.target
    }

    /// Plain HTTP (HTTP/1.1 and h2c) on a TCP address; `:port` written as
    /// `[::]:port` binds every interface.
    ///
    /// ```
    /// use std::net::{Ipv4Addr, SocketAddr};
    /// use baton_server::{ListenAddr, Scheme};
    ///
    /// let addr = ListenAddr::tcp((Ipv4Addr::LOCALHOST, 3000));
    /// assert_eq!(addr.as_str(), "127.0.0.1:3000");
    /// assert_eq!(addr.scheme(), Scheme::Http);
    /// // The same as parsing what an operator writes:
    /// assert!(addr.same_socket(&"127.0.0.1:3000".parse().unwrap()));
    /// let from_std: ListenAddr = SocketAddr::from(([127, 0, 0, 1], 3000)).into();
    /// assert_eq!(from_std, addr);
    /// ```
    pub fn tcp(addr: impl Into<SocketAddr>) -> Self {
        ListenSpec::from_socket_addr(addr.into())
    }

    /// TLS on a TCP address (`https://host:port`; HTTP/1.1 and HTTP/2 chosen by ALPN), with the
    /// certificate and key of `Settings::tls`. Needs the `tls` feature to serve: without it the
    /// start fails, naming this address.
    ///
    /// ```
    /// use std::net::Ipv4Addr;
    /// use baton_server::{ListenAddr, Scheme};
    ///
    /// let addr = ListenAddr::https((Ipv4Addr::UNSPECIFIED, 8443));
    /// assert_eq!(addr.as_str(), "https://0.0.0.0:8443");
    /// assert_eq!(addr.scheme(), Scheme::Https);
    /// ```
    pub fn https(addr: impl Into<SocketAddr>) -> Self {
        ListenSpec::from_socket_addr(addr.into()).with_scheme(Scheme::Https)
    }

    /// Plain HTTP on a Unix stream socket at an absolute `path` (at most 107 bytes, no NUL),
    /// as `unix:/path` parses.
    ///
    /// ```
    /// use baton_server::{ListenAddr, ListenTarget};
    ///
    /// let addr = ListenAddr::unix("/run/my-app/http.sock")?;
    /// assert_eq!(addr.as_str(), "unix:/run/my-app/http.sock");
    /// assert!(matches!(addr.target(), ListenTarget::Unix(p) if p.ends_with("http.sock")));
    /// assert!(ListenAddr::unix("relative.sock").is_err());
    /// # Ok::<(), baton_server::SpecError>(())
    /// ```
    pub fn unix(path: impl Into<PathBuf>) -> Result<Self, SpecError> {
        let path = path.into();
        let text = format!("unix:{}", path.display());
        if path.to_str().is_none() {
            return Err(SpecError {
                text,
                reason: "unix socket path is not UTF-8",
            });
        }
        text.parse()
    }

    /// Build a spec describing a TCP socket address we found (e.g. by `getsockname`).
    pub(crate) fn from_socket_addr(addr: SocketAddr) -> Self {
        ListenSpec {
            text: addr.to_string(),
            scheme: Scheme::Http,
            target: Target::Tcp { addr, any: false },
        }
    }

    /// Build a spec describing a Unix socket path we found.
    pub(crate) fn from_unix_path(path: PathBuf) -> Self {
        ListenSpec {
            text: format!("unix:{}", path.display()),
            scheme: Scheme::Http,
            target: Target::Unix(path),
        }
    }

    /// The same socket, served with `scheme`: `https://` is written in front of a TCP address
    /// for TLS (what a host name resolves to keeps the scheme it was written with).
    pub(crate) fn with_scheme(mut self, scheme: Scheme) -> Self {
        if scheme == Scheme::Https && self.scheme == Scheme::Http {
            if let Target::Tcp { .. } | Target::Name { .. } = self.target {
                self.text = format!("https://{}", self.text);
            }
        }
        self.scheme = scheme;
        self
    }
}

impl From<SocketAddr> for ListenSpec {
    /// [`ListenAddr::tcp`](crate::ListenAddr::tcp).
    fn from(addr: SocketAddr) -> Self {
        ListenSpec::tcp(addr)
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for ListenSpec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        let err = |reason| SpecError {
            text: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(err("empty"));
        }
        if text.trim() != text {
            return Err(err("leading or trailing white space"));
        }
        if let Some((name, rest)) = text
            .split_once("://")
            .filter(|_| !text.starts_with("unix:"))
        {
            let scheme = if name.eq_ignore_ascii_case("https") {
                Scheme::Https
            } else if name.eq_ignore_ascii_case("http") {
                Scheme::Http
            } else {
                return Err(err("unknown scheme: use http:// or https://"));
            };
            if rest.starts_with("unix:") {
                return Err(err(
                    "a scheme applies to TCP addresses only: write unix:/path",
                ));
            }
            if rest.contains('/') {
                return Err(err("a listen address has no path: write https://host:port"));
            }
            let plain: ListenSpec = rest.parse().map_err(|e: SpecError| err(e.reason))?;
            return Ok(ListenSpec {
                text: text.to_owned(),
                scheme,
                target: plain.target,
            });
        }
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(err("missing path after unix:"));
            }
            if !path.starts_with('/') {
                return Err(err("a unix socket path must be absolute"));
            }
            if path.len() > 107 {
                return Err(err("unix socket path longer than 107 bytes"));
            }
            if path.contains('\0') {
                return Err(err("unix socket path contains a NUL byte"));
            }
            return Ok(ListenSpec {
                text: text.to_owned(),
                scheme: Scheme::Http,
                target: Target::Unix(PathBuf::from(path)),
            });
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| err("expected host:port, [v6]:port, :port or unix:/path"))?;
        let port: u16 = match port.parse() {
            Ok(p) => p,
            Err(_) if port.is_empty() => return Err(err("missing port")),
            Err(_) => return Err(err("port is not a number from 0 to 65535")),
        };
        let (ip, any) = if host.is_empty() {
            (IpAddr::V6(Ipv6Addr::UNSPECIFIED), true)
        } else if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| err("unclosed [ in IPv6 address"))?;
            let v6: Ipv6Addr = inner.parse().map_err(|_| err("not an IPv6 address"))?;
            (IpAddr::V6(v6), false)
        } else if host.contains(':') {
            return Err(err(
                "IPv6 addresses must be written in brackets: [::1]:port",
            ));
        } else if let Ok(v4) = host.parse::<Ipv4Addr>() {
            (IpAddr::V4(v4), false)
        } else if is_host_name(host) {
            return Ok(ListenSpec {
                text: text.to_owned(),
                scheme: Scheme::Http,
                target: Target::Name {
                    host: host.to_owned(),
                    port,
                },
            });
        } else {
            return Err(err(
                "host is not an IPv4 address, [IPv6] or a host name (letters, digits, - and .)",
            ));
        };
        Ok(ListenSpec {
            text: text.to_owned(),
            scheme: Scheme::Http,
            target: Target::Tcp {
                addr: SocketAddr::new(ip, port),
                any,
            },
        })
    }
}

/// A DNS name as RFC 1123 allows it: dot-separated labels of letters, digits and `-` (not at
/// either end of a label), at most 63 bytes each and 253 in all, a trailing dot allowed; not
/// all digits and dots (that is a bad IPv4 address).
fn is_host_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(s: &str) -> (SocketAddr, bool) {
        match s.parse::<ListenSpec>().unwrap().target {
            Target::Tcp { addr, any } => (addr, any),
            other => panic!("expected tcp, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_documented_form() {
        assert_eq!(
            tcp("127.0.0.1:8000"),
            ("127.0.0.1:8000".parse().unwrap(), false)
        );
        assert_eq!(tcp("[::1]:80"), ("[::1]:80".parse().unwrap(), false));
        assert_eq!(tcp(":8080"), ("[::]:8080".parse().unwrap(), true));
        for (text, host, port) in [
            ("localhost:1", "localhost", 1),
            ("example.org:80", "example.org", 80),
            ("a-b.example.:443", "a-b.example.", 443),
        ] {
            let spec: ListenSpec = text.parse().unwrap();
            assert_eq!(
                spec.target(),
                &Target::Name {
                    host: host.into(),
                    port
                }
            );
            assert_eq!(spec.as_str(), text);
        }
        let unix: ListenSpec = "unix:/run/x.sock".parse().unwrap();
        assert_eq!(unix.target(), &Target::Unix("/run/x.sock".into()));
        assert_eq!(unix.to_string(), "unix:/run/x.sock");
    }

    #[test]
    fn keeps_the_original_text() {
        let s: ListenSpec = "127.0.0.1:09".parse().unwrap();
        assert_eq!(s.as_str(), "127.0.0.1:09");
        assert!(s.same_socket(&"127.0.0.1:9".parse().unwrap()));
        assert!(!s.same_socket(&"127.0.0.1:10".parse().unwrap()));
        let n: ListenSpec = "localhost:9".parse().unwrap();
        assert!(n.same_socket(&"localhost:9".parse().unwrap()));
    }

    #[test]
    fn a_scheme_says_whether_to_serve_tls() {
        let plain: ListenSpec = "127.0.0.1:80".parse().unwrap();
        let http: ListenSpec = "http://127.0.0.1:80".parse().unwrap();
        let https: ListenSpec = "https://[::1]:443".parse().unwrap();
        assert_eq!(plain.scheme(), Scheme::Http);
        assert_eq!(http.scheme(), Scheme::Http);
        assert_eq!(https.scheme(), Scheme::Https);
        assert!(plain.same_socket(&http));
        assert_eq!(http.as_str(), "http://127.0.0.1:80"); // the hand-off's `addr`, as written
        assert_eq!(https.to_string(), "https://[::1]:443");
        assert_eq!(tcp("https://:8443"), ("[::]:8443".parse().unwrap(), true));
        let named: ListenSpec = "HTTPS://localhost:1".parse().unwrap();
        assert_eq!(named.scheme(), Scheme::Https);
        assert_eq!(
            named.target(),
            &Target::Name {
                host: "localhost".into(),
                port: 1
            }
        );
        // one port cannot be both
        let https_80: ListenSpec = "https://127.0.0.1:80".parse().unwrap();
        assert!(https_80.same_socket(&plain));
        assert_ne!(https_80, plain);
        assert_eq!(
            "unix:/run/a://b".parse::<ListenSpec>().unwrap().target(),
            &Target::Unix("/run/a://b".into())
        );
        // what a name resolves to keeps the scheme
        let resolved = ListenSpec::from_socket_addr("127.0.0.1:1".parse().unwrap())
            .with_scheme(named.scheme());
        assert_eq!(resolved.as_str(), "https://127.0.0.1:1");
        assert_eq!(resolved.scheme(), Scheme::Https);
        assert_eq!(resolved, "https://127.0.0.1:1".parse().unwrap());
        let unchanged =
            ListenSpec::from_socket_addr("127.0.0.1:1".parse().unwrap()).with_scheme(Scheme::Http);
        assert_eq!(unchanged.as_str(), "127.0.0.1:1");
    }

    #[test]
    fn a_socket_named_https_serves_tls() {
        assert_eq!(Scheme::for_fd_name("https"), Scheme::Https);
        for other in ["http", "unknown", "HTTPS", "https2", ""] {
            assert_eq!(Scheme::for_fd_name(other), Scheme::Http, "{other}");
        }
    }

    #[test]
    fn rejects_bad_schemes_with_a_reason() {
        for (bad, why) in [
            ("ftp://1.2.3.4:5", "unknown scheme"),
            ("https://", "empty"),
            ("https://1.2.3.4", "expected host:port"),
            ("https://1.2.3.4:443/", "no path"),
            ("https://http://1.2.3.4:5", "no path"),
            ("https://unix:/run/x.sock", "TCP addresses only"),
            ("http://unix:/run/x.sock", "TCP addresses only"),
            ("https://exa_mple.com:443", "host is not an IPv4"),
        ] {
            let e = bad.parse::<ListenSpec>().unwrap_err();
            assert_eq!(e.text, bad);
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn rejects_with_a_reason_naming_the_text() {
        for bad in [
            "",
            "8000",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "::1:80",
            "[::1:80",
            "999.1.1.1:80",
            "1.2.3:80",
            "-bad.example:80",
            "bad-.example:80",
            "a..b:80",
            "under_score:80",
            "unix:",
            "unix:relative",
            " 1.2.3.4:5",
        ] {
            let e = bad.parse::<ListenSpec>().unwrap_err();
            assert_eq!(e.text, bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
