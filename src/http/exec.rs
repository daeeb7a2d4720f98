//! Where an HTTP/2 stream's future runs: on its connection's task first, spawned onto a task of
//! its own only when it is not done there.
//!
//! hyper hands each HTTP/2 stream (the service's future, then the response body) to its
//! executor. hyper-util's `TokioExecutor` spawns a task per stream: an allocation, a turn of the
//! scheduler, a wake-up of the connection's task to send the answer, the task's teardown. Most
//! handlers answer on their first poll (a router, a handler with the answer at hand), so
//! [`StreamExecutor`] collects the streams a poll of the connection starts and
//! [`poll_serving`] polls them right after it on the connection's own task, then the connection
//! again, which sends what they answered in one write; a stream that is not done (it waits for
//! a database, streams a body) is spawned then and goes on as before. Measured with callgrind
//! (`h2load -c4 -m10`, one CPU, hpack's encoding left out): 19,257 user-space instructions per
//! h2c request → 17,663 (bare hyper, which spawns: 18,242); over TLS 20,082 → 18,644 (bare
//! hyper 19,084). Polling each stream inside `execute` instead, in the middle of hyper's
//! accept loop, costs a write and a read per stream: 7.2–7.5 µs of server CPU per request
//! against 3.7–5.0 µs spawned.
//!
//! What this changes for an application: a handler's first poll runs on the connection's task,
//! so a handler that blocks the thread there holds up its connection's other streams until it
//! returns (on the current-thread runtime it held up the whole thread before as well). A handler
//! that panics on that poll is caught here and its stream dropped, which resets the stream
//! (RST_STREAM), as when its own task panicked; the connection's other streams go on.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A stream's future, as hyper hands it over.
type Started = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    /// [`poll_serving`] is polling a connection on this thread.
    static COLLECTING: Cell<bool> = const { Cell::new(false) };
    /// The streams that poll started (the vector is kept: its capacity is reused).
    static STARTED: RefCell<Vec<Started>> = const { RefCell::new(Vec::new()) };
}

/// hyper's executor for HTTP/2 streams: while [`poll_serving`] polls a connection, the streams
/// it starts are collected for it; otherwise (a connection polled elsewhere, as while it drains)
/// each is spawned.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct StreamExecutor;

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        if COLLECTING.get() {
            STARTED.with_borrow_mut(|started| started.push(Box::pin(fut)));
        } else {
            tokio::spawn(fut);
        }
    }
}

/// Poll a connection with `poll`, then the streams that poll started, on this task, each once
/// (one that is not done is spawned); then the connection again, which sends what they answered
/// and may start more — at most 16 turns (tokio's cooperative budget ends a flood of requests
/// sooner: the connection's reads return `Pending` once it is spent).
pub(super) fn poll_serving<T>(
    cx: &mut Context<'_>,
    mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>,
) -> Poll<T> {
    let mut turns = 0;
    loop {
        let res = {
            let _collecting = Collecting::start();
            poll(cx)
        };
        if STARTED.with_borrow(Vec::is_empty) {
            return res;
        }
        let mut batch = STARTED.with_borrow_mut(std::mem::take);
        for mut stream in batch.drain(..) {
            match catch_unwind(AssertUnwindSafe(|| stream.as_mut().poll(cx))) {
                Ok(Poll::Ready(())) | Err(_) => {}
                Ok(Poll::Pending) => {
                    tokio::spawn(stream);
                }
            }
        }
        STARTED.with_borrow_mut(|started| {
            if started.capacity() == 0 {
                *started = batch;
            }
        });
        turns += 1;
        if res.is_ready() || turns == 16 {
            return res;
        }
    }
}

/// Streams are collected while this lives. Dropped by a panic of the connection's poll (an
/// application's `call` runs in it), it spawns those collected: nothing is left for the next
/// connection polled on this thread.
struct Collecting;

impl Collecting {
    fn start() -> Collecting {
        COLLECTING.set(true);
        Collecting
    }
}

