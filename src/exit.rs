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
