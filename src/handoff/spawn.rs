//! Starting the successor: the executable path recorded at start, the same arguments, a cleaned
//! environment, the listeners at fds 3, 4, … and nothing else inherited. See
//! [`docs/handoff-protocol.md`](../../docs/handoff-protocol.md), "Environment of the child".

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::signal::unix::{signal, SignalKind};

use super::protocol::{GENERATION_ENV, PREDECESSOR_ENV};

/// How this process was started, recorded once at start (before any package upgrade could
/// replace the binary on disk).
#[derive(Debug, Clone)]
pub struct Executable {
    /// The binary's path on disk.
    pub path: PathBuf,
    /// The arguments after argv\[0\].
    pub args: Vec<OsString>,
}

impl Executable {
    /// Record the running binary's path and arguments. `/proc/self/exe` is resolved now; a
    /// " (deleted)" suffix (the binary was replaced before we started) is stripped so the path on
    /// disk, i.e. the new binary, is what a successor runs.
    pub fn current() -> io::Result<Executable> {
        let exe = std::env::current_exe()?;
        Ok(Executable {
            path: strip_deleted(&exe),
            args: std::env::args_os().skip(1).collect(),
        })
    }
}

/// `/usr/bin/baton (deleted)` → `/usr/bin/baton`.
pub fn strip_deleted(path: &Path) -> PathBuf {
    let bytes = path.as_os_str().as_bytes();
    match bytes.strip_suffix(b" (deleted)") {
        Some(rest) => PathBuf::from(std::ffi::OsStr::from_bytes(rest)),
        None => path.to_owned(),
    }
}

/// Variables never passed to a successor.
const STRIPPED_ENV: [&str; 4] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_PID"];

/// Start the successor with `listeners` at fds 3, 4, … in order.
pub fn spawn_successor(
    exe: &Executable,
    listeners: &[impl AsFd],
    predecessor_socket: &Path,
    generation: u64,
) -> io::Result<Child> {
    let replaced = |key: &[u8]| {
        STRIPPED_ENV.iter().any(|s| s.as_bytes() == key)
            || key == PREDECESSOR_ENV.as_bytes()
            || key == GENERATION_ENV.as_bytes()
    };
    let generation = generation.to_string();
    let envp = environment(
        replaced,
        &[
            (PREDECESSOR_ENV, predecessor_socket.as_os_str()),
            (GENERATION_ENV, std::ffi::OsStr::new(&generation)),
        ],
    )?;
    let fds: Vec<(RawFd, RawFd)> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_fd().as_raw_fd(), 3 + i as RawFd))
        .collect();
    // SAFETY: sigemptyset initialises the set it is given.
    let none = unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        none
    };
    let pid = start(exe, &envp, &fds, &none)?;
    Ok(Child::new(pid))
}

/// This process's environment for a child: every variable `removed` does not name, then `set`.
pub(crate) fn environment(
    removed: impl Fn(&[u8]) -> bool,
    set: &[(&str, &std::ffi::OsStr)],
) -> io::Result<Vec<CString>> {
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(key, _)| {
            !removed(key.as_bytes()) && !set.iter().any(|(k, _)| k.as_bytes() == key.as_bytes())
        })
        .map(|(key, value)| env_entry(key.as_bytes(), value.as_bytes()))
        .collect::<io::Result<_>>()?;
    for (key, value) in set {
        envp.push(env_entry(key.as_bytes(), value.as_bytes())?);
    }
    Ok(envp)
}

/// Start a generation: `exe` with its arguments and the environment `envp`, each `(source,
/// target)` of `fds` open at `target` in the child and nothing else inherited, `SIGHUP` ignored
/// (see [`vfork_exec`]) and `mask` as its signal mask. Returns its pid; the caller reaps it.
pub(crate) fn start(
    exe: &Executable,
    envp: &[CString],
    fds: &[(RawFd, RawFd)],
    mask: &libc::sigset_t,
) -> io::Result<u32> {
    // Duplicate every source above the target range first, so placing one never overwrites
    // another still to be placed (and so dup2 never sees the same source and target, which would
    // leave FD_CLOEXEC set).
    let first_free = fds.iter().map(|&(_, t)| t + 1).max().unwrap_or(3).max(3);
    let staged: Vec<OwnedFd> = fds
        .iter()
        .map(|&(source, _)| {
            let raw = fcntl(source, FcntlArg::F_DUPFD_CLOEXEC(first_free))?;
            // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor; nothing else owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(raw) })
        })
        .collect::<nix::Result<_>>()?;
    let targets: Vec<RawFd> = fds.iter().map(|&(_, t)| t).collect();

    let program = cstring(exe.path.as_os_str().as_bytes())?;
    let argv: Vec<CString> = std::iter::once(Ok(program.clone()))
        .chain(exe.args.iter().map(|a| cstring(a.as_bytes())))
        .collect::<io::Result<_>>()?;
    let pid = vfork_exec(&program, &argv, envp, &staged, &targets, mask)?;
    drop(staged);
    Ok(pid)
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} contains a NUL byte", String::from_utf8_lossy(bytes)),
        )
    })
}

