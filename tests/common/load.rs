//! An HTTP load loop: N keep-alive clients and M fresh-connection clients, each checking every
//! response (status 200 and an accepted body) and counting ok/failed; over plain TCP or TLS
//! (where a failed handshake is a failed request).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::http::{self, Client, HttpError, Response};
use super::tls::{self, TlsClient};

/// Decides whether a response is right; `Err(why)` counts it as failed.
pub type Check = Arc<dyn Fn(&Response) -> Result<(), String> + Send + Sync>;

/// Accepts status 200 with one of these bodies.
pub fn body_is_one_of(bodies: &[&str]) -> Check {
    let bodies: Vec<String> = bodies.iter().map(|s| s.to_string()).collect();
    Arc::new(move |r: &Response| {
        if r.status != 200 {
            return Err(format!("status {} (body {:?})", r.status, r.text()));
        }
        let t = r.text();
        if bodies.contains(&t) {
            Ok(())
        } else {
            Err(format!("unexpected body {t:?}, wanted one of {bodies:?}"))
        }
    })
}

/// What every load generator counts: requests answered right and failed, the first failures
/// described, how often each body was seen.
#[derive(Default)]
pub struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
    bodies: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    /// Requests answered right so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Requests failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// One request answered right, with `body`.
    pub fn pass(&self, body: String) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        *self.bodies.lock().unwrap().entry(body).or_default() += 1;
    }

    /// One request failed; the first 20 reasons are kept.
    pub fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errs = self.errors.lock().unwrap();
        if errs.len() < 20 {
            errs.push(why);
        }
    }

    /// The first failures.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// How often each body was seen.
    pub fn bodies(&self) -> BTreeMap<String, u64> {
        self.bodies.lock().unwrap().clone()
    }

    /// Waits until `n` more requests succeeded (proof the load is flowing) or one failed, up to
    /// `timeout`.
    pub fn wait_more_ok(&self, n: u64, timeout: Duration) {
        let target = self.ok() + n;
        super::wait_until(&format!("{n} more successful requests"), timeout, || {
            (self.ok() >= target || self.failed() > 0).then_some(())
        });
    }
}

#[derive(Default)]
struct Counters {
    tally: Tally,
    connects: AtomicU64,
    replaced_idle: AtomicU64,
}

/// What a load run saw.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    /// The first failures, described.
    pub errors: Vec<String>,
    /// How often each body was seen.
    pub bodies: BTreeMap<String, u64>,
    /// TCP connections opened by the keep-alive clients.
    pub keepalive_connects: u64,
    /// Idle keep-alive connections the server closed, replaced before a request was written.
    pub replaced_idle: u64,
    pub elapsed: Duration,
}

impl LoadReport {
    /// Panics unless every request succeeded and there were some.
    pub fn assert_no_failures(&self) {
        assert!(
            self.ok > 0,
            "the load loop made no successful request: {self:?}"
        );
        assert_eq!(self.failed, 0, "failed requests: {:#?}", self.errors);
    }
}

/// A running load loop; stop it with [`Load::stop`] (dropping it stops it too). Its answers
/// so far are its [`Tally`] (`load.ok()`, `load.failed()`, `load.wait_more_ok(..)`).
pub struct Load {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

impl std::ops::Deref for Load {
    type Target = Tally;
    fn deref(&self) -> &Tally {
        &self.counters.tally
    }
}

impl Load {
    /// Starts `keepalive` clients reusing their connection and `fresh` clients opening one
    /// connection per request, each pausing `pause` between requests.
    pub fn start(
        addr: SocketAddr,
        keepalive: usize,
        fresh: usize,
        pause: Duration,
        check: Check,
    ) -> Load {
        Load::start_with(addr, None, keepalive, fresh, pause, check)
    }

    /// [`Load::start`] plus `long` clients that each send `GET long_path` on a fresh connection
    /// in a loop: requests that are in flight for a while (a slow endpoint of the server) when a
    /// reload or a stop happens.
    pub fn start_with_long(
        addr: SocketAddr,
        keepalive: usize,
        fresh: usize,
        long: (usize, &str),
        pause: Duration,
        check: Check,
    ) -> Load {
        Load::start_mixed(addr, None, keepalive, fresh, long, pause, check)
    }

    /// [`Load::start`] over TLS with `config` (the clients verify the server's chain).
    pub fn start_tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        keepalive: usize,
        fresh: usize,
        pause: Duration,
        check: Check,
    ) -> Load {
        Load::start_with(addr, Some(config), keepalive, fresh, pause, check)
    }

