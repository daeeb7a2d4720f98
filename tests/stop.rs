//! Story: baton runs in a container — its own network namespace — and a slow client is
//! downloading a large response when the runtime stops it (SIGTERM). The runtime tears the
//! network namespace down the moment baton exits. "Finish what is in flight" has to mean that the
//! bytes reached the client, not that they were handed to the kernel: the client gets every
//! byte.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Baton, Sandbox, DEADLINE};
use nix::sys::signal::Signal;

/// The response the client downloads.
const BODY_BYTES: usize = 1_000_000;
/// The slow reader: this much ...
const CHUNK: usize = 16 * 1024;
/// ... every this long: about 110 KB/s, so that the download still progresses more than 5 s (the
/// bound for a peer that reads nothing) after baton's drain and linger are over.
const EVERY: Duration = Duration::from_millis(150);

/// A private network namespace with its loopback up, held by a sleeping process: what a
/// container runtime gives a container.
struct NetNs {
    holder: Baton,
}

impl NetNs {
    fn new(sb: &Sandbox) -> NetNs {
        let mut cmd = sb.command("unshare");
        cmd.args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && echo up && exec sleep 600",
        ]);
        let holder = sb.spawn(cmd);
        common::wait_until("the namespace's loopback to be up", DEADLINE, || {
            holder.log().contains("up").then_some(())
        });
        NetNs { holder }
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder.pid))
    }

    /// `program` run inside the namespace (nsenter execs it: same pid).
    fn command(&self, sb: &Sandbox, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut cmd = sb.command("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Moves the calling thread (only it) into the namespace.
    fn enter_this_thread(path: &PathBuf) {
        let ns = File::open(path).expect("open the namespace");
        // SAFETY: `ns` is an open namespace descriptor for the duration of the call; setns only
        // changes the calling thread's network namespace.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }

    /// The runtime's teardown: nothing moves on the namespace's network any more.
    fn tear_down(&self, sb: &Sandbox) {
        let out = common::output(self.command(sb, "ip").args(["link", "set", "lo", "down"]));
        assert!(out.status.success(), "ip link set lo down: {out:?}");
    }
}

/// What the slow reader got.
#[derive(Debug)]
struct Download {
    body: usize,
    ended: String,
}

/// A client in the namespace that asks for `/` and reads [`CHUNK`] every [`EVERY`], with a
/// small receive buffer (as a slow mobile client has), until the body is complete or nothing
/// comes for 5 s. `progress` counts body bytes read.
fn slow_reader(
    ns: PathBuf,
    addr: SocketAddr,
    progress: Arc<AtomicU64>,
) -> thread::JoinHandle<Download> {
    thread::spawn(move || {
        NetNs::enter_this_thread(&ns);
        use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
        let fd: OwnedFd = socket::socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .expect("socket");
        socket::setsockopt(&fd, sockopt::RcvBuf, &(64 * 1024)).expect("SO_RCVBUF");
        let SocketAddr::V4(v4) = addr else {
            panic!("IPv4")
        };
        socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4))
            .expect("connect in the namespace");
        let mut stream = TcpStream::from(fd);
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut reader = BufReader::with_capacity(CHUNK, stream);
        let mut length = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).expect("headers") == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
        }
        assert_eq!(length, Some(BODY_BYTES), "the response's length");
        let mut body = 0;
        let mut buf = vec![0u8; CHUNK];
        let ended = loop {
            if body == BODY_BYTES {
                break "complete".to_owned();
            }
            let want = CHUNK.min(BODY_BYTES - body);
            match reader.read(&mut buf[..want]) {
                Ok(0) => break "end of stream".to_owned(),
                Ok(n) => {
                    body += n;
                    progress.store(body as u64, Ordering::SeqCst);
                }
                Err(e) => break format!("read: {e}"),
            }
            thread::sleep(EVERY);
        };
        Download { body, ended }
    })
}

