//! Listening sockets: what systemd passed ([`activated`]), adopting a descriptor someone handed us
//! ([`adopt_listening_fd`]) and fresh binds ([`bind`]). This module knows nothing of hand-offs: the
//! chain activation → import → bind is walked by `crate::startup::acquire`.

pub mod activation;
pub mod spec;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::sys::socket::{
    self, sockopt, AddressFamily, SockFlag, SockType, SockaddrLike, SockaddrStorage,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use activation::{ActivationEnv, ActivationError};
use spec::{ListenSpec, Scheme, Target};

/// Where a listener originally came from: decides whether a successor keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Socket activation: kept by every successor.
    Systemd,
    /// The configuration: kept while the configuration names it.
    Config,
}

/// How a listener reached this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Passed by systemd (`LISTEN_FDS`).
    Systemd,
    /// Inherited from a predecessor through the hand-off.
    Import,
    /// Bound by this process.
    Bind,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Systemd => "systemd",
            Source::Import => "import",
            Source::Bind => "bind",
        })
    }
}

/// A listening socket.
#[derive(Debug)]
pub enum Socket {
    /// TCP (IPv4 or IPv6).
    Tcp(std::net::TcpListener),
    /// Unix stream.
    Unix(UnixListener),
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Socket::Tcp(l) => l.as_fd(),
            Socket::Unix(l) => l.as_fd(),
        }
    }
}

impl Socket {
    /// Another descriptor for the same socket (same open file description).
    pub fn try_clone(&self) -> io::Result<Socket> {
        Ok(match self {
            Socket::Tcp(l) => Socket::Tcp(l.try_clone()?),
            Socket::Unix(l) => Socket::Unix(l.try_clone()?),
        })
    }
}

/// A listener with its provenance.
#[derive(Debug)]
pub struct Listener {
    /// Its name: `LISTEN_FDNAMES` entry, or the address string.
    pub name: String,
    /// The address, as configured where it was configured.
    pub spec: ListenSpec,
    /// How this process got it.
    pub source: Source,
    /// Where it originally came from (decides whether a successor keeps it).
    pub origin: Origin,
    /// The socket.
    pub socket: Socket,
}

impl Listener {
    /// What this listener serves: TLS when its address says `https://`, or when it is a
    /// socket-activated listener whose `FileDescriptorName=` is `https` (kept through hand-offs:
    /// the name travels with the socket); plain HTTP otherwise.
    pub fn scheme(&self) -> Scheme {
        if self.origin == Origin::Systemd && Scheme::for_fd_name(&self.name) == Scheme::Https {
            return Scheme::Https;
        }
        self.spec.scheme()
    }
}

/// Why a listener could not be set up. One line each, naming the fd or address.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The activation variables are garbage.
    #[error("socket activation: {0}")]
    Activation(#[from] ActivationError),
    /// A descriptor systemd passed is not a listening stream socket.
    #[error("socket activation: fd {fd} ({name}) {problem}")]
    BadFd {
        /// The descriptor.
        fd: RawFd,
        /// Its name.
        name: String,
        /// What it is instead.
        problem: String,
    },
    /// A fresh bind failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address as configured.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// A host name in a listen address does not resolve.
    #[error("listen address {addr:?}: cannot resolve {host:?}: {reason}")]
    Resolve {
        /// The address as configured.
        addr: String,
        /// The host name.
        host: String,
        /// Why (the resolver's message).
        reason: String,
    },
    /// Two listen addresses name one socket once host names are resolved.
    #[error("listen address {addr:?} resolves to {resolved}, which {other:?} names too")]
    Duplicate {
        /// The address as configured.
        addr: String,
        /// The address it resolved to.
        resolved: String,
        /// The other configured address.
        other: String,
    },
    /// Nothing to listen on: no address configured and none passed.
    #[error("nothing to listen on: no listen address configured and no socket passed by systemd or a predecessor")]
    Nothing,
}

