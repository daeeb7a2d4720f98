//! Issue 16's measures, which do not depend on how busy the machine is: user-space instructions
//! per request (callgrind) and syscalls per request (strace -c) of baton, bare hyper and nginx,
//! each N keep-alive requests minus the same run with none; and where a successor spends its time
//! between exec and `ready` (strace timestamps of a few marker syscalls over some reloads).

use std::collections::{BTreeMap, HashMap};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{http, procs, Sandbox};
use crate::peers::{self, ms};
use crate::{log, stats, Bench};

const SERVERS: [&str; 3] = ["baton", "bare", "nginx"];

/// Starts `server` under `wrap` (valgrind or strace writing to `out`), sends `n` GETs over 4
/// keep-alive connections, stops it with SIGTERM and returns the tool's output.
fn run_under(b: &Bench, server: &str, wrap: &[&str], n: u64) -> String {
    let wrap_s: Vec<String> = wrap.iter().map(|s| s.to_string()).collect();
    let (sb, mut story, mut other) = (Sandbox::new(), None, None);
    let addr = if server == "baton" {
        let s = b.baton(wrap);
        let addr = s.sb.addr();
        story = Some(s);
        addr
    } else {
        let g = if server == "bare" { peers::bare(&sb, &b.a.bare, &[], &wrap_s) } else { peers::nginx(&sb, 0, &[], &wrap_s) };
        other = Some(g.unwrap_or_else(|e| panic!("{server}: {e}")));
        sb.addr()
    };
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let k = n / 4 + u64::from(i < n % 4);
            thread::spawn(move || {
                let mut c = http::Client::new(addr);
                for _ in 0..k {
                    let st = c.get("/").map(|r| r.status).unwrap_or(0);
                    assert_eq!(st, 200, "GET {addr}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    if let Some(s) = &mut story {
        s.stop();
    }
    if let Some(g) = &mut other {
        // the server is the wrapper itself (valgrind) or its child (strace)
        let pid = procs::children_of(g.pid).first().map_or(g.pid, |p| p.pid);
        procs::kill(pid, nix::sys::signal::Signal::SIGTERM);
        assert!(g.wait_group_gone(Duration::from_secs(60)), "{server} did not stop: {}", g.log());
    }
    let out = wrap.iter().find_map(|w| w.strip_prefix("--callgrind-out-file=")).or_else(|| wrap.iter().skip_while(|w| **w != "-o").nth(1).copied()).expect("an output file");
    std::fs::read_to_string(out).unwrap_or_else(|e| panic!("{out}: {e}"))
}

fn per_request(b: &mut Bench, what: &str, tool: &dyn Fn(&str) -> Vec<String>, parse: &dyn Fn(&str) -> BTreeMap<String, f64>) -> BTreeMap<&'static str, Vec<BTreeMap<String, f64>>> {
    let n = b.a.requests;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out: BTreeMap<&str, Vec<BTreeMap<String, f64>>> = BTreeMap::new();
    for run in 0..b.a.runs {
        for server in SERVERS {
            let counts = [0, n].map(|k| {
                let file = dir.path().join(format!("{server}-{run}-{k}")).display().to_string();
                let wrap = tool(&file);
                parse(&run_under(b, server, &wrap.iter().map(String::as_str).collect::<Vec<_>>(), k))
            });
            let per: BTreeMap<String, f64> = counts[1].iter().map(|(k, v)| (k.clone(), (*v - counts[0].get(k).copied().unwrap_or(0.0)) / n as f64)).collect();
            log(&format!("{what}: run {} {server:5}: {:.1} per request", run + 1, per.get("total").copied().unwrap_or(f64::NAN)));
            out.entry(server).or_default().push(per);
        }
    }
    out
}

/// User-space instructions per request under callgrind (three runs each: median and spread).
pub fn instructions(b: &mut Bench) {
    log(&format!("instructions: {} keep-alive GETs (4 connections) vs none, under callgrind, {} runs", b.a.requests, b.a.runs));
    let tool = |f: &str| ["valgrind", "--tool=callgrind", "--dump-instr=no", "--compress-strings=no"].iter().map(|s| s.to_string()).chain([format!("--callgrind-out-file={f}")]).collect();
    let parse = |text: &str| {
        let line = text.lines().find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")));
        BTreeMap::from([("total".to_string(), line.and_then(|l| l.split_whitespace().next()?.parse().ok()).unwrap_or(f64::NAN))])
    };
    let got = per_request(b, "instructions", &tool, &parse);
    let med = |s: &str| stats(got[s].iter().map(|m| m["total"]).collect());
    let show = |v: &Value| format!("{:.0} ({:.0}-{:.0})", v["median"].as_f64().unwrap_or(0.0), v["min"].as_f64().unwrap_or(0.0), v["max"].as_f64().unwrap_or(0.0));
    let (bt, bh, ng) = (med("baton"), med("bare"), med("nginx"));
    let x = |a: &Value, b: &Value| a["median"].as_f64().unwrap_or(0.0) / b["median"].as_f64().unwrap_or(1.0);
    let peer = format!("bare hyper {}, nginx {}", show(&bh), show(&ng));
    let ratio = format!("{:.3}x hyper, {:.3}x nginx / < 1", x(&bt, &bh), x(&bt, &ng));
    b.row("instructions per request (callgrind, median (min-max))", &show(&bt), &peer, &ratio, "info", json!({"baton": bt, "bare": bh, "nginx": ng}));
}

/// Syscalls per request under `strace -f -c`, with the most frequent ones.
pub fn syscalls(b: &mut Bench) {
    log(&format!("syscalls: {} keep-alive GETs vs none, under strace -f -c, {} runs", b.a.requests, b.a.runs));
    let tool = |f: &str| ["strace", "-f", "-c", "-o", f].iter().map(|s| s.to_string()).collect();
    let parse = |text: &str| {
        let mut m = BTreeMap::new();
        for l in text.lines() {
            let c: Vec<&str> = l.split_whitespace().collect();
            // % time, seconds, usecs/call, calls, [errors], syscall
            if c.len() >= 5 && c[0].parse::<f64>().is_ok() {
                m.insert(c[c.len() - 1].to_string(), c[3].parse().unwrap_or(0.0));
            }
        }
        m
    };
    let got = per_request(b, "syscalls", &tool, &parse);
    let mut shown = HashMap::new();
    for s in SERVERS {
        let med = |k: &str| stats(got[s].iter().map(|m| m.get(k).copied().unwrap_or(0.0)).collect())["median"].as_f64().unwrap_or(0.0);
        let mut top: Vec<(String, f64)> = got[s][0].keys().filter(|k| *k != "total").map(|k| (k.clone(), med(k))).filter(|x| x.1 >= 0.05).collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        let list: Vec<String> = top.iter().take(4).map(|(k, v)| format!("{k} {v:.2}")).collect();
        shown.insert(s, (med("total"), list.join(", ")));
    }
    let peer = format!("bare {:.2} ({}); nginx {:.2} ({})", shown["bare"].0, shown["bare"].1, shown["nginx"].0, shown["nginx"].1);
    b.row("syscalls per request (strace -f -c, median)", &format!("{:.2} ({})", shown["baton"].0, shown["baton"].1), &peer, "info", "info", json!(got));
}

/// One strace line: thread id, start time (s), and the rest.
struct Line<'a> {
    tid: i32,
    t: f64,
    text: &'a str,
}

/// Where the successor spends its time: strace timestamps of marker syscalls over some reloads
/// of a baton line started under `strace -f --seccomp-bpf` (only the markers stop the process).
pub fn handoff_breakdown(b: &mut Bench) {
    let n = 10;
    let mut s = b.baton(&[]);
    let mut plain = vec![];
    for _ in 0..20 {
        thread::sleep(Duration::from_millis(100));
        plain.push(s.try_reload(Duration::from_secs(30)).map(|r| ms(r.handoff_time())).unwrap_or(f64::NAN));
    }
    s.stop();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("strace").display().to_string();
    let trace = "trace=execve,clone,clone3,poll,openat,epoll_create1,connect,recvmsg,sendmsg,sendto,write,writev";
    let mut s = b.baton(&["strace", "-f", "-ttt", "-s", "64", "--seccomp-bpf", "-e", trace, "-e", "signal=SIGHUP", "-o", &out]);
    let mut traced = vec![];
    for _ in 0..n {
        thread::sleep(Duration::from_millis(200));
        traced.push(s.try_reload(Duration::from_secs(30)).map(|r| ms(r.handoff_time())).unwrap_or(f64::NAN));
    }
    s.stop();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let lines: Vec<Line> = text
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            Some(Line { tid: it.next()?.parse().ok()?, t: it.next()?.parse().ok()?, text: it.next()? })
        })
        .collect();
    // threads and processes: who created whom (a split call's return is on its "resumed" line)
    let mut parent: HashMap<i32, i32> = HashMap::new();
    let mut pending: HashMap<i32, bool> = HashMap::new();
    for l in &lines {
        if l.text.starts_with("clone") {
            pending.insert(l.tid, l.text.contains("CLONE_THREAD"));
        }
        if l.text.starts_with("clone") || l.text.starts_with("<... clone") {
            let ret = l.text.rsplit("= ").next().and_then(|r| r.split_whitespace().next()?.parse::<i32>().ok());
            if let (Some(r), Some(thread)) = (ret, pending.get(&l.tid)) {
                if *thread && r > 0 {
                    parent.insert(r, l.tid);
                }
            }
        }
    }
    let process = |mut tid: i32| {
        while let Some(&p) = parent.get(&tid) {
            tid = p;
        }
        tid
    };
    const MARKS: [(&str, &str, bool); 9] = [
        ("old: SIGHUP -> successor's execve", "execve(", true),
        ("execve (kernel) -> dynamic loader -> Rust std init", "poll(", true),
        ("clap, environment -> config file opened", "baton.json", true),
        ("config, logging, supervisor check -> runtime", "epoll_create1(", true),
        ("runtime start, signals, exe -> dial predecessor", "connect(", true),
        ("import: dial -> listeners received", "SCM_RIGHTS", true),
        ("import done, serving set up -> `ready` sent", "\"ready\"", true),
        ("old: `ready` -> MAINPID= sent (barrier)", "MAINPID=", false),
        ("successor: promoted -> READY=1", "READY=1", true),
    ];
    let mut steps: Vec<Vec<f64>> = vec![vec![]; MARKS.len()];
    for (k, start) in lines.iter().enumerate().filter(|(_, l)| l.text.starts_with("--- SIGHUP")) {
        let rest = &lines[k..];
        let Some(succ) = rest.iter().find(|l| l.text.starts_with("execve(")).map(|l| process(l.tid)) else { continue };
        let (mut at, mut prev) = (0, start.t);
        for (i, (_, needle, in_succ)) in MARKS.iter().enumerate() {
            let hit = rest[at..].iter().position(|l| (process(l.tid) == succ) == *in_succ && l.text.contains(needle) && !l.text.starts_with("<..."));
            let Some(j) = hit else { break };
            at += j;
            steps[i].push((rest[at].t - prev) * 1000.0);
            prev = rest[at].t;
        }
    }
    let med = |v: &Vec<f64>| stats(v.clone())["median"].as_f64().unwrap_or(f64::NAN);
    let (p, t) = (stats(plain.clone()), stats(traced.clone()));
    let summary = format!("{:.2} ms untraced, {:.2} ms traced", p["median"].as_f64().unwrap_or(0.0), t["median"].as_f64().unwrap_or(0.0));
    b.row("hand-off breakdown, SIGHUP -> MAINPID= (median)", &summary, "-", "info", "info", json!({"untraced_ms": p, "traced_ms": t}));
    let mut total = 0.0;
    for (i, (label, _, _)) in MARKS.iter().enumerate() {
        total += med(&steps[i]);
        b.row(&format!("  {label}"), &format!("{:.2} ms", med(&steps[i])), &format!("{total:.2} ms from SIGHUP"), &format!("n={}", steps[i].len()), "info", json!(steps[i]));
    }
}