#[test]
fn a_stop_in_a_container_delivers_a_slow_download_whole_before_the_network_goes() {
    let _heavy = common::heavy();
    let sb = Sandbox::new();
    let ns = NetNs::new(&sb);
    let mut config = sb.config(&"b".repeat(BODY_BYTES));
    config["shutdown_timeout"] = "20s".into();
    sb.write_config(&config);
    let mut cmd = ns.command(&sb, sb.exe());
    cmd.arg("--config").arg(sb.config_path());
    let mut baton = sb.spawn(cmd);
    baton.wait_ready(&sb.notify);

    let progress = Arc::new(AtomicU64::new(0));
    let reader = slow_reader(ns.path(), sb.addr(), progress.clone());
    common::wait_until("the download to start", DEADLINE, || {
        (progress.load(Ordering::SeqCst) >= CHUNK as u64).then_some(())
    });
    let stop = Instant::now();
    baton.signal(baton.pid, Signal::SIGTERM);
    let status = baton.wait_exit(Duration::from_secs(30));
    let exited_after = stop.elapsed();
    let read_at_exit = progress.load(Ordering::SeqCst);
    // The runtime removes the network at once.
    ns.tear_down(&sb);
    let download = reader.join().expect("the reader");
    println!(
        "stop: exit {status:?} after {exited_after:?}; the client had read {read_at_exit} bytes by then; got {} of {BODY_BYTES} ({})",
        download.body, download.ended
    );
    assert_eq!(status.code(), Some(0), "{}", baton.log());
    assert_eq!(
        download.body, BODY_BYTES,
        "the client lost the end of the download: {download:?}"
    );
    assert!(
        exited_after < Duration::from_secs(20),
        "within the shutdown timeout"
    );
}

/// How one fresh connection of the load ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A complete `200` response.
    Answered,
    /// `ECONNREFUSED` at connect: nobody listens any more.
    Refused,
    /// Connected, then reset or closed without a complete response.
    Reset,
}

/// One request on a fresh connection, `Connection: close`, classified.
fn one_fresh_request(addr: SocketAddr) -> Outcome {
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Outcome::Refused,
        Err(_) => return Outcome::Reset,
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return Outcome::Reset;
    }
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) if answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"queued") => {
            Outcome::Answered
        }
        _ => Outcome::Reset,
    }
}

#[test]
fn a_stop_under_load_answers_every_queued_connection_and_then_refuses() {
    let _heavy = common::heavy();
    const STOPS: usize = 4;
    const CLIENTS: usize = 16;
    let mut totals = [0u64; 3];
    for round in 1..=STOPS {
        let sb = Sandbox::new();
        let mut baton = sb.start("queued", &[]);
        let addr = sb.addr();
        let stop_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let stop_flag = stop_flag.clone();
                let answered = answered.clone();
                thread::spawn(move || {
                    let mut seen = Vec::new();
                    // Until told to stop, and at least until a refusal: the listener closed.
                    while !stop_flag.load(Ordering::SeqCst) {
                        let outcome = one_fresh_request(addr);
                        if outcome == Outcome::Answered {
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        seen.push(outcome);
                        if outcome == Outcome::Refused {
                            break;
                        }
                    }
                    seen
                })
            })
            .collect();
        common::wait_until("the load to be answered", DEADLINE, || {
            (answered.load(Ordering::SeqCst) >= 200).then_some(())
        });
        baton.signal(baton.pid, Signal::SIGTERM);
        let status = baton.wait_exit(DEADLINE);
        assert_eq!(status.code(), Some(0), "{}", baton.log());
        // Clients keep trying a moment after the exit: they must be refused, not reset.
        thread::sleep(Duration::from_millis(300));
        stop_flag.store(true, Ordering::SeqCst);
        let mut counts = [0u64; 3];
        for client in clients {
            for outcome in client.join().expect("client") {
                counts[outcome as usize] += 1;
            }
        }
        println!(
            "stop {round} under {CLIENTS} fresh-connection clients: answered {}, refused {}, reset {}",
            counts[0], counts[1], counts[2]
        );
        for (t, c) in totals.iter_mut().zip(counts) {
            *t += c;
        }
    }
    println!(
        "{STOPS} stops: answered {}, refused {}, reset {}",
        totals[0], totals[1], totals[2]
    );
    assert_eq!(totals[2], 0, "connections reset by a stop");
    assert!(totals[1] >= 1, "clients were refused once baton was gone");
}

