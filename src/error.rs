//! The one error type of the library, [`Error`]: what failed, in one line, and a typed
//! [`ErrorKind`] that decides the exit code (sysexits).

use std::io;

use nix::errno::Errno;

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

pub use crate::exit::ErrorKind;

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
            Inner::Tls(e) => e.kind(),
            Inner::PidFile { source, .. } => fs_kind(source),
            Inner::Executable(e) | Inner::Signals(e) | Inner::Serve(e) => io_kind(e),
        }
    }

    /// The [sysexits(3)](https://man.freebsd.org/cgi/man.cgi?query=sysexits) code for this
    /// failure: 78 configuration, 69 address in use, 77 permission denied, 76 protocol, 71 OS.
    /// See [`Error`] for an example.
    pub fn exit_code(&self) -> u8 {
        self.kind().exit_code()
    }
}

/// A file baton was told to write: an unsafe or missing place is the configuration's fault, a
/// refused write a permission problem, anything else the OS's.
fn fs_kind(e: &crate::safe_fs::FsError) -> ErrorKind {
    match e.errno() {
        None | Some(Errno::ENOENT | Errno::ENOTDIR) => ErrorKind::Config,
        Some(Errno::EACCES | Errno::EPERM) => ErrorKind::PermissionDenied,
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
