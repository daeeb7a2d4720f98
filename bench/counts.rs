//! Issue 16's measures, which do not depend on how busy the machine is: user-space instructions
//! (callgrind) and syscalls (strace -c) per request of baton, bare hyper and nginx, each N
//! keep-alive requests minus the same run with none; and where the time of a hand-off goes
//! (strace timestamps of marker syscalls over some reloads).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;

use crate::common::{http, procs, tls, Sandbox};
use crate::peers::{self, Reloadable};
use crate::{log, stats, Bench, Stats};

const SERVERS: [&str; 3] = ["baton", "bare", "nginx"];

/// nginx with a worker process per server CPU (a master and its workers, each counted), the CPU
/// budget baton's default runtime has.
const NGINX_PER_CPU: &str = "nginx-per-cpu";

/// The client of the counted runs.
#[derive(Clone, Copy, PartialEq)]
enum Client {
    /// The suite's own: 4 keep-alive connections (HTTP/1.1, or over TLS).
    Suite,
    /// ApacheBench: `ab -q -k -c 4 -n N`, its default request headers.
    Ab,
    /// nghttp2's `h2load -c4 -m10 -n N`: h2c by prior knowledge, 10 streams at a time on each of
    /// 4 connections.
    H2load,
}

thread_local! {
    /// The client of the counted runs (the suite's own unless a phase says otherwise).
    static CLIENT: std::cell::Cell<Client> = const { std::cell::Cell::new(Client::Suite) };
}
type Counts = BTreeMap<String, f64>;

/// The certificate both servers present in the TLS counts, and a client trusting it.
pub struct Tls {
    leaf: tls::Leaf,
    client: Arc<rustls::ClientConfig>,
}

impl Tls {
    pub fn new() -> Tls {
        let ca = tls::Ca::new();
        Tls {
            leaf: ca.leaf(1),
            client: ca.client_config(&[b"http/1.1"]),
        }
    }

    /// The pair installed in `sb` as `tls/cert.pem` and `tls/key.pem`.
    pub fn install(&self, sb: &Sandbox) -> (PathBuf, PathBuf) {
        let (cert, key) = (sb.path("tls/cert.pem"), sb.path("tls/key.pem"));
        std::fs::create_dir_all(sb.path("tls")).expect("tls dir");
        self.leaf.install(&cert, &key);
        (cert, key)
    }

    /// baton's configuration in `sb`: HTTPS only, with the pair installed there.
    pub fn baton_config(&self, sb: &Sandbox) -> serde_json::Value {
        let (cert, key) = self.install(sb);
        let mut c = sb.config(crate::BODY);
        c["listen"] = json!([format!("https://{}", sb.listen())]);
        (c["tls_cert"], c["tls_key"]) = (json!(cert), json!(key));
        c
    }

    /// A client configuration trusting the certificate (ALPN `http/1.1`).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }
}

