//! baton's benchmark suite, on the tests' harness (tests/common: notify socket, reload sequence,
//! HTTP client, load, /proc). `bench/run` installs the peers, builds, and runs it; every figure
//! is measured in the same run as the one it is compared with (bench/README.md says how).

#[path = "../tests/common/mod.rs"]
mod common;
mod counts;
mod h2;
mod idle;
mod peers;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::load::{body_is_one_of, Load};
use common::{http, procs, Options, Sandbox, Story};
use peers::{ms, Noise, Reloadable, Wrk, WrkReport};
use serde::Serialize;
use serde_json::{json, Value};

pub const BODY: &str = "Hello, world!";
const ALL: &str = "idle,idle-conns,throughput,reloads,h2,leak,instructions,instructions-ab,\
                   h2-instructions,tls-instructions,syscalls,handoff-breakdown";
const MS: fn(u64) -> Duration = Duration::from_millis;

/// The options bench/run passes on (its header lists them) and `BENCH_DURATION`.
pub struct Args {
    smoke: bool,
    /// Timed targets are printed, not judged (CI's soak: a shared machine's timing must not
    /// decide a landing; the full benchmark judges them).
    timing_info: bool,
    only: String,
    bare: PathBuf,
    pub out: PathBuf,
    reloads: usize,
    leak: usize,
    rounds: usize,
    conns: usize,
    secs: u64,
    pin: bool,
    peer_reloads: bool,
    pace_ms: Option<f64>,
    noise_max: f64,
    pub requests: u64,
    pub runs: usize,
    pub idle_conns: usize,
}

fn args() -> Result<Args, String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| argv.iter().any(|a| a == f);
    let opt = |k: &str| {
        argv.iter()
            .position(|a| a == k)
            .and_then(|i| argv.get(i + 1))
            .cloned()
    };
    let n = |k: &str, def: f64| -> Result<f64, String> {
        opt(k).map_or(Ok(def), |v| {
            v.parse().map_err(|_| format!("{k} {v}: not a number"))
        })
    };
    let known = "--smoke --timing-info --only --bare --out --reloads --leak-reloads --rounds --connections \
                 --pace-ms --noise-max --no-pin --no-peer-reloads --requests --runs --idle-conns";
    let flags = argv.iter().filter(|a| a.starts_with("--"));
    if let Some(a) = flags
        .into_iter()
        .find(|a| !known.split_whitespace().any(|k| k == *a))
    {
        return Err(format!("unknown option {a} (bench/run --help)"));
    }
    let smoke = flag("--smoke");
    let only = opt("--only").unwrap_or(ALL.into());
    if let Some(p) = only.split(',').find(|p| !ALL.split(',').any(|q| q == *p)) {
        return Err(format!("unknown phase {p:?} (phases: {ALL})"));
    }
    let secs = std::env::var("BENCH_DURATION").unwrap_or("10s".into());
    Ok(Args {
        smoke,
        timing_info: flag("--timing-info"),
        only,
        bare: opt("--bare").unwrap_or_default().into(),
        out: opt("--out")
            .unwrap_or("target/bench/results.json".into())
            .into(),
        reloads: n("--reloads", if smoke { 5.0 } else { 100.0 })? as usize,
        leak: n("--leak-reloads", 1000.0)? as usize,
        rounds: n("--rounds", 3.0)? as usize,
        conns: n("--connections", 16.0)? as usize,
        secs: (secs.trim_end_matches('s').parse::<f64>()).map_err(|_| format!("{secs:?}"))? as u64,
        pin: !flag("--no-pin"),
        peer_reloads: !flag("--no-peer-reloads"),
        pace_ms: opt("--pace-ms").and_then(|v| v.parse().ok()),
        noise_max: n("--noise-max", 0.1)?,
        requests: n("--requests", 20000.0)? as u64,
        runs: n("--runs", 3.0)? as usize,
        idle_conns: n("--idle-conns", 5000.0)? as usize,
    })
}

