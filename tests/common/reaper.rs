//! The test process plays the role systemd plays for a service: it is a *child subreaper*, so a
//! successor whose parent retired is reparented to the test process (PID 1 of these machines does
//! not reap orphans). A background thread reaps those orphans and keeps their exit status.
//!
//! Processes the harness spawned itself (group leaders) are never reaped here: their owner waits
//! for them through `std::process::Child`. Every spawn goes through [`spawn_registered`], which
//! holds the same lock the reaper holds while it looks, so a fresh child cannot be mistaken for
//! an orphan.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::sync::{Mutex, Once};
use std::thread;
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::procs;

struct State {
    leaders: HashSet<i32>,
    exits: HashMap<i32, WaitStatus>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
static INIT: Once = Once::new();

fn lock() -> std::sync::MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes this process a child subreaper and starts the reaping thread (once).
pub fn init() {
    INIT.call_once(|| {
        *lock() = Some(State {
            leaders: HashSet::new(),
            exits: HashMap::new(),
        });
        // SAFETY: plain prctl with integer arguments.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(
            rc,
            0,
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        );
        thread::Builder::new()
            .name("orphan-reaper".into())
            .spawn(|| loop {
                reap_orphans();
                thread::sleep(Duration::from_millis(10));
            })
            .expect("reaper thread");
    });
}

fn reap_orphans() {
    let me = std::process::id() as i32;
    let mut guard = lock();
    let state = guard.as_mut().expect("reaper state");
    for p in procs::children_of(me) {
        if !p.is_zombie() || state.leaders.contains(&p.pid) {
            continue;
        }
        match waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => {}
            Ok(status) => {
                state.exits.insert(p.pid, status);
            }
        }
    }
}

/// Spawns `cmd` as a child the harness owns (its owner reaps it).
pub fn spawn_registered(cmd: &mut Command) -> std::io::Result<Child> {
    init();
    let mut guard = lock();
    let child = cmd.spawn()?;
    guard
        .as_mut()
        .expect("reaper state")
        .leaders
        .insert(child.id() as i32);
    Ok(child)
}

/// Runs `cmd` to completion as a registered child and collects its output (what
/// `Command::output` does, without racing the orphan reaper for the exit status).
pub fn output(cmd: &mut Command) -> std::io::Result<std::process::Output> {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = spawn_registered(cmd)?;
    let pid = child.id() as i32;
    let out = child.wait_with_output();
    forget_leader(pid);
    out
}

/// How an orphan (a process the harness did not spawn) ended, once the reaper collected it.
pub fn orphan_exit(pid: i32) -> Option<WaitStatus> {
    lock().as_ref().and_then(|s| s.exits.get(&pid).copied())
}

/// The owner reaped its child: a later orphan that reuses the pid must be reaped again.
pub fn forget_leader(pid: i32) {
    if let Some(s) = lock().as_mut() {
        s.leaders.remove(&pid);
    }
}
