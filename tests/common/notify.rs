//! A real `NOTIFY_SOCKET`: a `SOCK_DGRAM` Unix socket with `SO_PASSCRED`, so each datagram is
//! recorded with the pid of the process that sent it, as systemd records it.
//!
//! Descriptors passed along (`BARRIER=1` sends the write end of a pipe) are closed right after the
//! datagram was recorded, which is what tells the sender that every earlier message was processed.

use std::fmt;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixCredentials,
};
use nix::sys::time::TimeSpec;

/// One datagram as received.
#[derive(Clone)]
pub struct Notification {
    /// Position in the order of arrival, from 0.
    pub seq: usize,
    /// Sender pid from `SCM_CREDENTIALS`.
    pub pid: i32,
    /// Sender uid from `SCM_CREDENTIALS`.
    pub uid: u32,
    /// The `NAME=value` lines of the datagram.
    pub lines: Vec<String>,
    /// How many descriptors came with it.
    pub fds: usize,
    /// When the kernel queued it (`SO_TIMESTAMPNS`), so the recorder's own wake-up delay on a
    /// busy machine does not count.
    pub at: Instant,
}

impl Notification {
    /// The datagram has exactly this line, e.g. `READY=1`.
    pub fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }

    /// The value of `KEY=`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }

    /// `STATUS=` is baton's serving status: `baton VERSION: serving on …`.
    pub fn says_serving(&self) -> bool {
        self.get("STATUS")
            .is_some_and(|s| s.starts_with("baton ") && s.contains(": serving on "))
    }

    /// `MAINPID=` parsed.
    pub fn mainpid(&self) -> Option<i32> {
        self.get("MAINPID").and_then(|v| v.parse().ok())
    }

    /// The datagram is only a barrier (`BARRIER=1`), no state change.
    pub fn is_barrier_only(&self) -> bool {
        self.lines.iter().all(|l| l == "BARRIER=1")
    }
}

impl fmt::Debug for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} pid={} {:?}",
            self.seq,
            self.pid,
            self.lines.join(" | ")
        )?;
        if self.fds > 0 {
            write!(f, " (+{} fd)", self.fds)?;
        }
        Ok(())
    }
}

struct Shared {
    log: Mutex<Vec<Notification>>,
    cond: Condvar,
    stop: AtomicBool,
    /// How long to keep the descriptors a datagram carried (a `BARRIER=1` waits that long).
    hold: Mutex<Duration>,
    /// Run on each datagram as it is recorded, before its descriptors are released.
    hook: Mutex<Option<Hook>>,
    /// While `Some`, descriptors are kept here until [`NotifyRecorder::open_barriers`].
    gated: Mutex<Option<Vec<RawFd>>>,
}

/// What [`NotifyRecorder::on_each`] runs.
type Hook = Box<dyn Fn(&Notification) + Send>;

/// Records every datagram sent to its socket until dropped.
pub struct NotifyRecorder {
    path: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl NotifyRecorder {
    /// Binds the socket at `path` and starts recording.
    pub fn bind(path: &Path) -> NotifyRecorder {
        let sock = UnixDatagram::bind(path).expect("bind notify socket");
        setsockopt(&sock, sockopt::PassCred, &true).expect("SO_PASSCRED");
        setsockopt(&sock, sockopt::ReceiveTimestampns, &true).expect("SO_TIMESTAMPNS");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("SO_RCVTIMEO");
        let shared = Arc::new(Shared {
            log: Mutex::new(Vec::new()),
            cond: Condvar::new(),
            stop: AtomicBool::new(false),
            hold: Mutex::new(Duration::ZERO),
            hook: Mutex::new(None),
            gated: Mutex::new(None),
        });
        let s2 = shared.clone();
        let thread = thread::Builder::new()
            .name("notify-recorder".into())
            .spawn(move || record(sock, s2))
            .expect("notify thread");
        NotifyRecorder {
            path: path.to_path_buf(),
            shared,
            thread: Some(thread),
        }
    }

    /// Keep the descriptors of later datagrams open for `hold` (as a slow or stuck reader would),
    /// so that every `BARRIER=1` waits that long.
    pub fn hold_barriers(&self, hold: Duration) {
        *self.shared.hold.lock().unwrap() = hold;
    }

    /// Run `hook` on every later datagram as it is recorded, before the next one is read and
    /// before a `BARRIER=1` it carries is released: what a manager does "the moment it hears" a
    /// message (a test stops the process `MAINPID=` names, say) happens before the sender can go
    /// on past its barrier.
    pub fn on_each(&self, hook: impl Fn(&Notification) + Send + 'static) {
        *self.shared.hook.lock().unwrap() = Some(Box::new(hook));
    }

    /// Keep the descriptors of later datagrams until [`NotifyRecorder::open_barriers`]: every
    /// `BARRIER=1` waits (baton gives up on one after 2 s) until the test lets it go.
    pub fn gate_barriers(&self) {
        let mut gated = self.shared.gated.lock().unwrap();
        gated.get_or_insert_with(Vec::new);
    }

    /// Barriers kept by the gate now.
    pub fn gated_barriers(&self) -> usize {
        self.shared
            .gated
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, Vec::len)
    }

