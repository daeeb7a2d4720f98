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

// The runtime directory that goes with a hand-off socket path, its layout and its safe
// creation are [`crate::runtime_dir`]'s.
