//! The `baton` command's admin listener: `GET /metrics` in the Prometheus text exposition format
//! (version 0.0.4), showing what the library records through the `metrics` facade
//! (`crate::observe`), and nothing else (every other path answers 404).
//!
//! The recorder is a small one of our own rather than `metrics-exporter-prometheus`: baton records
//! a handful of unlabelled counters, gauges and one histogram, and the command must carry its
//! counters across hand-offs (each generation is a new process with a fresh recorder), which
//! needs their raw values. The counters and the histogram travel to the successor as the
//! hand-off's application state ([`Registry::carried`], [`Registry::inherit`]); gauges are the
//! process's own. The successor counts the hand-off that started it (the retiring process counts
//! it too, in its own recorder, but it is gone soon after), so a scrape after N reloads shows N
//! more succeeded reloads than before.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use serde::{Deserialize, Serialize};

/// Upper bounds of the histogram buckets, in seconds (hand-off durations).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The counter a successor increments for the hand-off that started it.
const SUCCEEDED: &str = "baton_reloads_succeeded_total";
/// The counter whose last increment marks when a hand-off was requested.
const REQUESTED: &str = "baton_reloads_requested_total";
/// The histogram of hand-off durations.
const DURATION: &str = "baton_handoff_duration_seconds";

/// One value: a counter (`u64`), a gauge (`f64` bits), or a histogram (sum as `f64` bits,
/// count, buckets).
#[derive(Default)]
struct Cell {
    value: AtomicU64,
    /// When a counter last went up (CLOCK_MONOTONIC, µs).
    changed_usec: AtomicU64,
    count: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

impl Cell {
    fn add_f64(&self, v: f64) {
        let _ = self
            .value
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }
}

impl CounterFn for Cell {
    fn increment(&self, n: u64) {
        if n > 0 {
            self.value.fetch_add(n, Ordering::Relaxed);
            self.changed_usec
                .store(crate::reload::monotonic_usec(), Ordering::Relaxed);
        }
    }
    fn absolute(&self, n: u64) {
        self.value.fetch_max(n, Ordering::Relaxed);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, v: f64) {
        self.add_f64(v);
    }
    fn decrement(&self, v: f64) {
        self.add_f64(-v);
    }
    fn set(&self, v: f64) {
        self.value.store(v.to_bits(), Ordering::Relaxed);
    }
}

impl HistogramFn for Cell {
    fn record(&self, v: f64) {
        self.add_f64(v);
        self.count.fetch_add(1, Ordering::Relaxed);
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            if v <= *bound {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The metrics of this process, by name (labels rendered into the series name).
type Cells = BTreeMap<String, (Kind, Arc<Cell>)>;

/// The command's `metrics` recorder, and the handle that renders what it holds.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<Cells>>);

/// What a process hands its successor: the counters and histograms so far.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Carried {
    /// Counter values by name.
    counters: BTreeMap<String, u64>,
    /// Histograms by name.
    histograms: BTreeMap<String, CarriedHistogram>,
    /// When the hand-off that hands these over was requested (CLOCK_MONOTONIC, µs).
    requested_usec: u64,
}

/// A histogram as carried to the successor.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CarriedHistogram {
    sum: f64,
    count: u64,
    /// Cumulative counts, one per bound of [`BUCKETS`].
    buckets: Vec<u64>,
}

/// A series name with its labels, as Prometheus writes it: `name{a="x",b="y"}`.
fn series(key: &Key) -> String {
    let mut name = key.name().to_owned();
    let labels: Vec<String> = key
        .labels()
        .map(|l| {
            let value = l
                .value()
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{}=\"{value}\"", l.key())
        })
        .collect();
    if !labels.is_empty() {
        name = format!("{name}{{{}}}", labels.join(","));
    }
    name
}

impl Registry {
    fn cell(&self, name: String, kind: Kind) -> Arc<Cell> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name)
            .or_insert_with(|| (kind, Arc::default()))
            .1
            .clone()
    }

    /// The counters and histograms, for the successor.
    pub fn carried(&self) -> Carried {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut carried = Carried::default();
        for (name, (kind, cell)) in map.iter() {
            match kind {
                Kind::Counter => {
                    carried
                        .counters
                        .insert(name.clone(), cell.value.load(Ordering::Relaxed));
                    if name == REQUESTED {
                        carried.requested_usec = cell.changed_usec.load(Ordering::Relaxed);
                    }
                }
                Kind::Histogram => {
                    carried.histograms.insert(
                        name.clone(),
                        CarriedHistogram {
                            sum: f64::from_bits(cell.value.load(Ordering::Relaxed)),
                            count: cell.count.load(Ordering::Relaxed),
                            buckets: cell
                                .buckets
                                .iter()
                                .map(|b| b.load(Ordering::Relaxed))
                                .collect(),
                        },
                    );
                }
                Kind::Gauge => {}
            }
        }
        carried
    }

    /// Start from what the predecessor carried, and count the hand-off that started this
    /// process: succeeded, and its duration until now.
    pub fn inherit(&self, carried: Carried) {
        for (name, value) in carried.counters {
            CounterFn::increment(&*self.cell(name, Kind::Counter), value);
        }
        for (name, h) in carried.histograms {
            let cell = self.cell(name, Kind::Histogram);
            cell.add_f64(h.sum);
            cell.count.fetch_add(h.count, Ordering::Relaxed);
            for (n, carried) in cell.buckets.iter().zip(h.buckets) {
                n.fetch_add(carried, Ordering::Relaxed);
            }
        }
        CounterFn::increment(&*self.cell(SUCCEEDED.to_owned(), Kind::Counter), 1);
        if carried.requested_usec > 0 {
            let took = crate::reload::monotonic_usec().saturating_sub(carried.requested_usec);
            HistogramFn::record(
                &*self.cell(DURATION.to_owned(), Kind::Histogram),
                took as f64 / 1e6,
            );
        }
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let mut typed = None;
        for (series, (kind, cell)) in map.iter() {
            let name = series.split('{').next().unwrap_or(series);
            if typed != Some(name) {
                let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
                typed = Some(name);
            }
            let value = cell.value.load(Ordering::Relaxed);
            match kind {
                Kind::Counter => {
                    let _ = writeln!(out, "{series} {value}");
                }
                Kind::Gauge => {
                    let _ = writeln!(out, "{series} {}", f64::from_bits(value));
                }
                Kind::Histogram => {
                    let (base, labels) = match series.find('{') {
                        Some(i) => (&series[..i], &series[i + 1..series.len() - 1]),
                        None => (series.as_str(), ""),
                    };
                    let sep = if labels.is_empty() { "" } else { "," };
                    let count = cell.count.load(Ordering::Relaxed);
                    for (bound, n) in BUCKETS.iter().zip(&cell.buckets) {
                        let n = n.load(Ordering::Relaxed);
                        let _ = writeln!(out, "{base}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
                    }
                    let _ = writeln!(out, "{base}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
                    let braces = if labels.is_empty() {
                        String::new()
                    } else {
                        format!("{{{labels}}}")
                    };
                    let sum = f64::from_bits(value);
                    let _ = writeln!(out, "{base}_sum{braces} {sum}");
                    let _ = writeln!(out, "{base}_count{braces} {count}");
                }
            }
        }
        out
    }
}

impl Recorder for Registry {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(series(key), Kind::Counter))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(series(key), Kind::Gauge))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(series(key), Kind::Histogram))
    }
}