    /// Releases the barriers kept by the gate, and keeps no more.
    pub fn open_barriers(&self) {
        for fd in self.shared.gated.lock().unwrap().take().unwrap_or_default() {
            // SAFETY: received with SCM_RIGHTS, owned by nobody else in this process.
            unsafe { libc::close(fd) };
        }
    }

    /// The socket path, for `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything recorded so far.
    pub fn all(&self) -> Vec<Notification> {
        self.shared.log.lock().unwrap().clone()
    }

    /// How many datagrams arrived so far (the `seq` the next one will get).
    pub fn len(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }

    /// Waits for the first datagram (from the beginning) matching `pred`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Notification) -> bool,
    ) -> Notification {
        self.wait_for_after(0, timeout, what, pred)
    }

    /// Waits for the first datagram with `seq >= from` matching `pred`; panics with the whole
    /// record on timeout.
    pub fn wait_for_after(
        &self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Notification) -> bool,
    ) -> Notification {
        match self.try_wait_for_after(from, timeout, pred) {
            Some(n) => n,
            None => panic!(
                "no notification {what} within {timeout:?}; got:\n{}",
                self.dump()
            ),
        }
    }

    /// Like [`wait_for_after`](Self::wait_for_after) but returns `None` on timeout.
    pub fn try_wait_for_after(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&Notification) -> bool,
    ) -> Option<Notification> {
        let deadline = Instant::now() + timeout;
        let mut log = self.shared.log.lock().unwrap();
        loop {
            if let Some(n) = log.iter().skip(from).find(|n| pred(n)) {
                return Some(n.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            log = self
                .shared
                .cond
                .wait_timeout(log, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Waits until every datagram queued on the socket before this call has been recorded: sends
    /// one of its own (`X_RECORDER_SETTLE=<n>`, recorded with this process's pid) and waits for
    /// it. A datagram socket has one receive queue, so once a process has exited its whole say is
    /// in the record after this.
    pub fn settle(&self) {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let line = format!("X_RECORDER_SETTLE={}", NEXT.fetch_add(1, Ordering::SeqCst));
        let me = std::process::id() as i32;
        let from = self.len();
        UnixDatagram::unbound()
            .and_then(|s| s.send_to(line.as_bytes(), &self.path))
            .expect("send a marker to the notify socket");
        self.wait_for_after(from, super::DEADLINE, "the recorder's own marker", |n| {
            n.pid == me && n.has(&line)
        });
    }

    /// The record, one datagram a line, for failure messages.
    pub fn dump(&self) -> String {
        self.all().iter().map(|n| format!("  {n:?}\n")).collect()
    }
}

impl Drop for NotifyRecorder {
    fn drop(&mut self) {
        self.open_barriers();
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn record(sock: UnixDatagram, shared: Arc<Shared>) {
    let fd = sock.as_raw_fd();
    let mut buf = vec![0u8; 64 * 1024];
    while !shared.stop.load(Ordering::SeqCst) {
        let mut cmsg = nix::cmsg_space!(UnixCredentials, TimeSpec, [RawFd; 16]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (bytes, pid, uid, fds, at) =
            match recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC) {
                Ok(msg) => {
                    let mut pid = 0;
                    let mut uid = u32::MAX;
                    let mut fds = Vec::new();
                    let mut at = Instant::now();
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            match c {
                                ControlMessageOwned::ScmCredentials(cred) => {
                                    pid = cred.pid();
                                    uid = cred.uid();
                                }
                                ControlMessageOwned::ScmRights(v) => fds.extend(v),
                                ControlMessageOwned::ScmTimestampns(ts) => at = queued_at(ts),
                                _ => {}
                            }
                        }
                    }
                    (msg.bytes, pid, uid, fds, at)
                }
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => panic!("notify recvmsg: {e}"),
            };
        let text = String::from_utf8_lossy(&buf[..bytes]).into_owned();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        let n = {
            let mut log = shared.log.lock().unwrap();
            let seq = log.len();
            let n = Notification {
                seq,
                pid,
                uid,
                lines,
                fds: fds.len(),
                at,
            };
            log.push(n.clone());
            n
        };
        if let Some(hook) = shared.hook.lock().unwrap().as_ref() {
            hook(&n);
        }
        shared.cond.notify_all();
        // Processed: release the barrier (and any other descriptor) only now, after the hold, or
        // when the test opens the gate.
        let fds = {
            let mut gated = shared.gated.lock().unwrap();
            match gated.as_mut() {
                Some(kept) => {
                    kept.extend(fds);
                    Vec::new()
                }
                None => fds,
            }
        };
        let hold = *shared.hold.lock().unwrap();
        let release = move || {
            for fd in fds {
                // SAFETY: received with SCM_RIGHTS, owned by nobody else in this process.
                unsafe { libc::close(fd) };
            }
        };
        if hold.is_zero() {
            release();
        } else {
            thread::spawn(move || {
                thread::sleep(hold);
                release();
            });
        }
    }
}

/// The kernel's wall-clock stamp of a datagram as an `Instant` (how long ago it was queued).
fn queued_at(ts: TimeSpec) -> Instant {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let queued = UNIX_EPOCH + Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32);
    let ago = wall.duration_since(queued).unwrap_or(Duration::ZERO);
    now.checked_sub(ago).unwrap_or(now)
}