/// The listeners systemd passed to `our_pid`, adopted, in `LISTEN_FDS` order.
pub fn activated(env: &ActivationEnv, our_pid: u32) -> Result<Vec<Listener>, ListenError> {
    if let Some(warning) = env.warning() {
        warn!("{warning}");
    }
    let mut listeners = Vec::new();
    for passed in env.parse(our_pid)? {
        let socket = adopt_listening_fd(passed.fd).map_err(|problem| ListenError::BadFd {
            fd: passed.fd,
            name: passed.name.clone(),
            problem,
        })?;
        listeners.push(Listener {
            spec: local_spec(&socket),
            name: passed.name,
            source: Source::Systemd,
            origin: Origin::Systemd,
            socket,
        });
    }
    Ok(listeners)
}

/// Every descriptor passed to `our_pid` is open. The command checks it first thing, before it
/// opens anything of its own (its log socket, its runtime's epoll instance): a number that
/// `LISTEN_FDS` counts but that was not passed would otherwise be taken by the first descriptor
/// the process opens, and adopting that one as a listener ([`activated`]) would take, and close,
/// a descriptor its runtime owns (the process then aborts instead of refusing the start with one
/// line). A library application builds its runtime before it serves, so there this check would
/// come too late; it relies on [`adopt_listening_fd`], which owns a number only once it is a
/// listening socket: the runtime's descriptor is refused as "not a socket" and left open.
#[cfg(feature = "cli")]
pub fn check_passed_fds_open(env: &ActivationEnv, our_pid: u32) -> Result<(), ListenError> {
    use nix::fcntl::{fcntl, FcntlArg};
    for passed in env.parse(our_pid)? {
        if passed.fd >= 3 && fcntl(passed.fd, FcntlArg::F_GETFD).is_err() {
            return Err(ListenError::BadFd {
                fd: passed.fd,
                name: passed.name,
                problem: "is not open".into(),
            });
        }
    }
    Ok(())
}

/// Resolve the host names among `specs`: each `name:port` becomes one spec per address the
/// name resolves to (written as that address, e.g. `127.0.0.1:8080`, so that a successor can tell
/// them apart in the hand-off), in the resolver's order, duplicates dropped. Other specs are kept
/// as they are. Names are resolved again by every successor: a reload follows a changed name.
pub async fn resolve(specs: &[ListenSpec]) -> Result<Vec<ListenSpec>, ListenError> {
    if !specs
        .iter()
        .any(|s| matches!(s.target(), Target::Name { .. }))
    {
        return Ok(specs.to_vec());
    }
    let specs = specs.to_vec();
    // getaddrinfo blocks: not on the runtime's threads.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(|| resolve_blocking(&specs)))
        .await
        .unwrap_or_else(|e| {
            Err(ListenError::Bind {
                addr: "host names".into(),
                source: io::Error::other(e.to_string()),
            })
        })
}

