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
}