/// The stop limits the README's container section documents: how long a stop waits for one
/// client that misbehaves in each way (each baton has exactly that one connection).
#[test]
fn the_stop_limits_the_readme_documents_hold() {
    let _heavy = common::heavy();
    type Setup = fn(&mut TcpStream);
    let cases: [(&str, Setup, f64, f64); 4] = [
        (
            "an idle connection whose client closes when baton does",
            |s| {
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let mut reader = s.try_clone().unwrap();
                thread::spawn(move || {
                    // Read to baton's FIN, then close our side, as a browser does.
                    while reader.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
                    let _ = reader.shutdown(std::net::Shutdown::Write);
                });
            },
            0.9,
            2.5,
        ),
        (
            "an idle connection that is never closed",
            |s| {
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let _ = s.read(&mut [0u8; 4096]);
            },
            2.9,
            5.0,
        ),
        (
            "half a request head",
            |s| {
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
            },
            7.9,
            11.5,
        ),
        (
            "pipelined requests whose answers are never read",
            |s| {
                s.set_nonblocking(true).unwrap();
                for _ in 0..20_000 {
                    if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
                        break;
                    }
                }
            },
            // The 1 s idle grace counts from the last byte baton read: once baton stops reading
            // (its answers back up), that may be before the stop, and the grace is over at once.
            6.9,
            11.5,
        ),
    ];
    let runs: Vec<_> = cases
        .iter()
        .map(|(what, setup, low, high)| {
            let (what, setup, low, high) = (*what, *setup, *low, *high);
            thread::spawn(move || {
                let sb = Sandbox::new();
                let mut baton = sb.start(&"r".repeat(100), &["--shutdown-timeout", "30s"]);
                let mut client = TcpStream::connect(sb.addr()).expect("connect");
                setup(&mut client);
                thread::sleep(Duration::from_millis(500));
                let stop = Instant::now();
                baton.signal(baton.pid, Signal::SIGTERM);
                let status = baton.wait_exit(Duration::from_secs(40));
                let took = stop.elapsed().as_secs_f64();
                assert_eq!(status.code(), Some(0), "{what}: {}", baton.log());
                drop(client);
                (what, took, low, high)
            })
        })
        .collect();
    for run in runs {
        let (what, took, low, high) = run.join().expect("case");
        println!("stop with {what}: {took:.2} s");
        assert!(
            (low..=high).contains(&took),
            "{what}: the stop took {took:.2} s, documented {low}..{high} s"
        );
    }
}

/// A stop while a client that reads nothing has a large answer queued, and that client then
/// resets its connection (it was killed, or gave up): the connection is gone, and so is what was
/// queued for it. baton sees it gone and exits then, rather than wait for a dead peer to read.
#[test]
fn a_stop_does_not_wait_for_a_client_that_reset_its_connection_with_an_answer_queued() {
    let sb = Sandbox::new();
    let mut baton = sb.start(
        &"0123456789abcdef".repeat(56 * 1024),
        &["--shutdown-timeout", "30s"],
    );
    let client = TcpStream::connect(sb.addr()).expect("connect");
    nix::sys::socket::setsockopt(&client, nix::sys::socket::sockopt::RcvBuf, &16384)
        .expect("SO_RCVBUF");
    (&client)
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    thread::sleep(Duration::from_millis(300));
    let stop = Instant::now();
    baton.signal(baton.pid, Signal::SIGTERM);
    // The drain's grace (1 s) and the linger (2 s) are over: baton waits for the client to
    // read what is queued. The client resets instead.
    thread::sleep(Duration::from_millis(3500));
    nix::sys::socket::setsockopt(
        &client,
        nix::sys::socket::sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .expect("SO_LINGER");
    let reset = stop.elapsed();
    drop(client);
    let status = baton.wait_exit(DEADLINE);
    let took = stop.elapsed();
    println!("stop: the client reset after {reset:?}; baton exited after {took:?}");
    assert_eq!(status.code(), Some(0), "{}", baton.log());
    // Waiting for the dead peer would take 5 s more (the stall bound).
    assert!(
        took < reset + Duration::from_secs(3),
        "baton exited {:?} after the client's reset",
        took - reset
    );
}
