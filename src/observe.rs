//! What a server tells about itself: reload outcomes to the application's callback
//! ([`Serve::on_reload`](crate::Serve::on_reload)), and, with the `metrics` feature, counters,
//! gauges and a histogram through the `metrics` facade. baton never installs a recorder: the
//! application's (a Prometheus exporter, for one) receives them.
//!
//! | name | kind | what |
//! |---|---|---|
//! | `baton_reloads_requested_total` | counter | hand-offs begun (SIGHUP, `systemctl reload`) |
//! | `baton_reloads_succeeded_total` | counter | hand-offs done: a successor serves |
//! | `baton_reloads_failed_total` | counter | hand-offs failed: this process serves on |
//! | `baton_handoff_duration_seconds` | histogram | from the request to the outcome |
//! | `baton_connections_open` | gauge | connections open in this process |
//! | `baton_connections_draining` | gauge | connections still open while this process drains |
//! | `baton_generation` | gauge | hand-offs before this process (0 on a first start) |
//!
//! Each process records its own: a successful reload is counted by the process that retires;
//! the new main's `baton_generation` counts every hand-off since the first start.

use std::sync::Arc;
use std::time::Duration;

/// The outcome of one reload, as this (old) process saw it.
///
/// ```no_run
/// # async fn demo() -> Result<(), baton_server::Error> {
/// # let app = axum::Router::new();
/// baton_server::serve(app)
///     .on_reload(|outcome| match outcome {
///         baton_server::ReloadOutcome::HandedOff { successor, took } => {
///             eprintln!("pid {successor} took over in {took:?}")
///         }
///         baton_server::ReloadOutcome::Failed { reason, .. } => eprintln!("reload failed: {reason}"),
///         _ => {}
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReloadOutcome {
    /// The successor serves as main; this process drains and retires.
    HandedOff {
        /// The successor's pid.
        successor: u32,
        /// From the reload request to the outcome.
        took: Duration,
    },
    /// The successor failed or hung; it was ended and this process serves on.
    Failed {
        /// Why, one line (the successor's own error when it reported one).
        reason: String,
        /// From the reload request to the outcome.
        took: Duration,
    },
}

/// The application's reload callback.
pub(crate) type ReloadHook = Arc<dyn Fn(&ReloadOutcome) + Send + Sync>;

/// Make every counter and the histogram known to the installed recorder at zero, so that a
/// scrape before the first reload shows them (the `baton` command's admin listener).
#[cfg(feature = "cli")]
pub(crate) fn register_all() {
    for name in [
        "baton_reloads_requested_total",
        "baton_reloads_succeeded_total",
        "baton_reloads_failed_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    let _ = metrics::histogram!("baton_handoff_duration_seconds");
}

/// A hand-off begins.
pub(crate) fn reload_requested() {
    #[cfg(feature = "metrics")]
    metrics::counter!("baton_reloads_requested_total").increment(1);
}

/// A hand-off ended.
pub(crate) fn reload_ended(outcome: &ReloadOutcome) {
    #[cfg(feature = "metrics")]
    match outcome {
        ReloadOutcome::HandedOff { took, .. } => {
            metrics::counter!("baton_reloads_succeeded_total").increment(1);
            metrics::histogram!("baton_handoff_duration_seconds").record(took.as_secs_f64());
        }
        ReloadOutcome::Failed { took, .. } => {
            metrics::counter!("baton_reloads_failed_total").increment(1);
            metrics::histogram!("baton_handoff_duration_seconds").record(took.as_secs_f64());
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// This process's generation.
pub(crate) fn generation(generation: u64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("baton_generation").set(generation as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = generation;
}

/// The connections open now; `draining` once this process drains.
#[cfg(feature = "metrics")]
pub(crate) fn connections(open: usize, draining: bool) {
    let (serving, drained) = if draining { (0, open) } else { (open, 0) };
    metrics::gauge!("baton_connections_open").set(serving as f64);
    metrics::gauge!("baton_connections_draining").set(drained as f64);
}
