//! HTTP/2 (h2c, prior knowledge) with nghttp2's `h2load`: throughput of baton against bare hyper
//! and nginx (`listen … http2`), and of baton with its keep-alive PINGs off (`http2_keepalive`:
//! what the default's PINGs cost), and the streams that fail while baton is reloaded.
//!
//! h2load stops a client at its first GOAWAY and counts what it had queued as failed, so across
//! reloads it runs again and again, one short run after the other; its per-request log tells a
//! stream it never sent (the client's own doing) from one it sent and lost (the server's).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::common::{reaper, Sandbox};
use crate::peers::{self, Noise};
use crate::{log, num, stats, Bench, BODY};

/// What one h2load run reported.
#[derive(Debug, Default, Clone, Serialize)]
pub struct H2load {
    pub total: u64,
    pub succeeded: u64,
    pub errored: u64,
    /// From the per-request log: failed streams h2load never put on the wire.
    pub never_sent: u64,
    /// From the per-request log: failed streams it had sent (accepted-then-lost, or reset).
    pub lost: u64,
    pub rps: f64,
    pub noise_cpus: f64,
    /// The server's CPU time (user + system) per succeeded request, µs.
    pub server_us: f64,
}

impl H2load {
    fn add(&mut self, o: &H2load) {
        self.total += o.total;
        self.succeeded += o.succeeded;
        self.errored += o.errored;
        self.never_sent += o.never_sent;
        self.lost += o.lost;
    }
}

/// h2load as the suite runs it: on the load CPUs, `clients` connections of `streams` streams at
/// a time each.
#[derive(Clone)]
struct Client {
    clients: usize,
    streams: usize,
    cpus: Vec<usize>,
}

impl Client {
    /// One run of `secs` seconds against `port`, its per-request log in `log_file`.
    fn run(&self, port: u16, secs: u64, log_file: &Path) -> H2load {
        let mut cmd = Command::new("h2load");
        cmd.args([
            format!("-t{}", self.cpus.len().max(1)),
            format!("-c{}", self.clients),
            format!("-m{}", self.streams),
            format!("-D{secs}"),
        ])
        .arg("--log-file")
        .arg(log_file)
        .arg(format!("http://127.0.0.1:{port}/"));
        let mut cmd = peers::pinned(cmd, &self.cpus);
        let noise = Noise::start();
        let out = reaper::output(&mut cmd).expect("run h2load (Debian package nghttp2-client)");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut r = H2load {
            noise_cpus: noise.since(),
            ..Default::default()
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("requests: ") {
                for part in rest.split(", ") {
                    let (n, what) = part.split_once(' ').unwrap_or(("0", ""));
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "total" => r.total = n,
                        "succeeded" => r.succeeded = n,
                        "errored" => r.errored = n,
                        _ => {}
                    }
                }
            }
            if let Some(rest) = line.strip_prefix("finished in ") {
                let rps = rest
                    .split(", ")
                    .nth(1)
                    .and_then(|s| s.strip_suffix(" req/s"));
                r.rps = rps.and_then(|s| s.parse().ok()).unwrap_or(0.0);
            }
        }
        assert!(r.total > 0, "h2load gave no summary:\n{text}");
        // `start_us \t status \t duration_us`: status -1 failed; start 0 never sent.
        for line in std::fs::read_to_string(log_file)
            .unwrap_or_default()
            .lines()
        {
            let mut f = line.split('\t');
            if let (Some(start), Some("-1")) = (f.next(), f.next()) {
                if start == "0" {
                    r.never_sent += 1;
                } else {
                    r.lost += 1;
                }
            }
        }
        r
    }
}

/// A server the throughput rounds load: its name, port and process group.
type Served = (&'static str, u16, i32);

/// The `h2` phase: throughput rounds (interleaved, median) with 10 streams at a time on each
/// connection and with one (as a browser asks for one page's parts one after another), then
/// h2load back to back across `--reloads` reloads of baton.
pub fn phase(bench: &mut Bench) {
    let mut b = bench.baton(&[]);
    let mut pingless = bench.baton_with(&[], |sb| {
        let mut config = sb.config(BODY);
        config["http2_keepalive"] = false.into();
        config
    });
    let (hsb, nsb, cpus) = (Sandbox::new(), Sandbox::new(), bench.server_cpus.clone());
    let bare = peers::bare(&hsb, &bench.a.bare, &cpus, &[]);
    let nginx = peers::nginx_h2(&nsb, cpus.len().max(1), &cpus);
    let logs = b.sb.path("h2load");
    std::fs::create_dir_all(&logs).expect("h2load log dir");
    let servers = [
        ("baton", b.sb.port, b.baton.pid),
        ("noping", pingless.sb.port, pingless.baton.pid),
        ("bare", hsb.port, bare.pid),
        ("nginx", nsb.port, nginx.pid),
    ];
    let client = Client {
        clients: bench.a.conns,
        streams: 10,
        cpus: bench.wrk_cpus.clone(),
    };
    for (_, port, _) in servers {
        client.run(port, 1, &logs.join("warm-up.log"));
    }
    let mut all_rounds = serde_json::Map::new();
    for streams in [10, 1] {
        let client = Client {
            streams,
            ..client.clone()
        };
        let rounds = throughput(bench, &servers, &client, &logs);
        all_rounds.insert(format!("m{streams}"), json!(rounds));
    }
    drop((bare, nginx));
    pingless.stop();

    // Reloads: h2load runs back to back while baton is reloaded, paced over the runs.
    let stop = Arc::new(AtomicBool::new(false));
    let port = b.sb.port;
    let runner = {
        let (stop, logs) = (stop.clone(), logs.clone());
        let client = Client {
            clients: client.clients.min(4),
            ..client
        };
        std::thread::spawn(move || {
            let mut sum = H2load::default();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let r = client.run(port, 1, &logs.join(format!("reloads-{i}.log")));
                sum.add(&r);
                i += 1;
            }
            sum
        })
    };
    sleep(Duration::from_millis(500));
    let (n, mut failed) = (bench.a.reloads, 0);
    let pace = Duration::from_millis(bench.a.pace_ms.map_or(100, |p| p as u64));
    for i in 1..=n {
        if let Err(e) = b.try_reload(Duration::from_secs(20)) {
            failed += 1;
            log(&format!("h2 storm: reload {i} failed: {e}"));
        }
        sleep(pace);
    }
    sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let sum = runner.join().expect("h2load runner");
    log(&format!(
        "h2 across {n} reloads: {} streams, {} succeeded, {} errored ({} never sent by h2load, {} sent and lost)",
        sum.total, sum.succeeded, sum.errored, sum.never_sent, sum.lost
    ));
    let m = format!("{n} reloads under h2load (h2c): streams sent and lost");
    let v = format!("{} of {} streams", sum.lost, num(sum.total as f64));
    let p = format!(
        "{} errored: {} never sent by h2load (it stops at GOAWAY)",
        sum.errored, sum.never_sent
    );
    bench.row(&m, &v, &p, "0", Some(sum.lost == 0 && failed == 0));
    bench
        .details
        .insert("h2".into(), json!({"rounds": all_rounds, "reloads": sum}));
    b.stop();
}

