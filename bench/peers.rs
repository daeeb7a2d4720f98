//! What the suite runs besides baton: bare hyper, nginx, wrk, `/bin/true`; CPU pinning and the
//! gauge of what the rest of the machine did meanwhile.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::common::{procs, reaper, try_wait_until, Baton, Sandbox, Story};

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: c < CPU_SETSIZE: it came from the allowed list.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// Restricts this process (and the threads it starts from now on) to `cpus` (none: any).
pub fn pin_self(cpus: &[usize]) {
    let set = cpu_set(cpus);
    if !cpus.is_empty() {
        // SAFETY: a valid cpu_set_t of the size given.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    }
}

/// `cmd` restricted to `cpus` (inherited by baton's successors and nginx's workers; none: any),
/// with the signal mask cleared (the suite blocks the signals it waits for in its own threads).
pub fn pinned(mut cmd: Command, cpus: &[usize]) -> Command {
    let (set, pin) = (cpu_set(cpus), !cpus.is_empty());
    // SAFETY: only async-signal-safe calls (sigprocmask, sched_setaffinity) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            match pin && libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                true => Err(std::io::Error::last_os_error()),
                false => Ok(()),
            }
        });
    }
    cmd
}

/// Spawns `argv` (under `wrap`, if any) in the sandbox, and waits until something listens on its
/// port (without connecting: a probe would be a request).
fn serve(sb: &Sandbox, wrap: &[String], argv: &[&str], cpus: &[usize]) -> Baton {
    let argv: Vec<&str> = wrap
        .iter()
        .map(String::as_str)
        .chain(argv.iter().copied())
        .collect();
    let mut cmd = sb.command(argv[0]);
    cmd.args(&argv[1..]);
    let mut b = sb.spawn(pinned(cmd, cpus));
    let listening = try_wait_until(Duration::from_secs(60), || {
        let gone = b.try_exit().is_some();
        (gone || !procs::listening_inodes_on_port(sb.port).is_empty()).then_some(!gone)
    });
    assert!(
        listening == Some(true),
        "{argv:?} does not listen:\n{}",
        b.log()
    );
    b
}

/// `tests/programs/bare_hyper` on the sandbox's port.
pub fn bare(sb: &Sandbox, exe: &Path, cpus: &[usize], wrap: &[String]) -> Baton {
    serve(sb, wrap, &[&exe.display().to_string(), &sb.listen()], cpus)
}

/// nginx from a private prefix in the sandbox: `return 200 "Hello, world!"`, no access log,
/// unlimited keep-alive; `workers` worker processes, or with 0 none (`master_process off`: one
/// process serves, so callgrind and strace see all of it).
pub fn nginx(sb: &Sandbox, workers: usize, cpus: &[usize], wrap: &[String]) -> Baton {
    nginx_listening(sb, workers, cpus, wrap, "", "")
}

/// [`nginx`] over TLS with the certificate and key at `cert` and `key` (nginx's defaults
/// otherwise: TLS 1.2 and 1.3).
pub fn nginx_tls(
    sb: &Sandbox,
    (cert, key): (&Path, &Path),
    cpus: &[usize],
    wrap: &[String],
) -> Baton {
    let files = format!(
        "ssl_certificate {}; ssl_certificate_key {};",
        cert.display(),
        key.display()
    );
    nginx_listening(sb, 0, cpus, wrap, " ssl", &files)
}

/// [`nginx`] speaking HTTP/2 without TLS (h2c, prior knowledge: `listen … http2`).
pub fn nginx_h2(sb: &Sandbox, workers: usize, cpus: &[usize]) -> Baton {
    nginx_listening(sb, workers, cpus, &[], " http2", "")
}

