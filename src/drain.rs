//! The drain signal: how an application learns that its process is retiring (a successor took
//! over) or stopping, so it can close WebSockets with `1001 Going Away`, end long streams and flush
//! what it holds.

use tokio_util::sync::CancellationToken;

/// Resolves once this process drains: after a successful hand-off (the successor serves new
/// connections) or on a stop. Cheap to clone; every clone sees the same signal.
///
/// ```no_run
/// # async fn demo(app: axum::Router) -> Result<(), baton_server::Error> {
/// let drain = baton_server::DrainSignal::new();
/// let watcher = drain.clone();
/// tokio::spawn(async move {
///     watcher.draining().await;
///     // close WebSockets, end streams: the process exits once they are done
/// });
/// baton_server::serve(app).with_drain_signal(drain).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct DrainSignal {
    token: CancellationToken,
}

impl DrainSignal {
    /// A signal not yet given to a server (see [`crate::Serve::with_drain_signal`]).
    ///
    /// ```
    /// let drain = baton_server::DrainSignal::new();
    /// assert!(!drain.is_draining());
    /// ```
    pub fn new() -> Self {
        DrainSignal::default()
    }

    /// Wait until the process drains: in a WebSocket or SSE handler, `select!` it with the
    /// next message to send and say goodbye when it wins.
    ///
    /// ```no_run
    /// # async fn demo(drain: baton_server::DrainSignal) {
    /// let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    /// loop {
    ///     tokio::select! {
    ///         _ = drain.draining() => break, // send a goodbye, close the stream
    ///         _ = ticks.tick() => { /* send the next event */ }
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn draining(&self) {
        self.token.cancelled().await
    }

    /// True once the process drains.
    ///
    /// ```
    /// # fn demo(drain: &baton_server::DrainSignal) -> &'static str {
    /// if drain.is_draining() { "retiring: reconnect" } else { "serving" }
    /// # }
    /// ```
    pub fn is_draining(&self) -> bool {
        self.token.is_cancelled()
    }

    pub(crate) fn trigger(&self) {
        self.token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_clone_sees_the_drain_once_it_is_triggered_and_not_before() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let drain = DrainSignal::new();
        let watcher = drain.clone();
        assert!(!watcher.is_draining(), "draining before any trigger");
        rt.block_on(async {
            let early = tokio::time::timeout(Duration::from_millis(50), watcher.draining()).await;
            assert!(early.is_err(), "draining() resolved before the trigger");
        });
        drain.trigger();
        assert!(watcher.is_draining(), "a clone missed the trigger");
        assert!(drain.is_draining());
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), watcher.draining())
                .await
                .expect("draining() did not resolve after the trigger");
        });
    }
}