/// Starts `server` under `wrap` (which writes `out`), sends `n` GETs on 4 keep-alive connections
/// (over TLS with `tls`), stops it with SIGTERM, and returns what the tool wrote.
fn run_under(
    b: &Bench,
    server: &str,
    tls: Option<&Arc<Tls>>,
    wrap: &[String],
    out: &str,
    n: u64,
) -> String {
    let (sb, cpus) = (Sandbox::new(), &b.server_cpus);
    let (mut story, mut other) = (None, None);
    let addr = match (server, tls) {
        ("baton", None) => {
            let wrap: Vec<&str> = wrap.iter().map(String::as_str).collect();
            story.insert(b.baton(&wrap)).sb.addr()
        }
        ("baton", Some(t)) => {
            let (wrap, t) = (wrap.to_vec(), t.clone());
            let config = move |sb: &Sandbox| t.baton_config(sb);
            let wrap: Vec<&str> = wrap.iter().map(String::as_str).collect();
            story.insert(b.baton_with(&wrap, config)).sb.addr()
        }
        ("bare", _) => {
            other = Some(peers::bare(&sb, &b.a.bare, cpus, wrap));
            sb.addr()
        }
        (NGINX_PER_CPU, None) => {
            other = Some(peers::nginx(&sb, cpus.len(), cpus, wrap));
            sb.addr()
        }
        (_, None) => {
            other = Some(peers::nginx(&sb, 0, cpus, wrap));
            sb.addr()
        }
        (_, Some(t)) => {
            let (cert, key) = t.install(&sb);
            other = Some(peers::nginx_tls(&sb, (&cert, &key), cpus, wrap));
            sb.addr()
        }
    };
    let client = CLIENT.get();
    if client != Client::Suite {
        let (url, n_arg) = (format!("http://{addr}/"), n.to_string());
        if n > 0 && client == Client::H2load {
            let args = ["-c4", "-m10", "-n", &n_arg, &url];
            let text = external_client(b, "h2load", &args, "nghttp2-client");
            let want =
                format!("requests: {n} total, {n} started, {n} done, {n} succeeded, 0 failed");
            assert!(
                text.lines().any(|l| l.starts_with(&want)),
                "{server}: h2load did not get {n} answers:\n{text}"
            );
        }
        if n > 0 && client == Client::Ab {
            let args = ["-q", "-k", "-c", "4", "-n", &n_arg, &url];
            let text = external_client(b, "ab", &args, "apache2-utils");
            let field = |k: &str| {
                let line = text.lines().find(|l| l.starts_with(k));
                line.and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            };
            assert!(
                field("Failed requests:") == Some(0)
                    && field("Complete requests:") == Some(n)
                    && field("Keep-Alive requests:") == Some(n),
                "{server}: ab did not get {n} keep-alive answers:\n{text}"
            );
        }
        return stop_and_read(server, story, other, out, wrap);
    }
    let per_conn = move |i: u64| n / 4 + u64::from(i < n % 4);
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let tls = tls.map(|t| t.client.clone());
            thread::spawn(move || match tls {
                None => {
                    let mut c = http::Client::new(addr);
                    (0..per_conn(i)).all(|_| c.get("/").is_ok_and(|r| r.status == 200))
                }
                Some(config) => {
                    let mut c = tls::TlsClient::new(addr, config);
                    let ok = (0..per_conn(i)).all(|_| c.get("/").is_ok_and(|r| r.status == 200));
                    ok && c.connects <= 1
                }
            })
        })
        .collect();
    let ok = clients.into_iter().all(|c| c.join().unwrap_or(false));
    assert!(
        ok,
        "{server}: a request failed (or a connection was not kept alive)"
    );
    stop_and_read(server, story, other, out, wrap)
}

