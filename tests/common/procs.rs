//! Looking at processes and sockets through /proc, and sending signals.
//!
//! A successor of a reload is not the test's child, so everything about it is learned here.

use std::collections::HashSet;
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

/// The fields of `/proc/PID/stat` the tests care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    /// `R`, `S`, `D`, `T`, `Z`, `X`, ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

impl ProcStat {
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
}

/// Parses `/proc/PID/stat`; `None` when the process does not exist (any more).
pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may contain spaces or parentheses: split at the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    Some(ProcStat {
        pid,
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        pgrp: rest.get(2)?.parse().ok()?,
    })
}

/// Every process on the machine (that could be read).
pub fn all_processes() -> Vec<ProcStat> {
    let mut out = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            {
                if let Some(st) = stat(pid) {
                    out.push(st);
                }
            }
        }
    }
    out
}

/// The process exists in /proc (alive or zombie).
pub fn exists(pid: i32) -> bool {
    stat(pid).is_some()
}

/// The process has exited but nobody reaped it.
pub fn is_zombie(pid: i32) -> bool {
    stat(pid).map(|s| s.is_zombie()).unwrap_or(false)
}

/// The process exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    stat(pid).map(|s| !s.is_zombie()).unwrap_or(false)
}

/// Direct children of `pid` (zombies included).
pub fn children_of(pid: i32) -> Vec<ProcStat> {
    all_processes()
        .into_iter()
        .filter(|p| p.ppid == pid)
        .collect()
}

/// Members of a process group (zombies included).
pub fn group_members(pgid: i32) -> Vec<ProcStat> {
    all_processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid)
        .collect()
}

/// Sends a signal; returns false if the process does not exist.
pub fn kill(pid: i32, sig: Signal) -> bool {
    signal::kill(Pid::from_raw(pid), sig).is_ok()
}

/// Polls until the process is gone from /proc (exited and reaped).
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    super::try_wait_until(timeout, || if exists(pid) { None } else { Some(()) }).is_some()
}

