//! A stable parent for containers and for supervisors that follow one pid.
//!
//! A reload retires the process that received `SIGHUP`. Under systemd that is fine: systemd is
//! the stable parent and follows `MAINPID=`. As PID 1 of a container it is fatal (when PID 1
//! exits the kernel kills its whole PID namespace, successor included), and a supervisor that
//! follows one pid (supervisord, runit, s6, `docker run` without an init) sees its child exit at
//! every reload. So when baton is PID 1, or when asked (`--supervise`, `BATON_SUPERVISE=1`,
//! `"supervise": true`), the first process does not serve. It stays, for the life of the service,
//! as this small supervisor:
//!
//! * it starts generation 0 as its child: the same binary path and arguments, with
//!   [`SUPERVISOR_ENV`] set to its pid (the mark of a supervised generation, which never
//!   supervises again) and `NOTIFY_SOCKET` pointing at a private datagram socket of its own;
//! * it is the generations' service manager on that socket, as systemd is: it follows `MAINPID=`
//!   from the main generation, so it always knows which generation is main, with no new protocol
//!   (generations hand over among themselves exactly as under systemd); a generation whose
//!   hand-off failed after it announced its successor says `MAINPID=<own pid>` and is main again;
//! * it forwards `SIGHUP` to the main generation and `SIGTERM`/`SIGINT` to every generation
//!   (a `SIGHUP` is dropped with a warning while the main generation has exited but is not reaped
//!   yet: killed while its predecessor still drains, it is that predecessor's zombie, and comes
//!   to us, with its exit status, when the predecessor exits);
//! * it reaps every process that ends up its child (PID 1's duty; `PR_SET_CHILD_SUBREAPER` when
//!   it is not PID 1, so retired generations are reparented to it rather than to init);
//! * it passes on `READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=`, `WATCHDOG=1` … of the main
//!   generation to its own `NOTIFY_SOCKET`, if it has one (e.g. `podman --sdnotify=container`),
//!   from its own pid and never `MAINPID=`: to whoever started it, the supervisor is the service.
//!   It never waits for that manager: while the manager's socket is full, notifications are
//!   dropped (one log line), and a `STATUS=` is bounded as baton's own are ([`crate::notify`]);
//! * when no child is left it exits with the status of the generation that was main last
//!   (128 + the signal number if a signal ended it).
//!
//! It holds no listener and serves nothing: socket-activated descriptors addressed to it are
//! passed to generation 0 and closed in the supervisor at once.
//!
//! What it does not do: its own binary is never replaced by a reload (the generations re-execute
//! the binary on disk; the supervisor keeps running the one it started from: a container is
//! upgraded by replacing it, a reload there is for configuration and certificates); it does not
//! restart a generation that crashed (the container runtime's restart policy does); it does not
//! kill a generation that overstays its drain (each generation bounds its own drain with
//! `shutdown_timeout`; the runtime's stop grace period is the last resort).
//!
//! Under systemd (`INVOCATION_ID` set and the parent process is systemd) nothing changes: systemd
//! already is the stable parent, so a request to supervise is ignored with one warning line.
//!
//! The rooms: [`decide`](mod@decide) (who supervises; pure), [`tracker`] (which generation is
//! main; pure), [`procfs`] (what `/proc` says), [`notify_socket`] (the private socket and the
//! credentials of what arrives on it), [`start`] (set-up and generation 0) and [`event_loop`]
//! (the loop).

use std::io;
use std::path::{Path, PathBuf};

use tracing::{error, info, warn};

use crate::exit;
use crate::safe_fs::FsError;

mod decide;
mod event_loop;
mod notify_socket;
mod procfs;
mod start;
mod tracker;

pub use decide::{activation_env, decide, Facts, Role, Why};
use event_loop::Supervisor;

/// Set by the supervisor in generation 0's environment (and so inherited by every successor):
/// the supervisor's pid. A process with it is a supervised generation and never supervises.
pub const SUPERVISOR_ENV: &str = "BATON_SUPERVISOR";

/// The one entry point, called by `main` after the configuration was read and logging set up,
/// before anything else starts (no runtime, no thread, no listener yet).
///
/// Returns `None` when this process should go on and serve (a plain process or a supervised
/// generation), or `Some(exit code)` when it was the supervisor and the service is over.
pub fn enter(asked: bool, handoff_socket: &Path) -> Option<u8> {
    match decide(&Facts::of_process(asked)) {
        Role::Alone | Role::Generation { .. } => None,
        Role::IgnoredUnderSystemd => {
            warn!("supervise ignored: under systemd, systemd is the stable parent of every generation");
            None
        }
        Role::Supervisor(why) => Some(supervise(handoff_socket, why)),
    }
}

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// A step of the set-up failed.
    #[error("supervisor: {step}: {source}")]
    Setup {
        /// What was being done.
        step: String,
        /// The OS error.
        source: io::Error,
    },
    /// The private notify socket could not be made (or its directory is not safe).
    #[error("supervisor: notify socket: {0}")]
    Socket(#[from] notify_socket::SocketError),
    /// Generation 0 could not be started.
    #[error("supervisor: cannot start generation 0 ({exe}): {source}")]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

pub(super) fn setup(step: impl Into<String>) -> impl FnOnce(io::Error) -> SuperviseError {
    let step = step.into();
    move |source| SuperviseError::Setup { step, source }
}

impl SuperviseError {
    /// The exit code (sysexits): 77 when a directory is not safe to use, 71 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            SuperviseError::Socket(notify_socket::SocketError::Directory(FsError::Unsafe {
                ..
            })) => exit::NOPERM,
            _ => exit::OSERR,
        }
    }
}

fn supervise(handoff_socket: &Path, why: Why) -> u8 {
    let span = tracing::info_span!("supervisor", pid = std::process::id());
    let _entered = span.enter();
    match Supervisor::start(handoff_socket, why) {
        Ok(mut supervisor) => {
            let code = supervisor.run();
            info!(code, "no generation left; exiting");
            code
        }
        Err(e) => {
            error!(error = %e, "cannot supervise");
            e.exit_code()
        }
    }
}
