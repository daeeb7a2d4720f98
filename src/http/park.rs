//! Parked connections: idle HTTP/1 keep-alive connections kept as their socket alone.
//!
//! An idle keep-alive connection served by hyper holds hyper's read and write buffers, its
//! connection state and a task (some 20 KB). Once it read nothing for a check period (2 ms after
//! a single request, a second when busy), with nothing in flight, nothing half read and nothing
//! unsent (see `conn`), hyper's connection is ended (told "closed" by its first read that finds
//! nothing, never after a read that brought a request) and only the socket is kept, in
//! one table per process ([`Lot`]): a descriptor, the instant it went idle and what it takes to
//! serve it again (its service, client address and its token of the connection tracker, so the
//! drain still counts it), some 200 bytes. One task watches them all through one epoll
//! instance: a parked socket that becomes readable (a request, or the peer's end-of-file) is
//! handed to a fresh connection task, which serves it as a new hyper connection; one idle for
//! the idle timeout is closed (lingering); when the drain begins, every parked connection is
//! handed back at once and takes the drain's path (the grace for a last request, then a
//! lingering close), as an idle connection served by hyper does.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::debug;

/// Why a parked connection is handed back.
pub(super) enum Wake {
    /// Bytes (or the peer's end-of-file) can be read: serve it again.
    Readable,
    /// The process drains: serve it again, as draining (grace, then closed).
    Drain,
    /// Idle for the idle timeout: close it (lingering).
    Idle,
    /// It could not be parked (the epoll instance failed): serve it on, never parked again.
    Refused,
}

/// What serves a parked connection again: called once, with its socket, its token of the
/// connection tracker and the reason.
///
/// A connection task makes its `Resume` when it starts (boxed before hyper's buffers are
/// allocated) and hands that same box over when it parks: parking allocates nothing. A box
/// made at park time lands in the hole that the connection's freshly freed buffers left and
/// splits it, so the next connection's buffers do not fit there and the heap grows: measured
/// on 5,000 idle connections parked one after the other (2026-12-07), 1,150–1,370 bytes of
/// resident memory per connection where the parked state itself needed about 440.
pub(super) trait Resume: Send {
    /// Serve the connection on `socket` again, or close it, as `wake` says.
    fn resume(self: Box<Self>, socket: OwnedFd, token: TaskTrackerToken, wake: Wake);
}

/// One parked connection.
struct Entry {
    fd: OwnedFd,
    /// Idle since then (the idle timeout counts from here).
    since: Instant,
    /// The connection still counts for the drain while parked.
    token: TaskTrackerToken,
    resume: Box<dyn Resume>,
}

/// The table of parked connections of one process and the state of its watching task.
pub(super) struct Lot {
    inner: Mutex<Inner>,
    idle_timeout: Duration,
    draining: watch::Receiver<bool>,
}

struct Inner {
    /// Dense: a freed slot is reused first; the epoll data of a socket is its slot.
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    /// The epoll instance, created with the watching task on the first park.
    epoll: Option<Arc<AsyncFd<EpollFd>>>,
    /// The drain began: nothing is parked any more.
    closed: bool,
}

/// An epoll instance, for tokio's reactor (readable when one of its sockets is).
struct EpollFd(Epoll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0 .0.as_raw_fd()
    }
}

/// How often the watching task looks for connections idle for the idle timeout.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// Events taken from the epoll instance per call.
const BATCH: usize = 64;

