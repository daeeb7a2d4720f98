//! The client: find the service's control socket, make sure it is the service named, ask for a
//! reload and wait for the outcome.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt};
use tracing::{debug, info};

use super::{Answer, Request, MAX_LINE};
use crate::exit;
use crate::pidfile;
use crate::runtime_dir::RuntimeDir;
use crate::safe_fs::{self, describe_uid, FsError};

/// Which service to reload: [`Target::for_settings`], or an explicit pid.
///
/// ```no_run
/// use std::time::Duration;
/// use baton_server::reload::{self, Target};
///
/// let settings = baton_server::Settings::from_env().expect("settings");
/// let target = Target { pid: Some(4242), ..Target::for_settings(&settings) };
/// match reload::request(&target, Duration::from_secs(15)) {
///     Ok(done) => println!("pid {} serves", done.successor),
///     Err(e) => eprintln!("{e}"),
/// }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The service's hand-off socket path, as configured (its runtime directory holds the
    /// control socket; see [`crate::Settings`] and `docs/handoff-protocol.md`).
    pub handoff_socket: PathBuf,
    /// A pid of the service: its main process or the supervisor above it (baton as PID 1, or
    /// `--supervise`), as this process's PID namespace numbers it. `None`: `$MAINPID`, else the
    /// PID file.
    pub pid: Option<u32>,
    /// The service's PID file, used when no pid is given and `$MAINPID` is not set.
    pub pid_file: Option<PathBuf>,
}

impl Target {
    /// The service configured by `settings` (its hand-off socket path, default included, and
    /// its PID file), with no explicit pid: `$MAINPID` (what systemd sets for `ExecReload=`),
    /// else the PID file.
    ///
    /// ```
    /// let settings = baton_server::Settings::default().pid_file("/run/my-app/my-app.pid");
    /// let target = baton_server::reload::Target::for_settings(&settings);
    /// assert_eq!(target.pid, None);
    /// ```
    pub fn for_settings(settings: &crate::Settings) -> Target {
        Target {
            handoff_socket: settings.handoff_socket_or_default(),
            pid: None,
            pid_file: settings.pid_file.clone(),
        }
    }
}

/// A hand-off that worked: what [`request`] and [`request_reload`](crate::request_reload) return.
///
/// ```no_run
/// # fn demo(settings: &baton_server::Settings) -> Result<(), baton_server::ReloadError> {
/// let done = baton_server::request_reload(settings, std::time::Duration::from_secs(15))?;
/// println!("pid {} retired, pid {} serves", done.retired, done.successor);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// The process that handed off and retires.
    pub retired: u32,
    /// The process that serves now.
    pub successor: u32,
}

/// Why a reload could not be reported as done. [`ReloadError::exit_code`] is `baton reload`'s
/// exit status for it.
///
/// ```no_run
/// use std::process::ExitCode;
/// use baton_server::ReloadError;
///
/// # fn demo(settings: &baton_server::Settings) -> ExitCode {
/// match baton_server::request_reload(settings, std::time::Duration::from_secs(15)) {
///     Ok(_) => ExitCode::SUCCESS,
///     Err(ReloadError::Failed { reason, .. }) => {
///         eprintln!("the new version did not start: {reason}");
///         ExitCode::FAILURE
///     }
///     Err(e) => {
///         eprintln!("{e}");
///         ExitCode::from(e.exit_code())
///     }
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// No pid given, no `$MAINPID`, no PID file.
    #[error("no process to reload: give --pid, set MAINPID, or configure pid_file")]
    NoPid,
    /// `$MAINPID` is garbage.
    #[error("MAINPID={0:?} is not a pid")]
    BadMainPid(String),
    /// The PID file could not be read.
    #[error("pid file {path}: {source}")]
    PidFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The PID file names a process that does not exist.
    #[error("pid file {path} names pid {pid}, which is not running (is baton running? the journal says why the file was not updated)")]
    StalePidFile {
        /// The file.
        path: PathBuf,
        /// The pid in it.
        pid: u32,
    },
    /// The pid does not exist (any more).
    #[error("pid {pid} is not running")]
    NotRunning {
        /// The pid.
        pid: u32,
    },
    /// We may not reload that process.
    #[error("pid {pid} runs as {owner}; only that user or root may reload it")]
    NotPermitted {
        /// The pid.
        pid: u32,
        /// Its user.
        owner: String,
    },
    /// The pid is not (part of) the service of the configured runtime directory; nothing was
    /// asked of anybody.
    #[error("pid {pid} is not the baton service of {handoff_socket}: {why}; nothing was sent")]
    NotTheService {
        /// The pid.
        pid: u32,
        /// The configured hand-off socket path.
        handoff_socket: PathBuf,
        /// What does not fit.
        why: String,
    },
    /// The control socket could not be reached or spoken to.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The hand-off failed; the old process serves on.
    #[error("reload failed: {reason} (pid {pid} keeps serving)")]
    Failed {
        /// The process that serves on.
        pid: u32,
        /// Why.
        reason: String,
    },
    /// The service is stopping.
    #[error("pid {pid} is stopping; not reloaded")]
    Stopping {
        /// The process that stops.
        pid: u32,
    },
    /// The service closed the connection without an answer (it exited?).
    #[error("the service closed the control connection without reporting the reload's outcome")]
    Vanished,
    /// The answer was not one the protocol knows.
    #[error("control socket {path}: not an answer: {what}")]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was received.
        what: String,
    },
    /// Successors kept taking over before the request was served.
    #[error("the service kept handing over (asked {hops} times); try again")]
    TooManyHops {
        /// How many times the request was sent.
        hops: u32,
    },
    /// No outcome within the timeout.
    #[error("no outcome within {after:?}")]
    Timeout {
        /// The timeout.
        after: Duration,
    },
}

