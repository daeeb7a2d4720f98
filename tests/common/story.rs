//! The operator's verbs over one baton line (the process started and every successor after it),
//! so a story reads like the operator's day and its scaffolding is written once:
//!
//! ```ignore
//! let mut s = Options::new("v1").args(&["--shutdown-timeout", "5s"]).start();
//! s.start_load(4, 4, Duration::from_millis(1), &["v1", "v2"]);
//! s.sb.write_config(&s.sb.config("v2"));
//! s.reload();                       // the documented notify sequence, checked
//! s.stop_load().assert_no_failures();
//! s.stop();                         // SIGTERM, STOPPING=1, nothing left behind
//! ```
//!
//! [`Story::main`] follows the main process as systemd does: the sender of the first `READY=1`
//! (the started process; a supervisor, which passes it on, with `--supervise` or as PID 1 under
//! an `unshare` wrapper given with [`Options::command`]), then each `MAINPID=`. The fields stay
//! public so that a story with a shape of its own uses the [`Sandbox`] and the [`Baton`] group
//! directly; `super::sigterm_and_wait_gone` and `super::current_main` are
//! [`Story::stop`] and [`Story::main`].

use std::ffi::OsString;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

use super::load::{body_is_one_of, Check, Load, LoadReport};
use super::{http, procs, reaper, Baton, Reload, Sandbox, DEADLINE};

type MakeCommand = Arc<dyn Fn(&Sandbox) -> Command>;
type MakeConfig = Arc<dyn Fn(&Sandbox) -> serde_json::Value>;

/// How a story starts its server: config, extra arguments, environment, the command itself.
#[derive(Clone)]
pub struct Options {
    config: MakeConfig,
    command: MakeCommand,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    hold_barriers: Duration,
}

impl Options {
    /// `baton --config <sandbox config>` with the usual config ([`Sandbox::config`]) answering
    /// `body`.
    pub fn new(body: &str) -> Options {
        let body = body.to_string();
        Options {
            config: Arc::new(move |sb| sb.config(&body)),
            command: Arc::new(|sb| sb.serve(&[])),
            args: Vec::new(),
            env: Vec::new(),
            hold_barriers: Duration::ZERO,
        }
    }

    /// A whole config body of its own (it may use the sandbox's paths).
    pub fn config(mut self, f: impl Fn(&Sandbox) -> serde_json::Value + 'static) -> Options {
        self.config = Arc::new(f);
        self
    }

    /// Arguments appended to the command.
    pub fn args<S: Into<OsString> + Clone>(mut self, args: &[S]) -> Options {
        self.args.extend(args.iter().cloned().map(Into::into));
        self
    }

    /// An environment variable for the command.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Options {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// A variable of the sandbox's environment left out (`NOTIFY_SOCKET`: no service manager;
    /// the story then waits for the port to answer instead of `READY=1`).
    pub fn env_remove(mut self, key: &str) -> Options {
        self.env.push((key.into(), None));
        self
    }

    /// The command that starts the server, instead of `baton --config …` (e.g. systemd's socket
    /// activator, `unshare`); the arguments and environment are added to it.
    pub fn command(mut self, f: impl Fn(&Sandbox) -> Command + 'static) -> Options {
        self.command = Arc::new(f);
        self
    }

    /// The notify socket keeps the descriptors of a `BARRIER=1` this long (a slow reader).
    pub fn hold_barriers(mut self, hold: Duration) -> Options {
        self.hold_barriers = hold;
        self
    }

    /// False when `NOTIFY_SOCKET` is removed or set empty (no service manager).
    fn notifies(&self) -> bool {
        !self
            .env
            .iter()
            .any(|(k, v)| k == "NOTIFY_SOCKET" && v.as_ref().is_none_or(|v| v.is_empty()))
    }

    /// Starts in a fresh sandbox and waits until it serves ([`Story::spawn`] does not wait).
    pub fn start(self) -> Story {
        let mut s = self.spawn();
        s.wait_started();
        s
    }

