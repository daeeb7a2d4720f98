//! Exit codes, from [sysexits(3)](https://man.freebsd.org/cgi/man.cgi?query=sysexits), so that
//! systemd's `status=` tells an operator what kind of failure it was.

/// Success.
pub const OK: u8 = 0;
/// `baton reload`: the reload was attempted and failed; the old process serves on.
pub const RELOAD_FAILED: u8 = 1;
/// Bad command-line usage.
pub const USAGE: u8 = 64;
/// A service is unavailable: the address is already in use.
pub const UNAVAILABLE: u8 = 69;
/// An internal error.
pub const SOFTWARE: u8 = 70;
/// An operating-system error.
pub const OSERR: u8 = 71;
/// Permission denied.
pub const NOPERM: u8 = 77;
/// The hand-off peer broke the protocol.
pub const PROTOCOL: u8 = 76;
/// Bad configuration.
pub const CONFIG: u8 = 78;
