//! baton's benchmark suite (issues 5, 13, 16), built on the tests' harness (tests/common): the
//! same notify socket, reload sequence, HTTP client and /proc helpers. Run it through `bench/run`,
//! which installs wrk, nginx and valgrind and builds the binaries; bench/README.md says how
//! every row is measured. Every figure is measured in the same run as the one it is compared with.

#[path = "../tests/common/mod.rs"]
mod common;
mod counts;
mod peers;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::load::{body_is_one_of, Load};
use common::{http, procs, Options, Sandbox, Story};
use peers::{ms, Noise, Wrk};
use serde_json::{json, Value};

const BODY: &str = "Hello, world!";
const FULL: &str = "idle,throughput,reloads,leak,instructions,syscalls,handoff-breakdown";

pub struct Args {
    smoke: bool,
    only: Vec<String>,
    bare: PathBuf,
    out: PathBuf,
    reloads: usize,
    leak_reloads: usize,
    rounds: usize,
    connections: usize,
    secs: u64,
    pin: bool,
    peer_reloads: bool,
    pace_ms: Option<f64>,
    noise_max: f64,
    pub requests: u64,
    pub runs: usize,
}

const HELP: &str = "bench/run [--smoke] [--only PHASES] [--reloads N] [--leak-reloads N] [--rounds N]
  [--connections N] [--requests N] [--runs N] [--pace-ms MS] [--noise-max CPUS] [--no-pin]
  [--no-peer-reloads]
phases: idle,throughput,reloads,leak,instructions,syscalls,handoff-breakdown (default all)
env: BENCH_DURATION (10s), BENCH_CONNECTIONS, BENCH_ROUNDS, BENCH_LEAK_RELOADS,
     BENCH_RELOAD_PACE_MS, BENCH_NOISE_MAX, BENCH_PIN=0";

fn parse_args() -> Result<Args, String> {
    let mut kv = std::collections::HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let flag = ["--smoke", "--no-pin", "--no-peer-reloads", "--bench"].contains(&a.as_str());
        let v = if flag { String::new() } else { it.next().ok_or(format!("{a} needs a value"))? };
        kv.insert(a.trim_start_matches('-').to_string(), v);
    }
    let get = |k: &str, env: &str, def: &str| -> String {
        kv.get(k).cloned().or_else(|| std::env::var(env).ok()).unwrap_or_else(|| def.into())
    };
    let num = |k: &str, env: &str, def: &str| -> Result<f64, String> {
        let v = get(k, env, def);
        v.trim_end_matches('s').parse().map_err(|_| format!("--{k}: not a number: {v:?}"))
    };
    let smoke = kv.contains_key("smoke");
    let only: Vec<String> = get("only", "-", FULL).split(',').map(str::to_string).collect();
    if let Some(p) = only.iter().find(|p| !FULL.split(',').any(|q| q == *p)) {
        return Err(format!("unknown phase {p:?}\n{HELP}"));
    }
    Ok(Args {
        smoke,
        only,
        bare: get("bare", "-", "").into(),
        out: get("out", "-", "target/bench/results.json").into(),
        reloads: num("reloads", "-", if smoke { "5" } else { "100" })? as usize,
        leak_reloads: num("leak-reloads", "BENCH_LEAK_RELOADS", "1000")? as usize,
        rounds: num("rounds", "BENCH_ROUNDS", "3")? as usize,
        connections: num("connections", "BENCH_CONNECTIONS", "16")? as usize,
        secs: num("duration", "BENCH_DURATION", "10")? as u64,
        pin: !kv.contains_key("no-pin") && get("-", "BENCH_PIN", "1") != "0",
        peer_reloads: !kv.contains_key("no-peer-reloads"),
        pace_ms: kv.get("pace-ms").cloned().or_else(|| std::env::var("BENCH_RELOAD_PACE_MS").ok()).and_then(|v| v.parse().ok()),
        noise_max: num("noise-max", "BENCH_NOISE_MAX", "0.10")?,
        requests: num("requests", "-", "20000")? as u64,
        runs: num("runs", "-", "3")? as usize,
    })
}

pub fn log(msg: &str) {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let s = t.as_secs() % 86400;
    println!("[bench {:02}:{:02}:{:02}] {msg}", s / 3600, s / 60 % 60, s % 60);
}

