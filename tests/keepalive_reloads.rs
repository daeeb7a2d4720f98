//! Story: people — or apps polling like people — keep one connection each and pause between
//! requests, 150 to 450 ms, as a person clicks. Their client is an ordinary one (Python's
//! `http.client`, most libraries): it reuses the connection it holds and leaves it only when the
//! server says `Connection: close`; a connection the server closes unannounced, while the client
//! paused, is a failed request (`RemoteDisconnected`), never silently replaced. Across reloads not
//! one such failure may happen, and each client moves to the new process, told to by
//! `Connection: close`, after each reload.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::http::Client;
use common::{Story, DEADLINE};

const CLIENTS: usize = 3;
const RELOADS: usize = 6;

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    /// The body of the last answer.
    last: String,
    ok: u64,
    failures: Vec<String>,
    /// Answers that carried `Connection: close`.
    told_to_close: u64,
    /// Connections opened.
    connects: u64,
}

/// Pauses of 150–450 ms from a fixed pseudo-random sequence per client (repeatable runs).
fn pauses(seed: u64) -> impl Iterator<Item = Duration> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    std::iter::from_fn(move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Some(Duration::from_millis(150 + (x >> 33) % 301))
    })
}

#[test]
fn clients_pausing_like_people_across_reloads_never_see_a_disconnect() {
    let _heavy = common::heavy();
    let mut s = Story::start("v0", &["--shutdown-timeout", "10s"]);
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Vec<Arc<Mutex<Seen>>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (stop, seen, addr) = (stop.clone(), seen[i].clone(), s.sb.addr());
            thread::spawn(move || {
                let mut client = Client::strict(addr);
                let mut pause = pauses(i as u64);
                while !stop.load(Ordering::SeqCst) {
                    let r = client.get("/");
                    let mut seen = seen.lock().unwrap();
                    match r {
                        Ok(r) if r.status == 200 => {
                            seen.ok += 1;
                            seen.told_to_close += u64::from(r.closes());
                            seen.last = r.text();
                        }
                        Ok(r) => seen.failures.push(format!("{r:?}")),
                        Err(e) => seen.failures.push(e.to_string()),
                    }
                    seen.connects = client.connects;
                    drop(seen);
                    thread::sleep(pause.next().unwrap());
                }
            })
        })
        .collect();
    let failures = |seen: &[Arc<Mutex<Seen>>]| -> Vec<String> {
        seen.iter()
            .flat_map(|s| s.lock().unwrap().failures.clone())
            .collect()
    };
    let all_on = |body: &str| {
        seen.iter()
            .all(|c| c.lock().unwrap().last == body)
            .then_some(())
    };
    common::wait_until("every client served", DEADLINE, || all_on("v0"));

    for i in 1..=RELOADS {
        let body = format!("v{i}");
        let mut cfg = s.sb.config(&body);
        cfg["shutdown_timeout"] = "10s".into();
        s.sb.write_config(&cfg);
        s.reload();
        // Each client is told to leave the old process on its next request there, and then
        // is served by the new one.
        let moved = common::try_wait_until(DEADLINE, || all_on(&body));
        assert!(
            moved.is_some(),
            "reload {i}: the clients never reached the new process: {seen:?}"
        );
        let failed = failures(&seen);
        assert!(failed.is_empty(), "after reload {i}: {failed:?}");
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let failed = failures(&seen);
    assert!(failed.is_empty(), "disconnects seen: {failed:?}");
    for (i, c) in seen.iter().enumerate() {
        let c = c.lock().unwrap();
        println!(
            "client {i}: {} requests, {} connections, {} told to close",
            c.ok, c.connects, c.told_to_close
        );
        // Every connection but the first began after a `Connection: close`: none was replaced
        // unannounced; and each reload moved the client once.
        assert_eq!(c.connects, c.told_to_close + 1, "client {i}: {c:?}");
        assert_eq!(c.told_to_close, RELOADS as u64, "client {i}: {c:?}");
    }
    s.stop();
}