impl Drop for Collecting {
    fn drop(&mut self) {
        COLLECTING.set(false);
        if std::thread::panicking() {
            for stream in STARTED.with_borrow_mut(std::mem::take) {
                tokio::spawn(stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use hyper::rt::Executor;
    use tokio::sync::oneshot;

    use super::*;

    /// A stream future: notes the task it runs on, then panics (`panics`) or waits for `gate`
    /// (when given) and notes the task again.
    async fn stream(
        ran_on: Arc<Mutex<Vec<Option<tokio::task::Id>>>>,
        gate: Option<oneshot::Receiver<()>>,
        panics: bool,
        done: Arc<AtomicUsize>,
    ) {
        ran_on.lock().unwrap().push(tokio::task::try_id());
        if panics {
            panic!("a handler's panic");
        }
        if let Some(gate) = gate {
            let _ = gate.await;
            ran_on.lock().unwrap().push(tokio::task::try_id());
        }
        done.fetch_add(1, Ordering::SeqCst);
    }

    /// Polls, once through [`poll_serving`], a connection that stays pending and calls
    /// `on_poll` with the number of each of its polls (from 1); how often it was polled.
    async fn serve_pending(mut on_poll: impl FnMut(u32)) -> u32 {
        let mut polls = 0;
        let res = std::future::poll_fn(|cx| {
            Poll::Ready(poll_serving(cx, |_| {
                polls += 1;
                on_poll(polls);
                Poll::<()>::Pending
            }))
        })
        .await;
        assert!(res.is_pending());
        polls
    }

    /// Waits (a second at most) until `done` counts `n`.
    async fn wait_done(done: &AtomicUsize, n: usize) {
        for _ in 0..100 {
            if done.load(Ordering::SeqCst) == n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn streams_started_while_serving_run_on_the_connection_task_and_pending_ones_go_on_their_own(
    ) {
        let ran_on = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicUsize::new(0));
        let (open, gate) = oneshot::channel();
        let mut gate = Some(gate);
        let mut polls = 0;
        let (ran, finished) = (ran_on.clone(), done.clone());
        let served = tokio::spawn(async move {
            let me = tokio::task::try_id();
            std::future::poll_fn(|cx| {
                poll_serving(cx, |_| {
                    polls += 1;
                    if polls == 1 {
                        // Like hyper's connection: two streams in one read.
                        StreamExecutor.execute(stream(ran.clone(), None, false, finished.clone()));
                        StreamExecutor.execute(stream(
                            ran.clone(),
                            gate.take(),
                            false,
                            finished.clone(),
                        ));
                    }
                    Poll::Ready(())
                })
            })
            .await;
            (me, polls)
        });
        let (me, polls) = served.await.unwrap();
        assert_eq!(polls, 1, "a connection that is done is not polled again");
        let ran = ran_on.lock().unwrap().clone();
        assert_eq!(
            ran,
            vec![me, me],
            "both streams started on the connection's task"
        );
        assert_eq!(
            done.load(Ordering::SeqCst),
            1,
            "the first one answered there"
        );
        open.send(()).unwrap();
        wait_done(&done, 2).await;
        assert_eq!(
            done.load(Ordering::SeqCst),
            2,
            "the waiting one went on, spawned"
        );
        let ran = ran_on.lock().unwrap().clone();
        assert_eq!(ran.len(), 3, "polled again on a task of its own: {ran:?}");
        assert_ne!(ran[2], me);
    }

    #[tokio::test]
    async fn a_connection_that_started_streams_is_polled_again_to_send_their_answers() {
        let done = Arc::new(AtomicUsize::new(0));
        let ran_on = Arc::new(Mutex::new(Vec::new()));
        let polls = serve_pending(|poll| {
            if poll <= 2 {
                StreamExecutor.execute(stream(ran_on.clone(), None, false, done.clone()));
            }
        })
        .await;
        assert_eq!(polls, 3, "polled until it started nothing more");
        assert_eq!(done.load(Ordering::SeqCst), 2);
        assert!(
            STARTED.with_borrow(Vec::capacity) > 0,
            "the vector is kept for the next poll"
        );
    }

    #[tokio::test]
    async fn a_connection_that_starts_streams_on_every_poll_is_left_after_16_turns() {
        let done = Arc::new(AtomicUsize::new(0));
        let ran_on = Arc::new(Mutex::new(Vec::new()));
        let polls = serve_pending(|_| {
            StreamExecutor.execute(stream(ran_on.clone(), None, false, done.clone()));
        })
        .await;
        assert_eq!(polls, 16, "the task goes back to the runtime");
        assert_eq!(done.load(Ordering::SeqCst), 16);
    }

    #[tokio::test]
    async fn a_stream_that_panics_is_dropped_and_the_connection_goes_on() {
        let done = Arc::new(AtomicUsize::new(0));
        let ran_on = Arc::new(Mutex::new(Vec::new()));
        serve_pending(|poll| {
            if poll == 1 {
                StreamExecutor.execute(stream(ran_on.clone(), None, true, done.clone()));
                StreamExecutor.execute(stream(ran_on.clone(), None, false, done.clone()));
            }
        })
        .await;
        assert_eq!(ran_on.lock().unwrap().len(), 2, "both started");
        assert_eq!(done.load(Ordering::SeqCst), 1, "the other one answered");
    }

    #[tokio::test]
    async fn streams_started_outside_a_serving_poll_are_spawned() {
        let done = Arc::new(AtomicUsize::new(0));
        let ran_on = Arc::new(Mutex::new(Vec::new()));
        StreamExecutor.execute(stream(ran_on.clone(), None, false, done.clone()));
        assert!(ran_on.lock().unwrap().is_empty(), "not run in execute");
        wait_done(&done, 1).await;
        assert_eq!(done.load(Ordering::SeqCst), 1, "run on a task of its own");
    }

    #[tokio::test]
    async fn a_connection_that_panics_leaves_collection_off_and_its_streams_spawned() {
        let done = Arc::new(AtomicUsize::new(0));
        let ran_on = Arc::new(Mutex::new(Vec::new()));
        let (ran, finished) = (ran_on.clone(), done.clone());
        let caught = catch_unwind(AssertUnwindSafe(|| {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let _ = poll_serving(&mut cx, |_| -> Poll<()> {
                StreamExecutor.execute(stream(ran.clone(), None, false, finished.clone()));
                panic!("hyper's connection panics");
            });
        }));
        assert!(caught.is_err());
        assert!(!COLLECTING.get(), "collection is off again");
        assert!(STARTED.with_borrow(Vec::is_empty), "nothing left behind");
        wait_done(&done, 1).await;
        assert_eq!(
            done.load(Ordering::SeqCst),
            1,
            "the stream it started ran, spawned"
        );
    }
}