impl ReloadError {
    /// `baton reload`'s exit status: 64 no or a bad target, 69 not available (not running, not
    /// the service, unreachable), 75 try again later (timeout), 77 not permitted, 1 the reload
    /// failed or its outcome is unknown. See [`ReloadError`] for an example.
    pub fn exit_code(&self) -> u8 {
        match self {
            ReloadError::NoPid
            | ReloadError::BadMainPid(_)
            | ReloadError::PidFile { .. }
            | ReloadError::StalePidFile { .. } => exit::USAGE,
            ReloadError::NotRunning { .. }
            | ReloadError::NotTheService { .. }
            | ReloadError::Io { .. } => exit::UNAVAILABLE,
            ReloadError::NotPermitted { .. } => exit::NOPERM,
            ReloadError::Timeout { .. } | ReloadError::TooManyHops { .. } => exit::TEMPFAIL,
            ReloadError::Failed { .. }
            | ReloadError::Stopping { .. }
            | ReloadError::Vanished
            | ReloadError::Protocol { .. } => exit::RELOAD_FAILED,
        }
    }
}

/// How long a PID file that names a process that is not (any more) the service's may take to
/// name the one that is.
const PID_FILE_SETTLE: Duration = Duration::from_secs(2);

/// How many times a request is sent again after [`Answer::AskAgain`].
const MAX_HOPS: u32 = 16;

/// Ask the service `target` names to hand off, and wait (at most `timeout`) for the outcome.
///
/// The request goes only to the control socket of the service whose runtime directory
/// `target.handoff_socket` names, served by the process `target.pid` names (or by one of its
/// descendants, for a supervisor), running as that process's
/// user or root; the answer is believed only from there. `target.pid` is checked through a pidfd,
/// so a recycled pid is never believed; a process in another mount namespace (a container's) is
/// reached through `/proc/<pid>/root`. Nothing is ever signalled. Blocking.
///
/// ```no_run
/// let target = baton_server::reload::Target {
///     handoff_socket: "/run/app/handoff.sock".into(),
///     pid: Some(1234),
///     pid_file: None,
/// };
/// match baton_server::reload::request(&target, std::time::Duration::from_secs(30)) {
///     Ok(r) => println!("reloaded: {} -> {}", r.retired, r.successor),
///     Err(e) => {
///         eprintln!("reload: {e}");
///         std::process::exit(e.exit_code().into());
///     }
/// }
/// ```
pub fn request(target: &Target, timeout: Duration) -> Result<Reloaded, ReloadError> {
    let deadline = Instant::now() + timeout;
    let mut pid = target_pid(target.pid, target.pid_file.as_deref())?;
    let mut settle: Option<Instant> = None;
    let Located {
        dir,
        name,
        server,
        mut stream,
    } = loop {
        match locate(target, pid) {
            Ok(found) => break found,
            // A PID file or $MAINPID read just before a hand-off names a process that retired
            // meanwhile (its successor writes the file a moment after it serves): read it again,
            // for up to 2 s.
            Err(e @ (ReloadError::NotTheService { .. } | ReloadError::NotRunning { .. }))
                if target.pid.is_none() =>
            {
                let until = *settle.get_or_insert_with(|| Instant::now() + PID_FILE_SETTLE);
                if Instant::now() >= until.min(deadline) {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(20));
                if let Ok(now) = target_pid(None, target.pid_file.as_deref()) {
                    pid = now;
                }
            }
            Err(e) => return Err(e),
        }
    };
    let shown = dir.join(&name);
    // The server as its own PID namespace numbers it, to show its pid as we number it even once
    // it has exited.
    let known = ns_pid(server).map(|inner| (inner, server));
    let translate = |reported: u32| match known {
        Some((inner, outer)) if inner == reported => outer,
        _ => translate(reported, pid),
    };
    let mut hops = 0;
    loop {
        hops += 1;
        match exchange(&mut stream, &shown, deadline, timeout)? {
            Answer::Reloaded { retired, successor } => {
                return Ok(Reloaded {
                    retired: translate(retired),
                    successor: translate(successor),
                })
            }
            Answer::Failed {
                pid: serving,
                reason,
            } => {
                return Err(ReloadError::Failed {
                    pid: translate(serving),
                    reason: crate::text::one_line(&reason),
                })
            }
            Answer::Stopping { pid: stopping } => {
                return Err(ReloadError::Stopping {
                    pid: translate(stopping),
                })
            }
            Answer::AskAgain { main } => {
                if hops >= MAX_HOPS {
                    return Err(ReloadError::TooManyHops { hops });
                }
                info!(
                    main,
                    "a successor took over before the request was served: asking again"
                );
                stream = reconnect(&dir, &name, &shown)?;
            }
        }
    }
}

/// The control socket of the service a pid belongs to, connected.
struct Located {
    dir: RuntimeDir,
    name: String,
    server: u32,
    stream: UnixStream,
}