/// The admin listener's app: `GET /metrics` (and `HEAD`) renders the registry; any other path
/// is 404, any other method on `/metrics` 405.
#[derive(Clone)]
pub struct Admin {
    registry: Registry,
}

impl Admin {
    /// Serve `registry`.
    pub fn new(registry: Registry) -> Self {
        Admin { registry }
    }
}

impl super::hello::Answer for Admin {
    fn answer(&mut self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let text = |status, body: String, content_type| {
            let mut res = Response::new(Full::new(Bytes::from(body)));
            *res.status_mut() = status;
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            res
        };
        let res = match (req.uri().path(), req.method()) {
            ("/metrics", &Method::GET | &Method::HEAD) => text(
                StatusCode::OK,
                self.registry.render(),
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            ("/metrics", _) => {
                let mut res = text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "GET or HEAD\n".into(),
                    "text/plain; charset=utf-8",
                );
                res.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
                res
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: the admin listener serves /metrics\n".into(),
                "text/plain; charset=utf-8",
            ),
        };
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_and_carries_counters_to_a_successor() {
        let old = Registry::default();
        metrics::with_local_recorder(&old, || {
            metrics::counter!(REQUESTED).increment(2);
            metrics::counter!(SUCCEEDED).increment(1);
            metrics::histogram!(DURATION).record(0.2);
            metrics::gauge!("baton_generation").set(1.0);
        });
        let text = old.render();
        assert!(
            text.contains(
                "# TYPE baton_reloads_requested_total counter\nbaton_reloads_requested_total 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("baton_generation 1\n"), "{text}");
        assert!(
            text.contains("baton_handoff_duration_seconds_bucket{le=\"0.1\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("baton_handoff_duration_seconds_bucket{le=\"0.25\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("baton_handoff_duration_seconds_bucket{le=\"+Inf\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("baton_handoff_duration_seconds_count 1\n"),
            "{text}"
        );

        let json = serde_json::to_vec(&old.carried()).unwrap();
        let new = Registry::default();
        new.inherit(serde_json::from_slice(&json).unwrap());
        let text = new.render();
        assert!(text.contains("baton_reloads_requested_total 2\n"), "{text}");
        assert!(text.contains("baton_reloads_succeeded_total 2\n"), "{text}");
        assert!(
            text.contains("baton_handoff_duration_seconds_count 2\n"),
            "{text}"
        );
        assert!(
            !text.contains("baton_generation"),
            "gauges are each process's own: {text}"
        );
    }
}
