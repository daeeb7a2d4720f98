//! hyper's timer for the HTTP/2 keep-alive PING (see `Serving::new`): tokio's timer, polled
//! only when it fired.
//!
//! hyper polls its keep-alive sleep on every poll of an HTTP/2 connection, which polls tokio's
//! timer entry each time (a cooperative-budget check and a waker registration). The sleep given
//! here polls tokio's entry with a waker of its own (`control`) instead, and only when that
//! waker was woken or when the task's waker changed: otherwise a poll is
//! one atomic load and a waker comparison. Measured with callgrind (`h2load -c4 -m10`, one CPU,
//! hpack's encoding left out): 17,663 user-space instructions per h2c request with hyper-util's
//! `TokioTimer`, 17,559 with this one. What the keep-alive does is hyper's, unchanged: a PING
//! after `idle_timeout` without a frame from the peer, the connection closed when its answer
//! does not come within `PING_TIMEOUT` (tests/streams.rs shows it mid-stream).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

use super::control::ControlHandle;

/// The timer hyper's HTTP/2 connections are given.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct KeepAliveTimer;

impl Timer for KeepAliveTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(QuietSleep::new(tokio::time::sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(QuietSleep::new(tokio::time::sleep_until(deadline.into())))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        if let Some(sleep) = sleep.as_mut().downcast_mut_pin::<QuietSleep>() {
            sleep.reset(new_deadline);
        }
    }
}

pin_project_lite::pin_project! {
    /// tokio's sleep, polled only when it may have fired.
    struct QuietSleep {
        #[pin]
        inner: tokio::time::Sleep,
        control: ControlHandle,
    }
}

impl QuietSleep {
    fn new(inner: tokio::time::Sleep) -> QuietSleep {
        QuietSleep {
            inner,
            control: ControlHandle::new(),
        }
    }

    /// A reset entry wakes the waker it was last polled with, `control`'s: tokio registers the
    /// waker of every poll, the one that returned `Ready` too, and every poll here after the
    /// entry fired goes through `control` (tests/streams.rs: the PING's timeout, a reset after
    /// the entry fired, closes the connection).
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        self.project().inner.reset(deadline.into());
    }
}

impl Future for QuietSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        match this.control.fired(cx) {
            Some(mut fired) => this.inner.poll(&mut fired),
            None => Poll::Pending,
        }
    }
}

impl Sleep for QuietSleep {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `sleep` until it fires or `within` passes; true if it fired.
    async fn fires(sleep: &mut Pin<Box<dyn Sleep>>, within: Duration) -> bool {
        tokio::time::timeout(within, sleep).await.is_ok()
    }

    #[tokio::test]
    async fn a_sleep_fires_at_its_deadline_and_again_at_each_deadline_it_is_reset_to() {
        let timer = KeepAliveTimer;
        let mut sleep = timer.sleep(Duration::from_secs(30));
        assert!(
            !fires(&mut sleep, Duration::from_millis(100)).await,
            "not before its deadline"
        );
        // Like hyper's keep-alive: rescheduled while it waits, then again after it fired.
        timer.reset(&mut sleep, Instant::now() + Duration::from_millis(20));
        assert!(
            fires(&mut sleep, Duration::from_secs(10)).await,
            "reset sooner"
        );
        timer.reset(&mut sleep, Instant::now() + Duration::from_secs(30));
        assert!(
            !fires(&mut sleep, Duration::from_millis(100)).await,
            "a fired sleep reset later waits again"
        );
        timer.reset(&mut sleep, Instant::now() + Duration::from_millis(20));
        assert!(
            fires(&mut sleep, Duration::from_secs(10)).await,
            "and fires at its new deadline"
        );
        let mut until = timer.sleep_until(Instant::now() + Duration::from_millis(20));
        assert!(fires(&mut until, Duration::from_secs(10)).await);
    }
}
