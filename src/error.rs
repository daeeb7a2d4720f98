//! The one error type of the library, [`Error`]: what failed, in one line, and a typed
//! [`ErrorKind`] that decides the exit code (sysexits).

use std::io;

use crate::handoff::child::{ImportError, ImportProblem};
use crate::listen::ListenError;
use crate::settings::SettingsError;
use crate::tls::TlsError;

/// Why a baton server could not start or serve. `Display` is one line naming what failed and
/// where; [`Error::kind`] says what kind of failure it is.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(#[from] Inner);

#[derive(Debug, thiserror::Error)]
pub(crate) enum Inner {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("pid file {}: {source}", .path.display())]
    PidFile {
        path: std::path::PathBuf,
        source: crate::safe_fs::FsError,
    },
    #[error("cannot find the running executable: {0}")]
    Executable(io::Error),
    #[error("cannot set up signal handling: {0}")]
    Signals(io::Error),
    #[error("cannot serve: {0}")]
    Serve(io::Error),
}

/// What kind of failure an [`Error`] is.
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

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match &self.0 {
            Inner::Settings(_) => ErrorKind::Config,
            Inner::Listen(ListenError::Activation(_) | ListenError::BadFd { .. }) => {
                ErrorKind::Config
            }
            Inner::Listen(
                ListenError::Nothing | ListenError::Resolve { .. } | ListenError::Duplicate { .. },
            ) => ErrorKind::Config,
            Inner::Listen(ListenError::Bind { source, .. }) => io_kind(source),
            Inner::Import(ImportError {
                problem: ImportProblem::Mismatch { .. },
                ..
            }) => ErrorKind::Config,
            Inner::Import(ImportError {
                problem: ImportProblem::Stranger { .. },
                ..
            }) => ErrorKind::PermissionDenied,
            Inner::Import(_) => ErrorKind::Protocol,
            Inner::Tls(e) => match e.exit_code() {
                exit::NOPERM => ErrorKind::PermissionDenied,
                exit::OSERR => ErrorKind::Os,
                _ => ErrorKind::Config,
            },
            Inner::PidFile { source, .. } => fs_kind(source),
            Inner::Executable(e) | Inner::Signals(e) | Inner::Serve(e) => io_kind(e),
        }
    }

    /// The [sysexits(3)](https://man.freebsd.org/cgi/man.cgi?query=sysexits) code for this
    /// failure: 78 configuration, 69 address in use, 77 permission denied, 76 protocol, 71 OS.
    pub fn exit_code(&self) -> u8 {
        match self.kind() {
            ErrorKind::Config => exit::CONFIG,
            ErrorKind::AddressInUse => exit::UNAVAILABLE,
            ErrorKind::PermissionDenied => exit::NOPERM,
            ErrorKind::Protocol => exit::PROTOCOL,
            ErrorKind::Os => exit::OSERR,
        }
    }
}

/// `text` with its control characters escaped (`\n` as the two characters `\`, `n`), so that a
/// message quoting untrusted input (a file, a peer's JSON, a request path) stays on one line and
/// reads as what it is: C0 and C1 controls (`U+009B` CSI, `U+0085` NEL), the line and paragraph
/// separators `U+2028`/`U+2029`, and the marks that reorder text on a terminal (bidi embeddings,
/// overrides and isolates, `U+202A`–`U+202E`, `U+2066`–`U+2069`, `U+200E`/`U+200F`, `U+061C`)
/// are written as `\u{…}`.
pub(crate) fn one_line(text: &str) -> String {
    escaped(text, &[])
}

/// [`one_line`] for text that a log line puts between double quotes (the access log's request
/// line): `"` and `\` are escaped too (`\"`, `\\`), so the quoted field cannot be closed early.
pub(crate) fn quoted_field(text: &str) -> String {
    escaped(text, &['"', '\\'])
}

/// True for the characters [`one_line`] escapes.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
        )
}

fn escaped(text: &str, also: &[char]) -> String {
    let mut line = String::with_capacity(text.len());
    for c in text.chars() {
        if needs_escape(c) {
            line.extend(c.escape_default());
        } else if also.contains(&c) {
            line.push('\\');
            line.push(c);
        } else {
            line.push(c);
        }
    }
    line
}

/// A file baton was told to write: an unsafe or missing place is the configuration's fault, a
/// refused write a permission problem, anything else the OS's.
fn fs_kind(e: &crate::safe_fs::FsError) -> ErrorKind {
    match e.errno() {
        None | Some(libc::ENOENT | libc::ENOTDIR) => ErrorKind::Config,
        Some(libc::EACCES | libc::EPERM) => ErrorKind::PermissionDenied,
        Some(_) => ErrorKind::Os,
    }
}

impl Error {
    /// The PID file asked for cannot be written (see [`crate::pidfile::check_writable`]).
    pub(crate) fn pid_file(path: &std::path::Path, source: crate::safe_fs::FsError) -> Error {
        Error(Inner::PidFile {
            path: path.to_owned(),
            source,
        })
    }
}

fn io_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::AddrInUse => ErrorKind::AddressInUse,
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Os,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_escapes_controls_separators_and_bidi_marks() {
        assert_eq!(
            one_line("a\nb\u{9b}31mc\u{85}d\u{202e}e\u{2028}f\u{2066}g\u{7f}"),
            "a\\nb\\u{9b}31mc\\u{85}d\\u{202e}e\\u{2028}f\\u{2066}g\\u{7f}"
        );
        assert_eq!(one_line("é ü \"q\" \\"), "é ü \"q\" \\");
        assert_eq!(quoted_field("/a\"b\\c\u{202e}"), "/a\\\"b\\\\c\\u{202e}");
    }
}

macro_rules! from_layer {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error(Inner::from(e))
            }
        }
    )*};
}
from_layer!(SettingsError, ListenError, ImportError, TlsError);

/// Exit codes, from sysexits(3), so that systemd's `status=` tells what kind of failure it was.
pub(crate) mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// `baton reload`: the reload was attempted and failed; the old process serves on.
    #[cfg(feature = "cli")]
    pub const RELOAD_FAILED: u8 = 1;
    /// Bad command-line usage.
    #[cfg(feature = "cli")]
    pub const USAGE: u8 = 64;
    /// The address is already in use.
    pub const UNAVAILABLE: u8 = 69;
    /// An operating-system error.
    pub const OSERR: u8 = 71;
    /// The hand-off peer broke the protocol.
    pub const PROTOCOL: u8 = 76;
    /// Permission denied.
    pub const NOPERM: u8 = 77;
    /// Bad configuration.
    pub const CONFIG: u8 = 78;
}