/// [`resolve`], blocking the calling thread (for `baton check`).
pub fn resolve_blocking(specs: &[ListenSpec]) -> Result<Vec<ListenSpec>, ListenError> {
    use std::net::ToSocketAddrs;
    let mut out: Vec<(ListenSpec, &str)> = Vec::with_capacity(specs.len());
    for spec in specs {
        let Target::Name { host, port } = spec.target() else {
            out.push((spec.clone(), spec.as_str()));
            continue;
        };
        let failed = |reason: String| ListenError::Resolve {
            addr: spec.as_str().to_owned(),
            host: host.clone(),
            reason,
        };
        let addrs: Vec<SocketAddr> = (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(|e| failed(e.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(failed("no address".into()));
        }
        let list: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        info!(
            listen = spec.as_str(),
            addresses = list.join(", "),
            "resolved"
        );
        for addr in addrs {
            let resolved = ListenSpec::from_socket_addr(addr).with_scheme(spec.scheme());
            if !out
                .iter()
                .any(|(s, from)| *from == spec.as_str() && s.same_socket(&resolved))
            {
                out.push((resolved, spec.as_str()));
            }
        }
    }
    for (i, (spec, from)) in out.iter().enumerate() {
        if let Some((_, other)) = out[..i].iter().find(|(s, _)| s.same_socket(spec)) {
            return Err(ListenError::Duplicate {
                addr: (*from).to_owned(),
                resolved: spec.to_string(),
                other: (*other).to_owned(),
            });
        }
    }
    Ok(out.into_iter().map(|(spec, _)| spec).collect())
}

/// Bind every spec afresh.
pub fn bind_all(specs: Vec<ListenSpec>) -> Result<Vec<Listener>, ListenError> {
    specs
        .into_iter()
        .map(|spec| {
            let socket = bind(&spec).map_err(|source| ListenError::Bind {
                addr: spec.as_str().to_owned(),
                source,
            })?;
            Ok(Listener {
                name: spec.as_str().to_owned(),
                spec,
                source: Source::Bind,
                origin: Origin::Config,
                socket,
            })
        })
        .collect()
}

/// Take ownership of a descriptor we were given, after checking it is a listening stream socket.
/// It is marked close-on-exec (systemd's may not be; our successor gets its own copy on purpose).
/// The caller must make sure no two adoptions name the same number.
///
/// The checks run on the borrowed number, and it is owned only once it passed them: a number
/// that was not passed after all but taken since by a descriptor of the process (in a library
/// application, its runtime's epoll instance, made before `serve` reads `LISTEN_FDS`) is refused
/// and left open, never closed under its owner.
pub fn adopt_listening_fd(fd: RawFd) -> Result<Socket, String> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    if fd < 3 {
        return Err("is a standard stream".into());
    }
    fcntl(fd, FcntlArg::F_GETFD).map_err(|_| "is not open".to_owned())?;
    // SAFETY: the fd is open (checked above) and stays open while it is borrowed: only for the
    // checks below, in this call, which close nothing.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let family = listening_family(borrowed)?;
    // SAFETY: the fd is a listening stream socket (checked above) that was handed to this process
    // for it to own: by systemd (LISTEN_FDS) or by the predecessor that placed it before exec.
    // Nothing else in this process refers to it (the command checked every passed number was open
    // before it opened anything, `check_passed_fds_open`; a library's runtime opens no listening
    // socket of its own), and each number is adopted once (duplicates are refused earlier).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(owned.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| e.to_string())?;
    Ok(match family {
        AddressFamily::Unix => Socket::Unix(owned.into()),
        _ => Socket::Tcp(owned.into()),
    })
}

/// The address family of a listening stream socket (`Inet`, `Inet6` or `Unix`), or why `fd` is
/// not one.
fn listening_family(fd: BorrowedFd<'_>) -> Result<AddressFamily, String> {
    let stat =
        nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| format!("cannot be inspected: {e}"))?;
    if crate::safe_fs::file_type(&stat) != nix::sys::stat::SFlag::S_IFSOCK {
        return Err("is not a socket".into());
    }
    let ty = socket::getsockopt(&fd, sockopt::SockType)
        .map_err(|e| format!("is not a usable socket: {e}"))?;
    if ty != SockType::Stream {
        return Err(format!("is a {ty:?} socket, not a stream socket"));
    }
    if !socket::getsockopt(&fd, sockopt::AcceptConn).map_err(|e| e.to_string())? {
        return Err("is a socket that is not listening".into());
    }
    let addr: SockaddrStorage = socket::getsockname(fd.as_raw_fd()).map_err(|e| e.to_string())?;
    match addr.family() {
        Some(family @ (AddressFamily::Inet | AddressFamily::Inet6 | AddressFamily::Unix)) => {
            Ok(family)
        }
        other => Err(format!("has unsupported address family {other:?}")),
    }
}

/// The address a socket is bound to, as a spec.
pub fn local_spec(socket: &Socket) -> ListenSpec {
    match socket {
        Socket::Tcp(l) => l
            .local_addr()
            .map(ListenSpec::from_socket_addr)
            .unwrap_or_else(|_| ListenSpec::from_socket_addr(SocketAddr::from(([0, 0, 0, 0], 0)))),
        Socket::Unix(l) => ListenSpec::from_unix_path(
            l.local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf))
                .unwrap_or_default(),
        ),
    }
}

