//! Listen address specifications: what an operator writes after `--listen`.
//!
//! Accepted forms: `host:port` (an IPv4 literal or a host name, resolved when the listeners are
//! set up, see [`crate::listen::resolve`]), `[v6]:port`, `:port` (every interface, IPv4 and
//! IPv6) and `unix:/absolute/path`. The original string is kept: it is what the
//! documented hand-off compares (see `docs/handoff-protocol.md`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// Where a listener listens, parsed from its configured string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    text: String,
    target: Target,
}

/// The address family and address of a [`ListenSpec`].
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
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// True when `other` names the same socket, even if written differently
    /// (`localhost:80` and `127.0.0.1:80`).
    pub fn same_socket(&self, other: &ListenSpec) -> bool {
        self.target == other.target
    }

    /// Build a spec describing a TCP socket address we found (e.g. by `getsockname`).
    pub fn from_socket_addr(addr: SocketAddr) -> Self {
        ListenSpec {
            text: addr.to_string(),
            target: Target::Tcp { addr, any: false },
        }
    }

    /// Build a spec describing a Unix socket path we found.
    pub fn from_unix_path(path: PathBuf) -> Self {
        ListenSpec {
            text: format!("unix:{}", path.display()),
            target: Target::Unix(path),
        }
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