    fn start_with(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        keepalive: usize,
        fresh: usize,
        pause: Duration,
        check: Check,
    ) -> Load {
        Load::start_mixed(addr, tls, keepalive, fresh, (0, "/"), pause, check)
    }

    fn start_mixed(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ClientConfig>>,
        keepalive: usize,
        fresh: usize,
        (long, long_path): (usize, &str),
        pause: Duration,
        check: Check,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut threads = Vec::new();
        for i in 0..keepalive + fresh + long {
            let keep = i < keepalive;
            let kind = if keep {
                "keep-alive"
            } else if i < keepalive + fresh {
                "fresh"
            } else {
                "long"
            };
            let path = if kind == "long" { long_path } else { "/" }.to_owned();
            let (stop, counters, check, tls) =
                (stop.clone(), counters.clone(), check.clone(), tls.clone());
            threads.push(
                thread::Builder::new()
                    .name(format!("load-{kind}-{i}"))
                    .spawn(move || {
                        let mut client = AnyClient::new(addr, tls);
                        while !stop.load(Ordering::SeqCst) {
                            let result = if keep {
                                client.get(&path)
                            } else {
                                client.get_fresh(&path)
                            };
                            let verdict = match &result {
                                Ok(r) => check(r).map(|_| r.text()),
                                Err(e) => Err(e.to_string()),
                            };
                            match verdict {
                                Ok(body) => counters.tally.pass(body),
                                Err(why) => {
                                    counters.tally.fail(format!("{kind} client {i}: {why}"))
                                }
                            }
                            if !pause.is_zero() {
                                thread::sleep(pause);
                            }
                        }
                        let (connects, replaced_idle) = client.counts();
                        counters.connects.fetch_add(connects, Ordering::Relaxed);
                        counters
                            .replaced_idle
                            .fetch_add(replaced_idle, Ordering::Relaxed);
                    })
                    .expect("load thread"),
            );
        }
        Load {
            stop,
            counters,
            threads,
            started: Instant::now(),
        }
    }

    /// Waits until `n` more requests succeeded while no more than `failed` failed in all.
    pub fn ok_since(&self, failed: u64, n: u64, timeout: Duration) {
        let target = self.ok() + n;
        super::wait_until(&format!("{n} more successful requests"), timeout, || {
            assert_eq!(
                self.failed(),
                failed,
                "requests failed: {:?}",
                self.counters.tally.errors()
            );
            (self.ok() >= target).then_some(())
        });
    }

    /// Stops the clients and reports.
    pub fn stop(mut self) -> LoadReport {
        self.finish()
    }

    /// Stops the clients, prints `what` with the counts, and asserts that every request
    /// succeeded (and that there were some).
    pub fn stop_without_failures(self, what: &str) -> LoadReport {
        let report = self.stop();
        println!("{what}: {} ok, {} failed", report.ok, report.failed);
        report.assert_no_failures();
        report
    }

    fn finish(&mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let c = &self.counters;
        LoadReport {
            ok: c.tally.ok(),
            failed: c.tally.failed(),
            errors: c.tally.errors(),
            bodies: c.tally.bodies(),
            keepalive_connects: c.connects.load(Ordering::Relaxed),
            replaced_idle: c.replaced_idle.load(Ordering::Relaxed),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.finish();
        }
    }
}

/// A keep-alive client over TCP or TLS.
enum AnyClient {
    Plain(Client),
    Tls(Box<TlsClient>, Arc<rustls::ClientConfig>),
}

impl AnyClient {
    fn new(addr: SocketAddr, tls: Option<Arc<rustls::ClientConfig>>) -> AnyClient {
        match tls {
            None => AnyClient::Plain(Client::new(addr)),
            Some(config) => AnyClient::Tls(Box::new(TlsClient::new(addr, config.clone())), config),
        }
    }

    fn get(&mut self, path: &str) -> Result<Response, HttpError> {
        match self {
            AnyClient::Plain(c) => c.get(path),
            AnyClient::Tls(c, _) => c.get(path),
        }
    }

    /// One request on a fresh connection (over TLS: a full handshake each time).
    fn get_fresh(&self, path: &str) -> Result<Response, HttpError> {
        match self {
            AnyClient::Plain(c) => http::get_fresh(c.addr(), path),
            AnyClient::Tls(c, config) => tls::get_fresh(c.addr(), config, path).map(|(_, r)| r),
        }
    }

    /// (connections opened by the keep-alive client, idle ones replaced)
    fn counts(&self) -> (u64, u64) {
        match self {
            AnyClient::Plain(c) => (c.connects, c.replaced_idle),
            AnyClient::Tls(c, _) => (c.connects, c.replaced_idle),
        }
    }
}