/// Find the control socket served by `pid` or its descendant, in the runtime directory of
/// `target`, checking who serves it.
fn locate(target: &Target, pid: u32) -> Result<Located, ReloadError> {
    let process = PidFd::open(pid).ok_or(ReloadError::NotRunning { pid })?;
    let owner = process_uid(pid).ok_or(ReloadError::NotRunning { pid })?;
    let me = nix::unistd::geteuid().as_raw();
    if me != 0 && owner != me {
        return Err(ReloadError::NotPermitted {
            pid,
            owner: describe_uid(owner),
        });
    }
    let not_service = |why: String| ReloadError::NotTheService {
        pid,
        handoff_socket: target.handoff_socket.clone(),
        why,
    };
    let root = (!same_namespace(pid, "mnt")).then(|| PathBuf::from(format!("/proc/{pid}/root")));
    let dir = RuntimeDir::open_existing_in(root.as_deref(), &target.handoff_socket, owner)
        .map_err(|e| {
            not_service(match e {
                e @ FsError::Unsafe { .. } => format!("runtime directory {e}"),
                e => format!("no runtime directory of its user: {e}"),
            })
        })?;
    let mut found = None;
    for name in dir.control_names() {
        let path = dir.fd_path(&name);
        let Ok(stream) = UnixStream::connect(&path) else {
            continue;
        };
        let Ok(cred) = getsockopt(&stream, sockopt::PeerCredentials) else {
            continue;
        };
        let server = u32::try_from(cred.pid()).unwrap_or(0);
        if (cred.uid() == owner || cred.uid() == 0) && related(server, pid) {
            found = Some((name, server, stream));
            break;
        }
        debug!(name = %name, server, "a control socket of another service");
    }
    let Some((name, server, stream)) = found else {
        return Err(not_service(format!(
            "it serves no control socket in {}",
            dir.join("").display()
        )));
    };
    // The checks above were made about the process the pidfd holds: it must still be that one.
    if !process.is_alive() {
        return Err(ReloadError::NotRunning { pid });
    }
    Ok(Located {
        dir,
        name,
        server,
        stream,
    })
}

/// Connect again to the same control socket (now served by a successor): its user is checked.
fn reconnect(dir: &RuntimeDir, name: &str, shown: &Path) -> Result<UnixStream, ReloadError> {
    let owner = dir.owner();
    let io_err = |source| ReloadError::Io {
        path: shown.to_owned(),
        source,
    };
    let stream = UnixStream::connect(dir.fd_path(name)).map_err(io_err)?;
    let cred = getsockopt(&stream, sockopt::PeerCredentials).map_err(|e| io_err(e.into()))?;
    if cred.uid() != owner && cred.uid() != 0 {
        return Err(io_err(io::Error::other(format!(
            "now served by {}, not by the service's user",
            describe_uid(cred.uid())
        ))));
    }
    Ok(stream)
}

/// Send the request and read the answer line.
fn exchange(
    stream: &mut UnixStream,
    shown: &Path,
    deadline: Instant,
    timeout: Duration,
) -> Result<Answer, ReloadError> {
    let io_err = |source| ReloadError::Io {
        path: shown.to_owned(),
        source,
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ReloadError::Timeout { after: timeout });
    }
    stream.set_write_timeout(Some(left)).map_err(io_err)?;
    stream.set_read_timeout(Some(left)).map_err(io_err)?;
    let mut line = serde_json::to_vec(&Request::Reload {}).unwrap_or_default();
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;
    let mut answer = Vec::new();
    let read = BufReader::new(&*stream)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut answer);
    match read {
        Ok(0) => Err(ReloadError::Vanished),
        Ok(_) => serde_json::from_slice(&answer).map_err(|e| ReloadError::Protocol {
            path: shown.to_owned(),
            what: crate::text::one_line(&format!(
                "{e}: {}",
                String::from_utf8_lossy(&answer[..answer.len().min(200)])
            )),
        }),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(ReloadError::Timeout { after: timeout })
        }
        Err(e) => Err(io_err(e)),
    }
}

/// Find the pid to reload: explicit, else `$MAINPID`, else the PID file.
fn target_pid(explicit: Option<u32>, pid_file: Option<&Path>) -> Result<u32, ReloadError> {
    if let Some(pid) = explicit {
        return Ok(pid);
    }
    if let Some(main) = std::env::var("MAINPID").ok().filter(|v| !v.is_empty()) {
        return main.parse().map_err(|_| ReloadError::BadMainPid(main));
    }
    let path = pid_file.ok_or(ReloadError::NoPid)?;
    let read = || {
        pidfile::read(path).map_err(|source| ReloadError::PidFile {
            path: path.to_owned(),
            source,
        })
    };
    let pid = read()?;
    if !safe_fs::pid_is_gone(pid) {
        return Ok(pid);
    }
    // Right after a hand-off the old main may be gone before its successor, just promoted,
    // wrote the file: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        match read() {
            Ok(now) if now != pid && !safe_fs::pid_is_gone(now) => return Ok(now),
            _ => {}
        }
    }
    Err(ReloadError::StalePidFile {
        path: path.to_owned(),
        pid,
    })
}

/// A pidfd: the process itself, whatever happens to its pid number.
struct PidFd(OwnedFd);

impl PidFd {
    fn open(pid: u32) -> Option<PidFd> {
        let pid = libc::pid_t::try_from(pid).ok().filter(|p| *p > 0)?;
        // libc: nix 0.29 has no pidfd_open.
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: the descriptor was just returned by pidfd_open and is owned by nothing else.
        Some(PidFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Not exited (a pidfd polls readable once its process exited).
    fn is_alive(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
    }
}

/// The effective uid of a process (the owner of `/proc/<pid>`).
fn process_uid(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// The parent of a process, from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// True when `ancestor` is `pid` or one of its ancestors.
fn is_ancestor(ancestor: u32, mut pid: u32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        match parent_of(pid) {
            Some(p) if p != 0 && p != pid => pid = p,
            _ => return false,
        }
    }
    false
}

/// The process serving a control socket belongs to the service `pid` names: it is `pid`, or a
/// descendant of it (`pid` is a supervisor). (Not an ancestor: whatever started the service
/// could otherwise answer in its name.)
fn related(server: u32, pid: u32) -> bool {
    server != 0 && is_ancestor(pid, server)
}

/// Whether `pid` shares this process's namespace of `kind` (`mnt`, `pid`).
fn same_namespace(pid: u32, kind: &str) -> bool {
    let ours = std::fs::read_link(format!("/proc/self/ns/{kind}"));
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{kind}"));
    match (ours, theirs) {
        (Ok(a), Ok(b)) => a == b,
        _ => true,
    }
}

/// The pid of `pid` in its own (innermost) PID namespace: the last entry of its `NSpid:`.
fn ns_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|v| v.split_whitespace().last())
        .and_then(|v| v.parse::<u32>().ok())
}