impl Lot {
    pub(super) fn new(idle_timeout: Duration, draining: watch::Receiver<bool>) -> Arc<Lot> {
        Arc::new(Lot {
            inner: Mutex::new(Inner {
                slots: Vec::new(),
                free: Vec::new(),
                epoll: None,
                closed: false,
            }),
            idle_timeout,
            draining,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (each step is one push or take).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Park the socket `fd`, idle since `since`, with its tracker `token`; `resume` serves it
    /// again. When it cannot be parked (the drain began, or the epoll instance failed),
    /// `resume` is called at once.
    pub(super) fn park(
        self: &Arc<Self>,
        fd: OwnedFd,
        since: Instant,
        token: TaskTrackerToken,
        resume: Box<dyn Resume>,
    ) {
        let mut inner = self.lock();
        if inner.closed || *self.draining.borrow() {
            drop(inner);
            return resume.resume(fd, token, Wake::Drain);
        }
        let epoll = match &inner.epoll {
            Some(epoll) => epoll.clone(),
            None => match self.start() {
                Ok(epoll) => {
                    inner.epoll = Some(epoll.clone());
                    epoll
                }
                Err(e) => {
                    drop(inner);
                    debug!(error = %e, "cannot watch parked connections; serving on");
                    return resume.resume(fd, token, Wake::Refused);
                }
            },
        };
        let slot = match inner.free.pop() {
            Some(slot) => slot,
            None => {
                inner.slots.push(None);
                (inner.slots.len() - 1) as u32
            }
        };
        // Level-triggered: a socket readable already (bytes came meanwhile) is reported at once.
        let event = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
            u64::from(slot),
        );
        if let Err(e) = epoll.get_ref().0.add(fd.as_fd(), event) {
            inner.free.push(slot);
            drop(inner);
            debug!(error = %e, "cannot park a connection; serving on");
            return resume.resume(fd, token, Wake::Refused);
        }
        inner.slots[slot as usize] = Some(Entry {
            fd,
            since,
            token,
            resume,
        });
    }

    /// The epoll instance and its watching task.
    fn start(self: &Arc<Self>) -> std::io::Result<Arc<AsyncFd<EpollFd>>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        // SAFETY: the epoll instance's descriptor is owned by `EpollFd`, which the `AsyncFd`
        // owns: it stays open, and `as_raw_fd` returns that same descriptor, until the
        // `AsyncFd` is dropped.
        let registered = unsafe {
            AsyncFd::register_with_interest(EpollFd(epoll), tokio::io::Interest::READABLE)
        };
        let epoll = Arc::new(registered.map_err(std::io::Error::from)?);
        tokio::spawn(self.clone().watch(epoll.clone()));
        Ok(epoll)
    }

    /// Take the entry in `slot` out of the table and the epoll instance.
    fn take(inner: &mut Inner, epoll: &Epoll, slot: usize) -> Option<Entry> {
        let entry = inner.slots.get_mut(slot)?.take()?;
        let _ = epoll.delete(entry.fd.as_fd());
        inner.free.push(slot as u32);
        Some(entry)
    }

    /// The watching task: hands back the readable sockets, closes the expired ones, and hands
    /// back everything when the drain begins.
    async fn watch(self: Arc<Self>, epoll: Arc<AsyncFd<EpollFd>>) {
        let mut draining = self.draining.clone();
        let mut expire = tokio::time::interval(EXPIRE_EVERY);
        let mut events = [EpollEvent::empty(); BATCH];
        let mut woken: Vec<(Entry, Wake)> = Vec::new();
        loop {
            tokio::select! {
                biased;
                _ = draining.wait_for(|d| *d) => {
                    let all: Vec<Entry> = {
                        let mut inner = self.lock();
                        inner.closed = true;
                        inner.free.clear();
                        let slots = std::mem::take(&mut inner.slots);
                        slots.into_iter().flatten().collect()
                    };
                    for entry in all {
                        let _ = epoll.get_ref().0.delete(entry.fd.as_fd());
                        entry.resume.resume(entry.fd, entry.token, Wake::Drain);
                    }
                    return;
                }
                guard = epoll.readable() => {
                    let Ok(mut guard) = guard else { return };
                    let n = match epoll.get_ref().0.wait(&mut events, EpollTimeout::ZERO) {
                        Ok(n) => n,
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(e) => {
                            debug!(error = %e, "epoll_wait on the parked connections failed");
                            0
                        }
                    };
                    if n < BATCH {
                        guard.clear_ready();
                    }
                    {
                        let mut inner = self.lock();
                        for event in &events[..n] {
                            let slot = event.data() as usize;
                            if let Some(entry) = Self::take(&mut inner, &epoll.get_ref().0, slot) {
                                woken.push((entry, Wake::Readable));
                            }
                        }
                    }
                }
                now = expire.tick() => {
                    let mut inner = self.lock();
                    for slot in 0..inner.slots.len() {
                        let expired = inner.slots[slot]
                            .as_ref()
                            .is_some_and(|e| now.duration_since(e.since) >= self.idle_timeout);
                        if expired {
                            if let Some(entry) = Self::take(&mut inner, &epoll.get_ref().0, slot) {
                                woken.push((entry, Wake::Idle));
                            }
                        }
                    }
                    // Give the memory of a table that shrank back.
                    let len = inner.slots.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
                    if len < inner.slots.len() / 2 {
                        inner.slots.truncate(len);
                        inner.slots.shrink_to_fit();
                        inner.free.retain(|s| (*s as usize) < len);
                        inner.free.shrink_to_fit();
                    }
                }
            }
            // Outside the lock: each resume spawns the connection's task.
            for (entry, wake) in woken.drain(..) {
                entry.resume.resume(entry.fd, entry.token, wake);
            }
        }
    }

    /// How many connections are parked.
    #[cfg(test)]
    pub(super) fn parked(&self) -> usize {
        self.lock().slots.iter().flatten().count()
    }
}