/// Runs `program` with `args` on the load CPUs until it exits; its standard output.
fn external_client(b: &Bench, program: &str, args: &[&str], package: &str) -> String {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    let out = crate::common::reaper::output(&mut peers::pinned(cmd, &b.wrk_cpus))
        .unwrap_or_else(|e| panic!("run {program} (Debian package {package}): {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops the server (SIGTERM) and returns what its tool wrote to `out` (or, a file per process,
/// to `out.PID`: all of them, one after the other).
fn stop_and_read(
    server: &str,
    mut story: Option<crate::common::Story>,
    mut other: Option<crate::common::Baton>,
    out: &str,
    wrap: &[String],
) -> String {
    if let Some(s) = &mut story {
        s.stop();
    }
    let traced_child = wrap.first().is_some_and(|w| w == "strace");
    if let Some(g) = &mut other {
        // The server is the wrapper itself (valgrind; an nginx master's children are its
        // workers) or the wrapper's child (strace). SIGTERM again
        // every second: a SIGTERM that comes after nginx installed its handler but before its
        // event loop first waits only sets a flag that loop reads after its next event, and in
        // a run without requests none comes (under valgrind that window is long; it stopped a
        // whole bench run on 2026-12-06).
        let gone = (0..180).any(|_| {
            let child = procs::children_of(g.pid).first().map(|p| p.pid);
            let pid = child.filter(|_| traced_child).unwrap_or(g.pid);
            procs::kill(pid, Signal::SIGTERM);
            g.wait_group_gone(Duration::from_secs(1))
        });
        assert!(gone, "{server} did not stop within 180 s of SIGTERM");
    }
    if let Ok(text) = std::fs::read_to_string(out) {
        return text;
    }
    let files = per_process(out);
    assert!(
        !files.is_empty(),
        "{server}: neither {out} nor {out}.PID was written"
    );
    let text: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect();
    text.concat()
}

/// The files `out.PID` a tool wrote, a file per process, in order.
fn per_process(out: &str) -> Vec<PathBuf> {
    let path = std::path::Path::new(out);
    let (dir, name) = (path.parent().expect("a directory"), path.file_name());
    let prefix = format!("{}.", name.expect("a file name").to_string_lossy());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect();
    files.sort();
    files
}

/// Each of `servers` under `tool` ({out}: its output file), `--requests` GETs minus `base`
/// (0, or with TLS a tenth, which takes the 4 handshakes out), per request, `--runs` times;
/// `parse` reads the tool's counts ("total" and any others).
fn per_request(
    b: &Bench,
    what: &str,
    (servers, tls): (&[&'static str], Option<&Arc<Tls>>),
    tool: &[&str],
    parse: fn(&str) -> Counts,
) -> BTreeMap<&'static str, Vec<Counts>> {
    // kept beside results.json, e.g. for callgrind_annotate
    let (n, dir) = (b.a.requests, b.a.out.with_file_name("counts"));
    let base = if tls.is_some() { n / 10 } else { 0 };
    std::fs::create_dir_all(&dir).expect("counts dir");
    let mut got: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for run in 1..=b.a.runs {
        for &server in servers {
            let [none, all] = [base, n].map(|k| {
                let out = dir.join(format!("{what}-{server}-{run}-{k}"));
                let out = out.display().to_string();
                let wrap: Vec<String> = if server == NGINX_PER_CPU {
                    // a file per process: the master's and each worker's (none left from an
                    // earlier run)
                    for stale in per_process(&out) {
                        std::fs::remove_file(&stale).expect("remove an earlier run's file");
                    }
                    let each = format!("{out}.%p");
                    let tool = tool.iter().map(|t| t.replace("{out}", &each));
                    tool.chain(["--trace-children=yes".to_owned()]).collect()
                } else {
                    tool.iter().map(|t| t.replace("{out}", &out)).collect()
                };
                parse(&run_under(b, server, tls, &wrap, &out, k))
            });
            let per = |(k, v): (&String, &f64)| {
                (
                    k.clone(),
                    (v - none.get(k).unwrap_or(&0.0)) / (n - base) as f64,
                )
            };
            let per: Counts = all.iter().map(per).collect();
            let total = per.get("total").copied().unwrap_or(f64::NAN);
            log(&format!(
                "{what}: run {run} {server:5}: {total:.2} per request"
            ));
            got.entry(server).or_default().push(per);
        }
    }
    got
}

/// callgrind's total `Ir` (of every process, when `text` holds several of its files).
fn callgrind_total(text: &str) -> Counts {
    let each = text
        .split("# callgrind format")
        .filter(|f| !f.trim().is_empty());
    let total = each
        .map(|file| {
            let total = file
                .lines()
                .find_map(|l| l.strip_prefix("summary:").or(l.strip_prefix("totals:")));
            total
                .and_then(|t| t.trim().parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        })
        .fold(None, |sum: Option<f64>, t| Some(sum.unwrap_or(0.0) + t))
        .unwrap_or(f64::NAN);
    BTreeMap::from([("total".into(), total)])
}

const CALLGRIND: [&str; 3] = ["valgrind", "--tool=callgrind", "--callgrind-out-file={out}"];

/// User-space instructions per keep-alive request over TLS (HTTP/1.1, the same ECDSA P-256
/// certificate, the client's TLS 1.3 offer): baton and nginx, N requests minus N/10 on the same
/// 4 connections (the handshakes cancel out).
pub fn tls_instructions(b: &mut Bench) {
    let (n, runs) = (b.a.requests, b.a.runs);
    log(&format!(
        "tls-instructions: {n} minus {} keep-alive GETs over TLS on 4 connections, callgrind, {runs} runs",
        n / 10
    ));
    let t = Arc::new(Tls::new());
    let servers = (&["baton", "nginx"][..], Some(&t));
    let got = per_request(b, "tls-instructions", servers, &CALLGRIND, callgrind_total);
    let s = |k: &str| stats(got[k].iter().map(|m| m["total"]).collect());
    let (bt, ng) = (s("baton"), s("nginx"));
    let show = |s: &Stats| format!("{:.0} ({:.0}-{:.0})", s.median, s.min, s.max);
    let x = format!("{:.3}x nginx", bt.median / ng.median);
    let m = "user-space instructions per request over TLS, median (min-max)";
    b.row(m, &show(&bt), &format!("nginx {}", show(&ng)), &x, None);
    b.details
        .insert("tls_instructions_per_request".into(), json!(got));
}

/// Issue 25's counts: user-space instructions per keep-alive request with ApacheBench as the
/// client (`ab -q -k -c 4 -n N`), every server pinned to the server CPUs (baton and bare hyper on
/// the current-thread runtime when that is one CPU); the same unpinned (both on the
/// multi-thread runtime, a worker per CPU; nginx one worker process, as the issue measured, and
/// a worker process per CPU, the same CPU budget); and unpinned with one thread each
/// (`BATON_THREADS=1` for baton and bare hyper: their current-thread runtime, as nginx's one
/// worker), the same CPU budget as nginx's.
pub fn instructions_ab(b: &mut Bench) {
    let (n, runs) = (b.a.requests, b.a.runs);
    CLIENT.set(Client::Ab);
    let one_thread: Vec<&str> = ["env", "BATON_THREADS=1"]
        .into_iter()
        .chain(CALLGRIND)
        .collect();
    let with_per_cpu = [SERVERS[0], SERVERS[1], SERVERS[2], NGINX_PER_CPU];
    let variants: [(&str, &str, &[&str], &[&'static str]); 3] = [
        (
            "ab-pinned",
            "instructions per request, ab -k, servers on the server CPUs",
            &CALLGRIND,
            &SERVERS,
        ),
        (
            "ab-unpinned",
            "instructions per request, ab -k, unpinned",
            &CALLGRIND,
            &with_per_cpu,
        ),
        (
            "ab-unpinned-one-thread",
            "instructions per request, ab -k, unpinned, one thread each",
            &one_thread,
            &SERVERS,
        ),
    ];
    for (what, measure, tool, servers) in variants {
        let pinned = what == "ab-pinned";
        // unpinned: every CPU (the suite itself keeps to the client CPUs, and what it starts
        // would inherit that)
        let all: Vec<usize> = b.server_cpus.iter().chain(&b.wrk_cpus).copied().collect();
        let saved = (!pinned).then(|| std::mem::replace(&mut b.server_cpus, all));
        log(&format!(
            "instructions ({what}): ab -q -k -c 4 -n {n} minus none, callgrind, {runs} runs"
        ));
        let got = per_request(b, what, (servers, None), tool, callgrind_total);
        if let Some(cpus) = saved {
            b.server_cpus = cpus;
        }
        let s = |k: &str| stats(got[k].iter().map(|m| m["total"]).collect());
        let (bt, bh, ng) = (s("baton"), s("bare"), s("nginx"));
        let show = |s: &Stats| format!("{:.0} ({:.0}-{:.0})", s.median, s.min, s.max);
        let (xh, xn) = (bt.median / bh.median, bt.median / ng.median);
        let (mut peer, mut x) = (
            format!("bare hyper {}, nginx {}", show(&bh), show(&ng)),
            format!("{xh:.3}x hyper, {xn:.3}x nginx"),
        );
        if got.contains_key(NGINX_PER_CPU) {
            let np = s(NGINX_PER_CPU);
            peer += &format!(", nginx with a worker per CPU {}", show(&np));
            x += &format!(" ({:.3}x with a worker per CPU)", bt.median / np.median);
        }
        x += " / < 1x both";
        b.row(measure, &show(&bt), &peer, &x, Some(xh < 1.0 && xn < 1.0));
        b.details
            .insert(format!("instructions_per_request_{what}"), json!(got));
    }
    CLIENT.set(Client::Suite);
}

/// callgrind's total `Ir` less what hpack's header encoding (`HeaderBlock::into_encoding` and
/// all it calls) cost, read with `callgrind_annotate --inclusive=yes`. Under valgrind that
/// cost grows with the run's wall time (the `date` header changes every second and goes into
/// hpack's dynamic table), which is not the server's doing; bare hyper runs the same code.
fn callgrind_total_without_hpack(text: &str) -> Counts {
    let mut counts = callgrind_total(text);
    let mut cmd = std::process::Command::new("callgrind_annotate");
    cmd.args(["--inclusive=yes", "--threshold=100", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("run callgrind_annotate (Debian package valgrind)");
    let mut stdin = child.stdin.take().expect("callgrind_annotate's stdin");
    let input = text.to_owned();
    let feed = thread::spawn(move || std::io::Write::write_all(&mut stdin, input.as_bytes()));
    let out = child
        .wait_with_output()
        .expect("callgrind_annotate's output");
    let _ = feed.join();
    let annotated = String::from_utf8_lossy(&out.stdout);
    let hpack = annotated
        .lines()
        .find(|l| l.contains("HeaderBlock::into_encoding"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.replace(',', "").parse::<f64>().ok());
    // (None in the run without requests: nothing was encoded.)
    let hpack = hpack.unwrap_or(0.0);
    if let Some(total) = counts.get_mut("total") {
        *total -= hpack;
    }
    counts.insert("hpack_encoding".into(), hpack);
    counts
}

/// Issue 25's HTTP/2 count: user-space instructions per h2c request (`h2load -c4 -m10 -n N`),
/// baton and bare hyper on the server CPUs (the same runtime), hpack's encoding left out. nginx
/// is not compared: its HTTP/2 cost is mostly in the kernel (see the server CPU row of the h2
/// phase).
pub fn h2_instructions(b: &mut Bench) {
    let (n, runs) = (b.a.requests, b.a.runs);
    CLIENT.set(Client::H2load);
    log(&format!(
        "h2-instructions: h2load -c4 -m10 -n {n} minus none, callgrind without hpack's encoding, {runs} runs"
    ));
    let servers = (&["baton", "bare"][..], None);
    let got = per_request(
        b,
        "h2-instructions",
        servers,
        &CALLGRIND,
        callgrind_total_without_hpack,
    );
    CLIENT.set(Client::Suite);
    let encoded = |k: &str| got[k].iter().all(|m| m["hpack_encoding"] > 0.0);
    assert!(
        encoded("baton") && encoded("bare"),
        "callgrind_annotate found no HeaderBlock::into_encoding in a run with requests"
    );
    let s = |k: &str| stats(got[k].iter().map(|m| m["total"]).collect());
    let (bt, bh) = (s("baton"), s("bare"));
    let show = |s: &Stats| format!("{:.0} ({:.0}-{:.0})", s.median, s.min, s.max);
    let xh = bt.median / bh.median;
    b.row(
        "HTTP/2 (h2c) instructions per request, h2load -c4 -m10, hpack encoding left out",
        &show(&bt),
        &format!("bare hyper, same runtime {}", show(&bh)),
        &format!("{xh:.3}x hyper / < 1x"),
        Some(xh < 1.0),
    );
    b.details
        .insert("h2_instructions_per_request".into(), json!(got));
}

/// User-space instructions per request under callgrind: median and spread of the runs, ratios.
pub fn instructions(b: &mut Bench) {
    let (n, runs) = (b.a.requests, b.a.runs);
    log(&format!(
        "instructions: {n} keep-alive GETs on 4 connections minus none, callgrind, {runs} runs"
    ));
    let got = per_request(
        b,
        "instructions",
        (&SERVERS, None),
        &CALLGRIND,
        callgrind_total,
    );
    let s = |k: &str| stats(got[k].iter().map(|m| m["total"]).collect());
    let (bt, bh, ng) = (s("baton"), s("bare"), s("nginx"));
    let show = |s: &Stats| format!("{:.0} ({:.0}-{:.0})", s.median, s.min, s.max);
    let peer = format!("bare hyper {}, nginx {}", show(&bh), show(&ng));
    let (xh, xn) = (bt.median / bh.median, bt.median / ng.median);
    let x = format!("{xh:.3}x hyper, {xn:.3}x nginx / < 1x both");
    let m = "user-space instructions per request, median (min-max)";
    b.row(m, &show(&bt), &peer, &x, Some(xh < 1.0 && xn < 1.0));
    b.details
        .insert("instructions_per_request".into(), json!(got));
}

/// Syscalls per request under `strace -f -c`, and the most frequent ones.
pub fn syscalls(b: &mut Bench) {
    let (n, runs) = (b.a.requests, b.a.runs);
    log(&format!(
        "syscalls: {n} keep-alive GETs on 4 connections minus none, strace -f -c, {runs} runs"
    ));
    let got = per_request(
        b,
        "syscalls",
        (&SERVERS, None),
        &["strace", "-f", "-c", "-o", "{out}"],
        |text| {
            // % time, seconds, usecs/call, calls, [errors,] syscall
            let rows = text
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>());
            let rows = rows.filter(|c| c.len() >= 5 && c[0].parse::<f64>().is_ok());
            rows.map(|c| (c[c.len() - 1].to_string(), c[3].parse().unwrap_or(0.0)))
                .collect()
        },
    );
    let show = |s: &str| {
        let med = |k: &str| {
            stats(
                got[s]
                    .iter()
                    .map(|m| m.get(k).copied().unwrap_or(0.0))
                    .collect(),
            )
            .median
        };
        let mut top: Vec<(f64, &String)> = got[s][0].keys().map(|k| (med(k), k)).collect();
        top.sort_by(|a, b| b.0.total_cmp(&a.0));
        let top: Vec<String> = top
            .iter()
            .skip(1)
            .filter(|(v, _)| *v >= 0.005)
            .take(4)
            .map(|(v, k)| format!("{k} {v:.2}"))
            .collect();
        format!("{:.2} ({})", med("total"), top.join(", "))
    };
    let peer = format!("bare {}; nginx {}", show("bare"), show("nginx"));
    let m = "syscalls per request (strace -f -c), median";
    b.row(m, &show("baton"), &peer, "info", None);
    b.details.insert("syscalls_per_request".into(), json!(got));
}

/// Where the time of a hand-off goes: a baton line under `strace -f --seccomp-bpf` (only the
/// marker syscalls stop it), reloaded 10 times; the median time between consecutive markers.
/// The untraced hand-off time of 20 reloads is shown beside it.
pub fn handoff_breakdown(b: &mut Bench) {
    let mut s = b.baton(&[]);
    let plain = (0..20).map(|_| {
        thread::sleep(Duration::from_millis(100));
        Reloadable::reload(&mut s).map_or(f64::NAN, |r| r[0])
    });
    let plain = stats(plain.collect());
    s.stop();
    // kept beside results.json for a closer look
    let out =
        b.a.out
            .with_file_name("handoff.strace")
            .display()
            .to_string();
    let trace = "trace=execve,clone,clone3,poll,openat,epoll_create1,connect,sendmsg,sendto,write";
    let wrap = [
        "strace",
        "-f",
        "-ttt",
        "-s",
        "64",
        "--seccomp-bpf",
        "-e",
        trace,
        "-o",
        &out,
    ];
    let mut s = b.baton(&[&wrap[..], &["-e", "signal=SIGHUP"]].concat());
    let traced = (0..10).map(|_| {
        thread::sleep(Duration::from_millis(200));
        Reloadable::reload(&mut s).map_or(f64::NAN, |r| r[0])
    });
    let traced = stats(traced.collect());
    s.stop();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    // "TID  SECONDS.MICROS text"
    let lines: Vec<(i32, f64, &str)> = (text.lines())
        .filter_map(|l| {
            let (tid, rest) = l.split_once(' ')?;
            let (t, text) = rest.trim_start().split_once(' ')?;
            Some((tid.parse().ok()?, t.parse().ok()?, text))
        })
        .collect();
    // threads belong to the process that cloned them (a split call returns on its resumed line)
    let (mut parent, mut thread_clone) = (HashMap::new(), HashMap::new());
    for &(tid, _, text) in &lines {
        if text.starts_with("clone") {
            thread_clone.insert(tid, text.contains("CLONE_THREAD"));
        }
        let ret = text
            .rsplit("= ")
            .next()
            .and_then(|r| r.split_whitespace().next()?.parse::<i32>().ok());
        if let (true, Some(r), Some(true)) = (text.contains("clone"), ret, thread_clone.get(&tid)) {
            parent.insert(r, tid);
        }
    }
    let process = |mut tid: i32| {
        while let Some(&p) = parent.get(&tid) {
            tid = p;
        }
        tid
    };
    // (step, marker, in the successor?)
    const MARKS: [(&str, &str, bool); 9] = [
        (
            "old: SIGHUP -> RELOADING=1, hand-off socket -> spawn (vfork)",
            "|SIGCHLD",
            false,
        ),
        ("vfork -> successor's execve", "execve(", true),
        (
            "execve, dynamic loader, libc, Rust std init",
            "poll([{fd=0",
            true,
        ),
        (
            "clap, environment -> config file opened",
            "baton.json",
            true,
        ),
        (
            "config, logging, cgroup quota -> runtime's epoll",
            "epoll_create1(",
            true,
        ),
        (
            "runtime start (threads), signals, exe -> dial",
            "connect(",
            true,
        ),
        (
            "import: get_listener, offer -> `ready` sent",
            r#"\"ready\""#,
            true,
        ),
        ("old: `ready` -> MAINPID= sent", "MAINPID=", false),
        (
            "old: barrier, `promoted` -> successor's READY=1",
            "READY=1",
            true,
        ),
    ];
    let mut steps = vec![vec![]; MARKS.len()];
    for (k, &(_, t0, _)) in lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.2.starts_with("--- SIGHUP"))
    {
        let rest = &lines[k..];
        let Some(succ) = rest
            .iter()
            .find(|l| l.2.starts_with("execve("))
            .map(|l| process(l.0))
        else {
            continue;
        };
        let (mut at, mut prev) = (0, t0);
        for (i, &(_, needle, in_succ)) in MARKS.iter().enumerate() {
            let hit =
                |l: &(i32, f64, &str)| (process(l.0) == succ) == in_succ && l.2.contains(needle);
            let Some(j) = rest[at..]
                .iter()
                .position(|l| hit(l) && !l.2.starts_with("<..."))
            else {
                break;
            };
            at += j;
            steps[i].push((rest[at].1 - prev) * 1000.0);
            prev = rest[at].1;
        }
    }
    let v = format!(
        "{:.2} ms untraced, {:.2} ms traced",
        plain.median, traced.median
    );
    let m = "hand-off breakdown: SIGHUP -> MAINPID=, median";
    b.info(m, &v);
    let times = json!({"untraced_ms": plain, "traced_ms": traced, "steps_ms": steps});
    b.details.insert("handoff_breakdown".into(), times);
    let mut total = 0.0;
    for (i, (label, _, _)) in MARKS.iter().enumerate() {
        let step = stats(steps[i].clone()).median;
        total += step;
        let (v, p, n) = (
            format!("{step:.2} ms"),
            format!("{total:.2} ms from SIGHUP"),
            steps[i].len(),
        );
        b.row(&format!("  {label}"), &v, &p, &format!("n={n}"), None);
    }
}