/// The environment a process was started with (`NAME=value` strings).
pub fn environ(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/environ"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The command line of a process.
pub fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Inodes of the sockets a process holds open, by fd number.
pub fn socket_fds(pid: i32) -> Vec<(i32, u64)> {
    let mut out = Vec::new();
    if let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in dir.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Ok(target) = fs::read_link(entry.path()) {
                let t = target.to_string_lossy();
                if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    if let Ok(inode) = inode.parse() {
                        out.push((fd, inode));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// A TCP socket in LISTEN state, from /proc/net/tcp{,6}.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpListenEntry {
    pub addr: SocketAddr,
    pub inode: u64,
}

fn parse_hex_v4(s: &str) -> Option<Ipv4Addr> {
    let n = u32::from_str_radix(s, 16).ok()?;
    // /proc/net/tcp prints the address as the host-order u32 of network-order bytes.
    Some(Ipv4Addr::from(n.to_le_bytes()))
}

fn parse_hex_v6(s: &str) -> Option<Ipv6Addr> {
    if s.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for word in 0..4 {
        let w = u32::from_str_radix(&s[word * 8..word * 8 + 8], 16).ok()?;
        bytes[word * 4..word * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    Some(Ipv6Addr::from(bytes))
}

/// Every listening TCP socket of this network namespace.
pub fn tcp_listeners() -> Vec<TcpListenEntry> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let Some((ip, port)) = cols[1].split_once(':') else {
                continue;
            };
            let Ok(port) = u16::from_str_radix(port, 16) else {
                continue;
            };
            let ip = if v6 {
                parse_hex_v6(ip).map(std::net::IpAddr::V6)
            } else {
                parse_hex_v4(ip).map(std::net::IpAddr::V4)
            };
            let (Some(ip), Ok(inode)) = (ip, cols[9].parse::<u64>()) else {
                continue;
            };
            out.push(TcpListenEntry {
                addr: SocketAddr::new(ip, port),
                inode,
            });
        }
    }
    out
}

/// Inodes of the listening TCP sockets on `port` (any address).
pub fn listening_inodes_on_port(port: u16) -> Vec<u64> {
    let mut v: Vec<u64> = tcp_listeners()
        .into_iter()
        .filter(|e| e.addr.port() == port)
        .map(|e| e.inode)
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The listening TCP sockets a process holds.
pub fn listening_tcp_of(pid: i32) -> Vec<TcpListenEntry> {
    let mine: HashSet<u64> = socket_fds(pid).into_iter().map(|(_, i)| i).collect();
    tcp_listeners()
        .into_iter()
        .filter(|e| mine.contains(&e.inode))
        .collect()
}

/// The processes of a group that hold a listening socket with this inode: the ones that can
/// still accept connections on it.
pub fn holders_of(pgid: i32, inode: u64) -> Vec<i32> {
    group_members(pgid)
        .into_iter()
        .filter(|p| !p.is_zombie())
        .filter(|p| socket_fds(p.pid).iter().any(|&(_, i)| i == inode))
        .map(|p| p.pid)
        .collect()
}

/// The inode of the server side of a TCP connection: local port `server_port`, remote port
/// `client_port` (from /proc/net/tcp{,6}, any state). 0 while it sits unaccepted in no process.
pub fn server_side_inode(server_port: u16, client_port: u16) -> Option<u64> {
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let port = |c: &str| {
                c.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            if port(cols[1]) == Some(server_port) && port(cols[2]) == Some(client_port) {
                if let Ok(inode) = cols[9].parse::<u64>() {
                    if inode != 0 {
                        return Some(inode);
                    }
                }
            }
        }
    }
    None
}

/// Which live member of the process group holds the server side of the connection whose client
/// end is bound to `client_port` (i.e. which process accepted it).
pub fn connection_owner(pgid: i32, server_port: u16, client_port: u16) -> Option<i32> {
    let inode = server_side_inode(server_port, client_port)?;
    group_members(pgid)
        .into_iter()
        .filter(|p| !p.is_zombie())
        .find(|p| socket_fds(p.pid).iter().any(|&(_, i)| i == inode))
        .map(|p| p.pid)
}

/// `VmRSS` of a process in KiB (0 when it is gone).
pub fn rss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The threads of a process by name (`/proc/PID/task/*/comm`), sorted.
pub fn thread_names(pid: i32) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's tasks")
        .flatten()
        .map(|task| {
            fs::read_to_string(task.path().join("comm"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect();
    names.sort();
    names
}

/// How many descriptors a process has open.
pub fn fd_count(pid: i32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Fields 14.. of `/proc/PID/stat` (utime, stime, cutime, cstime, …), in clock ticks.
pub fn stat_times(pid: i32) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    Some(f.get(11..15)?.to_vec())
}

/// CPU time (user + system) `pid` has used so far, from `/proc/PID/stat` (clock ticks).
pub fn cpu_time(pid: i32) -> std::time::Duration {
    let ticks = stat_times(pid).expect("the process is there (/proc/PID/stat)");
    // SAFETY: sysconf with a valid name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    std::time::Duration::from_millis((ticks[0] + ticks[1]) * 1000 / hz)
}

/// Bytes received but not yet read on the connected Unix stream sockets `pid` holds (the
/// `Recv-Q` that `ss -x` shows): e.g. a hand-off message waiting for a stopped successor.
pub fn unread_unix_stream_bytes(pid: i32) -> u64 {
    let out = super::reaper::output(std::process::Command::new("ss").args(["-xnpH"]))
        .expect("run ss (iproute2)");
    assert!(out.status.success(), "ss -xnpH: {out:?}");
    let tag = format!("pid={pid},");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("u_str") && l.contains(&tag))
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

/// Waits for a live child of `parent` (a successor being started).
pub fn wait_child(parent: i32) -> i32 {
    super::wait_until("a successor process", super::DEADLINE, || {
        children_of(parent)
            .into_iter()
            .find(|c| !c.is_zombie())
            .map(|c| c.pid)
    })
}
