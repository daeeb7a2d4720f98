//! Starting the successor: the executable path recorded at start, the same arguments, a cleaned
//! environment, the listeners at fds 3, 4, … and nothing else inherited. See
//! [`docs/handoff-protocol.md`](../../docs/handoff-protocol.md), "Environment of the child".
//!
//! libc, not nix, for the child's side: between `clone(CLONE_VM | CLONE_VFORK)` and `execve`
//! the child shares our memory and may neither allocate nor take a lock, so it makes raw system
//! calls on storage (signal sets, argument arrays) prepared before the clone.

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
    // (The variables set below replace any inherited value already: see `environment`.)
    let replaced = |key: &[u8]| STRIPPED_ENV.iter().any(|s| s.as_bytes() == key);
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
    let pid = start(exe, &envp, &fds, &empty_mask())?;
    Ok(Child::new(pid))
}

/// An empty signal set.
fn empty_mask() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is valid storage; sigemptyset initialises it.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        none
    }
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
    let program = cstring(exe.path.as_os_str().as_bytes())?;
    let argv: Vec<CString> = std::iter::once(Ok(program.clone()))
        .chain(exe.args.iter().map(|a| cstring(a.as_bytes())))
        .collect::<io::Result<_>>()?;
    launch(&program, &argv, envp, fds, mask, ChildSetup::SUCCESSOR)
}

/// How `baton run` starts an application: `program` (a path, not searched in `PATH`) with
/// `args` (argv\[0\] included), the environment `envp` (made by [`environment`], without
/// `LISTEN_PID`), `listeners` at fds 3, 4, … and, set in the child after the clone and before
/// its execve, `LISTEN_PID=<its own pid>` (sd_listen_fds(3) checks it, so it cannot be known
/// before). The child leads a process group of its own (a terminal's ^C or a stop signal to
/// baton's group reaches only baton, which stops its children on purpose), gets `death_signal`
/// when the thread that started it dies (`PR_SET_PDEATHSIG`: a baton killed by the OOM killer
/// leaves no orphan; callers start children from the thread that lives as long as the process),
/// and has every signal at its default disposition and none blocked.
#[cfg(feature = "cli")]
pub(crate) fn spawn_app(
    program: &Path,
    args: &[OsString],
    mut envp: Vec<CString>,
    listeners: &[impl AsFd],
    death_signal: libc::c_int,
) -> io::Result<Child> {
    let program = cstring(program.as_os_str().as_bytes())?;
    let argv: Vec<CString> = args
        .iter()
        .map(|a| cstring(a.as_bytes()))
        .collect::<io::Result<_>>()?;
    envp.retain(|e| !e.as_bytes().starts_with(LISTEN_PID_PREFIX));
    // "LISTEN_PID=" and room for any pid and the NUL; the child writes its pid in place.
    let mut listen_pid = [LISTEN_PID_PREFIX, &[0; 24]].concat();
    // A placeholder entry, replaced by the pointer to `listen_pid` in `vfork_exec`.
    envp.push(env_entry(b"LISTEN_PID", b"")?);
    let fds: Vec<(RawFd, RawFd)> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_fd().as_raw_fd(), 3 + i as RawFd))
        .collect();
    let setup = ChildSetup {
        listen_pid: listen_pid.as_mut_ptr(),
        own_group: true,
        death_signal,
        parent: nix::unistd::getpid().as_raw(),
        hup: libc::SIG_DFL,
    };
    let pid = launch(&program, &argv, &envp, &fds, &empty_mask(), setup)?;
    drop(listen_pid);
    Ok(Child::new(pid))
}