    /// Starts in a fresh sandbox without waiting (socket activation starts baton later; a start
    /// that must fail is awaited with [`Baton::wait_exit`]).
    pub fn spawn(self) -> Story {
        self.spawn_after(|_| {})
    }

    /// [`Options::spawn`] once `prepare` has set the fresh sandbox up (a file left over from a
    /// crash, say).
    pub fn spawn_after(self, prepare: impl FnOnce(&Sandbox)) -> Story {
        let sb = Sandbox::new();
        prepare(&sb);
        sb.notify.hold_barriers(self.hold_barriers);
        let baton = self.launch(&sb);
        Story {
            main: baton.pid,
            started_from: 0,
            sb,
            baton,
            reloads: Vec::new(),
            load: None,
            options: self,
        }
    }

    fn launch(&self, sb: &Sandbox) -> Baton {
        sb.write_config(&(self.config)(sb));
        let mut cmd = (self.command)(sb);
        cmd.args(&self.args);
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        sb.spawn(cmd)
    }
}

/// One baton line in its sandbox, with the operator's verbs.
pub struct Story {
    /// The sandbox: paths, port, notify socket.
    pub sb: Sandbox,
    /// The process group started (the first process is its leader).
    pub baton: Baton,
    /// The main process, as systemd tracks it.
    pub main: i32,
    /// Every successful reload so far.
    pub reloads: Vec<Reload>,
    load: Option<Load>,
    options: Options,
    /// The first notification of the current start.
    started_from: usize,
}

impl Story {
    /// `baton --config …` answering `body`, with `args`; waits until it serves.
    pub fn start(body: &str, args: &[&str]) -> Story {
        Options::new(body).args(args).start()
    }

    /// Waits for the first `READY=1` (the main process is its sender), or without a notify
    /// socket for a 200 on a fresh connection; panics with the log if the process exits first.
    pub fn wait_started(&mut self) {
        let leader = self.baton.pid;
        let notifies = self.options.notifies();
        let from = self.started_from;
        let ready = super::try_wait_until(DEADLINE, || {
            if let Some(st) = self.baton.try_exit() {
                return Some(Err(st));
            }
            if notifies {
                let all = self.sb.notify.all();
                return all[from..]
                    .iter()
                    .find(|n| n.has("READY=1"))
                    .map(|n| Ok(n.pid));
            }
            http::get_fresh(self.sb.addr(), "/")
                .ok()
                .filter(|r| r.status == 200)
                .map(|_| Ok(leader))
        });
        match ready {
            Some(Ok(pid)) => self.main = pid,
            other => panic!(
                "{leader} did not start within {DEADLINE:?}: {other:?}\nnotifications:\n{}log:\n{}",
                self.sb.notify.dump(),
                self.baton.log()
            ),
        }
    }

    /// Kills the whole group and starts afresh in the same sandbox (same port, same options).
    pub fn restart(&mut self) {
        self.started_from = self.sb.notify.len();
        self.baton.kill();
        self.baton = self.options.launch(&self.sb);
        self.reloads.clear();
        self.main = self.baton.pid;
        self.wait_started();
    }

    /// Starts `keepalive` + `fresh` clients (pausing `pause` between requests) accepting 200 with
    /// one of `bodies`; returns once 50 requests succeeded.
    pub fn start_load(&mut self, keepalive: usize, fresh: usize, pause: Duration, bodies: &[&str]) {
        self.start_load_checked(keepalive, fresh, pause, body_is_one_of(bodies));
    }

    /// [`Story::start_load`] with a check of its own.
    pub fn start_load_checked(
        &mut self,
        keepalive: usize,
        fresh: usize,
        pause: Duration,
        check: Check,
    ) {
        let load = Load::start(self.sb.addr(), keepalive, fresh, pause, check);
        load.wait_more_ok(50, DEADLINE);
        self.load = Some(load);
    }

