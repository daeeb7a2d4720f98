//! What `/proc` tells the supervisor: who is below it, whether `/proc` is its own PID
//! namespace's, whether its parent is systemd.

use std::collections::BTreeSet;

/// A systemd service: `INVOCATION_ID` is set (systemd sets it for every unit it runs) and our
/// parent process is systemd itself (a process started by a supervisor that runs under systemd,
/// or by a shell in a terminal that inherited the variable, is not).
pub(super) fn under_systemd() -> bool {
    if std::env::var_os("INVOCATION_ID")
        .filter(|v| !v.is_empty())
        .is_none()
    {
        return false;
    }
    let parent = nix::unistd::getppid();
    std::fs::read_to_string(format!("/proc/{parent}/comm")).is_ok_and(|c| c.trim_end() == "systemd")
}

/// `/proc` belongs to our PID namespace (a container that mounted its own, or none at all).
pub(super) fn proc_is_ours(me: u32) -> bool {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<u32>().ok()))
        == Some(me)
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat)
}

/// The parent pid in the text of `/proc/PID/stat` (the command name, in parentheses, may hold
/// anything: split at the last `)`).
fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `pid` has exited: a zombie (`Z`, or `X` while it is being reaped), or no process at all. A
/// main generation killed while its predecessor still drains stays the predecessor's zombie
/// (the predecessor leaves it for us to reap once it exits itself): signals to it go nowhere.
pub(super) fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_state(&stat).is_none_or(|state| matches!(state, 'Z' | 'X')),
        Err(_) => true,
    }
}

/// The state letter in the text of `/proc/PID/stat` (the field after the command name).
fn parse_state(stat: &str) -> Option<char> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// How deep a line of generations may be (each one the child of the one it took over from, all
/// still draining) before we stop following parent links.
const MAX_DEPTH: usize = 4096;

/// `pid` is below `me`: our child, or the child of a generation that is still draining, and so on.
pub(super) fn is_descendant(pid: u32, me: u32) -> bool {
    let mut p = pid;
    for _ in 0..MAX_DEPTH {
        match parent_of(p) {
            Some(parent) if parent == me => return true,
            Some(parent) if parent > 1 => p = parent,
            _ => return false,
        }
    }
    false
}

/// `(pid, parent pid)` of every process `/proc` shows.
pub(super) fn process_table() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, parent_of(pid)?))
        })
        .collect()
}

/// Every process below `root` in `table`.
pub(super) fn descendants(root: u32, table: &[(u32, u32)]) -> BTreeSet<u32> {
    let mut found = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in table {
            if ppid == parent && pid != root && found.insert(pid) {
                frontier.push(pid);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_follow_a_line_of_draining_generations() {
        // 5 supervises 6 (retired, draining) -> 7 (draining) -> 8 (main) -> 9 (in flight).
        let table = [
            (1, 0),
            (5, 1),
            (6, 5),
            (7, 6),
            (8, 7),
            (9, 8),
            (20, 1),
            (21, 20),
        ];
        assert_eq!(descendants(5, &table), BTreeSet::from([6, 7, 8, 9]));
        assert_eq!(descendants(1, &table).len(), 7, "as PID 1: everything");
        assert!(descendants(9, &table).is_empty());
        // A cycle (pids reused while reading /proc) ends.
        assert_eq!(descendants(5, &[(6, 5), (5, 6)]), BTreeSet::from([6]));
    }

    #[test]
    fn ppid_is_read_past_odd_command_names() {
        assert_eq!(parse_ppid("42 (baton) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("42 (a) b) (c) R 9 1 1"), Some(9));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn state_is_read_past_odd_command_names() {
        assert_eq!(parse_state("42 (baton) S 7 42 42 0"), Some('S'));
        assert_eq!(parse_state("42 (a) Z) (c) Z 9 1 1"), Some('Z'));
        assert_eq!(parse_state("garbage"), None);
    }

    /// Against the real `/proc`: we are running, a child that exited and is not reaped yet has
    /// exited, and so has a pid no process has.
    #[test]
    fn a_zombie_and_a_missing_pid_have_exited_a_running_process_has_not() {
        use nix::sys::wait::{waitid, Id, WaitPidFlag};

        assert!(!has_exited(std::process::id()), "we run");
        let child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        // Wait for its exit without reaping it: a zombie.
        waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).expect("waitid");
        assert!(has_exited(child.id()), "a zombie has exited");
        let mut child = child;
        child.wait().expect("reap");
        assert!(has_exited(child.id()), "a reaped pid has exited");
        assert!(has_exited(u32::MAX - 1), "no such pid");
    }

    /// Against the real `/proc` (the tests' own PID namespace's): a child of ours and its own
    /// child are below us, with the parent links `/proc` shows; our parent and init are not.
    #[test]
    fn the_real_proc_shows_a_child_and_a_grandchild_below_us_and_nothing_above() {
        use std::io::BufRead;
        use std::process::{Command, Stdio};

        let me = std::process::id();
        assert!(
            proc_is_ours(me),
            "the tests run with a /proc of their own PID namespace"
        );
        assert!(
            !proc_is_ours(me + 1),
            "/proc/self names us, not another pid"
        );

        // sh (our child) starts sleep (our grandchild) and tells its pid.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 60 & echo $!; wait"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the grandchild's pid");
        let grandchild: u32 = line.trim().parse().expect("a pid");
        let sh = child.id();

        let checks = std::panic::catch_unwind(|| {
            assert_eq!(parent_of(sh), Some(me));
            assert_eq!(parent_of(grandchild), Some(sh));
            assert!(is_descendant(sh, me), "our child");
            assert!(is_descendant(grandchild, me), "our child's child");
            assert!(!is_descendant(me, me), "not below ourselves");
            let parent = nix::unistd::getppid().as_raw() as u32;
            assert!(!is_descendant(parent, me), "our parent {parent}");
            assert!(!is_descendant(1, me), "init");
            assert!(
                !is_descendant(grandchild, grandchild + 1_000_000),
                "a stranger's"
            );
            let table = process_table();
            assert!(table.contains(&(sh, me)), "{table:?}");
            assert!(table.contains(&(grandchild, sh)), "{table:?}");
            let below = descendants(me, &table);
            assert!(
                below.contains(&sh) && below.contains(&grandchild),
                "{below:?}"
            );
            assert!(
                !below.contains(&me) && !below.contains(&parent),
                "{below:?}"
            );
        });
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.kill();
        let _ = child.wait();
        if let Err(panic) = checks {
            std::panic::resume_unwind(panic);
        }
    }
}