/// The one way a child is started (a successor, the supervisor's generation 0, an application
/// of `baton run`): `fds` placed, the rest by [`vfork_exec`].
fn launch(
    program: &CString,
    argv: &[CString],
    envp: &[CString],
    fds: &[(RawFd, RawFd)],
    mask: &libc::sigset_t,
    setup: ChildSetup,
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
    let pid = vfork_exec(program, argv, envp, &staged, &targets, mask, setup)?;
    drop(staged);
    Ok(pid)
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";

/// What the child of [`vfork_exec`] does besides placing the descriptors and the mask.
#[derive(Clone, Copy)]
struct ChildSetup {
    /// A buffer `LISTEN_PID=` followed by zeros, or null: the child writes its pid after the
    /// prefix; the last entry of `envp` is replaced by it.
    listen_pid: *mut u8,
    /// setpgid(0, 0), and every signal at its default (an ignored one too), as systemd starts
    /// a service.
    own_group: bool,
    /// `PR_SET_PDEATHSIG` (0: none).
    death_signal: libc::c_int,
    /// The parent's pid, to detect a parent that died before the death signal was armed.
    parent: libc::pid_t,
    /// The disposition of `SIGHUP` in the child.
    hup: libc::sighandler_t,
}

impl ChildSetup {
    /// A baton successor or generation 0: `SIGHUP` ignored until it installs its handler.
    const SUCCESSOR: ChildSetup = ChildSetup {
        listen_pid: std::ptr::null_mut(),
        own_group: false,
        death_signal: 0,
        parent: 0,
        hup: libc::SIG_IGN,
    };
}

/// Write `pid` in decimal at `at`, NUL-terminated. No allocation: the child of a vfork calls it.
///
/// # Safety
/// `at` must be valid for writing 12 bytes.
unsafe fn write_pid(at: *mut u8, pid: libc::pid_t) {
    let mut digits = [0u8; 12];
    let mut n = pid.max(0) as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: i < len <= 10 < 12, within the caller's buffer.
        unsafe { *at.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: len <= 10 < 12.
    unsafe { *at.add(len) = 0 };
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
    /// The rest of the child's set-up.
    setup: ChildSetup,
    /// The errno of the step that failed in the child (0: none).
    error: AtomicI32,
}

/// Start `program` the way posix_spawn(3) does, without copying our address space (a vfork:
/// the child borrows our memory until its execve, and this thread waits until then), so the
/// serving process pays neither a page-table copy nor copy-on-write faults afterwards. In the
/// child: every signal we catch back to its default (our handlers must not run there), `SIGHUP`
/// as `setup` says (ignored for a baton: a reload request before the successor installed its
/// handler must not kill it; it installs one at start), `SIGPIPE` default (as std does for
/// children), the rest of `setup`, `sources[i]` at fd `targets[i]`, `mask` as the signal mask,
/// execve. posix_spawn itself cannot ignore a signal in the child.
fn vfork_exec(
    program: &CString,
    argv: &[CString],
    envp: &[CString],
    sources: &[OwnedFd],
    targets: &[RawFd],
    mask: &libc::sigset_t,
    setup: ChildSetup,
) -> io::Result<u32> {
    let pointers = |strings: &[CString]| -> Vec<*const libc::c_char> {
        let mut v: Vec<_> = strings.iter().map(|s| s.as_ptr()).collect();
        v.push(std::ptr::null());
        v
    };
    let (argv, mut envp) = (pointers(argv), pointers(envp));
    if !setup.listen_pid.is_null() && envp.len() >= 2 {
        // The placeholder is the last entry before the terminating null.
        let last = envp.len() - 2;
        envp[last] = setup.listen_pid as *const libc::c_char;
    }
    let sources: Vec<RawFd> = sources.iter().map(AsRawFd::as_raw_fd).collect();
    let plan = Plan {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        sources: sources.as_ptr(),
        targets: targets.as_ptr(),
        count: sources.len().min(targets.len()),
        mask,
        setup,
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
                libc::SIGHUP => plan.setup.hup,
                libc::SIGPIPE => libc::SIG_DFL,
                // An application starts as systemd would start it: every signal at its default.
                _ if action.sa_sigaction == libc::SIG_IGN && !plan.setup.own_group => continue,
                _ => libc::SIG_DFL,
            };
            if action.sa_sigaction != wanted {
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = wanted;
                libc::sigaction(signal, &new, std::ptr::null_mut());
            }
        }
        let setup = plan.setup;
        if setup.own_group && libc::setpgid(0, 0) != 0 {
            fail(plan);
        }
        if setup.death_signal != 0 {
            if libc::prctl(libc::PR_SET_PDEATHSIG, setup.death_signal as libc::c_ulong) != 0 {
                fail(plan);
            }
            // The parent died before the signal was armed: nobody would stop us.
            if libc::getppid() != setup.parent {
                libc::_exit(127);
            }
        }
        if !setup.listen_pid.is_null() {
            write_pid(
                setup.listen_pid.add(LISTEN_PID_PREFIX.len()),
                libc::getpid(),
            );
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
/// the background, unless it was [released](Child::release).
#[derive(Debug)]
pub struct Child {
    reaper: Reaper,
    /// Given up: never reaped here (see [`Child::release`]).
    released: bool,
}

/// Waits for one child's exit and reaps it.
#[derive(Debug)]
struct Reaper {
    pid: u32,
    status: Option<ExitStatus>,
    pidfd: Option<AsyncFd<OwnedFd>>,
}

impl Child {
    /// Take charge of `pid`, a child of this process not reaped yet (one started before this
    /// process re-executed itself: children survive an execve).
    #[cfg(feature = "cli")]
    pub(crate) fn adopt(pid: u32) -> Child {
        Child::new(pid)
    }

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
        Child {
            reaper: Reaper {
                pid,
                status: None,
                pidfd,
            },
            released: false,
        }
    }

    /// Its pid.
    pub fn id(&self) -> u32 {
        self.reaper.pid
    }

    /// Its exit status if it has exited (then reaped), without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.reaper.try_wait()
    }

    /// Wait for its exit and reap it. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.reaper.wait().await
    }

    /// Give the child up without ever reaping it: a successor that became the main process.
    /// Its exit belongs to whoever follows the main process (systemd, baton's supervisor), to
    /// whom the kernel hands it when this process exits; reaped here, its status would be lost
    /// (a main process killed while its predecessor drains would look, to them, like one that
    /// vanished). Until then an exited one stays a zombie.
    pub fn release(mut self) {
        self.reaper.pidfd = None;
        self.released = true;
    }

    /// Send `SIGKILL` unless it was reaped already.
    pub fn start_kill(&mut self) -> io::Result<()> {
        if self.reaper.status.is_some() {
            return Ok(());
        }
        kill(
            Pid::from_raw(self.reaper.pid as libc::pid_t),
            Signal::SIGKILL,
        )
        .map_err(io::Error::from)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.released || self.reaper.status.is_some() {
            return;
        }
        let mut reaper = Reaper {
            pid: self.reaper.pid,
            status: None,
            pidfd: self.reaper.pidfd.take(),
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

    /// Runs `check` in a forked copy of this test process, where only the forking thread exists
    /// (no other test's descriptors or children interfere), and returns the code it returned.
    /// `check` must not panic: it reports by its return value.
    fn in_forked_process(check: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only runs `check` (glibc's malloc may be used after a fork) and
        // leaves through _exit, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let code = check();
            // SAFETY: ends the forked copy at once, running no destructor or atexit handler.
            unsafe { libc::_exit(code) };
        }
        match waitpid(Pid::from_raw(pid), None).expect("waitpid") {
            WaitStatus::Exited(_, code) => code,
            other => panic!("the forked test process ended with {other:?}"),
        }
    }

    /// A new unbound Unix stream socket, close-on-exec (as baton's listeners are), moved to `at`.
    fn socket_at(at: RawFd) -> Option<RawFd> {
        // SAFETY: socket(2) returns a new descriptor or -1.
        let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return None;
        }
        // SAFETY: socket just returned it; nothing else owns it (closed at the end of scope).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(at)).ok()
    }

    #[test]
    fn every_listener_arrives_at_its_target_where_the_targets_are_free() {
        // baton always has descriptors open above its listeners, so their staged copies lie far
        // above fds 3, 4, …; a process started with only 0, 1, 2 open has the targets free. A
        // staged copy must then neither land on its own target (dup2 onto itself keeps
        // FD_CLOEXEC: the listener is lost at exec) nor on one still to be placed; and nothing
        // but the listeners reaches the program.
        for n in 1..=3 {
            let code = in_forked_process(|| {
                // SAFETY: close_range(2) closes this forked copy's descriptors 3 and above.
                if unsafe { libc::syscall(libc::SYS_close_range, 3u32, !0u32, 0u32) } != 0 {
                    return 103;
                }
                let mut fds = Vec::new();
                let mut script = String::new();
                for i in 0..n {
                    let Some(source) = socket_at(20 + i) else {
                        return 104;
                    };
                    let Ok(stat) = nix::sys::stat::fstat(source) else {
                        return 105;
                    };
                    fds.push((source, 3 + i));
                    // fd 3+i in the program is this very socket, else exit 10+i
                    script.push_str(&format!(
                        "[ \"$(readlink /proc/$$/fd/{})\" = 'socket:[{}]' ] || exit {}\n",
                        3 + i,
                        stat.st_ino,
                        10 + i
                    ));
                }
                // and no other descriptor above 2 is open there, else exit 2
                script.push_str(&format!(
                    "i={}; while [ $i -le 64 ]; do [ -e /proc/$$/fd/$i ] && exit 2; i=$((i+1)); done\n",
                    3 + n
                ));
                let (Ok(program), Ok(script)) = (CString::new("/bin/sh"), CString::new(script))
                else {
                    return 106;
                };
                let argv = [c"sh".to_owned(), c"-c".to_owned(), script];
                let envp = [c"PATH=/usr/bin:/bin".to_owned()];
                match launch(
                    &program,
                    &argv,
                    &envp,
                    &fds,
                    &empty_mask(),
                    ChildSetup::SUCCESSOR,
                ) {
                    Ok(pid) => match waitpid(Pid::from_raw(pid as libc::pid_t), None) {
                        Ok(WaitStatus::Exited(_, code)) => code,
                        _ => 101,
                    },
                    Err(_) => 100,
                }
            });
            let what = match code {
                0 => continue,
                2 => "a descriptor besides the listeners reached the program".to_owned(),
                10..=12 => format!("listener {} did not arrive at fd {}", code - 10, code - 7),
                100 => "launch failed".to_owned(),
                other => format!("the check failed with code {other}"),
            };
            panic!("{n} listener(s) placed at 3.. with the targets free: {what}");
        }
    }

    #[test]
    fn a_program_that_cannot_be_executed_is_reported_with_the_errno_of_its_execve() {
        let exe = Executable {
            path: PathBuf::from("/nonexistent/baton"),
            args: Vec::new(),
        };
        let err = start(&exe, &[], &[], &empty_mask()).expect_err("no such program");
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    }

    #[test]
    fn a_clone_the_process_limit_refuses_is_an_error_not_a_pid() {
        // (A user at its RLIMIT_NPROC: fork and clone fail with EAGAIN. Root is exempt, so the
        // forked copy becomes nobody first.)
        let code = in_forked_process(|| {
            // SAFETY: setgid, setuid and setrlimit act on this forked copy only.
            unsafe {
                if libc::geteuid() == 0 && (libc::setgid(65534) != 0 || libc::setuid(65534) != 0) {
                    return 103;
                }
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::setrlimit(libc::RLIMIT_NPROC, &none) != 0 {
                    return 104;
                }
            }
            let exe = Executable {
                path: PathBuf::from("/bin/true"),
                args: Vec::new(),
            };
            match start(&exe, &[], &[], &empty_mask()) {
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => 0,
                Err(_) => 1,
                Ok(_) => 2,
            }
        });
        assert_eq!(
            code, 0,
            "1: another error than EAGAIN, 2: a pid was returned, 10x: the set-up failed"
        );
    }

    #[tokio::test]
    async fn a_child_is_reaped_and_its_exit_reported_as_it_ended() {
        // (`baton run` exits with its application's status, so that systemd's Restart= applies;
        // a failed successor's status is logged)
        let ended = [
            ("exit 3", Some(3), None),
            ("exit 0", Some(0), None),
            ("kill -9 $$", None, Some(libc::SIGKILL)),
        ];
        for (script, code, signal) in ended {
            let exe = Executable {
                path: PathBuf::from("/bin/sh"),
                args: vec!["-c".into(), script.into()],
            };
            let pid = start(&exe, &[], &[], &empty_mask()).expect("start /bin/sh");
            let mut child = Child::new(pid);
            let status = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait())
                .await
                .expect("the child ends within 60 s")
                .expect("wait");
            assert_eq!((status.code(), status.signal()), (code, signal), "{script}");
            assert_eq!(
                child.try_wait().expect("try_wait"),
                Some(status),
                "{script}"
            );
            assert_eq!(
                waitpid(
                    Pid::from_raw(pid as libc::pid_t),
                    Some(WaitPidFlag::WNOHANG)
                ),
                Err(nix::errno::Errno::ECHILD),
                "{script}: reaped"
            );
        }
    }

    #[tokio::test]
    async fn a_child_dropped_before_it_was_reaped_is_reaped_in_the_background() {
        let exe = Executable {
            path: PathBuf::from("/bin/true"),
            args: Vec::new(),
        };
        let pid = start(&exe, &[], &[], &empty_mask()).expect("start /bin/true");
        drop(Child::new(pid));
        // Still our child (running or a zombie) until reaped; WNOWAIT leaves it as it is.
        let ours = || {
            // SAFETY: waitid(2) writes only into `info`.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
            // SAFETY: as above.
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) == 0 }
        };
        for _ in 0..6000 {
            if !ours() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{pid} was not reaped within 60 s of its Child being dropped: a zombie is left");
    }
}