/// `KEY=value` for the child's environment.
fn env_entry(key: &[u8], value: &[u8]) -> io::Result<CString> {
    cstring(&[key, b"=", value].concat())
}

/// What the child of [`vfork_exec`] needs, all prepared before the clone: the child shares our
/// memory and must neither allocate nor take a lock.
struct Plan {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    sources: *const RawFd,
    targets: *const RawFd,
    count: usize,
    mask: *const libc::sigset_t,
    /// The errno of the step that failed in the child (0: none).
    error: AtomicI32,
}

/// Start `program` the way posix_spawn(3) does, without copying our address space (a vfork:
/// the child borrows our memory until its execve, and this thread waits until then), so the
/// serving process pays neither a page-table copy nor copy-on-write faults afterwards. In the
/// child: every signal we catch back to its default (our handlers must not run there), `SIGHUP`
/// ignored (a reload request before the successor installed its handler must not kill it; it
/// installs one at start), `SIGPIPE` default (as std does for children), `sources[i]` at fd
/// `targets[i]`, `mask` as the signal mask, execve. posix_spawn itself cannot ignore a signal in
/// the child.
fn vfork_exec(
    program: &CString,
    argv: &[CString],
    envp: &[CString],
    sources: &[OwnedFd],
    targets: &[RawFd],
    mask: &libc::sigset_t,
) -> io::Result<u32> {
    let pointers = |strings: &[CString]| -> Vec<*const libc::c_char> {
        let mut v: Vec<_> = strings.iter().map(|s| s.as_ptr()).collect();
        v.push(std::ptr::null());
        v
    };
    let (argv, envp) = (pointers(argv), pointers(envp));
    let sources: Vec<RawFd> = sources.iter().map(AsRawFd::as_raw_fd).collect();
    let plan = Plan {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        sources: sources.as_ptr(),
        targets: targets.as_ptr(),
        count: sources.len().min(targets.len()),
        mask,
        error: AtomicI32::new(0),
    };
    // The child's stack: it runs one small function, then execve.
    let mut stack = vec![0u128; CHILD_STACK / 16];
    // SAFETY: one past the end of the allocation, which the child uses as the top of its
    // (downward-growing, 16-byte aligned) stack; never dereferenced here.
    let top = unsafe { stack.as_mut_ptr().add(stack.len()) }.cast::<libc::c_void>();
    // SAFETY: (1) all signals are blocked in this thread around the clone, so none is handled in
    // the child before it reset our handlers; the old mask is restored right after. (2) the
    // child runs `vfork_child` on its own stack with `plan`, which lives (like every pointer in
    // it) until clone returns: with CLONE_VFORK that is after the child's execve or exit.
    // (3) the child calls only async-signal-safe functions and allocates nothing.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            vfork_child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::addr_of!(plan).cast_mut().cast(),
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    drop(stack);
    match plan.error.load(Ordering::Acquire) {
        0 => Ok(pid as u32),
        errno => {
            // The child exited (127) without exec: reap it.
            let _ = waitpid(Pid::from_raw(pid), None);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// Stack size of the child of [`vfork_exec`].
const CHILD_STACK: usize = 32 * 1024;

/// The child of [`vfork_exec`]. Never returns: execve or `_exit(127)`.
extern "C" fn vfork_child(plan: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `plan` points to the parent's Plan, alive and unchanged until we exec or exit
    // (CLONE_VFORK); only async-signal-safe calls follow, with valid pointers.
    unsafe {
        let plan = &*(plan as *const Plan);
        let fail = |plan: &Plan| -> ! {
            let errno = *libc::__errno_location();
            plan.error.store(
                if errno == 0 { libc::EINVAL } else { errno },
                Ordering::Release,
            );
            libc::_exit(127)
        };
        let mut action: libc::sigaction = std::mem::zeroed();
        for signal in 1..libc::SIGRTMAX() + 1 {
            // Signals the C library reserves, or that cannot be caught, fail here: nothing to do.
            if libc::sigaction(signal, std::ptr::null(), &mut action) != 0 {
                continue;
            }
            let wanted = match signal {
                libc::SIGHUP => libc::SIG_IGN,
                libc::SIGPIPE => libc::SIG_DFL,
                _ if action.sa_sigaction == libc::SIG_IGN => continue,
                _ => libc::SIG_DFL,
            };
            if action.sa_sigaction != wanted {
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = wanted;
                libc::sigaction(signal, &new, std::ptr::null_mut());
            }
        }
        for i in 0..plan.count {
            // dup2 onto a different number clears FD_CLOEXEC on the target: exactly these
            // descriptors survive exec.
            if libc::dup2(*plan.sources.add(i), *plan.targets.add(i)) < 0 {
                fail(plan);
            }
        }
        if libc::pthread_sigmask(libc::SIG_SETMASK, plan.mask, std::ptr::null_mut()) != 0 {
            fail(plan);
        }
        libc::execve(plan.program, plan.argv, plan.envp);
        fail(plan)
    }
}

/// A started successor: its pid, and a way to wait for its exit on the runtime (a pidfd where
/// the kernel has them, `SIGCHLD` otherwise). Dropped before it was reaped, it is reaped in
/// the background.
#[derive(Debug)]
pub struct Child(Reaper);

/// Waits for one child's exit and reaps it.
#[derive(Debug)]
struct Reaper {
    pid: u32,
    status: Option<ExitStatus>,
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl Child {
    fn new(pid: u32) -> Child {
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let pidfd = (fd >= 0)
            .then(|| {
                // SAFETY: pidfd_open just returned this descriptor; nothing else owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
                // SAFETY: the AsyncFd owns the descriptor for as long as it is registered.
                unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
            })
            .flatten();
        Child(Reaper {
            pid,
            status: None,
            pidfd,
        })
    }

    /// Its pid.
    pub fn id(&self) -> u32 {
        self.0.pid
    }

    /// Its exit status if it has exited (then reaped), without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.0.try_wait()
    }

    /// Wait for its exit and reap it. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.0.wait().await
    }

    /// Send `SIGKILL` unless it was reaped already.
    pub fn start_kill(&mut self) -> io::Result<()> {
        if self.0.status.is_some() {
            return Ok(());
        }
        kill(Pid::from_raw(self.0.pid as libc::pid_t), Signal::SIGKILL).map_err(io::Error::from)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.0.status.is_some() {
            return;
        }
        let mut reaper = Reaper {
            pid: self.0.pid,
            status: None,
            pidfd: self.0.pidfd.take(),
        };
        // Without a runtime (the process is ending) its exit is reaped by whoever inherits it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = reaper.wait().await;
            });
        }
    }
}