/// median, p99, max (and n) of `v`.
pub fn stats(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    json!({"n": v.len(), "min": v[0], "median": at(0.5), "p99": at(0.99), "max": v[v.len() - 1]})
}

fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or(f64::NAN)
}

fn num(n: f64) -> String {
    let s = format!("{:.0}", n.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0.0 { format!("-{out}") } else { out }
}

pub struct Bench {
    pub a: Args,
    rows: Vec<Value>,
    pub details: serde_json::Map<String, Value>,
    server_cpus: Vec<usize>,
    wrk_cpus: Vec<usize>,
}

impl Bench {
    pub fn row(&mut self, measure: &str, baton: &str, peer: &str, target: &str, result: &str, data: Value) {
        self.rows.push(json!({"measure": measure, "baton": baton, "peer": peer, "target": target, "result": result, "data": data}));
    }

    fn gate(&mut self, measure: &str, baton: &str, peer: &str, target: &str, pass: bool) {
        self.row(measure, baton, peer, target, if pass { "PASS" } else { "FAIL" }, Value::Null);
    }

    /// A baton line serving `BODY` on the server CPUs.
    pub fn baton(&self, wrap: &[&str]) -> Story {
        let (cpus, wrap): (Vec<usize>, Vec<String>) = (self.server_cpus.clone(), wrap.iter().map(|s| s.to_string()).collect());
        Options::new(BODY)
            .command(move |sb| {
                let cmd = match wrap.split_first() {
                    Some((w, rest)) => {
                        let mut c = sb.command(w);
                        c.args(rest).arg(common::baton_exe()).arg("--config").arg(sb.config_path());
                        c
                    }
                    None => sb.serve(&[]),
                };
                peers::pinned(cmd, &cpus)
            })
            .start()
    }

    fn wrk(&self, port: u16, secs: u64, fresh: bool, count: bool) -> Wrk {
        Wrk::start(port, secs, self.wrk_cpus.len().max(1), self.a.connections, fresh, count, &self.wrk_cpus)
    }

    /// One duration-bound wrk run, with the foreign CPU it shared the machine with.
    fn run(&self, port: u16, secs: u64, count: bool) -> Value {
        let g = Noise::start();
        let mut r = self.wrk(port, secs, false, count).wait().unwrap_or_else(|e| panic!("{e}"));
        r["noise_cpus"] = g.since().into();
        r
    }

    /// 100 requests on one connection, 0.3 s of quiet, then RSS and fds of `pid`.
    fn mem(&self, pid: i32, sb: &Sandbox) -> Value {
        let mut c = http::Client::new(sb.addr());
        for _ in 0..100 {
            assert_eq!(c.get("/").map(|r| r.status).unwrap_or(0), 200, "warm-up of {}", sb.addr());
        }
        drop(c);
        sleep(Duration::from_millis(300));
        json!({"pid": pid, "rss_kib": procs::rss_kib(pid), "fds": procs::fd_count(pid)})
    }

    /// Open-ended wrk on `port` while `reload` runs `n` times `pace` apart; then waits until
    /// `drained`, and stops wrk. `reload` returns [hand-off ms, ready ms].
    fn storm(&self, port: u16, fresh: bool, label: &str, reload: &mut dyn FnMut() -> Result<[f64; 2], String>, drained: &mut dyn FnMut() -> bool) -> Value {
        let g = Noise::start();
        let w = self.wrk(port, 3600, fresh, true);
        sleep(Duration::from_secs(1));
        let (mut times, mut failures) = (vec![], vec![]);
        let pace = Duration::from_secs_f64(self.a.pace_ms.unwrap_or((self.a.secs.max(3) - 2) as f64 * 1000.0 / self.a.reloads as f64) / 1000.0);
        for i in 0..self.a.reloads {
            let t = Instant::now();
            match reload() {
                Ok(x) => times.push(x),
                Err(e) => {
                    log(&format!("{label}: reload {} failed: {e}", i + 1));
                    failures.push(e);
                }
            }
            sleep(pace.saturating_sub(t.elapsed()));
        }
        let t = Instant::now();
        while !drained() && t.elapsed() < Duration::from_secs(40) {
            sleep(Duration::from_millis(20));
        }
        sleep(Duration::from_millis(300));
        let mut r = w.stop().unwrap_or_else(|e| panic!("{e}"));
        r["noise_cpus"] = g.since().into();
        r["failed_reloads"] = failures.len().into();
        r["failures"] = failures.into();
        r["handoff_ms"] = stats(times.iter().map(|x| x[0]).collect());
        r["ready_ms"] = stats(times.iter().map(|x| x[1]).collect());
        log(&format!(
            "{label}: {} requests, socket errors {}, non-2xx {}, p99 {:.2} ms, foreign CPU {:.2}",
            num(f(&r, &["requests"])), r["socket_errors"], r["non2xx"], f(&r, &["latency_us", "p99"]) / 1000.0, f(&r, &["noise_cpus"])
        ));
        r
    }

    fn phase_idle_and_throughput(&mut self) {
        let mut b = self.baton(&[]);
        let sb_bare = Sandbox::new();
        let bare = peers::bare(&sb_bare, &self.a.bare, &self.server_cpus, &[]).unwrap_or_else(|e| panic!("{e}"));
        let sb_nginx = Sandbox::new();
        let workers = self.server_cpus.len().max(1);
        let nginx = peers::nginx(&sb_nginx, workers, &self.server_cpus, &[]).unwrap_or_else(|e| panic!("{e}"));
        if self.a.only.iter().any(|p| p == "idle") {
            let (bm, hm) = (self.mem(b.main, &b.sb), self.mem(bare.pid, &sb_bare));
            let kib = bm["rss_kib"].as_f64().unwrap_or(0.0);
            let peer = format!("bare hyper {:.2} MiB", f(&hm, &["rss_kib"]) / 1024.0);
            self.gate("idle RSS of the serving process", &format!("{:.2} MiB", kib / 1024.0), &peer, "<= 8 MiB", kib <= 8192.0);
            self.details.insert("idle_rss".into(), json!({"baton": bm, "bare": hm}));
        }
        if self.a.only.iter().any(|p| p == "throughput") {
            let servers = [("baton", b.sb.port, b.main), ("bare", sb_bare.port, bare.pid), ("nginx", sb_nginx.port, nginx.pid)];
            let group_cpu = |pgid: i32| -> u64 { procs::group_members(pgid).iter().filter_map(|p| procs::stat_times(p.pid)).map(|t| t[0] + t[1]).sum() };
            for (_, port, _) in servers {
                self.run(port, 2, false);
            }
            let (want, most) = (self.a.rounds, 3 * self.a.rounds);
            log(&format!("throughput: rounds of {} s per server until {want} undisturbed (at most {most})", self.a.secs));
            let mut rounds: Vec<Value> = vec![];
            while rounds.len() < most && rounds.iter().filter(|r| r["clean"] == true).count() < want {
                let mut rnd = json!({});
                for k in 0..3 {
                    let (name, port, pgid) = servers[(k + rounds.len()) % 3];
                    let c0 = group_cpu(pgid);
                    let mut r = self.run(port, self.a.secs, false);
                    // SAFETY: sysconf has no preconditions.
                    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
                    let cpu = (group_cpu(pgid) - c0) as f64 / tck;
                    r["server_cpu_us_per_req"] = (cpu * 1e6 / f(&r, &["requests"])).into();
                    log(&format!("  round {} {name:5}: {} req/s, server CPU {:.2} us/req, foreign CPU {:.2}", rounds.len() + 1, num(f(&r, &["rps"])), f(&r, &["server_cpu_us_per_req"]), f(&r, &["noise_cpus"])));
                    rnd[name] = r;
                }
                rnd["clean"] = ["baton", "bare", "nginx"].iter().all(|n| f(&rnd, &[n, "noise_cpus"]) <= self.a.noise_max).into();
                rounds.push(rnd);
            }
            let clean: Vec<&Value> = rounds.iter().filter(|r| r["clean"] == true).collect();
            let used = if clean.is_empty() { rounds.iter().collect() } else { clean.clone() };
            let note = if clean.len() == rounds.len() { String::new() } else { format!(" ({} clean rounds of {})", clean.len(), rounds.len()) };
            let med = |n: &str, k: &str| f(&stats(used.iter().map(|r| f(r, &[n, k])).collect()), &["median"]);
            for (peer, name, target) in [("bare", "bare hyper", 0.95), ("nginx", "nginx", 1.0)] {
                let ratio = med("baton", "rps") / med(peer, "rps");
                let (b_, p_) = (format!("{} req/s", num(med("baton", "rps"))), format!("{name} {} req/s", num(med(peer, "rps"))));
                self.gate(&format!("throughput, keep-alive, vs {name}{note}"), &b_, &p_, &format!("{:.1}% / >= {:.0}%", ratio * 100.0, target * 100.0), ratio >= target);
            }
            let cpu = |n| med(n, "server_cpu_us_per_req");
            let peer = format!("bare {:.2} us, nginx {:.2} us", cpu("bare"), cpu("nginx"));
            self.row("  server CPU per request (median)", &format!("{:.2} us", cpu("baton")), &peer, "info", "info", Value::Null);
            self.details.insert("throughput".into(), json!({"rounds": rounds}));
        }
        drop((bare, nginx));
        b.stop();
    }

    fn reload_rows(&mut self, label: &str, b: &Value, n: Option<&Value>) {
        let peer = |k: &str| n.map_or("-".to_string(), |n| format!("nginx {}", n[k]));
        let runs = b["runs"].as_u64().unwrap_or(1) as usize;
        let count = self.a.reloads * runs;
        let (se, bad, failed) = (f(b, &["socket_errors"]), f(b, &["non2xx"]), f(b, &["failed_reloads"]));
        self.gate(&format!("{count} reloads, {label}: socket errors"), &format!("{se} of {} req", num(f(b, &["requests"]))), &peer("socket_errors"), "0", se == 0.0);
        self.gate(&format!("{count} reloads, {label}: non-2xx"), &bad.to_string(), &peer("non2xx"), "0", bad == 0.0);
        self.gate(&format!("{count} reloads, {label}: failed reloads"), &failed.to_string(), &peer("failed_reloads"), "0", failed == 0.0);
    }

    fn phase_reloads(&mut self) {
        let mut b = self.baton(&[]);
        let port = b.sb.port;
        let nsb = Sandbox::new();
        let nginx = self.a.peer_reloads.then(|| peers::nginx(&nsb, self.server_cpus.len().max(1), &self.server_cpus, &[]).unwrap_or_else(|e| panic!("{e}")));
        let secs = self.a.secs;
        let baton_reload = |b: &mut Story| {
            b.try_reload(Duration::from_secs(30)).map(|r| [ms(r.handoff_time()), ms(r.ready.at.duration_since(r.sighup_at))])
        };
        // steady p99, then the storm; a pair disturbed by other processes is repeated (up to 3
        // pairs, error counts add up over all of them)
        let mut pairs: Vec<(Value, Value)> = vec![];
        for _ in 0..3 {
            let st = self.run(port, secs, true);
            let ka = self.storm(port, false, "baton keep-alive storm", &mut || baton_reload(&mut b), &mut || false);
            let ka = json!(ka);
            let clean = f(&st, &["noise_cpus"]).max(f(&ka, &["noise_cpus"])) <= self.a.noise_max;
            pairs.push((st, ka));
            if clean {
                break;
            }
            log("  other processes were busy during that pair; repeating it");
        }
        let (b_steady, mut b_ka) = pairs.iter().min_by(|x, y| f(&x.0, &["noise_cpus"]).max(f(&x.1, &["noise_cpus"])).total_cmp(&f(&y.0, &["noise_cpus"]).max(f(&y.1, &["noise_cpus"])))).cloned().expect("a pair");
        let disturbed = f(&b_steady, &["noise_cpus"]).max(f(&b_ka, &["noise_cpus"])) > self.a.noise_max;
        for k in ["requests", "socket_errors", "non2xx", "failed_reloads"] {
            b_ka[k] = pairs.iter().map(|p| f(&p.1, &[k])).sum::<f64>().into();
        }
        b_ka["runs"] = pairs.len().into();
        let (mut n_steady, mut n_ka, mut n_fr) = (Value::Null, Value::Null, Value::Null);
        if let Some(ng) = &nginx {
            let master = ng.pid;
            n_steady = self.run(nsb.port, secs, true);
            n_ka = self.storm(nsb.port, false, "nginx keep-alive storm", &mut || peers::nginx_reload(master), &mut || peers::nginx_workers(master, true).is_empty());
        }
        let cpus = self.server_cpus.clone();
        let ctl = self.storm(port, false, "control: /bin/true spawns, no reloads", &mut || peers::spawn_true(&cpus), &mut || true);
        let b_fr = self.storm(port, true, "baton fresh-connection storm", &mut || baton_reload(&mut b), &mut || false);
        if let Some(ng) = &nginx {
            let master = ng.pid;
            n_fr = self.storm(nsb.port, true, "nginx fresh-connection storm", &mut || peers::nginx_reload(master), &mut || peers::nginx_workers(master, true).is_empty());
        }
        let c = self.a.connections;
        self.reload_rows(&format!("wrk keep-alive -c{c}"), &b_ka, nginx.as_ref().map(|_| &n_ka));
        self.reload_rows(&format!("wrk fresh connections -c{c}"), &b_fr, nginx.as_ref().map(|_| &n_fr));
        let p99 = |v: &Value| f(v, &["latency_us", "p99"]) / 1000.0;
        let ratio = p99(&b_ka) / p99(&b_steady);
        let peer = if nginx.is_some() { format!("nginx {:.2} vs {:.2} ms ({:.2}x)", p99(&n_ka), p99(&n_steady), p99(&n_ka) / p99(&n_steady)) } else { "-".into() };
        let label = format!("p99 latency, reload storm vs steady (keep-alive){}", if disturbed { " (disturbed)" } else { "" });
        self.gate(&label, &format!("{:.2} vs {:.2} ms", p99(&b_ka), p99(&b_steady)), &peer, &format!("{ratio:.2}x / <= 2x"), ratio <= 2.0);
        let cr = p99(&ctl) / p99(&b_steady);
        self.row("  control: same pace of /bin/true starts on the server CPUs, no reload", &format!("{:.2} vs {:.2} ms", p99(&ctl), p99(&b_steady)), "-", &format!("{cr:.2}x; storm/control {:.2}x", ratio / cr), "info", Value::Null);
        let h = &b_ka["handoff_ms"];
        let nk = |k: &str| if nginx.is_some() { format!("nginx new worker {:.2} ms", f(&n_ka, &["handoff_ms", k])) } else { "-".into() };
        let tail = format!(" ({} reloads, keep-alive load)", h["n"]);
        self.gate(&format!("hand-off SIGHUP -> MAINPID=, median{tail}"), &format!("{:.2} ms", f(h, &["median"])), &nk("median"), "<= 15 ms", f(h, &["median"]) <= 15.0);
        self.gate(&format!("hand-off SIGHUP -> MAINPID=, max{tail}"), &format!("{:.2} ms", f(h, &["max"])), &nk("max"), "<= 100 ms", f(h, &["max"]) <= 100.0);
        let r = &b_ka["ready_ms"];
        self.row("  SIGHUP -> successor READY=1, median / max", &format!("{:.2} / {:.2} ms", f(r, &["median"]), f(r, &["max"])), "-", "info", "info", Value::Null);
        let h = &b_fr["handoff_ms"];
        self.row("  hand-off under fresh-connection load, median / max", &format!("{:.2} / {:.2} ms", f(h, &["median"]), f(h, &["max"])), "-", "info", "info", Value::Null);
        self.details.insert("reloads".into(), json!({"baton": {"steady": b_steady, "keepalive": b_ka, "fresh": b_fr, "spawn_control": ctl}, "nginx": {"steady": n_steady, "keepalive": n_ka, "fresh": n_fr}}));
        drop(nginx);
        b.stop();
    }

    fn phase_leak(&mut self) {
        let n = self.a.leak_reloads;
        let mut b = self.baton(&[]);
        let mut samples = vec![json!({"gen": 0, "m": self.mem(b.main, &b.sb)})];
        log(&format!("leak: {n} reloads, one fresh-connection GET after each"));
        let (mut failed, mut probes, mut times, t0) = (0, 0, vec![], Instant::now());
        for i in 1..=n {
            match b.try_reload(Duration::from_secs(30)) {
                Ok(r) => times.push(ms(r.handoff_time())),
                Err(e) => {
                    failed += 1;
                    log(&format!("leak: reload {i} failed: {e}"));
                }
            }
            if http::get_fresh(b.sb.addr(), "/").map(|r| r.status) .unwrap_or(0) != 200 {
                probes += 1;
            }
            if i == 1 || i % (n / 10).max(1) == 0 || i == n {
                let s = json!({"gen": i, "m": self.mem(b.main, &b.sb), "processes": b.baton.live_members().len()});
                log(&format!("  after {i:5} reloads: {}, {:.0} s", s, t0.elapsed().as_secs_f64()));
                samples.push(s);
            }
        }
        let drained = b.wait_drained(Duration::from_secs(40));
        let (first, last) = (&samples[0]["m"], &samples[samples.len() - 1]["m"]);
        let (r0, r1, d0, d1) = (f(first, &["rss_kib"]), f(last, &["rss_kib"]), f(first, &["fds"]), f(last, &["fds"]));
        let gen1 = format!("gen0 {:.2} MiB -> gen1 {:.2} MiB -> gen{n} {:.2} MiB", r0 / 1024.0, f(&samples[1]["m"], &["rss_kib"]) / 1024.0, r1 / 1024.0);
        self.gate(&format!("RSS of main after {n} reloads"), &gen1, "-", &format!("{:+.1}% / <= +10%", (r1 / r0 - 1.0) * 100.0), r1 <= r0 * 1.1);
        let fds = format!("gen0 {d0} -> gen1 {} -> gen{n} {d1}", samples[1]["m"]["fds"]);
        self.gate(&format!("open fds of main after {n} reloads"), &fds, "-", &format!("{:+} / <= +3", d1 - d0), d1 <= d0 + 3.0);
        self.gate(&format!("  {n} reloads back to back: failed reloads / failed probes"), &format!("{failed} / {probes}"), "-", "0 / 0", failed == 0 && probes == 0);
        let h = stats(times);
        self.row("  hand-off without load, median / p99 / max", &format!("{:.2} / {:.2} / {:.2} ms", f(&h, &["median"]), f(&h, &["p99"]), f(&h, &["max"])), "-", "info", "info", Value::Null);
        self.gate("  only the main process left after the drains", &format!("{}", b.baton.live_members().len()), "-", "1", drained);
        self.details.insert("leak".into(), json!({"samples": samples, "handoff_ms": h, "failed": failed, "probe_failures": probes}));
        b.stop();
    }

    /// CI's smoke: reloads under keep-alive and fresh-connection clients (tests/common's load,
    /// every body checked), 300 ms apart; nothing may fail.
    fn smoke(&mut self) {
        let n = self.a.reloads;
        let mut b = self.baton(&[]);
        let load = Load::start(b.sb.addr(), 8, 4, Duration::ZERO, body_is_one_of(&[BODY]));
        load.wait_more_ok(100, Duration::from_secs(20));
        log(&format!("smoke: {n} reloads under 8 keep-alive + 4 fresh-connection clients"));
        let (mut failed, mut times) = (vec![], vec![]);
        for _ in 0..n {
            let t = Instant::now();
            match b.try_reload(Duration::from_secs(30)) {
                Ok(r) => times.push(ms(r.handoff_time())),
                Err(e) => failed.push(e),
            }
            sleep(Duration::from_millis(300).saturating_sub(t.elapsed()));
        }
        b.wait_drained(Duration::from_secs(40));
        let rep = load.stop();
        let what = format!("{} of {} req", rep.failed, num((rep.ok + rep.failed) as f64));
        self.gate(&format!("{n} reloads under load: failed requests (errors, non-2xx, wrong body)"), &what, "-", "0", rep.failed == 0 && rep.ok > 0);
        self.gate(&format!("{n} reloads: failed reloads"), &failed.len().to_string(), "-", "0", failed.is_empty());
        let h = stats(times);
        self.row("  hand-off SIGHUP -> MAINPID=, median / max", &format!("{:.2} / {:.2} ms", f(&h, &["median"]), f(&h, &["max"])), "-", "info", "info", json!({"errors": rep.errors, "failures": failed}));
        b.stop();
    }

    fn table(&self) -> String {
        let keys = ["measure", "baton", "peer", "target", "result"];
        let cell = |r: &Value, k: &str| r[k].as_str().unwrap_or("").to_string();
        let w: Vec<usize> = keys.iter().map(|k| self.rows.iter().map(|r| cell(r, k).chars().count()).max().unwrap_or(0).max(k.len())).collect();
        let line = |cells: Vec<String>| cells.iter().zip(&w).map(|(c, w)| format!("{c:w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string();
        let mut out = vec![line(keys.iter().map(|k| k.to_string()).collect()), line(w.iter().map(|w| "-".repeat(*w)).collect())];
        out.extend(self.rows.iter().map(|r| line(keys.iter().map(|k| cell(r, k)).collect())));
        out.join("\n")
    }
}

fn main() {
    // Signals go to one thread, which kills every process group the suite started, then exits.
    let set = nix::sys::signal::SigSet::from_iter([nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM, nix::sys::signal::SIGHUP]);
    set.thread_block().expect("sigmask");
    std::thread::spawn(move || {
        let sig = set.wait().map(|s| s as i32).unwrap_or(15);
        common::reaper::kill_all_groups();
        std::process::exit(128 + sig);
    });
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let allowed = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = allowed.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or("0");
    let cpus: Vec<usize> = list
        .trim()
        .split(',')
        .flat_map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            a.parse().unwrap_or(0)..=b.parse().unwrap_or(0)
        })
        .collect();
    let (server_cpus, wrk_cpus) = if a.pin && cpus.len() >= 2 { (cpus[..cpus.len() / 2].to_vec(), cpus[cpus.len() / 2..].to_vec()) } else { (vec![], vec![]) };
    let mut bench = Bench { a, rows: vec![], details: Default::default(), server_cpus, wrk_cpus };
    log(&format!("servers on CPUs {:?}, wrk on CPUs {:?} (empty: any)", bench.server_cpus, bench.wrk_cpus));
    let has = |b: &Bench, p: &str| !b.a.smoke && b.a.only.iter().any(|x| x == p);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if bench.a.smoke {
            bench.smoke();
        }
        if has(&bench, "idle") || has(&bench, "throughput") {
            bench.phase_idle_and_throughput();
        }
        if has(&bench, "reloads") {
            bench.phase_reloads();
        }
        if has(&bench, "leak") && bench.a.leak_reloads > 0 {
            bench.phase_leak();
        }
        if has(&bench, "instructions") {
            counts::instructions(&mut bench);
        }
        if has(&bench, "syscalls") {
            counts::syscalls(&mut bench);
        }
        if has(&bench, "handoff-breakdown") {
            counts::handoff_breakdown(&mut bench);
        }
    }));
    let error = outcome.err().map(|e| e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default());
    let failed = bench.rows.iter().filter(|r| r["result"] == "FAIL").count();
    println!("\nbaton bench ({}): servers on CPUs {:?}, wrk -t{} -c{} on CPUs {:?}, {} s per wrk run", if bench.a.smoke { "smoke" } else { "full" }, bench.server_cpus, bench.wrk_cpus.len().max(1), bench.a.connections, bench.wrk_cpus, bench.a.secs);
    println!("{}", bench.table());
    let doc = json!({"suite": "baton bench", "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "settings": {"smoke": bench.a.smoke, "phases": bench.a.only, "server_cpus": bench.server_cpus, "wrk_cpus": bench.wrk_cpus, "connections": bench.a.connections, "duration_s": bench.a.secs, "reloads": bench.a.reloads, "leak_reloads": bench.a.leak_reloads, "requests": bench.a.requests, "runs": bench.a.runs},
        "passed": failed == 0 && error.is_none(), "error": error, "rows": bench.rows, "details": bench.details});
    if let Some(dir) = bench.a.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&bench.a.out, serde_json::to_string_pretty(&doc).unwrap_or_default());
    println!("\nresults: {}", bench.a.out.display());
    if let Some(e) = error {
        eprintln!("bench: ERROR: {e}");
        std::process::exit(2);
    }
    if failed > 0 {
        eprintln!("bench: FAILED ({failed} rows)");
        std::process::exit(1);
    }
    println!("bench: {}", if bench.a.smoke { "smoke passed" } else { "all targets met" });
}