pub fn log(msg: &str) {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let s = t.unwrap_or_default().as_secs() % 86400;
    println!(
        "[bench {:02}:{:02}:{:02}] {msg}",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
}

/// n, min, median, p99, max.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Stats {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    pub max: f64,
}

pub fn stats(mut v: Vec<f64>) -> Stats {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    let at = |p: f64| {
        let i = ((p * v.len() as f64).ceil() as usize).max(1) - 1;
        v.get(i).copied().unwrap_or(f64::NAN)
    };
    let (min, median, p99, max) = (at(0.0), at(0.5), at(0.99), at(1.0));
    Stats {
        n: v.len(),
        min,
        median,
        p99,
        max,
    }
}

/// 1234567.8 as "1,234,568".
fn num(n: f64) -> String {
    let s = format!("{:.0}", n);
    let digits = s.len();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (digits - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What a reload storm saw.
#[derive(Clone, Default, Serialize)]
struct Storm {
    wrk: WrkReport,
    failed: usize,
    handoff_ms: Stats,
    ready_ms: Stats,
    runs: usize,
}

pub struct Bench {
    pub a: Args,
    rows: Vec<Value>,
    pub details: BTreeMap<String, Value>,
    pub server_cpus: Vec<usize>,
    pub wrk_cpus: Vec<usize>,
}

impl Bench {
    /// A row of the table: measure, baton, peer, ratio or target; `pass` None is information.
    pub fn row(&mut self, m: &str, v: &str, p: &str, t: &str, pass: Option<bool>) {
        let result = pass.map_or("info", |p| if p { "PASS" } else { "FAIL" });
        let row = json!({"measure": m, "baton": v, "peer": p, "target": t, "result": result});
        self.rows.push(row);
    }

    /// An information row without a peer.
    pub fn info(&mut self, m: &str, v: &str) {
        self.row(m, v, "-", "info", None);
    }

    /// A baton line serving `BODY` on the server CPUs, under `wrap` (strace, valgrind) if any.
    pub fn baton(&self, wrap: &[&str]) -> Story {
        self.baton_with(wrap, |sb| sb.config(BODY))
    }

    /// [`Bench::baton`] with a config of its own.
    pub fn baton_with(&self, wrap: &[&str], config: impl Fn(&Sandbox) -> Value + 'static) -> Story {
        let cpus = self.server_cpus.clone();
        let wrap: Vec<String> = wrap.iter().map(|s| s.to_string()).collect();
        let command = move |sb: &Sandbox| {
            let exe = common::baton_exe().display().to_string();
            let argv: Vec<&str> = wrap
                .iter()
                .map(String::as_str)
                .chain([exe.as_str()])
                .collect();
            let mut cmd = sb.command(argv[0]);
            cmd.args(&argv[1..]).arg("--config").arg(sb.config_path());
            peers::pinned(cmd, &cpus)
        };
        Options::new(BODY).config(config).command(command).start()
    }

    fn wrk(&self, port: u16, secs: u64, fresh: bool, count: bool) -> Wrk {
        let tc = [self.wrk_cpus.len().max(1), self.a.conns];
        Wrk::start(port, secs, tc, fresh, count, &self.wrk_cpus)
    }

    /// One wrk run of `secs` (counting statuses: for the latency runs).
    fn run(&self, port: u16, secs: u64, count: bool) -> WrkReport {
        let g = Noise::start();
        let mut r = self.wrk(port, secs, false, count).wait();
        r.noise_cpus = g.since();
        r
    }

    /// 100 requests on one connection, 0.3 s of quiet, then RSS (KiB) and open fds of `pid`.
    fn mem(&self, pid: i32, sb: &Sandbox) -> [u64; 2] {
        let mut c = http::Client::new(sb.addr());
        let ok = (0..100).all(|_| c.get("/").is_ok_and(|r| r.status == 200));
        assert!(ok, "warm-up of {}", sb.addr());
        drop(c);
        sleep(MS(300));
        [procs::rss_kib(pid), procs::fd_count(pid) as u64]
    }

    /// Open-ended wrk while `server` is reloaded `--reloads` times, paced; waits for the drains.
    fn storm(&self, port: u16, fresh: bool, label: &str, server: &mut dyn Reloadable) -> Storm {
        let (g, w) = (Noise::start(), self.wrk(port, 3600, fresh, true));
        sleep(MS(1000));
        let spread = (self.a.secs.max(3) - 2) as f64 * 1000.0 / self.a.reloads as f64;
        let pace = MS(self.a.pace_ms.unwrap_or(spread) as u64);
        let (mut times, mut failed) = (vec![], 0);
        for i in 1..=self.a.reloads {
            let t = Instant::now();
            match server.reload() {
                Ok(x) => times.push(x),
                Err(e) => {
                    failed += 1;
                    log(&format!("{label}: reload {i} failed: {e}"));
                }
            }
            sleep(pace.saturating_sub(t.elapsed()));
        }
        let t = Instant::now();
        while !server.drained() && t.elapsed() < Duration::from_secs(40) {
            sleep(MS(20));
        }
        sleep(MS(300));
        let mut wrk = w.stop();
        wrk.noise_cpus = g.since();
        let (req, se, bad, p99) = (num(wrk.requests), wrk.socket_errors, wrk.non2xx, wrk.p99());
        let cpu = wrk.noise_cpus;
        log(&format!("{label}: {req} requests, socket errors {se}, non-2xx {bad}, p99 {p99:.2} ms, foreign CPU {cpu:.2}"));
        let (handoff_ms, ready_ms) = (
            stats(times.iter().map(|x| x[0]).collect()),
            stats(times.iter().map(|x| x[1]).collect()),
        );
        Storm {
            wrk,
            failed,
            handoff_ms,
            ready_ms,
            runs: 1,
        }
    }

    fn phase_idle_and_throughput(&mut self) {
        let mut b = self.baton(&[]);
        let (hsb, nsb, cpus) = (Sandbox::new(), Sandbox::new(), self.server_cpus.clone());
        let bare = peers::bare(&hsb, &self.a.bare, &cpus, &[]);
        let nginx = peers::nginx(&nsb, cpus.len().max(1), &cpus, &[]);
        if self.a.only.contains("idle") {
            let ([rss, _], [peer, _]) = (self.mem(b.main, &b.sb), self.mem(bare.pid, &hsb));
            let (v, p) = (rss as f64 / 1024.0, peer as f64 / 1024.0);
            let (v, p, ok) = (
                format!("{v:.2} MiB"),
                format!("bare hyper {p:.2} MiB"),
                v <= 8.0,
            );
            self.row(
                "idle RSS of the serving process",
                &v,
                &p,
                "<= 8 MiB",
                Some(ok),
            );
        }
        if self.a.only.contains("throughput") {
            let (baton, bare) = (
                ("baton", b.sb.port, b.baton.pid),
                ("bare", hsb.port, bare.pid),
            );
            self.throughput([baton, bare, ("nginx", nsb.port, nginx.pid)]);
        }
        drop((bare, nginx));
        b.stop();
    }

    fn throughput(&mut self, servers: [(&str, u16, i32); 3]) {
        for (_, port, _) in servers {
            self.run(port, 2, false);
        }
        let (secs, want) = (self.a.secs, self.a.rounds);
        log(&format!(
            "throughput: {secs} s rounds until {want} were undisturbed (3x at most)"
        ));
        let (mut rounds, mut clean) = (Vec::<(bool, BTreeMap<&str, _>)>::new(), 0);
        while clean < want && rounds.len() < 3 * want {
            let mut rnd = BTreeMap::new();
            for k in 0..3 {
                let (name, port, pgid) = servers[(k + rounds.len()) % 3];
                let c0 = peers::group_cpu(pgid);
                let r = self.run(port, secs, false);
                let us = (peers::group_cpu(pgid) - c0) * 1e6 / r.requests;
                let (n, rps, noise) = (rounds.len() + 1, num(r.rps()), r.noise_cpus);
                log(&format!("  round {n} {name:5}: {rps} req/s, server CPU {us:.2} us/req, foreign CPU {noise:.2}"));
                rnd.insert(name, (r, us));
            }
            let ok = rnd.values().all(|(r, _)| r.noise_cpus <= self.a.noise_max);
            clean += usize::from(ok);
            rounds.push((ok, rnd));
        }
        let used: Vec<_> = rounds.iter().filter(|r| r.0 || clean == 0).collect();
        let rps = |n: &str| stats(used.iter().map(|r| r.1[n].0.rps()).collect()).median;
        let cpu = |n: &str| stats(used.iter().map(|r| r.1[n].1).collect()).median;
        let (all, s) = (
            rounds.len(),
            if clean == 0 {
                "all disturbed".into()
            } else {
                format!("{clean} clean")
            },
        );
        let note = if clean == all {
            String::new()
        } else {
            format!(" ({s} rounds of {all})")
        };
        for (peer, name, target) in [("bare", "bare hyper", 0.95), ("nginx", "nginx", 1.0)] {
            let (x, y) = (rps("baton"), rps(peer));
            let m = format!("throughput, keep-alive, vs {name}{note}");
            let (v, p) = (
                format!("{} req/s", num(x)),
                format!("{name} {} req/s", num(y)),
            );
            let t = format!("{:.1}% / >= {:.0}%", x / y * 100.0, target * 100.0);
            self.row(&m, &v, &p, &t, Some(x / y >= target));
        }
        let (b, h, n) = (cpu("baton"), cpu("bare"), cpu("nginx"));
        let (v, p) = (
            format!("{b:.2} us"),
            format!("bare {h:.2} us, nginx {n:.2} us"),
        );
        self.row("  server CPU per request (median)", &v, &p, "info", None);
        self.details.insert("throughput".into(), json!(rounds));
    }

    fn reload_rows(&mut self, label: &str, b: &Storm, n: Option<&Storm>) {
        let (w, count) = (&b.wrk, self.a.reloads * b.runs);
        let figures = [w.socket_errors, w.non2xx, b.failed as f64];
        let peers = n.map(|n| [n.wrk.socket_errors, n.wrk.non2xx, n.failed as f64]);
        for (i, what) in ["socket errors", "non-2xx", "failed reloads"]
            .into_iter()
            .enumerate()
        {
            let (m, x) = (format!("{count} reloads, {label}: {what}"), figures[i]);
            let v = if i == 0 {
                format!("{x} of {} req", num(w.requests))
            } else {
                x.to_string()
            };
            let p = peers.map_or("-".into(), |p| format!("nginx {}", p[i]));
            self.row(&m, &v, &p, "0", Some(x == 0.0));
        }
    }

    fn phase_reloads(&mut self) {
        let mut b = self.baton(&[]);
        let (port, nsb, cpus) = (b.sb.port, Sandbox::new(), self.server_cpus.clone());
        let nginx =
            (self.a.peer_reloads).then(|| peers::nginx(&nsb, cpus.len().max(1), &cpus, &[]));
        let mut master = peers::NginxMaster(nginx.as_ref().map_or(0, |n| n.pid));
        // steady p99, then the storm; a pair other processes disturbed is repeated (up to 3 pairs,
        // the error counts add up over all of them)
        let mut pairs = vec![];
        for _ in 0..3 {
            let st = self.run(port, self.a.secs, true);
            let ka = self.storm(port, false, "baton keep-alive storm", &mut b);
            let noise = st.noise_cpus.max(ka.wrk.noise_cpus);
            pairs.push((noise, st, ka));
            if noise <= self.a.noise_max {
                break;
            }
            log("  other processes were busy during that pair; repeating it");
        }
        let best = pairs.iter().min_by(|x, y| x.0.total_cmp(&y.0));
        let (noise, steady, mut ka) = best.cloned().expect("a pair");
        let sum = |f: fn(&Storm) -> f64| pairs.iter().map(|p| f(&p.2)).sum::<f64>();
        ka.wrk.requests = sum(|s| s.wrk.requests);
        ka.wrk.socket_errors = sum(|s| s.wrk.socket_errors);
        ka.wrk.non2xx = sum(|s| s.wrk.non2xx);
        (ka.failed, ka.runs) = (sum(|s| s.failed as f64) as usize, pairs.len());
        let (mut n_steady, mut n_ka, mut n_fr) = Default::default();
        if nginx.is_some() {
            n_steady = self.run(nsb.port, self.a.secs, true);
            n_ka = self.storm(nsb.port, false, "nginx keep-alive storm", &mut master);
        }
        let ctl = self.storm(port, false, "control: /bin/true", &mut peers::Control(cpus));
        let fr = self.storm(port, true, "baton fresh-connection storm", &mut b);
        if nginx.is_some() {
            n_fr = self.storm(nsb.port, true, "nginx fresh-connection storm", &mut master);
        }
        let (c, peer) = (self.a.conns, |s: &Storm| {
            nginx.is_some().then_some(s.clone())
        });
        self.reload_rows(&format!("wrk keep-alive -c{c}"), &ka, peer(&n_ka).as_ref());
        self.reload_rows(
            &format!("wrk fresh connections -c{c}"),
            &fr,
            peer(&n_fr).as_ref(),
        );
        let (s, k, x) = (steady.p99(), ka.wrk.p99(), ka.wrk.p99() / steady.p99());
        let (ns, nk) = (n_steady.p99(), n_ka.wrk.p99());
        let nginx_says = |text: String| if nginx.is_some() { text } else { "-".into() };
        let p = nginx_says(format!("nginx {nk:.2} vs {ns:.2} ms ({:.2}x)", nk / ns));
        let note = if noise > self.a.noise_max {
            " (disturbed)"
        } else {
            ""
        };
        let m = format!("p99 latency, reload storm vs steady (keep-alive){note}");
        let (v, t) = (format!("{k:.2} vs {s:.2} ms"), format!("{x:.2}x / <= 2x"));
        self.row(&m, &v, &p, &t, Some(x <= 2.0));
        let (c, cx) = (ctl.wrk.p99(), ctl.wrk.p99() / s);
        let m = "  control: same pace of /bin/true starts on the server CPUs, no reload";
        let (v, t) = (
            format!("{c:.2} vs {s:.2} ms"),
            format!("{cx:.2}x; storm / control {:.2} / <= 1.2", x / cx),
        );
        self.row(m, &v, "-", &t, Some(x / cx <= 1.2));
        let (h, nh, tail) = (ka.handoff_ms, n_ka.handoff_ms, "reloads, keep-alive load");
        let m = format!("hand-off SIGHUP -> MAINPID=, median ({} {tail})", h.n);
        let p = nginx_says(format!("nginx new worker {:.2} ms", nh.median));
        self.row(
            &m,
            &format!("{:.2} ms", h.median),
            &p,
            "<= 5 ms",
            Some(h.median <= 5.0),
        );
        let m = format!("hand-off SIGHUP -> MAINPID=, max ({} {tail})", h.n);
        let p = nginx_says(format!("nginx new worker {:.2} ms", nh.max));
        self.row(
            &m,
            &format!("{:.2} ms", h.max),
            &p,
            "<= 50 ms",
            Some(h.max <= 50.0),
        );
        let (r, f) = (ka.ready_ms, fr.handoff_ms);
        let v = format!("{:.2} / {:.2} ms", r.median, r.max);
        self.info("  SIGHUP -> successor READY=1, median / max", &v);
        let v = format!("{:.2} / {:.2} ms", f.median, f.max);
        self.info("  hand-off under fresh-connection load, median / max", &v);
        let baton = json!({"steady": steady, "keepalive": ka, "fresh": fr, "control": ctl});
        let nginx_ = json!({"steady": n_steady, "keepalive": n_ka, "fresh": n_fr});
        self.details
            .insert("reloads".into(), json!({"baton": baton, "nginx": nginx_}));
        drop(nginx);
        b.stop();
    }

    fn phase_leak(&mut self) {
        let n = self.a.leak;
        let mut b = self.baton(&[]);
        let mut samples = vec![(0, self.mem(b.main, &b.sb))];
        log(&format!(
            "leak: {n} reloads, one fresh-connection GET after each"
        ));
        let (mut failed, mut probes, mut times) = (0, 0, vec![]);
        for i in 1..=n {
            match b.try_reload(Duration::from_secs(30)) {
                Ok(r) => times.push(ms(r.handoff_time())),
                Err(e) => {
                    failed += 1;
                    log(&format!("leak: reload {i} failed: {e}"));
                }
            }
            let probe = http::get_fresh(b.sb.addr(), "/").is_ok_and(|r| r.status == 200);
            probes += usize::from(!probe);
            if i == 1 || i % (n / 10).max(1) == 0 {
                let [rss, fds] = self.mem(b.main, &b.sb);
                log(&format!("  after {i:5} reloads: RSS {rss} KiB, {fds} fds"));
                samples.push((i, [rss, fds]));
            }
        }
        let drained = b.wait_drained(Duration::from_secs(40));
        let ([r0, d0], [r1, d1]) = (samples[0].1, samples[1].1);
        let [rn, dn] = samples[samples.len() - 1].1;
        let mib = |k: u64| k as f64 / 1024.0;
        let (r0_, r1_, rn_) = (mib(r0), mib(r1), mib(rn));
        let v = format!("gen0 {r0_:.2} MiB -> gen1 {r1_:.2} MiB -> gen{n} {rn_:.2} MiB");
        let t = format!("{:+.1}% / <= +10%", (rn_ / r0_ - 1.0) * 100.0);
        self.row(
            &format!("RSS of main after {n} reloads"),
            &v,
            "-",
            &t,
            Some(rn_ <= r0_ * 1.1),
        );
        let v = format!("gen0 {d0} -> gen1 {d1} -> gen{n} {dn}");
        let t = format!("{:+} / <= +3", dn as i64 - d0 as i64);
        self.row(
            &format!("open fds of main after {n} reloads"),
            &v,
            "-",
            &t,
            Some(dn <= d0 + 3),
        );
        let m = format!("  {n} reloads back to back: failed reloads / failed probes");
        let ok = failed == 0 && probes == 0;
        self.row(&m, &format!("{failed} / {probes}"), "-", "0 / 0", Some(ok));
        let h = stats(times);
        let v = format!("{:.2} / {:.2} / {:.2} ms", h.median, h.p99, h.max);
        self.info("  hand-off without load, median / p99 / max", &v);
        // the floor: starting the same binary at all (`baton --version`, spawn to exit, on the
        // server CPUs); target: the unloaded hand-off within 2x of it. Spawned as baton spawns
        // its successor, without copying the spawner's page tables: from a thread pinned to the
        // server CPUs (the children inherit it) and without a pre-exec hook, so that std uses
        // posix_spawn. (Through `peers::pinned`, whose hook makes it fork, the figure grew with
        // the suite's own memory: 1.1 ms when the leak phase ran alone, 3.5 ms after the other
        // phases of a full run on 2026-12-06, which made the ratio look better than it is.)
        let exe = common::baton_exe();
        let cpus = self.server_cpus.clone();
        let starts: Vec<f64> = std::thread::spawn(move || {
            peers::pin_self(&cpus);
            (0..200)
                .map(|_| {
                    let mut cmd = std::process::Command::new(&exe);
                    cmd.arg("--version");
                    let t = Instant::now();
                    let ok = common::reaper::output(&mut cmd).is_ok_and(|o| o.status.success());
                    assert!(ok, "baton --version");
                    ms(t.elapsed())
                })
                .collect()
        })
        .join()
        .expect("the --version runs");
        let v = stats(starts);
        let x = h.median / v.median;
        let m = "  hand-off without load vs starting the binary (`baton --version`), medians";
        let (val, p) = (
            format!("{:.2} ms", h.median),
            format!("--version {:.2} ms", v.median),
        );
        if self.a.timing_info {
            let t = format!("{x:.2}x / <= 2x (timed: not judged here)");
            self.row(m, &val, &p, &t, None);
        } else {
            self.row(m, &val, &p, &format!("{x:.2}x / <= 2x"), Some(x <= 2.0));
        }
        let left = b.baton.live_members().len().to_string();
        self.row(
            "  processes left after the drains",
            &left,
            "-",
            "1",
            Some(drained),
        );
        self.details
            .insert("leak".into(), json!({"samples": samples, "handoff_ms": h}));
        b.stop();
    }

    /// CI's smoke: reloads 300 ms apart under keep-alive and fresh-connection clients (every
    /// response checked); nothing may fail.
    fn smoke(&mut self) {
        let n = self.a.reloads;
        let mut b = self.baton(&[]);
        let load = Load::start(b.sb.addr(), 8, 4, Duration::ZERO, body_is_one_of(&[BODY]));
        load.wait_more_ok(100, Duration::from_secs(20));
        log(&format!(
            "smoke: {n} reloads under 8 keep-alive + 4 fresh-connection clients"
        ));
        let (mut failed, mut times) = (vec![], vec![]);
        for _ in 0..n {
            let t = Instant::now();
            match b.try_reload(Duration::from_secs(30)) {
                Ok(r) => times.push(ms(r.handoff_time())),
                Err(e) => failed.push(e),
            }
            sleep(MS(300).saturating_sub(t.elapsed()));
        }
        b.wait_drained(Duration::from_secs(40));
        let rep = load.stop();
        let m = format!("{n} reloads under load: failed requests (errors, non-2xx, wrong body)");
        let v = format!(
            "{} of {} req",
            rep.failed,
            num((rep.ok + rep.failed) as f64)
        );
        self.row(&m, &v, "-", "0", Some(rep.failed == 0 && rep.ok > 0));
        let m = format!("{n} reloads: failed reloads");
        self.row(
            &m,
            &failed.len().to_string(),
            "-",
            "0",
            Some(failed.is_empty()),
        );
        let h = stats(times);
        let v = format!("{:.2} / {:.2} ms", h.median, h.max);
        self.info("  hand-off SIGHUP -> MAINPID=, median / max", &v);
        let errors = json!({"requests": rep.errors, "reloads": failed});
        self.details.insert("smoke".into(), errors);
        b.stop();
    }

    fn table(&self) -> String {
        let keys = ["measure", "baton", "peer", "target", "result"];
        let cell = |r: &Value, k: &str| r[k].as_str().unwrap_or("").to_string();
        let width = |k: &str| self.rows.iter().map(|r| cell(r, k).chars().count()).max();
        let w: Vec<usize> = keys
            .iter()
            .map(|k| width(k).unwrap_or(0).max(k.len()))
            .collect();
        let line = |c: Vec<String>| {
            let cells: Vec<String> = c.iter().zip(&w).map(|(c, w)| format!("{c:w$}")).collect();
            cells.join("  ").trim_end().to_string()
        };
        let (head, rule) = (
            keys.map(String::from).to_vec(),
            w.iter().map(|w| "-".repeat(*w)),
        );
        let mut out = vec![line(head), line(rule.collect())];
        out.extend(
            self.rows
                .iter()
                .map(|r| line(keys.iter().map(|k| cell(r, k)).collect())),
        );
        out.join("\n")
    }
}

fn main() {
    // Signals go to one thread, which kills every process group the suite started, then exits
    // (spawned commands clear the mask again: peers::pinned).
    use nix::sys::signal::{SigSet, SIGHUP, SIGINT, SIGTERM};
    let set = SigSet::from_iter([SIGINT, SIGTERM, SIGHUP]);
    set.thread_block().expect("sigmask");
    std::thread::spawn(move || {
        let sig = set.wait().map_or(15, |s| s as i32);
        common::reaper::kill_all_groups();
        std::process::exit(128 + sig);
    });
    let a = args().unwrap_or_else(|e| {
        eprintln!("bench: {e}");
        std::process::exit(2)
    });
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"));
    let range = |r: &str| {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        a.parse().unwrap_or(0)..=b.parse().unwrap_or(0)
    };
    let cpus: Vec<usize> = list
        .unwrap_or("0")
        .trim()
        .split(',')
        .flat_map(range)
        .collect();
    let half = if a.pin && cpus.len() >= 2 {
        cpus.len() / 2
    } else {
        0
    };
    let (server_cpus, wrk_cpus) = (cpus[..half].to_vec(), cpus[half..half * 2].to_vec());
    // the suite itself (its client threads, the reaper) keeps off the server CPUs, and quiet
    peers::pin_self(&wrk_cpus);
    common::reaper::set_interval(MS(100));
    let (rows, details) = (vec![], BTreeMap::new());
    let mut bench = Bench {
        a,
        rows,
        details,
        server_cpus,
        wrk_cpus,
    };
    let (s, w) = (&bench.server_cpus, &bench.wrk_cpus);
    log(&format!(
        "servers on CPUs {s:?}, wrk and the suite on CPUs {w:?} (none: any)"
    ));
    let has = |b: &Bench, p: &str| !b.a.smoke && b.a.only.split(',').any(|x| x == p);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if bench.a.smoke {
            bench.smoke();
        }
        if has(&bench, "idle") || has(&bench, "throughput") {
            bench.phase_idle_and_throughput();
        }
        if has(&bench, "idle-conns") {
            idle::phase(&mut bench);
        }
        if has(&bench, "reloads") {
            bench.phase_reloads();
        }
        if has(&bench, "h2") {
            h2::phase(&mut bench);
        }
        if has(&bench, "leak") && bench.a.leak > 0 {
            bench.phase_leak();
        }
        if has(&bench, "instructions") {
            counts::instructions(&mut bench);
        }
        if has(&bench, "instructions-ab") {
            counts::instructions_ab(&mut bench);
        }
        if has(&bench, "h2-instructions") {
            counts::h2_instructions(&mut bench);
        }
        if has(&bench, "tls-instructions") {
            counts::tls_instructions(&mut bench);
        }
        if has(&bench, "syscalls") {
            counts::syscalls(&mut bench);
        }
        if has(&bench, "handoff-breakdown") {
            counts::handoff_breakdown(&mut bench);
        }
    }));
    let error = outcome.err().map(|e| {
        let text = e.downcast_ref::<String>().cloned();
        text.or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    });
    let failed = bench.rows.iter().filter(|r| r["result"] == "FAIL").count();
    let (a, s, w) = (&bench.a, &bench.server_cpus, &bench.wrk_cpus);
    let (mode, t, c, secs) = (
        if a.smoke { "smoke" } else { "full" },
        w.len().max(1),
        a.conns,
        a.secs,
    );
    println!("\nbaton bench ({mode}): servers on CPUs {s:?}, wrk -t{t} -c{c} on CPUs {w:?}, {secs} s per wrk run");
    println!("{}", bench.table());
    let settings = json!({"smoke": a.smoke, "phases": a.only, "server_cpus": s, "wrk_cpus": w, "connections": c,
        "duration_s": secs, "reloads": a.reloads, "leak_reloads": a.leak, "requests": a.requests, "runs": a.runs});
    let passed = failed == 0 && error.is_none();
    let doc = json!({"suite": "baton bench", "settings": settings, "passed": passed, "error": error,
        "rows": bench.rows, "details": bench.details});
    let _ = std::fs::create_dir_all(a.out.parent().unwrap_or(&a.out));
    let _ = std::fs::write(
        &a.out,
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    );
    println!("\nresults: {}", a.out.display());
    match (error, failed) {
        (Some(e), _) => {
            eprintln!("bench: ERROR: {e}");
            std::process::exit(2)
        }
        (None, 1..) => {
            eprintln!("bench: FAILED ({failed} rows)");
            std::process::exit(1)
        }
        _ => println!(
            "bench: {}",
            if a.smoke {
                "smoke passed"
            } else {
                "all targets met"
            }
        ),
    }
}
