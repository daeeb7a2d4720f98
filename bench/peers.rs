//! What the suite runs besides baton: bare hyper, nginx, wrk, `/bin/true`; CPU pinning and the
//! gauge of what the rest of the machine did meanwhile.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{procs, reaper, try_wait_until, Baton, Sandbox};

/// `cmd` restricted to `cpus` (inherited by baton's successors and nginx's workers; none: any),
/// with the signal mask cleared (the suite blocks the signals it waits for in its own threads).
pub fn pinned(mut cmd: Command, cpus: &[usize]) -> Command {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it (c < CPU_SETSIZE:
    // it came from the allowed list).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    let pin = !cpus.is_empty();
    // SAFETY: only async-signal-safe calls (sigemptyset, sigprocmask, sched_setaffinity)
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            let size = std::mem::size_of::<libc::cpu_set_t>();
            match pin && libc::sched_setaffinity(0, size, &set) != 0 {
                true => Err(std::io::Error::last_os_error()),
                false => Ok(()),
            }
        });
    }
    cmd
}

/// Waits until something listens on `port` (without connecting: a probe would be a request).
pub fn wait_listening(port: u16, group: &mut Baton) -> Result<(), String> {
    try_wait_until(Duration::from_secs(60), || {
        if let Some(st) = group.try_exit() {
            return Some(Err(format!("exited ({st}) before listening:\n{}", group.log())));
        }
        (!procs::listening_inodes_on_port(port).is_empty()).then_some(Ok(()))
    })
    .unwrap_or_else(|| Err(format!("nothing listens on {port} after 60 s")))
}

/// `examples/bare_hyper` on the sandbox's port.
pub fn bare(sb: &Sandbox, exe: &Path, cpus: &[usize], wrap: &[String]) -> Result<Baton, String> {
    let mut cmd = sb.command(wrap.first().map(String::as_str).unwrap_or(exe.to_str().unwrap()));
    if !wrap.is_empty() {
        cmd.args(&wrap[1..]).arg(exe);
    }
    cmd.arg(sb.listen());
    let mut b = sb.spawn(pinned(cmd, cpus));
    wait_listening(sb.port, &mut b).map(|_| b)
}

