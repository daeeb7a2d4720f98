//! Story: the successor dies, or the operator stops the service, at any point of a hand-off.
//! Whatever the moment, exactly one process serves afterwards (none after a stop), no
//! connection is ever refused, and systemd is told the truth: an old process that had announced
//! `MAINPID=<successor>` says `MAINPID=<own>` again before `READY=1` + `STATUS=reload failed`.
//!
//! The moments are random (the seed is printed). A notify reader that holds the `BARRIER=1`
//! descriptor for a while — as a slow or stuck reader would — widens the window between the
//! successor's `ready` and its promotion, where the first landing lost its listener.

mod common;

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{http, procs, Options, Sandbox, DEADLINE};
use nix::sys::signal::Signal;

/// A GET on a fresh connection in a loop; counts the answered ones, the connections the kernel
/// refused, and the requests that failed otherwise (reset, EOF, wrong answer).
struct Prober {
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    connects: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Prober {
    fn start(addr: SocketAddr) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let connects = Arc::new(AtomicU64::new(0));
        let (s, r, f, c) = (
            stop.clone(),
            refused.clone(),
            failed.clone(),
            connects.clone(),
        );
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match http::get_fresh(addr, "/") {
                    Ok(resp) if resp.status == 200 => c.fetch_add(1, Ordering::Relaxed),
                    Err(http::HttpError::Connect(e))
                        if e.kind() == ErrorKind::ConnectionRefused =>
                    {
                        r.fetch_add(1, Ordering::Relaxed)
                    }
                    Ok(_) | Err(_) => f.fetch_add(1, Ordering::Relaxed),
                };
                thread::sleep(Duration::from_millis(2));
            }
        });
        Prober {
            stop,
            refused,
            failed,
            connects,
            thread: Some(thread),
        }
    }

    /// Stops probing; returns (requests answered, connections refused, requests failed).
    fn stop(mut self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.connects.load(Ordering::SeqCst),
            self.refused.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// A small deterministic random source; the seed is printed for reproduction.
struct Rng(u64);

impl Rng {
    fn from_clock() -> Rng {
        let seed = std::env::var("BATON_WINDOW_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        println!("random moments: BATON_WINDOW_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// The live successor being started by `old` (a member of its process group; after a quick
/// hand-off `old` may already have exited), seen within a millisecond of its start.
fn successor_of(baton: &common::Baton, old: i32) -> i32 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(pid) = baton.live_members().into_iter().find(|pid| *pid != old) {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no successor of {old} within {DEADLINE:?}"
        );
        thread::sleep(Duration::from_micros(500));
    }
}

/// Answers 200 with `body` on a fresh connection, within the deadline.
fn assert_serves(sb: &Sandbox, body: &str) {
    let got = common::wait_until("a 200 on a fresh connection", DEADLINE, || {
        http::get_fresh(sb.addr(), "/")
            .ok()
            .filter(|r| r.status == 200)
    });
    assert_eq!(got.text(), body);
}

#[test]
fn a_successor_killed_at_any_point_of_the_hand_off_leaves_the_old_process_serving() {
    let _heavy = common::heavy();
    let mut s = Options::new("steady")
        .args(&["--child-timeout", "5s", "--shutdown-timeout", "5s"])
        .hold_barriers(Duration::from_millis(400))
        .start();
    let (sb, baton, old) = (&s.sb, &s.baton, s.main);
    assert_serves(sb, "steady");
    let prober = Prober::start(sb.addr());
    let mut rng = Rng::from_clock();
    let trials = 24;
    let (mut before_mainpid, mut after_mainpid) = (0, 0);
    for trial in 0..trials {
        let from = sb.notify.len();
        // A third right at the start (before `ready`), the rest anywhere up to the barrier's end.
        let delay = if trial % 3 == 0 {
            Duration::from_micros(rng.below(2_000))
        } else {
            Duration::from_millis(rng.below(350))
        };
        assert!(procs::kill(old, Signal::SIGHUP), "SIGHUP to {old}");
        let successor = successor_of(baton, old);
        thread::sleep(delay);
        assert!(
            procs::kill(successor, Signal::SIGKILL),
            "SIGKILL to the successor {successor}"
        );

        let end = sb
            .notify
            .try_wait_for_after(from, DEADLINE, |n| {
                n.pid == old
                    && n.has("READY=1")
                    && n.get("STATUS").is_some_and(|s| s.starts_with("reload failed"))
            })
            .unwrap_or_else(|| {
                panic!(
                    "trial {trial} (kill {delay:?} after the successor appeared): no READY=1 + reload failed from {old}:\n{}log:\n{}",
                    sb.notify.dump(),
                    baton.log()
                )
            });
        let record = sb.notify.all();
        let announced = record[from..end.seq]
            .iter()
            .find(|n| n.pid == old && n.mainpid() == Some(successor));
        match announced {
            Some(a) => {
                after_mainpid += 1;
                let reclaimed = record[a.seq..end.seq]
                    .iter()
                    .any(|n| n.pid == old && n.mainpid() == Some(old));
                assert!(
                    reclaimed,
                    "trial {trial}: MAINPID={successor} was sent but MAINPID={old} was not sent again before READY=1:\n{}",
                    sb.notify.dump()
                );
            }
            None => before_mainpid += 1,
        }
        assert!(
            !record[from..]
                .iter()
                .any(|n| n.pid == successor && n.has("READY=1")),
            "trial {trial}: the killed successor had said READY=1 yet the old process kept the line"
        );
        // Exactly one process serves: the old one; the successor is reaped.
        common::wait_until("the successor to be reaped", DEADLINE, || {
            procs::children_of(old).is_empty().then_some(())
        });
        assert_eq!(baton.live_members(), vec![old], "trial {trial}");
        assert_serves(sb, "steady");
    }
    let (answered, refused, failed) = prober.stop();
    println!(
        "{trials} successors killed 0-350 ms after SIGHUP (barrier held 400 ms): {before_mainpid} before MAINPID=, {after_mainpid} after; \
         fresh requests during the trials: {answered} answered, {refused} refused, {failed} failed"
    );
    assert_eq!(refused, 0, "connections were refused");
    // A successor killed after its `ready` takes along the connections it had accepted: with
    // one request in flight at a time, each kill can fail at most one.
    assert!(
        failed <= after_mainpid as u64 + before_mainpid as u64,
        "{failed} requests failed in {trials} kills"
    );
    assert!(answered > 0, "the prober made no request");
    assert!(
        after_mainpid > 0,
        "no kill landed after MAINPID=: the test did not reach the window it is about"
    );
    s.stop();
}

/// A line serving "steady" whose notify reader holds every `BARRIER=1` 300 ms, so that a
/// hand-off waits there between `MAINPID=<successor>` and `promoted`.
fn serving_with_barriers_held() -> common::Story {
    let s = Options::new("steady")
        .args(&["--child-timeout", "5s", "--shutdown-timeout", "3s"])
        .hold_barriers(Duration::from_millis(300))
        .start();
    assert_serves(&s.sb, "steady");
    s
}

/// The first process exits 0, and nothing of its line (a successor included) is left.
fn assert_whole_line_exits(baton: &mut common::Baton, trial: usize) {
    let status = baton.wait_exit(DEADLINE);
    assert_eq!(
        status.code(),
        Some(0),
        "trial {trial}: exit {}; log:\n{}",
        common::describe(status),
        baton.log()
    );
    assert!(
        baton.wait_group_gone(DEADLINE),
        "trial {trial}: left behind: {:?}; log:\n{}",
        baton.members(),
        baton.log()
    );
}

#[test]
fn sigterm_at_any_point_of_a_hand_off_stops_the_whole_line() {
    let _heavy = common::heavy();
    let mut rng = Rng::from_clock();
    let trials = 10;
    let mut timings = Vec::new();
    for trial in 0..trials {
        let mut s = serving_with_barriers_held();
        let (sb, baton) = (&s.sb, &mut s.baton);
        // Within the barrier hold: the hand-off is still under way when SIGTERM comes.
        let delay = Duration::from_millis(rng.below(250));
        let from = sb.notify.len();
        assert!(procs::kill(baton.pid, Signal::SIGHUP));
        thread::sleep(delay);
        let successor = procs::children_of(baton.pid)
            .into_iter()
            .find(|c| !c.is_zombie())
            .map(|c| c.pid);
        let stop_at = Instant::now();
        assert!(procs::kill(baton.pid, Signal::SIGTERM));
        assert_whole_line_exits(baton, trial);
        timings.push(stop_at.elapsed());
        assert!(
            !sb.notify.all()[from..]
                .iter()
                .any(|n| n.pid != baton.pid && n.has("READY=1")),
            "trial {trial}: a successor became main: the SIGTERM came after the hand-off"
        );
        assert!(
            procs::listening_inodes_on_port(sb.port).is_empty(),
            "trial {trial}: still listening after SIGTERM (successor {successor:?})"
        );
    }
    let (median, max) = common::median_max(timings);
    println!(
        "{trials} SIGTERMs 0-250 ms after SIGHUP (barrier held 300 ms): the whole line gone in median {median:?}, max {max:?}"
    );
}

/// A supervisor that follows one pid (or systemd with `KillMode=mixed`) stops the `MAINPID` it
/// was told: after `MAINPID=<successor>` that is the successor, which may not be promoted yet.
#[test]
fn sigterm_to_the_announced_successor_before_its_promotion_stops_the_whole_line() {
    let _heavy = common::heavy();
    let trials = 5;
    let mut timings = Vec::new();
    for trial in 0..trials {
        let mut s = serving_with_barriers_held();
        let (sb, baton) = (&s.sb, &mut s.baton);
        let old = baton.pid;
        let from = sb.notify.len();
        assert!(procs::kill(old, Signal::SIGHUP));
        let successor = sb
            .notify
            .wait_for_after(from, DEADLINE, "MAINPID=<successor>", |n| {
                n.pid == old && n.mainpid().is_some_and(|p| p != old)
            })
            .mainpid()
            .expect("a MAINPID");
        // The barrier is held 300 ms: the successor is announced, not promoted.
        let stop_at = Instant::now();
        assert!(procs::kill(successor, Signal::SIGTERM));
        assert_whole_line_exits(baton, trial);
        timings.push(stop_at.elapsed());
        let told = sb.notify.all()[from..].to_vec();
        let said =
            |what: &dyn Fn(&common::notify::Notification) -> bool| told.iter().position(what);
        assert_eq!(
            said(&|n| n.has("READY=1")),
            None,
            "trial {trial}: the stop was lost, something serves on: {told:?}"
        );
        let reclaimed = said(&|n| n.pid == old && n.mainpid() == Some(old));
        let stopping = said(&|n| n.pid == old && n.has("STOPPING=1"));
        assert!(
            reclaimed.is_some() && stopping.is_some() && reclaimed < stopping,
            "trial {trial}: the old process must say MAINPID=<own> then STOPPING=1: {told:?}"
        );
        assert!(
            procs::listening_inodes_on_port(sb.port).is_empty(),
            "trial {trial}: still listening after the successor's SIGTERM"
        );
        assert!(
            baton.log().contains("a stop passed on by the successor"),
            "{}",
            baton.log()
        );
    }
    let (median, max) = common::median_max(timings);
    println!(
        "{trials} SIGTERMs to the announced, unpromoted successor: the whole line gone in median {median:?}, max {max:?}"
    );
}

#[test]
fn without_a_notify_socket_a_killed_successor_never_leaves_nothing_serving() {
    let _heavy = common::heavy();
    let mut rng = Rng::from_clock();
    let trials = 30;
    let (mut failed, mut completed) = (0, 0);
    let mut s = Options::new("steady")
        .args(&["--child-timeout", "5s", "--shutdown-timeout", "2s"])
        .env_remove("NOTIFY_SOCKET")
        .start();
    assert_serves(&s.sb, "steady");
    let mut main = s.main;
    let status_file = |sb: &Sandbox, main: i32| {
        sb.handoff_socket()
            .with_file_name(format!("reload-status.{main}.json"))
    };
    let prober = Prober::start(s.sb.addr());
    let (mut refused_outside_crashes, mut failed_outside_crashes) = (0, 0);
    for trial in 0..trials {
        let _ = std::fs::remove_file(status_file(&s.sb, main));
        let delay = Duration::from_micros(rng.below(12_000));
        let refused_before = prober.refused.load(Ordering::SeqCst);
        let failed_before = prober.failed.load(Ordering::SeqCst);
        assert!(procs::kill(main, Signal::SIGHUP));
        let successor = successor_of(&s.baton, main);
        thread::sleep(delay);
        procs::kill(successor, Signal::SIGKILL);
        let outcome: serde_json::Value = common::wait_until("the reload status", DEADLINE, || {
            std::fs::read(status_file(&s.sb, main))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
        });
        if outcome["outcome"] == "ready" {
            // The successor had confirmed: it was the main process when it was killed, a crash
            // like any other. Start afresh.
            completed += 1;
            s.restart();
            assert_serves(&s.sb, "steady");
            main = s.main;
            continue;
        }
        failed += 1;
        assert_eq!(outcome["outcome"], "failed", "trial {trial}: {outcome}");
        common::wait_until("the successor to be reaped", DEADLINE, || {
            procs::children_of(main).is_empty().then_some(())
        });
        assert_eq!(s.baton.live_members(), vec![main], "trial {trial}");
        assert_serves(&s.sb, "steady");
        refused_outside_crashes += prober.refused.load(Ordering::SeqCst) - refused_before;
        failed_outside_crashes += prober.failed.load(Ordering::SeqCst) - failed_before;
    }
    let (connects, _, _) = prober.stop();
    println!(
        "{trials} successors killed 0-12 ms after their start without NOTIFY_SOCKET: {failed} before their confirmation \
         (old process served on), {completed} after (a crash of the new main); {connects} fresh connections, \
         {refused_outside_crashes} refused and {failed_outside_crashes} failed in the trials where the old process served on"
    );
    assert_eq!(refused_outside_crashes, 0);
    // At most the one request in flight at the killed successor, per kill.
    assert!(
        failed_outside_crashes <= failed as u64,
        "{failed_outside_crashes}"
    );
    assert!(failed > 0, "no kill landed inside the hand-off");
    s.main = main;
    s.stop();
}
