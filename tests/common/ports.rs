//! Ports a test owns for as long as it needs them.
//!
//! Binding port 0 and releasing it (the old `free_port`) lets two tests, or the kernel's choice
//! of an ephemeral port for some outgoing connection, take the same port before baton binds it.
//! A [`Port`] instead comes from below the kernel's ephemeral range (which the kernel never picks
//! by itself) and is reserved by an exclusive `flock` on `/tmp/baton-test-ports/<port>`, held
//! until the [`Port`] is dropped: every test process of every test binary on the machine that
//! uses this module skips ports reserved by another. A candidate that something else listens on
//! (bind fails) is skipped too.

use std::fs::{self, File, OpenOptions};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::{Flock, FlockArg};

/// Where the reservations live (shared by every test process on the machine).
const DIR: &str = "/tmp/baton-test-ports";
/// The lowest port handed out.
const LOW: u16 = 20000;

/// A TCP port on 127.0.0.1 reserved for this test until dropped.
#[derive(Debug)]
pub struct Port {
    /// The port number.
    pub port: u16,
    _lock: Flock<File>,
}

/// The first port of the kernel's ephemeral range (`ip_local_port_range`), 32768 if unknown.
fn ephemeral_start() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// Reserves a port that nothing listens on now and no other test holds.
pub fn reserve() -> Port {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    fs::create_dir_all(DIR).expect("create the port reservation directory");
    let high = ephemeral_start().max(LOW + 1000);
    let span = u32::from(high - LOW);
    // Start each process somewhere else, and walk on: a port just released may still have
    // connections in TIME_WAIT.
    let start = std::process::id().wrapping_mul(2654435761) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + ((start + n) % span) as u16;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(format!("{DIR}/{port}"))
            .expect("open a port reservation");
        let Ok(lock) = Flock::lock(lock, FlockArg::LockExclusiveNonblock) else {
            continue; // another test holds it
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Port { port, _lock: lock };
        }
    }
    panic!("no free port between {LOW} and {high}");
}