    /// The running load ([`Story::start_load`] first).
    pub fn load(&self) -> &Load {
        self.load.as_ref().expect("start_load first")
    }

    /// Stops the load and returns what it saw (the story asserts on it).
    pub fn stop_load(&mut self) -> LoadReport {
        self.load.take().expect("start_load first").stop()
    }

    /// A reload as systemd runs it: SIGHUP to the main process, then the documented sequence
    /// ([`super::reload`]); the successor runs and is the main process from now on.
    pub fn reload(&mut self) -> Reload {
        let r = self.try_reload(DEADLINE).unwrap_or_else(|e| panic!("{e}"));
        assert!(procs::is_alive(r.new), "the successor {} is running", r.new);
        r
    }

    /// [`Story::reload`] that returns a failure instead of panicking (the benchmark counts them).
    pub fn try_reload(&mut self, timeout: Duration) -> Result<Reload, String> {
        let r = super::try_reload(&self.sb.notify, self.main, timeout)?;
        self.main = r.new;
        self.reloads.push(r.clone());
        Ok(r)
    }

    /// A reload that must fail: `RELOADING=1`, then `READY=1` + `STATUS=reload failed: …` from
    /// the main process, which stays main and alive. Returns the status text.
    pub fn reload_expect_failure(&mut self) -> String {
        let status = super::reload_expect_failure(&self.sb.notify, self.main);
        assert!(
            procs::is_alive(self.main),
            "the main process {} died after a failed reload",
            self.main
        );
        status
    }

    /// Waits until the main process is the only process left (the retired ones drained).
    pub fn wait_drained(&mut self, timeout: Duration) -> bool {
        let main = self.main;
        super::try_wait_until(timeout, || {
            self.baton.try_exit();
            self.baton
                .members()
                .iter()
                .all(|p| p.pid == main)
                .then_some(())
        })
        .is_some()
    }

    /// A GET on a fresh connection, which must succeed; returns the body.
    pub fn get(&self) -> String {
        http::get_fresh(self.sb.addr(), "/")
            .unwrap_or_else(|e| {
                panic!("GET on {}: {e}\nlog:\n{}", self.sb.addr(), self.baton.log())
            })
            .text()
    }

    /// The stop (`systemctl stop`): SIGTERM to the main process, which says `STOPPING=1`; then
    /// nothing is left: every process of the group gone (no zombie either), the started process
    /// and the last main exited 0 (as far as this process could see their status), nothing
    /// listens on the port, no panic in the log. Returns how long the stop took.
    pub fn stop(&mut self) -> Duration {
        drop(self.load.take());
        let (main, leader) = (self.main, self.baton.pid);
        let from = self.sb.notify.len();
        let t0 = Instant::now();
        assert!(
            procs::kill(main, Signal::SIGTERM),
            "SIGTERM {main}: no such process"
        );
        if self.options.notifies() {
            self.sb
                .notify
                .wait_for_after(from, DEADLINE, "STOPPING=1", |n| {
                    n.pid == main && n.has("STOPPING=1")
                });
        }
        assert!(
            self.baton.wait_group_gone(DEADLINE),
            "processes left after the stop: {:?}\nlog:\n{}",
            self.baton.members(),
            self.baton.log()
        );
        let took = t0.elapsed();
        let st = self.baton.try_exit().expect("the leader was reaped");
        assert_eq!(st.code(), Some(0), "{leader}: {}", super::describe(st));
        if main != leader {
            let seen = reaper::orphan_exit(main);
            assert!(
                matches!(seen, None | Some(WaitStatus::Exited(_, 0))),
                "the last main process exits 0 on SIGTERM: {seen:?}"
            );
        }
        assert!(
            procs::listening_inodes_on_port(self.sb.port).is_empty(),
            "still listening on {} after the stop",
            self.sb.port
        );
        let log = self.baton.log();
        assert!(!log.contains("panicked"), "{log}");
        took
    }
}
