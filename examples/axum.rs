//! An axum app served by baton: the only change from `axum::serve(listener, app)` is
//! `baton_server::serve(app)` (here in its two-step form, to read the state the previous generation
//! handed over). Everything keeps working across `systemctl reload` / `kill -HUP`:
//!
//! * `GET /` — a greeting naming the pid and generation that answered;
//! * `GET /visits` — a counter that survives reloads (handed to the successor as state);
//! * `GET /ws` — a WebSocket echo; on the drain signal it says so, keeps echoing for
//!   `EXAMPLE_WS_GRACE_MS` (default 1000), then closes with `1001 Going Away`;
//! * `GET /stream?chunks=N&ms=M` — a body streamed in N chunks, M ms apart (a download, SSE);
//! * `GET /events?count=N&ms=M` — server-sent events;
//! * `GET /client` — the client's address (axum's `ConnectInfo<SocketAddr>`, from
//!   `into_make_service_with_connect_info`), also logged; `GET /client-unix` on a Unix-socket
//!   listener (`ConnectInfo<tokio::net::unix::SocketAddr>`).
//!
//! With `ADMIN_LISTEN` naming one of the `BATON_LISTEN` addresses, that listener serves a
//! separate admin router instead (`GET /metrics`, `GET /whoami`): it is handed over on every
//! reload with the others. `/metrics` shows baton's own metrics (feature `metrics`) through the
//! small Prometheus-text recorder below, which the app installs (a real app would install
//! `metrics-exporter-prometheus`' recorder the same way).
//!
//! ```sh
//! BATON_LISTEN=127.0.0.1:3000,127.0.0.1:9100 ADMIN_LISTEN=127.0.0.1:9100 \
//!     cargo run --features axum,metrics --example axum
//! curl 127.0.0.1:3000/visits; kill -HUP <pid>; curl 127.0.0.1:3000/visits
//! curl 127.0.0.1:3000/client; curl 127.0.0.1:9100/metrics
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::response::sse::{Event, Sse};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream};

mod prometheus_text {
    //! A minimal `metrics` recorder rendering Prometheus text: counters, gauges, and histograms
    //! as `_sum` and `_count`.
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
        Recorder, SharedString, Unit,
    };

    #[derive(Default)]
    struct Cell {
        value: AtomicU64,
        count: AtomicU64,
    }
    impl CounterFn for Cell {
        fn increment(&self, n: u64) {
            self.value.fetch_add(n, Ordering::Relaxed);
        }
        fn absolute(&self, n: u64) {
            self.value.store(n, Ordering::Relaxed);
        }
    }
    impl GaugeFn for Cell {
        fn increment(&self, v: f64) {
            self.set(f64::from_bits(self.value.load(Ordering::Relaxed)) + v);
        }
        fn decrement(&self, v: f64) {
            self.set(f64::from_bits(self.value.load(Ordering::Relaxed)) - v);
        }
        fn set(&self, v: f64) {
            self.value.store(v.to_bits(), Ordering::Relaxed);
        }
    }
    impl HistogramFn for Cell {
        fn record(&self, v: f64) {
            let sum = f64::from_bits(self.value.load(Ordering::Relaxed)) + v;
            self.value.store(sum.to_bits(), Ordering::Relaxed);
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[derive(Clone, Copy)]
    enum Kind {
        Counter,
        Gauge,
        Histogram,
    }

    type Cells = BTreeMap<String, (Kind, Arc<Cell>)>;

    /// The recorder, and the handle that renders what it holds.
    #[derive(Clone, Default)]
    pub struct Registry(Arc<Mutex<Cells>>);

    impl Registry {
        fn cell(&self, key: &Key, kind: Kind) -> Arc<Cell> {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.name().to_owned())
                .or_insert_with(|| (kind, Arc::default()))
                .1
                .clone()
        }

        /// Prometheus text format.
        pub fn render(&self) -> String {
            let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = String::new();
            for (name, (kind, cell)) in map.iter() {
                let value = cell.value.load(Ordering::Relaxed);
                match kind {
                    Kind::Counter => {
                        out.push_str(&format!("# TYPE {name} counter\n{name} {value}\n"))
                    }
                    Kind::Gauge => out.push_str(&format!(
                        "# TYPE {name} gauge\n{name} {}\n",
                        f64::from_bits(value)
                    )),
                    Kind::Histogram => out.push_str(&format!(
                        "# TYPE {name} summary\n{name}_sum {}\n{name}_count {}\n",
                        f64::from_bits(value),
                        cell.count.load(Ordering::Relaxed)
                    )),
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
            Counter::from_arc(self.cell(key, Kind::Counter))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.cell(key, Kind::Gauge))
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.cell(key, Kind::Histogram))
        }
    }
}

