//! Issue 25's idle-connection row: what one idle keep-alive connection costs the serving
//! process, as the RSS delta over N connections that each made one request and then stay open
//! (HTTP/1.1 against baton, bare hyper and nginx; h2c and TLS beside it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::sleep;
use std::time::Duration;

use serde_json::json;

use crate::common::{procs, tls, Sandbox};
use crate::counts::Tls;
use crate::{log, peers, Bench, BODY};

/// How long the connections stay idle before the RSS is read (long enough for anything a
/// server does to idle connections after a second or two to show).
const QUIET: Duration = Duration::from_secs(5);

/// One open connection after its request (kept open by being held).
enum Held {
    Plain(#[allow(dead_code)] TcpStream),
    Tls(#[allow(dead_code)] Box<tls::TlsClient>),
}

/// One GET on a new connection, its answer read; the connection stays open.
fn h1(addr: SocketAddr) -> Held {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        .expect("write");
    read_until_body(&mut s);
    Held::Plain(s)
}

/// The same over h2c (prior knowledge): preface, empty SETTINGS, one GET on stream 1
/// (HEADERS with END_STREAM and END_HEADERS, static table entries and `:authority: x`).
fn h2(addr: SocketAddr) -> Held {
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let block = [0x82, 0x86, 0x84, 0x41, 0x01, b'x'];
    out.extend([0, 0, block.len() as u8, 1, 5, 0, 0, 0, 1]);
    out.extend(block);
    s.write_all(&out).expect("write");
    read_until_body(&mut s);
    Held::Plain(s)
}

fn read_until_body(s: &mut TcpStream) {
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    while !got.windows(BODY.len()).any(|w| w == BODY.as_bytes()) {
        let n = s.read(&mut buf).expect("read the answer");
        assert!(n > 0, "closed before the answer");
        got.extend_from_slice(&buf[..n]);
    }
}

/// RSS delta in bytes per connection of `pid` over `n` connections opened by `open`, after
/// 50 warm-up connections (closed) and [`QUIET`].
fn per_connection(pid: i32, n: usize, open: &dyn Fn() -> Held) -> f64 {
    drop((0..50).map(|_| open()).collect::<Vec<_>>());
    sleep(QUIET);
    let before = procs::rss_kib(pid);
    let held: Vec<Held> = (0..n).map(|_| open()).collect();
    sleep(QUIET);
    let after = procs::rss_kib(pid);
    drop(held);
    (after as f64 - before as f64) * 1024.0 / n as f64
}

/// The phase: HTTP/1.1 (target: baton at most 1 KiB), h2c and TLS (information).
pub fn phase(b: &mut Bench) {
    let n = b.a.idle_conns;
    let cpus = b.server_cpus.clone();
    log(&format!(
        "idle connections: RSS over {n} idle keep-alive connections, each after one request"
    ));
    // Every figure from a fresh process: memory the first phase freed would otherwise be
    // reused by the second and hide its cost (HTTP/1.1's 17 KB per connection, freed, made the
    // h2c figure that followed it in the same process look like 12 KB).
    let mut s = b.baton(&[]);
    let addr = s.sb.addr();
    let baton = per_connection(s.main, n, &|| h1(addr));
    s.stop();
    let mut s = b.baton(&[]);
    let addr = s.sb.addr();
    let baton_h2 = per_connection(s.main, n, &|| h2(addr));
    s.stop();
    let (hsb, hsb2, nsb) = (Sandbox::new(), Sandbox::new(), Sandbox::new());
    let bare = peers::bare(&hsb, &b.a.bare, &cpus, &[]);
    let bare_h1 = per_connection(bare.pid, n, &|| h1(hsb.addr()));
    drop(bare);
    let bare = peers::bare(&hsb2, &b.a.bare, &cpus, &[]);
    let bare_h2 = per_connection(bare.pid, n, &|| h2(hsb2.addr()));
    drop(bare);
    let nginx = peers::nginx(&nsb, 0, &cpus, &[]);
    let nginx_h1 = per_connection(nginx.pid, n, &|| h1(nsb.addr()));
    drop(nginx);
    let nsb2 = Sandbox::new();
    let nginx = peers::nginx_h2(&nsb2, 0, &cpus);
    let nginx_h2 = per_connection(nginx.pid, n, &|| h2(nsb2.addr()));
    drop(nginx);
    // TLS: fewer connections (each client holds a TLS session in this process)
    let nt = (n / 5).max(1);
    let t = Arc::new(Tls::new());
    let tc = t.clone();
    let mut s = b.baton_with(&[], move |sb| tc.baton_config(sb));
    let (addr, cfg) = (s.sb.addr(), t.client_config());
    let tls_open = |addr: SocketAddr| {
        let cfg = cfg.clone();
        move || {
            let mut c = tls::TlsClient::new(addr, cfg.clone());
            assert!(c.get("/").is_ok_and(|r| r.status == 200), "TLS GET");
            Held::Tls(Box::new(c))
        }
    };
    let baton_tls = per_connection(s.main, nt, &tls_open(addr));
    s.stop();
    let tsb = Sandbox::new();
    let (cert, key) = t.install(&tsb);
    let nginx = peers::nginx_tls(&tsb, (&cert, &key), &cpus, &[]);
    let nginx_tls = per_connection(nginx.pid, nt, &tls_open(tsb.addr()));
    drop(nginx);

    let m = format!("memory per idle HTTP/1.1 keep-alive connection (RSS delta over {n})");
    let p = format!("bare hyper {bare_h1:.0} B, nginx {nginx_h1:.0} B");
    let t = format!("{:.2}x nginx / <= 1024 B", baton / nginx_h1);
    b.row(&m, &format!("{baton:.0} B"), &p, &t, Some(baton <= 1024.0));
    let m = format!("  the same over h2c (RSS delta over {n})");
    let p = format!("bare hyper {bare_h2:.0} B, nginx {nginx_h2:.0} B");
    b.row(&m, &format!("{baton_h2:.0} B"), &p, "info", None);
    let m = format!("  the same over TLS, HTTP/1.1 (RSS delta over {nt})");
    let p = format!("nginx {nginx_tls:.0} B");
    b.row(&m, &format!("{baton_tls:.0} B"), &p, "info", None);
    b.details.insert(
        "idle_connection_bytes".into(),
        json!({"connections": n, "h1": {"baton": baton, "bare": bare_h1, "nginx": nginx_h1},
               "h2c": {"baton": baton_h2, "bare": bare_h2, "nginx": nginx_h2},
               "tls": {"connections": nt, "baton": baton_tls, "nginx": nginx_tls}}),
    );
}