/// nginx from a private prefix in the sandbox: `return 200 "Hello, world!"`, no access log,
/// unlimited keep-alive; `workers` worker processes, or none (`master_process off`: the one
/// process serves, so callgrind and strace see all of it).
pub fn nginx(sb: &Sandbox, workers: usize, cpus: &[usize], wrap: &[String]) -> Result<Baton, String> {
    let d = sb.path("nginx");
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    let d = d.display();
    let single = if workers == 0 { "master_process off;" } else { "" };
    let conf = format!(
        "worker_processes {}; {single}\npid {d}/nginx.pid; error_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\nhttp {{ access_log off; \
         keepalive_requests 100000000; keepalive_timeout 75s;\n\
         client_body_temp_path {d}/cb; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;\n\
         uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
         server {{ listen {}; location / {{ default_type text/plain; return 200 \"Hello, world!\"; }} }} }}\n",
        workers.max(1),
        sb.listen()
    );
    let path = sb.path("nginx/nginx.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let mut cmd = sb.command(wrap.first().map(String::as_str).unwrap_or("nginx"));
    if !wrap.is_empty() {
        cmd.args(&wrap[1..]).arg("nginx");
    }
    cmd.arg("-p").arg(format!("{d}/")).arg("-e").arg(format!("{d}/error.log"));
    cmd.arg("-c").arg(&path).args(["-g", "daemon off;"]);
    let mut b = sb.spawn(pinned(cmd, cpus));
    wait_listening(sb.port, &mut b).map(|_| b)
}

/// nginx's worker processes, the ones serving (`shutting down`: the draining ones).
pub fn nginx_workers(master: i32, draining: bool) -> Vec<i32> {
    let title = |p: i32| procs::cmdline(p).join(" ");
    procs::children_of(master)
        .into_iter()
        .map(|p| p.pid)
        .filter(|&p| title(p).contains("worker process") && title(p).contains("shutting") == draining)
        .collect()
}

/// SIGHUP to nginx's master: [ms until a new worker runs, ms until every old one was told to
/// quit]. Its master sleeps 100 ms between the two and takes no signal meanwhile, so the next
/// reload waits for the second, as baton's waits for `READY=1`.
pub fn nginx_reload(master: i32) -> Result<[f64; 2], String> {
    let before: Vec<i32> = procs::children_of(master).iter().map(|p| p.pid).collect();
    let old = nginx_workers(master, false);
    let t0 = Instant::now();
    procs::kill(master, nix::sys::signal::Signal::SIGHUP);
    let new = try_wait_until(Duration::from_secs(10), || {
        nginx_workers(master, false).iter().any(|p| !before.contains(p)).then(|| ms(t0.elapsed()))
    });
    let done = try_wait_until(Duration::from_secs(10), || {
        let now = nginx_workers(master, false);
        (!old.iter().any(|p| now.contains(p))).then(|| ms(t0.elapsed()))
    });
    match (new, done) {
        (Some(a), Some(b)) => Ok([a, b]),
        _ => Err("nginx reload not complete within 10 s".into()),
    }
}

/// The spawn-only control: `/bin/true` started on the server CPUs and awaited.
pub fn spawn_true(cpus: &[usize]) -> Result<[f64; 2], String> {
    let t0 = Instant::now();
    let st = pinned(Command::new("/bin/true"), cpus).status().map_err(|e| e.to_string())?;
    let t = ms(t0.elapsed());
    st.success().then_some([t, t]).ok_or_else(|| format!("/bin/true: {st}"))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One wrk process with bench/report.lua: duration-bound, or open-ended until [`Wrk::stop`].
pub struct Wrk(Option<Child>);

impl Wrk {
    pub fn start(port: u16, secs: u64, threads: usize, conns: usize, fresh: bool, count: bool, cpus: &[usize]) -> Wrk {
        let lua = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/report.lua");
        let mut cmd = Command::new("wrk");
        cmd.args([format!("-t{threads}"), format!("-c{conns}"), format!("-d{secs}s")]);
        cmd.args(["--timeout", "2s", "-s", lua]).env("BENCH_COUNT_STATUS", if count { "1" } else { "0" });
        if fresh {
            cmd.args(["-H", "Connection: close"]);
        }
        cmd.arg(format!("http://127.0.0.1:{port}/")).stdin(Stdio::null()).stdout(Stdio::piped());
        let child = reaper::spawn_registered(pinned(cmd, cpus).process_group(0)).expect("start wrk");
        Wrk(Some(child))
    }

    /// SIGINT (wrk then prints its report), and the report.
    pub fn stop(self) -> Result<Value, String> {
        if let Some(c) = &self.0 {
            procs::kill(c.id() as i32, nix::sys::signal::Signal::SIGINT);
        }
        self.wait()
    }

    /// The report of `BENCH_JSON` plus `socket_errors` and `rps`.
    pub fn wait(mut self) -> Result<Value, String> {
        let mut child = self.0.take().expect("wrk");
        let mut out = String::new();
        let _ = child.stdout.take().expect("stdout").read_to_string(&mut out);
        let _ = child.wait();
        reaper::forget_leader(child.id() as i32);
        let line = out.lines().find_map(|l| l.strip_prefix("BENCH_JSON "));
        let mut r: Value = line
            .and_then(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| format!("wrk gave no report:\n{out}"))?;
        let e = &r["errors"];
        let socket: u64 = ["connect", "read", "write", "timeout"].iter().map(|k| e[k].as_u64().unwrap_or(0)).sum();
        let secs = r["duration_us"].as_f64().unwrap_or(0.0) / 1e6;
        r["socket_errors"] = socket.into();
        r["rps"] = (r["requests"].as_f64().unwrap_or(0.0) / secs.max(1e-9)).into();
        Ok(r)
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The CPU time the rest of the machine used while we measured: every process outside our own
/// tree (utime+stime+cutime+cstime, kernel threads left out: they mostly carry our own traffic)
/// plus the hypervisor's steal time, in CPUs (1.0 = one whole CPU).
pub struct Noise(HashMap<i32, (i32, u64)>, u64, Instant);

impl Noise {
    pub fn start() -> Noise {
        let mut procs_ = HashMap::new();
        for p in procs::all_processes() {
            let flags = std::fs::read_to_string(format!("/proc/{}/stat", p.pid))
                .ok()
                .and_then(|t| t[t.rfind(')')? + 2..].split_whitespace().nth(6)?.parse::<u64>().ok())
                .unwrap_or(0);
            if flags & 0x0020_0000 == 0 {
                let t = procs::stat_times(p.pid).unwrap_or_default().iter().sum();
                procs_.insert(p.pid, (p.ppid, t));
            }
        }
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let steal = stat.split_whitespace().nth(8).and_then(|s| s.parse().ok()).unwrap_or(0);
        Noise(procs_, steal, Instant::now())
    }

    /// Foreign CPUs used since `self` was taken.
    pub fn since(&self) -> f64 {
        let now = Noise::start();
        let mut ours = vec![std::process::id() as i32];
        let mut i = 0;
        while i < ours.len() {
            let parent = ours[i];
            for (&pid, &(ppid, _)) in now.0.iter().chain(self.0.iter()) {
                if ppid == parent && !ours.contains(&pid) {
                    ours.push(pid);
                }
            }
            i += 1;
        }
        let used: u64 = now
            .0
            .iter()
            .filter(|(pid, _)| !ours.contains(pid))
            .map(|(pid, &(_, t))| t.saturating_sub(self.0.get(pid).map_or(0, |x| x.1)))
            .sum::<u64>()
            + now.1.saturating_sub(self.1);
        // SAFETY: sysconf has no preconditions.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        used as f64 / tck / now.2.duration_since(self.2).as_secs_f64().max(1e-6)
    }
}