#[derive(Clone)]
struct App {
    metrics: prometheus_text::Registry,
    visits: Arc<AtomicU64>,
    drain: baton_server::DrainSignal,
    generation: u64,
    ws_grace: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    // `axum reload`: what `ExecReload=` runs (examples/systemd/my-app.service): ask the running
    // server to reload and fail when the reload fails.
    if std::env::args().nth(1).as_deref() == Some("reload") {
        return reload();
    }
    tracing_subscriber::fmt().with_target(false).init();
    // The app installs the recorder; baton only records.
    let recorder = prometheus_text::Registry::default();
    if metrics::set_global_recorder(recorder.clone()).is_err() {
        eprintln!("axum example: a metrics recorder was installed already");
    }
    // Async set-up before serving, as a real app would open its database pool here.
    let ws_grace = tokio::task::spawn_blocking(|| {
        std::env::var("EXAMPLE_WS_GRACE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(Duration::from_secs(1))
    })
    .await
    .unwrap_or(Duration::from_secs(1));

    let server = match baton_server::Server::from_env().await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("axum example: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let visits: u64 = server
        .inherited_state()
        .and_then(|bytes| std::str::from_utf8(bytes).ok()?.parse().ok())
        .unwrap_or(0);
    let drain = baton_server::DrainSignal::new();
    let app = App {
        metrics: recorder,
        visits: Arc::new(AtomicU64::new(visits)),
        drain: drain.clone(),
        generation: server.generation(),
        ws_grace,
    };
    let counter = app.visits.clone();
    let router = Router::new()
        .route("/", get(hello))
        .route("/visits", get(count_visit))
        .route("/ws", get(websocket))
        .route("/stream", get(stream_body))
        .route("/events", get(events))
        .route("/client", get(client))
        .route("/client-unix", get(client_unix))
        .with_state(app.clone());

    // The client's address, as with `axum::serve`: a make-service with `ConnectInfo`.
    let mut serve = server
        .serve(router.into_make_service_with_connect_info::<SocketAddr>())
        .with_drain_signal(drain)
        .on_handoff(move || counter.load(Ordering::SeqCst).to_string().into_bytes())
        .on_reload(|outcome| {
            eprintln!(
                "axum example (pid {}): reload: {outcome:?}",
                std::process::id()
            )
        });
    if let Ok(admin_listen) = std::env::var("ADMIN_LISTEN") {
        // A plain Router: baton adds `ConnectInfo` to its requests too.
        let admin = Router::new()
            .route("/metrics", get(metrics))
            .route("/whoami", get(whoami))
            .with_state(app);
        serve = serve.listener(admin_listen, admin);
    }
    match serve.await {
        Ok(ended) => {
            // What happened: a hand-off to a successor, or a stop (and by what).
            eprintln!(
                "axum example (pid {}): serving ended: {ended:?}",
                std::process::id()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("axum example: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn reload() -> ExitCode {
    let settings = match baton_server::Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("axum example reload: {e}");
            return ExitCode::from(78);
        }
    };
    match baton_server::request_reload(&settings, Duration::from_secs(20)) {
        Ok(done) => {
            println!("reloaded: pid {} -> {}", done.retired, done.successor);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("axum example reload: {e}");
            // 1: the hand-off failed and the old process serves on; sysexits codes otherwise.
            ExitCode::from(e.exit_code())
        }
    }
}

async fn hello(State(app): State<App>) -> String {
    format!(
        "Hello from pid {} (generation {})\n",
        std::process::id(),
        app.generation
    )
}

async fn client(ConnectInfo(client): ConnectInfo<SocketAddr>) -> String {
    tracing::info!(%client, "GET /client");
    format!("client {client}\n")
}

async fn client_unix(ConnectInfo(client): ConnectInfo<tokio::net::unix::SocketAddr>) -> String {
    let client = match client.as_pathname() {
        Some(path) => path.display().to_string(),
        None => "(unnamed)".to_owned(),
    };
    format!("unix client {client}\n")
}

/// The admin listener's metrics, in Prometheus text format.
async fn metrics(State(app): State<App>) -> String {
    format!(
        "# TYPE example_visits_total counter\nexample_visits_total {}\n# TYPE example_generation gauge\nexample_generation {}\n{}",
        app.visits.load(Ordering::SeqCst),
        app.generation,
        app.metrics.render()
    )
}

async fn whoami(ConnectInfo(client): ConnectInfo<SocketAddr>) -> String {
    format!("admin: client {client}, pid {}\n", std::process::id())
}

async fn count_visit(State(app): State<App>) -> String {
    let n = app.visits.fetch_add(1, Ordering::SeqCst) + 1;
    format!("{n}\n")
}

async fn websocket(ws: WebSocketUpgrade, State(app): State<App>) -> Response {
    ws.on_upgrade(move |socket| echo(socket, app))
}

/// Echo text messages as `pid <pid>: <text>` until the client leaves or the process drains.
async fn echo(mut socket: WebSocket, app: App) {
    let pid = std::process::id();
    let mut closing_at = None;
    loop {
        let grace_over = async {
            match closing_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let reply = format!("pid {pid}: {}", text.as_str());
                    if socket.send(Message::Text(reply.into())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = app.drain.draining(), if closing_at.is_none() => {
                closing_at = Some(tokio::time::Instant::now() + app.ws_grace);
                let note = format!("pid {pid}: draining");
                if socket.send(Message::Text(note.into())).await.is_err() {
                    return;
                }
            }
            _ = grace_over => {
                let frame = CloseFrame { code: 1001, reason: "going away".into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return;
            }
        }
    }
}

fn param(q: &HashMap<String, String>, name: &str, default: u64) -> u64 {
    q.get(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `chunks` lines, `ms` apart, each naming the pid: a body that outlives a reload.
async fn stream_body(Query(q): Query<HashMap<String, String>>) -> Body {
    let chunks = param(&q, "chunks", 10);
    let every = Duration::from_millis(param(&q, "ms", 100));
    Body::from_stream(ticks(chunks, every, move |i| {
        format!("chunk {i} of {chunks} from pid {}\n", std::process::id())
    }))
}

async fn events(
    Query(q): Query<HashMap<String, String>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let count = param(&q, "count", 10);
    let every = Duration::from_millis(param(&q, "ms", 100));
    Sse::new(ticks(count, every, |i| {
        Event::default().data(format!("event {i}"))
    }))
}

/// `n` items, one every `every`, made by `item`.
fn ticks<T: Send + 'static>(
    n: u64,
    every: Duration,
    item: impl Fn(u64) -> T + Send + 'static,
) -> impl Stream<Item = Result<T, Infallible>> + Send {
    stream::unfold(1, move |i| {
        let next = (i <= n).then(|| item(i));
        async move {
            let next = next?;
            if i > 1 {
                tokio::time::sleep(every).await;
            }
            Some((Ok(next), i + 1))
        }
    })
}
