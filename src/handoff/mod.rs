//! The hand-off of the listening sockets from a running baton to its successor, specified once in
//! [`docs/handoff-protocol.md`](../../docs/handoff-protocol.md).
//!
//! * [`protocol`]: the wire messages (pure).
//! * [`parent`]: the running process's side.
//! * [`child`]: the successor's side (also speaks to a predecessor that knows only the base exchange).
//! * [`spawn`]: starting the successor with the listeners in place.

pub mod child;
pub mod parent;
pub mod protocol;
pub mod spawn;

use std::path::{Path, PathBuf};

/// The runtime directory that goes with a hand-off socket path: its directory. baton makes its
/// per-hand-off directories (`handoff.<pid>.<random>/handoff.sock`) and its reload status files
/// there, never at the path itself, which is only dialed at a fresh start to import from a
/// running predecessor (see `docs/handoff-protocol.md`, "Files baton creates").
pub fn runtime_dir(handoff_socket: &Path) -> PathBuf {
    match handoff_socket.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}