/// Throughput rounds against each of `servers` in turn (order rotated), run again while other
/// processes disturbed them (until `--rounds` clean ones, 3x at most); its rows: the rate against
/// each peer and the server CPU per request, baton's with its PINGs off beside it (information).
/// The rounds, each whether it was clean.
fn throughput(
    bench: &mut Bench,
    servers: &[Served],
    client: &Client,
    logs: &Path,
) -> Vec<(bool, BTreeMap<&'static str, H2load>)> {
    let (secs, m) = (bench.a.secs, client.streams);
    log(&format!(
        "h2: {} rounds of {secs} s, h2load -c{} -m{m} (h2c)",
        bench.a.rounds, client.clients
    ));
    let (mut rounds, mut clean, want) = (vec![], 0, bench.a.rounds);
    while clean < want && rounds.len() < 3 * want {
        let (round, mut rnd) = (rounds.len(), BTreeMap::new());
        for k in 0..servers.len() {
            let (name, port, pgid) = servers[(k + round) % servers.len()];
            let c0 = peers::group_cpu(pgid);
            let mut r = client.run(port, secs, &logs.join(format!("{name}-m{m}-{round}.log")));
            r.server_us = (peers::group_cpu(pgid) - c0) * 1e6 / r.succeeded.max(1) as f64;
            log(&format!(
                "  round {} {name:6}: {} req/s, server CPU {:.2} us/req, {} errored, foreign CPU {:.2}",
                round + 1,
                num(r.rps),
                r.server_us,
                r.errored,
                r.noise_cpus
            ));
            rnd.insert(name, r);
        }
        let ok = rnd.values().all(|r| r.noise_cpus <= bench.a.noise_max);
        clean += usize::from(ok);
        rounds.push((ok, rnd));
    }
    let used: Vec<_> = rounds.iter().filter(|r| r.0 || clean == 0).collect();
    let median = |n: &str| stats(used.iter().map(|r| r.1[n].rps).collect()).median;
    let cpu = |n: &str| stats(used.iter().map(|r| r.1[n].server_us).collect()).median;
    let note = format!(" ({clean} clean rounds of {})", rounds.len());
    let (x, h, n) = (median("baton"), median("bare"), median("nginx"));
    for (name, y) in [("bare hyper, same runtime", h), ("nginx (http2)", n)] {
        let m = format!("HTTP/2 (h2c) throughput, h2load -m{m}, vs {name}{note}");
        let (v, p) = (
            format!("{} req/s", num(x)),
            format!("{name} {} req/s", num(y)),
        );
        bench.row(&m, &v, &p, &format!("{:.1}%", x / y * 100.0), None);
    }
    // the client may be the bound (nginx): the server's CPU time per request compares servers
    let (xc, hc, nc) = (cpu("baton"), cpu("bare"), cpu("nginx"));
    let row = format!("  HTTP/2 (h2c) server CPU (user + system) per request, -m{m}, median");
    let (v, p) = (
        format!("{xc:.2} us"),
        format!("bare hyper {hc:.2} us, nginx {nc:.2} us"),
    );
    let t = format!("{:.2}x hyper, {:.2}x nginx / < 1x both", xc / hc, xc / nc);
    bench.row(&row, &v, &p, &t, Some(xc < hc && xc < nc));
    let qc = cpu("noping");
    let row = format!("  the same, baton with http2_keepalive off (no keep-alive PINGs), -m{m}");
    let (v, p) = (
        format!("{qc:.2} us"),
        format!(
            "baton's default {xc:.2} us: {:+.1}%",
            (xc / qc - 1.0) * 100.0
        ),
    );
    let t = format!("{:.2}x hyper, {:.2}x nginx", qc / hc, qc / nc);
    bench.row(&row, &v, &p, &t, None);
    rounds
}
