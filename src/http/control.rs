//! Polling a connection's own timer and the drain signal only when one of them fired.
//!
//! A connection task is woken for every read and write of its connection. Polling its idle
//! timer and the drain notification on each of those wake-ups (as a `select!` does) costs more
//! than a tenth of the instructions of a small keep-alive request. They are polled instead with
//! a waker of their own ([`Control`]), which notes that one of them fired and then wakes the
//! task: a wake-up for I/O costs one atomic load and a waker comparison.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

/// The waker given to a connection's timer and drain notification.
pub(super) struct Control {
    /// Set when the timer or the drain notification woke us; cleared by [`ControlHandle::fired`].
    fired: AtomicBool,
    /// The connection task's waker.
    task: Mutex<Option<Waker>>,
}

/// The task's side of a [`Control`]: what it last registered.
pub(super) struct ControlHandle {
    control: Arc<Control>,
    waker: Waker,
    /// The task waker `control` wakes (compared on every poll, replaced when it changes).
    registered: Option<Waker>,
}

impl ControlHandle {
    pub(super) fn new() -> ControlHandle {
        let control = Arc::new(Control {
            fired: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        ControlHandle {
            waker: Waker::from(control.clone()),
            control,
            registered: None,
        }
    }

    /// Call on every poll of the task, with the task's context. Returns a context to poll the
    /// timer and the drain notification with when one of them fired since the last call (or
    /// when the task's waker changed, which also happens on the first poll), else `None`.
    // (Always inlined: it runs on every poll of a connection. Called from two places since
    // 2026-12-07, LLVM stopped inlining it, which cost 33 instructions per HTTP/1 request, and
    // an `#[inline]` hint did not hold through every build.)
    #[inline(always)]
    pub(super) fn fired(&mut self, cx: &Context<'_>) -> Option<Context<'_>> {
        let same = self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if !same {
            let waker = cx.waker().clone();
            if let Ok(mut task) = self.control.task.lock() {
                *task = Some(waker.clone());
            }
            self.registered = Some(waker);
        } else if !self.control.fired.load(Ordering::Relaxed) {
            return None;
        }
        // What fired published its state through its own synchronisation, which the polls that
        // follow go through; one that fires from now on sets the flag again and wakes the task.
        self.control.fired.store(false, Ordering::Relaxed);
        Some(Context::from_waker(&self.waker))
    }
}

impl ControlHandle {
    /// A context to poll the timer or the drain notification with outside [`Self::fired`]
    /// (after resetting the timer, say): it wakes the task through this control.
    pub(super) fn context(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }
}

impl Wake for Control {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        if let Ok(task) = self.task.lock() {
            if let Some(waker) = task.as_ref() {
                waker.wake_by_ref();
            }
        }
    }
}
