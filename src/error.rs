//! The one error type of the library, [`Error`]: what failed, in one line, and a typed
//! [`ErrorKind`] that decides the exit code (sysexits).

use std::io;

use crate::exit;

use crate::handoff::child::{ImportError, ImportProblem};
use crate::listen::ListenError;
use crate::settings::SettingsError;
#[cfg(feature = "tls")]
use crate::tls::TlsError;

/// Why a baton server could not start or serve. `Display` is one line naming what failed and
/// where; [`Error::kind`] says what kind of failure it is, [`Error::exit_code`] the exit status
/// that tells systemd and the operator.
///
/// ```no_run
/// use std::process::ExitCode;
///
/// #[tokio::main]
/// async fn main() -> ExitCode {
///     match baton_server::serve(axum::Router::new()).await {
///         Ok(_) => ExitCode::SUCCESS,
///         Err(e) => {
///             eprintln!("my-app: {e}");
///             ExitCode::from(e.exit_code())
///         }
///     }
/// }
/// ```
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
    #[cfg(feature = "tls")]
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
///
/// ```no_run
/// # async fn demo() {
/// use baton_server::ErrorKind;
///
/// match baton_server::Server::from_env().await {
///     Ok(server) => { let _ = server.serve(axum::Router::new()).await; }
///     Err(e) if e.kind() == ErrorKind::AddressInUse => eprintln!("is another copy running? {e}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
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
    /// What kind of failure this is. See [`ErrorKind`] for an example.
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
            #[cfg(feature = "tls")]
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
    /// See [`Error`] for an example.
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

macro_rules! from_layer {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error(Inner::from(e))
            }
        }
    )*};
}
from_layer!(SettingsError, ListenError, ImportError);
#[cfg(feature = "tls")]
from_layer!(TlsError);