/// A pid the service reported (numbered in its PID namespace) as this process sees it: found
/// among `anchor` and its descendants by the last entry of their `NSpid:`; as reported when it
/// cannot be found.
fn translate(reported: u32, anchor: u32) -> u32 {
    if same_namespace(anchor, "pid") {
        return reported;
    }
    let children = |p: u32| {
        // Children are listed per thread that forked them.
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten();
        let mut out = Vec::new();
        for task in tasks.flatten() {
            let listed = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            out.extend(
                listed
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        out
    };
    find_below(anchor, children, |p| ns_pid(p) == Some(reported)).unwrap_or(reported)
}

/// The most processes [`find_below`] looks at: a service's tree is small; a walk through a
/// bigger one (a fork bomb below the service) gives up rather than read `/proc` without end.
const MAX_WALK: usize = 4096;

/// The first process found, depth first, in the tree below `anchor` (itself included) that
/// `wanted`, looking at [`MAX_WALK`] processes at most.
fn find_below(
    anchor: u32,
    children: impl Fn(u32) -> Vec<u32>,
    wanted: impl Fn(u32) -> bool,
) -> Option<u32> {
    let mut todo = vec![anchor];
    let mut seen = 0;
    while let Some(p) = todo.pop() {
        seen += 1;
        if seen > MAX_WALK {
            return None;
        }
        if wanted(p) {
            return Some(p);
        }
        todo.extend(children(p));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::process::{Child, Command};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// What the scripted service does with one request read on its control socket.
    enum Reply {
        /// Write this line (a newline is added).
        Line(String),
        /// Close the connection without an answer.
        Close,
        /// Close it with the request not read: the client's read fails (`ECONNRESET`).
        Reset,
        /// Never answer; hold the connection until the client leaves.
        Hold,
        /// Do this, then write the line (the service changes while the client waits).
        After(Box<dyn FnOnce() + Send>, String),
    }

    fn line(answer: &Answer) -> Reply {
        Reply::Line(serde_json::to_string(answer).unwrap())
    }

    /// A control socket served by this process (so by the pid `std::process::id()` names) in a
    /// fresh runtime directory, answering the requests it reads with `replies` in turn (a
    /// connection that sends nothing, as `locate`'s probe, takes no reply). Returns the
    /// directory's guard, the hand-off socket path that names it, and how many requests were
    /// read.
    fn scripted_service(replies: Vec<Reply>) -> (tempfile::TempDir, PathBuf, Arc<AtomicUsize>) {
        let (tmp, socket) = crate::test_util::temp_path("run/handoff.sock");
        let (listener, _) = RuntimeDir::open(&socket).unwrap().bind_control().unwrap();
        let asked = serve_script(listener, replies);
        (tmp, socket, asked)
    }

    /// Answer the requests read on `listener` with `replies` in turn, in a thread; how many
    /// requests were read.
    fn serve_script(
        listener: std::os::unix::net::UnixListener,
        replies: Vec<Reply>,
    ) -> Arc<AtomicUsize> {
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        std::thread::spawn(move || {
            let mut replies = replies.into_iter();
            let mut next = replies.next();
            while let Some(reply) = next.take() {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut first = [0u8; 1];
                if !matches!((&stream).read(&mut first), Ok(1)) {
                    next = Some(reply);
                    continue;
                }
                count.fetch_add(1, Ordering::SeqCst);
                if let Reply::Reset = reply {
                    drop(stream);
                    next = replies.next();
                    continue;
                }
                let mut rest = Vec::new();
                let _ = BufReader::new(&stream).read_until(b'\n', &mut rest);
                match reply {
                    Reply::Line(text) => {
                        let _ = (&stream).write_all(format!("{text}\n").as_bytes());
                    }
                    Reply::Hold => {
                        let _ = (&stream).read_to_end(&mut rest);
                    }
                    Reply::After(first, text) => {
                        first();
                        let _ = (&stream).write_all(format!("{text}\n").as_bytes());
                    }
                    Reply::Close | Reply::Reset => {}
                }
                next = replies.next();
            }
        });
        asked
    }

    fn target(socket: &Path, pid: Option<u32>, pid_file: Option<&Path>) -> Target {
        Target {
            handoff_socket: socket.to_owned(),
            pid,
            pid_file: pid_file.map(Path::to_owned),
        }
    }

    /// A process that is not the service: `sleep 60`, killed (by its pid) when dropped.
    struct Bystander(Child);

    impl Bystander {
        fn start(cmd: &mut Command) -> Bystander {
            Bystander(cmd.spawn().unwrap())
        }

        fn sleep() -> Bystander {
            Self::start(Command::new("sleep").arg("60"))
        }

        fn pid(&self) -> u32 {
            self.0.id()
        }
    }

    impl Drop for Bystander {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// SIGKILL to a process that is not our child (`unshare`'s), by its pid, when dropped.
    struct KillOnDrop(u32);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let pid = nix::unistd::Pid::from_raw(self.0 as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// The pid of a process that ran and was reaped: nobody's (for the seconds a test lasts).
    fn gone_pid() -> u32 {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    /// Replace the PID file's content at once (write and rename), as baton does.
    fn write_pid_file(path: &Path, pid: u32) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, format!("{pid}\n")).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn no_mainpid() {
        assert!(
            std::env::var_os("MAINPID").is_none(),
            "these tests find the pid without $MAINPID: unset it"
        );
    }

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn the_services_answer_is_reported_with_its_pids() {
        let me = std::process::id();
        let (_tmp, socket, asked) = scripted_service(vec![line(&Answer::Reloaded {
            retired: me,
            successor: 4242,
        })]);
        let done = request(&target(&socket, Some(me), None), LONG).unwrap();
        assert_eq!(
            done,
            Reloaded {
                retired: me,
                successor: 4242
            }
        );
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failure_or_a_stop_is_reported_as_an_error_naming_who_serves() {
        let me = std::process::id();
        let (_tmp, socket, _) = scripted_service(vec![line(&Answer::Failed {
            pid: me,
            reason: "config /x: bad\nsecond line".into(),
        })]);
        match request(&target(&socket, Some(me), None), LONG) {
            Err(ReloadError::Failed { pid, reason }) => {
                assert_eq!(pid, me);
                assert!(reason.starts_with("config /x: bad") && !reason.contains('\n'));
            }
            other => panic!("{other:?}"),
        }
        let (_tmp, socket, _) = scripted_service(vec![line(&Answer::Stopping { pid: me })]);
        assert!(matches!(
            request(&target(&socket, Some(me), None), LONG),
            Err(ReloadError::Stopping { pid }) if pid == me
        ));
    }

    #[test]
    fn ask_again_is_followed_sixteen_times_at_most() {
        let me = std::process::id();
        let again = || line(&Answer::AskAgain { main: me });
        let (_tmp, socket, asked) = scripted_service(vec![
            again(),
            line(&Answer::Reloaded {
                retired: me,
                successor: 4243,
            }),
        ]);
        let done = request(&target(&socket, Some(me), None), LONG).unwrap();
        assert_eq!(done.successor, 4243);
        assert_eq!(asked.load(Ordering::SeqCst), 2);

        let (_tmp, socket, asked) = scripted_service((0..20).map(|_| again()).collect());
        match request(&target(&socket, Some(me), None), LONG) {
            Err(ReloadError::TooManyHops { hops }) => assert_eq!(hops, MAX_HOPS),
            other => panic!("{other:?}"),
        }
        assert_eq!(asked.load(Ordering::SeqCst), MAX_HOPS as usize);
    }

    #[test]
    fn no_answer_a_bad_answer_a_reset_and_silence_are_told_apart() {
        let me = std::process::id();
        let ask = |reply: Reply, timeout: Duration| {
            let (_tmp, socket, _) = scripted_service(vec![reply]);
            request(&target(&socket, Some(me), None), timeout)
        };
        assert!(matches!(
            ask(Reply::Close, LONG),
            Err(ReloadError::Vanished)
        ));
        assert!(matches!(
            ask(Reply::Line("hello".into()), LONG),
            Err(ReloadError::Protocol { what, .. }) if what.contains("hello")
        ));
        let reset = ask(Reply::Reset, LONG);
        assert!(matches!(&reset, Err(ReloadError::Io { .. })), "{reset:?}");
        let short = Duration::from_millis(300);
        let silent = ask(Reply::Hold, short);
        assert!(
            matches!(&silent, Err(ReloadError::Timeout { after }) if *after == short),
            "{silent:?}"
        );
    }

    #[test]
    fn an_answer_as_long_as_the_protocol_allows_is_read_and_a_longer_one_refused() {
        // docs/handoff-protocol.md, "The exchange": one line each way, at most 64 KiB.
        const PROTOCOL_MAX: usize = 64 * 1024;
        let me = std::process::id();
        let failed = |reason_len: usize| Answer::Failed {
            pid: me,
            reason: "x".repeat(reason_len),
        };
        let overhead = serde_json::to_vec(&failed(0)).unwrap().len();
        let longest = failed(PROTOCOL_MAX - overhead);
        assert_eq!(serde_json::to_vec(&longest).unwrap().len(), PROTOCOL_MAX);
        let (_tmp, socket, _) = scripted_service(vec![line(&longest)]);
        match request(&target(&socket, Some(me), None), LONG) {
            Err(ReloadError::Failed { reason, .. }) => {
                assert_eq!(reason.len(), PROTOCOL_MAX - overhead)
            }
            other => panic!("{:?}", other.map_err(|e| e.to_string())),
        }
        let (_tmp, socket, _) = scripted_service(vec![line(&failed(PROTOCOL_MAX - overhead + 2))]);
        let refused = request(&target(&socket, Some(me), None), LONG);
        assert!(
            matches!(&refused, Err(ReloadError::Protocol { .. })),
            "{:?}",
            refused.map_err(|e| e.exit_code())
        );
    }

    #[test]
    fn a_process_that_is_not_the_service_is_never_asked() {
        // A process of the same user beside the service: the control socket in the runtime
        // directory is served by a process that is neither it nor its descendant.
        let me = std::process::id();
        let (_tmp, socket, asked) = scripted_service(vec![line(&Answer::Reloaded {
            retired: me,
            successor: 4242,
        })]);
        let other = Bystander::sleep();
        let refused = request(&target(&socket, Some(other.pid()), None), LONG);
        assert!(
            matches!(&refused, Err(ReloadError::NotTheService { pid, .. }) if *pid == other.pid()),
            "{refused:?}"
        );
        assert_eq!(asked.load(Ordering::SeqCst), 0, "a request was sent");
    }

    #[test]
    fn an_explicit_pid_is_never_replaced_by_the_pid_files() {
        no_mainpid();
        let me = std::process::id();
        let (tmp, socket, asked) = scripted_service(vec![line(&Answer::Reloaded {
            retired: me,
            successor: 4242,
        })]);
        let pid_file = tmp.path().join("baton.pid");
        write_pid_file(&pid_file, me);
        let gone = gone_pid();
        let refused = request(&target(&socket, Some(gone), Some(&pid_file)), LONG);
        assert!(
            matches!(&refused, Err(ReloadError::NotRunning { pid }) if *pid == gone),
            "{refused:?}"
        );
        assert_eq!(asked.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_pid_file_naming_another_process_is_read_again_until_it_names_the_service() {
        // Read just before a hand-off, the PID file named a process that is not the service
        // (the retired one, or its pid reused); the successor rewrites it a moment later.
        no_mainpid();
        let me = std::process::id();
        let (tmp, socket, _) = scripted_service(vec![line(&Answer::Reloaded {
            retired: me,
            successor: 4242,
        })]);
        let pid_file = tmp.path().join("baton.pid");
        let other = Bystander::sleep();
        write_pid_file(&pid_file, other.pid());
        let writer = {
            let pid_file = pid_file.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                write_pid_file(&pid_file, me);
            })
        };
        let done = request(&target(&socket, None, Some(&pid_file)), LONG);
        writer.join().unwrap();
        assert_eq!(done.map_err(|e| e.to_string()).unwrap().successor, 4242);
    }

    #[test]
    fn the_pid_comes_from_the_request_else_a_pid_file_naming_a_live_process() {
        no_mainpid();
        let me = std::process::id();
        assert_eq!(target_pid(Some(4242), None).unwrap(), 4242);
        assert!(matches!(target_pid(None, None), Err(ReloadError::NoPid)));
        let (_tmp, pid_file) = crate::test_util::temp_path("baton.pid");
        write_pid_file(&pid_file, me);
        assert_eq!(target_pid(None, Some(&pid_file)).unwrap(), me);

        // A pid file naming a process that is gone: its successor writes the file a moment
        // later ...
        let first = gone_pid();
        write_pid_file(&pid_file, first);
        let writer = {
            let pid_file = pid_file.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                write_pid_file(&pid_file, me);
            })
        };
        assert_eq!(target_pid(None, Some(&pid_file)).unwrap(), me);
        writer.join().unwrap();

        // ... or nobody does (another pid that is gone too is no better): the file is stale.
        write_pid_file(&pid_file, first);
        let second = gone_pid();
        let writer = {
            let pid_file = pid_file.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                write_pid_file(&pid_file, second);
            })
        };
        let stale = target_pid(None, Some(&pid_file));
        writer.join().unwrap();
        assert!(
            matches!(&stale, Err(ReloadError::StalePidFile { pid, .. }) if *pid == first),
            "{stale:?}"
        );
    }

    #[test]
    fn a_pid_in_another_pid_namespace_is_shown_as_this_process_numbers_it() {
        if !crate::test_util::root_for("a PID namespace") {
            return;
        }
        let me = std::process::id();
        assert_eq!(ns_pid(me), Some(me));
        assert!(same_namespace(me, "pid"));
        // `unshare` stays in this namespace; its child is pid 1 of a new one.
        let unshare =
            Bystander::start(Command::new("unshare").args(["--pid", "--fork", "sleep", "60"]));
        let deadline = Instant::now() + LONG;
        let inner = loop {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.pid()))
                    .unwrap_or_default();
            if let Some(c) = children.split_whitespace().next() {
                break c.parse::<u32>().unwrap();
            }
            assert!(Instant::now() < deadline, "unshare started no child");
            std::thread::sleep(Duration::from_millis(20));
        };
        let _kill_inner = KillOnDrop(inner);
        assert!(!same_namespace(inner, "pid"));
        assert_eq!(ns_pid(inner), Some(1));
        assert_eq!(translate(1, inner), inner);
        assert_eq!(
            translate(1, unshare.pid()),
            1,
            "unshare is in our namespace"
        );
        assert_eq!(translate(7, inner), 7, "not found: as reported");
    }

    #[test]
    fn a_service_process_that_exited_is_not_believed_though_its_socket_is_still_there() {
        // The process that serves the control socket (it called listen(2) last) exited; its pid
        // is not reaped yet, so it names nobody else, and the socket is still open (another
        // process holds it, as a successor does).
        let (_tmp, socket) = crate::test_util::temp_path("run/handoff.sock");
        let (listener, _) = RuntimeDir::open(&socket).unwrap().bind_control().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        // SAFETY: the child only calls listen(2) and _exit(2), both async-signal-safe, on a
        // descriptor it inherited.
        let child = unsafe {
            let pid = libc::fork();
            if pid == 0 {
                libc::listen(fd, 16);
                libc::_exit(0);
            }
            pid
        };
        assert!(child > 0);
        let exited = nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(nix::unistd::Pid::from_raw(child)),
            nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
        );
        assert!(exited.is_ok(), "{exited:?}");
        let pid = child as u32;
        let refused = request(&target(&socket, Some(pid), None), Duration::from_secs(5));
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
        assert!(
            matches!(&refused, Err(ReloadError::NotRunning { pid: p }) if *p == pid),
            "{refused:?}"
        );
    }

    /// Forked processes that lend their credentials to the control socket this process serves:
    /// `main` runs as `main_uid` and calls listen(2) on it at once (it serves, as `SO_PEERCRED`
    /// tells); its child `other` runs as `other_uid` and calls listen(2) each time it is told
    /// to ([`Lenders::other_listens`]). Both are killed (by pid) when dropped.
    struct Lenders {
        main: i32,
        go: OwnedFd,
        done: OwnedFd,
    }

    impl Lenders {
        fn fork(listener: i32, main_uid: u32, other_uid: u32) -> Lenders {
            let (go_read, go_write) = nix::unistd::pipe().unwrap();
            let (done_read, done_write) = nix::unistd::pipe().unwrap();
            let (go_r, done_w) = (go_read.as_raw_fd(), done_write.as_raw_fd());
            // SAFETY: the children call only async-signal-safe system calls (fork, prctl,
            // setresuid, listen, read, write, pause, _exit) on descriptors they inherited.
            let main = unsafe {
                let main = libc::fork();
                if main == 0 {
                    let other = libc::fork();
                    if other == 0 {
                        // (A change of credentials clears the parent-death signal: set after.)
                        if libc::setresuid(other_uid, other_uid, other_uid) != 0 {
                            libc::_exit(1);
                        }
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        let mut byte = 0u8;
                        while libc::read(go_r, (&mut byte as *mut u8).cast(), 1) == 1 {
                            libc::listen(listener, 16);
                            libc::write(done_w, (&byte as *const u8).cast(), 1);
                        }
                        libc::_exit(0);
                    }
                    if libc::setresuid(main_uid, main_uid, main_uid) != 0 {
                        libc::_exit(1);
                    }
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    libc::listen(listener, 16);
                    let byte = 0u8;
                    libc::write(done_w, (&byte as *const u8).cast(), 1);
                    loop {
                        libc::pause();
                    }
                }
                main
            };
            assert!(main > 0);
            drop((go_read, done_write));
            let lenders = Lenders {
                main,
                go: go_write,
                done: done_read,
            };
            lenders.wait_done();
            lenders
        }

        fn wait_done(&self) {
            let mut byte = [0u8; 1];
            assert_eq!(nix::unistd::read(self.done.as_raw_fd(), &mut byte), Ok(1));
        }

        /// `other` listens (and serves, as `SO_PEERCRED` tells from now on).
        fn other_listens(&self) {
            assert_eq!(nix::unistd::write(&self.go, &[1]), Ok(1));
            self.wait_done();
        }
    }

    impl Drop for Lenders {
        fn drop(&mut self) {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.main))
                    .unwrap_or_default();
            for other in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                drop(KillOnDrop(other));
            }
            let pid = nix::unistd::Pid::from_raw(self.main);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }

    /// A scripted control socket of a service running as `uid` (its runtime directory is that
    /// user's), served as [`Lenders`] say.
    fn service_of_user(
        uid: u32,
        other_uid: u32,
        replies: impl FnOnce(Arc<Lenders>) -> Vec<Reply>,
    ) -> (tempfile::TempDir, PathBuf, Arc<AtomicUsize>, Arc<Lenders>) {
        let (tmp, socket) = crate::test_util::temp_path("run/handoff.sock");
        let dir = RuntimeDir::open(&socket).unwrap();
        let (listener, _) = dir.bind_control().unwrap();
        std::os::unix::fs::chown(socket.parent().unwrap(), Some(uid), None).unwrap();
        let lenders = Arc::new(Lenders::fork(listener.as_raw_fd(), uid, other_uid));
        let replies = replies(lenders.clone());
        let asked = serve_script(listener, replies);
        (tmp, socket, asked, lenders)
    }

    const SERVICE_UID: u32 = 65534;
    const THIRD_UID: u32 = 65533;

    #[test]
    fn a_service_of_its_own_user_is_believed_before_and_after_a_hand_over() {
        if !crate::test_util::root_for("processes of other users") {
            return;
        }
        let (_tmp, socket, asked, lenders) = service_of_user(SERVICE_UID, THIRD_UID, |_| {
            vec![
                line(&Answer::AskAgain { main: 1 }),
                line(&Answer::Reloaded {
                    retired: 1,
                    successor: 4242,
                }),
            ]
        });
        let pid = lenders.main as u32;
        let done = request(&target(&socket, Some(pid), None), LONG);
        assert_eq!(done.map_err(|e| e.to_string()).unwrap().successor, 4242);
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_control_socket_served_by_a_third_user_is_never_believed() {
        if !crate::test_util::root_for("processes of other users") {
            return;
        }
        // A descendant of the service running as another user serves the socket from the
        // start: not the service.
        let (_tmp, socket, asked, lenders) = service_of_user(SERVICE_UID, THIRD_UID, |_| {
            vec![line(&Answer::Reloaded {
                retired: 1,
                successor: 4242,
            })]
        });
        lenders.other_listens();
        let pid = lenders.main as u32;
        let refused = request(&target(&socket, Some(pid), None), LONG);
        assert!(
            matches!(&refused, Err(ReloadError::NotTheService { .. })),
            "{refused:?}"
        );
        assert_eq!(asked.load(Ordering::SeqCst), 0, "a request was sent");

        // It takes over while the request waits: the request is not sent to it again.
        let (_tmp, socket, asked, lenders) = service_of_user(SERVICE_UID, THIRD_UID, |l| {
            vec![
                Reply::After(
                    Box::new(move || l.other_listens()),
                    serde_json::to_string(&Answer::AskAgain { main: 1 }).unwrap(),
                ),
                line(&Answer::Reloaded {
                    retired: 1,
                    successor: 4242,
                }),
            ]
        });
        let pid = lenders.main as u32;
        let refused = request(&target(&socket, Some(pid), None), LONG);
        assert!(
            matches!(&refused, Err(ReloadError::Io { source, .. })
                if source.to_string().contains("not by the service's user")),
            "{refused:?}"
        );
        assert_eq!(asked.load(Ordering::SeqCst), 1, "asked again");
    }

    #[test]
    fn a_server_in_another_pid_namespace_is_shown_with_this_namespaces_pid_even_once_gone() {
        if !crate::test_util::root_for("a PID namespace") {
            return;
        }
        // The service is PID 1 of a namespace of its own (a container); its answer names itself
        // as its namespace numbers it (1), and it exits (it retired) before the client reads
        // the answer: the client still shows the pid this namespace gave it.
        let (_tmp, socket) = crate::test_util::temp_path("run/handoff.sock");
        let (listener, _) = RuntimeDir::open(&socket).unwrap().bind_control().unwrap();
        let fd = listener.as_raw_fd();
        let (ready_read, ready_write) = nix::unistd::pipe().unwrap();
        let ready = ready_write.as_raw_fd();
        // SAFETY: the children call only async-signal-safe system calls (prctl, unshare, fork,
        // listen, write, waitpid, pause, _exit) on descriptors they inherited.
        let outer = unsafe {
            let outer = libc::fork();
            if outer == 0 {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::unshare(libc::CLONE_NEWPID) != 0 {
                    libc::_exit(1);
                }
                let inner = libc::fork();
                if inner == 0 {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    libc::listen(fd, 16);
                    let byte = 0u8;
                    libc::write(ready, (&byte as *const u8).cast(), 1);
                    loop {
                        libc::pause();
                    }
                }
                libc::waitpid(inner, std::ptr::null_mut(), 0);
                loop {
                    libc::pause();
                }
            }
            outer
        };
        assert!(outer > 0);
        drop(ready_write);
        let outer_alive = KillOnDrop(outer as u32);
        let mut byte = [0u8; 1];
        assert_eq!(nix::unistd::read(ready_read.as_raw_fd(), &mut byte), Ok(1));
        let children = std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
            .unwrap_or_default();
        let server: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(ns_pid(server), Some(1));
        let exits = move || {
            drop(KillOnDrop(server));
            let deadline = Instant::now() + LONG;
            while Path::new(&format!("/proc/{server}")).exists() {
                assert!(Instant::now() < deadline, "pid {server} not reaped");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let answer = Answer::Reloaded {
            retired: 1,
            successor: 4242,
        };
        let replies = vec![Reply::After(
            Box::new(exits),
            serde_json::to_string(&answer).unwrap(),
        )];
        let _asked = serve_script(listener, replies);
        let done = request(&target(&socket, Some(server), None), LONG);
        drop(outer_alive);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(outer), None);
        assert_eq!(
            done.map_err(|e| e.to_string()).unwrap(),
            Reloaded {
                retired: server,
                successor: 4242
            }
        );
    }

    #[test]
    fn a_target_is_the_settings_service_without_a_pid() {
        let settings = crate::Settings::default()
            .handoff_socket("/run/app/handoff.sock")
            .pid_file("/run/app/app.pid");
        let t = Target::for_settings(&settings);
        assert_eq!(t.handoff_socket, Path::new("/run/app/handoff.sock"));
        assert_eq!(t.pid, None);
        assert_eq!(t.pid_file.as_deref(), Some(Path::new("/run/app/app.pid")));
    }

    #[test]
    fn a_process_is_related_to_itself_and_its_ancestors_only() {
        let me = std::process::id();
        let parent = parent_of(me).unwrap();
        assert_eq!(parent, nix::unistd::getppid().as_raw() as u32);
        assert!(related(me, me));
        assert!(related(me, parent));
        assert!(!related(parent, me));
        assert!(!related(me, 4_194_305));
        assert!(!related(0, me));
        assert_eq!(translate(me, me), me);
    }

    #[test]
    fn exit_codes_come_from_kinds() {
        assert_eq!(ReloadError::NoPid.exit_code(), 64);
        assert_eq!(ReloadError::NotRunning { pid: 1 }.exit_code(), 69);
        assert_eq!(
            ReloadError::Timeout {
                after: Duration::ZERO
            }
            .exit_code(),
            75
        );
        assert_eq!(
            ReloadError::NotPermitted {
                pid: 1,
                owner: "x".into()
            }
            .exit_code(),
            77
        );
        assert_eq!(ReloadError::Vanished.exit_code(), 1);
    }

    /// The walk looks at `MAX_WALK` processes, no more: a process that is the 4096th it reaches
    /// is found, the 4097th is not (a service with a fork bomb below it is not walked without
    /// end); below that, every process of the tree is reached.
    #[test]
    fn the_walk_below_a_service_looks_at_4096_processes_at_most() {
        // A chain 1 → 2 → 3 → …: the n-th process reached is pid n.
        let chain = |p: u32| vec![p + 1];
        assert_eq!(find_below(1, chain, |p| p == 4096), Some(4096));
        assert_eq!(find_below(1, chain, |p| p == 4097), None);
        // A tree: every process reached, none twice.
        let tree = |p: u32| {
            if p < 100 {
                vec![2 * p, 2 * p + 1]
            } else {
                vec![]
            }
        };
        for wanted in [1, 2, 3, 64, 99, 100, 199] {
            assert_eq!(find_below(1, tree, |p| p == wanted), Some(wanted));
        }
        assert_eq!(find_below(1, tree, |p| p == 200), None);
    }
}
