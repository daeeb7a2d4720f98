//! Exit codes, from sysexits(3), so that systemd's `status=` tells what kind of failure it was.
//! A leaf: it imports nothing of the crate.

/// Success.
pub const OK: u8 = 0;
/// `baton reload`: the reload was attempted and failed; the old process serves on.
pub const RELOAD_FAILED: u8 = 1;
/// Bad command-line usage.
pub const USAGE: u8 = 64;
/// The address is already in use.
pub const UNAVAILABLE: u8 = 69;
/// An operating-system error.
pub const OSERR: u8 = 71;
/// A temporary failure: try again later.
pub const TEMPFAIL: u8 = 75;
/// The hand-off peer broke the protocol.
pub const PROTOCOL: u8 = 76;
/// Permission denied.
pub const NOPERM: u8 = 77;
/// Bad configuration.
pub const CONFIG: u8 = 78;

/// What kind of failure a start-up error is: the one place a kind becomes an exit code
/// ([`ErrorKind::exit_code`]). Re-exported as `baton_server::ErrorKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A setting, a socket-activation variable or a listen address is wrong, or the TLS
    /// certificate or key cannot be used.
    Config,
    /// An address is already in use.
    AddressInUse,
    /// The operating system refused: permission denied.
    PermissionDenied,
    /// The predecessor broke the hand-off protocol.
    Protocol,
    /// Another operating-system error.
    Os,
}

impl ErrorKind {
    /// The [sysexits(3)](https://man.freebsd.org/cgi/man.cgi?query=sysexits) code for this kind
    /// of failure: 78 configuration, 69 address in use, 77 permission denied, 76 protocol, 71 OS.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Config => CONFIG,
            ErrorKind::AddressInUse => UNAVAILABLE,
            ErrorKind::PermissionDenied => NOPERM,
            ErrorKind::Protocol => PROTOCOL,
            ErrorKind::Os => OSERR,
        }
    }
}