/// Bind a fresh listener: `SO_REUSEADDR`, never `SO_REUSEPORT` (one socket is shared by every
/// generation, so no queued connection is ever lost), close-on-exec.
pub fn bind(spec: &ListenSpec) -> io::Result<Socket> {
    match spec.target() {
        Target::Tcp { addr, any } => match bind_tcp(*addr, *any) {
            Err(e) if *any && e.raw_os_error() == Some(nix::errno::Errno::EAFNOSUPPORT as i32) => {
                bind_tcp(SocketAddr::from(([0, 0, 0, 0], addr.port())), false)
            }
            other => other,
        }
        .map(Socket::Tcp),
        Target::Unix(path) => bind_unix(path).map(Socket::Unix),
        Target::Name { .. } => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a host name must be resolved before it is bound",
        )),
    }
}

/// The listen backlog of the sockets baton binds (systemd's `Backlog=` default, `SOMAXCONN`, is
/// the same).
pub(crate) const BACKLOG: i32 = 4096;

fn bind_tcp(addr: SocketAddr, dual_stack: bool) -> io::Result<std::net::TcpListener> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &!dual_stack)?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    socket::listen(
        &fd,
        socket::Backlog::new(BACKLOG).unwrap_or(socket::Backlog::MAXCONN),
    )?;
    Ok(fd.into())
}

/// Connect to `path` without blocking (and hang up at once).
fn probe_unix(path: &Path) -> io::Result<()> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    socket::connect(fd.as_raw_fd(), &socket::UnixAddr::new(path)?).map_err(io::Error::from)
}

fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                ));
            }
            // Probe without blocking: a live listener with a full backlog answers EAGAIN (in
            // use); only ECONNREFUSED means nobody listens.
            match probe_unix(path) {
                Ok(()) => return Err(io::Error::from(io::ErrorKind::AddrInUse)),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    warn!(path = %path.display(), "removing a stale unix socket");
                    std::fs::remove_file(path)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::from(io::ErrorKind::AddrInUse))
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::bind(fd.as_raw_fd(), &socket::UnixAddr::new(path)?)?;
    socket::listen(
        &fd,
        socket::Backlog::new(BACKLOG).unwrap_or(socket::Backlog::MAXCONN),
    )?;
    Ok(fd.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(texts: &[&str]) -> Vec<ListenSpec> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn names_resolve_to_every_address_and_literals_stay() {
        let got = resolve_blocking(&specs(&["localhost:1", "unix:/x.sock", ":2"])).unwrap();
        let texts: Vec<&str> = got.iter().map(ListenSpec::as_str).collect();
        assert!(texts.contains(&"127.0.0.1:1"), "{texts:?}");
        assert!(
            texts[texts.len() - 2..] == ["unix:/x.sock", ":2"],
            "{texts:?}"
        );
        assert!(got
            .iter()
            .all(|s| !matches!(s.target(), Target::Name { .. })));
    }

    #[test]
    fn a_name_written_with_https_resolves_to_tls_addresses() {
        let got = resolve_blocking(&specs(&["https://localhost:1", "http://localhost:2"])).unwrap();
        let https: Vec<&ListenSpec> = got
            .iter()
            .filter(|s| s.scheme() == spec::Scheme::Https)
            .collect();
        assert!(
            https.iter().any(|s| s.as_str() == "https://127.0.0.1:1"),
            "{got:?}"
        );
        assert!(https.iter().all(|s| s.as_str().ends_with(":1")), "{got:?}");
        assert!(got.iter().any(|s| s.as_str() == "127.0.0.1:2"), "{got:?}");
    }

    #[test]
    fn an_unresolvable_name_or_a_collision_is_one_line_naming_it() {
        let e = resolve_blocking(&specs(&["nothing.invalid:80"])).unwrap_err();
        let line = e.to_string();
        assert!(
            line.starts_with(
                "listen address \"nothing.invalid:80\": cannot resolve \"nothing.invalid\": "
            ) && !line.contains('\n'),
            "{line}"
        );
        let e = resolve_blocking(&specs(&["127.0.0.1:3", "localhost:3"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "listen address \"localhost:3\" resolves to 127.0.0.1:3, which \"127.0.0.1:3\" names too"
        );
    }

    #[test]
    fn fresh_bind_is_a_listening_socket_we_can_adopt_again() {
        let spec: ListenSpec = "127.0.0.1:0".parse().unwrap();
        let Socket::Tcp(l) = bind(&spec).unwrap() else {
            panic!()
        };
        assert!(socket::getsockopt(&l, sockopt::AcceptConn).unwrap());
        assert!(!socket::getsockopt(&l, sockopt::ReusePort).unwrap());
        let dup = OwnedFd::from(l.try_clone().unwrap());
        let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
        assert!(matches!(adopt_listening_fd(raw), Ok(Socket::Tcp(_))));
    }

    /// Refused numbers are left as they were: a descriptor the process owns elsewhere (a
    /// runtime's epoll instance taking a number `LISTEN_FDS` counts but that was not passed) is
    /// never closed under its owner.
    #[test]
    fn adopting_something_else_is_refused_and_leaves_it_open() {
        let f = tempfile::tempfile().unwrap();
        assert_eq!(
            adopt_listening_fd(f.as_raw_fd()).unwrap_err(),
            "is not a socket"
        );
        let epoll =
            nix::sys::epoll::Epoll::new(nix::sys::epoll::EpollCreateFlags::empty()).unwrap();
        assert_eq!(
            adopt_listening_fd(epoll.0.as_raw_fd()).unwrap_err(),
            "is not a socket"
        );
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(
            adopt_listening_fd(a.as_raw_fd()).unwrap_err(),
            "is a socket that is not listening"
        );
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            adopt_listening_fd(udp.as_raw_fd()).unwrap_err(),
            "is a Datagram socket, not a stream socket"
        );
        assert_eq!(adopt_listening_fd(1).unwrap_err(), "is a standard stream");
        for (what, fd) in [
            ("the file", f.as_raw_fd()),
            ("the epoll instance", epoll.0.as_raw_fd()),
            ("the connected socket", a.as_raw_fd()),
            ("the datagram socket", udp.as_raw_fd()),
        ] {
            assert!(
                nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok(),
                "{what} was closed by a refused adoption"
            );
        }
        // Still usable by its owner.
        epoll
            .wait(&mut [nix::sys::epoll::EpollEvent::empty()], 0u8)
            .expect("the epoll instance still works");
    }

    #[test]
    fn unix_bind_replaces_a_stale_socket_but_not_a_file() {
        let (dir, path) = crate::test_util::temp_path("s.sock");
        drop(UnixListener::bind(&path).unwrap()); // leaves a stale file
        let spec: ListenSpec = format!("unix:{}", path.display()).parse().unwrap();
        let live = bind(&spec).unwrap();
        assert_eq!(bind(&spec).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        drop(live);
        // A live listener whose backlog is full is in use, not stale: no hang, no unlink.
        let busy = dir.path().join("busy.sock");
        let listener = UnixListener::bind(&busy).unwrap();
        let mut queued = Vec::new();
        loop {
            let fd = socket::socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK,
                None,
            )
            .unwrap();
            match socket::connect(fd.as_raw_fd(), &socket::UnixAddr::new(&busy).unwrap()) {
                Ok(()) => queued.push(fd),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(queued.len() < 100_000);
        }
        let spec: ListenSpec = format!("unix:{}", busy.display()).parse().unwrap();
        assert_eq!(bind(&spec).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        assert!(busy.exists());
        drop(listener);
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let spec: ListenSpec = format!("unix:{}", file.display()).parse().unwrap();
        assert!(bind(&spec).is_err());
        assert!(file.exists());
    }
}