impl Reaper {
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let pid = Pid::from_raw(self.pid as libc::pid_t);
        let status = match waitpid(pid, Some(WaitPidFlag::WNOHANG))? {
            WaitStatus::Exited(_, code) => ExitStatus::from_raw((code & 0xff) << 8),
            WaitStatus::Signaled(_, signal, core) => {
                ExitStatus::from_raw(signal as i32 | if core { 0x80 } else { 0 })
            }
            _ => return Ok(None),
        };
        self.status = Some(status);
        self.pidfd = None;
        Ok(Some(status))
    }

    async fn wait(&mut self) -> io::Result<ExitStatus> {
        let mut sigchld = None;
        loop {
            if self.pidfd.is_none() && sigchld.is_none() {
                // registered before looking, so no exit is missed
                sigchld = Some(signal(SignalKind::child())?);
            }
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            match (&self.pidfd, &mut sigchld) {
                (Some(fd), _) => fd.readable().await?.clear_ready(),
                (None, Some(sig)) => {
                    sig.recv().await;
                }
                (None, None) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_suffix_is_stripped() {
        assert_eq!(
            strip_deleted(Path::new("/usr/bin/baton (deleted)")),
            Path::new("/usr/bin/baton")
        );
        assert_eq!(
            strip_deleted(Path::new("/usr/bin/baton")),
            Path::new("/usr/bin/baton")
        );
    }
}