fn nginx_listening(
    sb: &Sandbox,
    workers: usize,
    cpus: &[usize],
    wrap: &[String],
    listen_flags: &str,
    server: &str,
) -> Baton {
    let d = sb.path("nginx").display().to_string();
    std::fs::create_dir_all(&d).expect("nginx dir");
    let (n, single, listen) = (
        workers.max(1),
        ["", "master_process off;"][usize::from(workers == 0)],
        sb.listen(),
    );
    let temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .map(|t| format!("{t}_temp_path {d}/{t};"));
    let temp = temp.join(" ");
    // Started as root, nginx's workers drop to `nobody`: under a tool (callgrind) they could
    // not write what it writes beside the master's, so there they keep root.
    let wrapped_as_root = !wrap.is_empty() && nix::unistd::geteuid().is_root();
    let user = ["", "user root;"][usize::from(wrapped_as_root)];
    let conf = format!(
        "worker_processes {n}; {single} {user} pid {d}/nginx.pid; error_log {d}/error.log warn;
worker_rlimit_nofile 20000; events {{ worker_connections 16384; }}
http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 75s; {temp}
  server {{ listen {listen}{listen_flags}; {server} location / {{ default_type text/plain; return 200 \"Hello, world!\"; }} }} }}\n"
    );
    std::fs::write(format!("{d}/nginx.conf"), conf).expect("nginx.conf");
    let (prefix, conf) = (format!("{d}/"), format!("{d}/nginx.conf"));
    let argv = [
        "nginx",
        "-p",
        &prefix,
        "-e",
        "/dev/stderr",
        "-c",
        &conf,
        "-g",
        "daemon off;",
    ];
    serve(sb, wrap, &argv, cpus)
}

/// nginx's worker processes, serving or (`shutting down`) draining.
pub fn nginx_workers(master: i32, draining: bool) -> Vec<i32> {
    let title = |p: i32| procs::cmdline(p).join(" ");
    let kids = procs::children_of(master).into_iter().map(|p| p.pid);
    kids.filter(|&p| {
        title(p).contains("worker process") && title(p).contains("shutting") == draining
    })
    .collect()
}

/// User + system CPU seconds of a process group's live members.
pub fn group_cpu(pgid: i32) -> f64 {
    let members = procs::group_members(pgid);
    let ticks: u64 = members
        .iter()
        .filter_map(|p| procs::stat_times(p.pid))
        .map(|t| t[0] + t[1])
        .sum();
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// A server the storms reload: [ms until the new generation runs, ms until the reload is done].
pub trait Reloadable {
    fn reload(&mut self) -> Result<[f64; 2], String>;
    /// Every old generation has finished draining.
    fn drained(&mut self) -> bool;
}

impl Reloadable for Story {
    /// The way systemd reloads: SIGHUP, `MAINPID=` (the hand-off time), the successor's `READY=1`.
    fn reload(&mut self) -> Result<[f64; 2], String> {
        let r = self.try_reload(Duration::from_secs(30))?;
        Ok([
            ms(r.handoff_time()),
            ms(r.ready.at.duration_since(r.sighup_at)),
        ])
    }

    fn drained(&mut self) -> bool {
        self.wait_drained(Duration::ZERO)
    }
}

/// nginx's master: SIGHUP, until a new worker runs, until every old one was told to quit. Its
/// master sleeps 100 ms between the two and takes no signal meanwhile, so the next reload waits
/// for the second, as baton's waits for `READY=1`.
pub struct NginxMaster(pub i32);

impl Reloadable for NginxMaster {
    fn reload(&mut self) -> Result<[f64; 2], String> {
        let master = self.0;
        let before: Vec<i32> = procs::children_of(master).iter().map(|p| p.pid).collect();
        let old = nginx_workers(master, false);
        let t0 = Instant::now();
        procs::kill(master, Signal::SIGHUP);
        let wait = |done: &dyn Fn(&[i32]) -> bool| {
            let f = || done(&nginx_workers(master, false)).then(|| ms(t0.elapsed()));
            try_wait_until(Duration::from_secs(10), f).ok_or("nginx did not reload within 10 s")
        };
        let new = wait(&|w| w.iter().any(|p| !before.contains(p)))?;
        Ok([new, wait(&|w| !old.iter().any(|p| w.contains(p)))?])
    }

    fn drained(&mut self) -> bool {
        nginx_workers(self.0, true).is_empty()
    }
}

/// The spawn-only control: `/bin/true` started on the server CPUs and awaited, no reload.
pub struct Control(pub Vec<usize>);

impl Reloadable for Control {
    fn reload(&mut self) -> Result<[f64; 2], String> {
        let t0 = Instant::now();
        // registered, so that the orphan reaper leaves its exit status to us
        let child = reaper::spawn_registered(&mut pinned(Command::new("/bin/true"), &self.0));
        let st = child.and_then(|mut c| (c.wait(), reaper::forget_leader(c.id() as i32)).0);
        let t = ms(t0.elapsed());
        st.ok()
            .filter(|s| s.success())
            .map(|_| [t, t])
            .ok_or("/bin/true failed".into())
    }

    fn drained(&mut self) -> bool {
        true
    }
}

/// What bench/report.lua prints (`BENCH_JSON {...}`), plus what the suite adds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WrkReport {
    pub duration_us: f64,
    pub requests: f64,
    pub errors: HashMap<String, f64>,
    pub non2xx: f64,
    pub latency_us: HashMap<String, f64>,
    /// connect + read + write + timeout errors.
    #[serde(default)]
    pub socket_errors: f64,
    /// Foreign CPUs during the run ([`Noise`]).
    #[serde(default)]
    pub noise_cpus: f64,
}

impl WrkReport {
    pub fn rps(&self) -> f64 {
        self.requests * 1e6 / self.duration_us
    }

    pub fn p99(&self) -> f64 {
        self.latency_us.get("p99").copied().unwrap_or(f64::NAN) / 1000.0
    }
}

/// One wrk process with bench/report.lua: duration-bound, or open-ended until [`Wrk::stop`].
pub struct Wrk(Child);

impl Wrk {
    pub fn start(
        port: u16,
        secs: u64,
        [t, c]: [usize; 2],
        fresh: bool,
        count: bool,
        cpus: &[usize],
    ) -> Wrk {
        let lua = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/report.lua");
        let mut cmd = Command::new("wrk");
        cmd.args([format!("-t{t}"), format!("-c{c}"), format!("-d{secs}s")]);
        cmd.args(["--timeout", "2s", "-s", lua])
            .env("BENCH_COUNT_STATUS", ["0", "1"][usize::from(count)]);
        if fresh {
            cmd.args(["-H", "Connection: close"]);
        }
        cmd.arg(format!("http://127.0.0.1:{port}/"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut cmd = pinned(cmd, cpus);
        Wrk(reaper::spawn_registered(cmd.process_group(0)).expect("start wrk"))
    }

    /// SIGINT (on which wrk prints its report), and the report.
    pub fn stop(self) -> WrkReport {
        procs::kill(self.0.id() as i32, Signal::SIGINT);
        self.wait()
    }

    pub fn wait(mut self) -> WrkReport {
        let mut out = String::new();
        let _ = self.0.stdout.take().map(|mut o| o.read_to_string(&mut out));
        let line = out.lines().find_map(|l| l.strip_prefix("BENCH_JSON "));
        let r: Option<WrkReport> = line.and_then(|l| serde_json::from_str(l).ok());
        let mut r = r.unwrap_or_else(|| panic!("wrk gave no report:\n{out}"));
        r.socket_errors = ["connect", "read", "write", "timeout"]
            .iter()
            .map(|k| r.errors[*k])
            .sum();
        r
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        reaper::forget_leader(self.0.id() as i32);
    }
}

/// CPU time the rest of the machine used meanwhile, in CPUs (1.0 = one whole CPU): user, nice,
/// system and steal time of /proc/stat (not interrupts: they mostly carry our own traffic) minus
/// the user + system time of this process and everything below it.
pub struct Noise(f64, Instant);

impl Noise {
    fn used() -> f64 {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<f64> = stat
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        let all = f[0] + f[1] + f[2] + f.get(7).unwrap_or(&0.0);
        let mut ours = vec![std::process::id() as i32];
        let every = procs::all_processes();
        let mut i = 0;
        while i < ours.len() {
            let parent = ours[i];
            ours.extend(every.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
            i += 1;
        }
        let ticks: u64 = ours
            .iter()
            .filter_map(|&p| procs::stat_times(p))
            .map(|t| t.iter().sum::<u64>())
            .sum();
        all - ticks as f64
    }

    pub fn start() -> Noise {
        Noise(Noise::used(), Instant::now())
    }

    pub fn since(&self) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        ((Noise::used() - self.0) / tck / self.1.elapsed().as_secs_f64()).max(0.0)
    }
}
