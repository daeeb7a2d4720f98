//! Story: an application upgrades HTTP/1.1 connections to its own protocol (as WebSockets do),
//! here `tests/programs/upgrade_echo.rs`, a real program: `Upgrade: echo` → 101, then every byte comes
//! back. An upgraded connection belongs to the application: across a reload it keeps echoing
//! from the old process, which exits only once the client closed it — or, if the client never
//! does, when `shutdown_timeout` ends it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{http, procs, Baton, Sandbox, DEADLINE};

fn start_app(sb: &Sandbox, env: &[(&str, &str)]) -> Baton {
    let app = sb.spawn(sb.program("upgrade_echo", env));
    app.wait_ready(&sb.notify);
    app
}

/// A connection upgraded to the echo protocol.
struct Echo {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Echo {
    fn open(sb: &Sandbox) -> Echo {
        let mut writer = TcpStream::connect(sb.addr()).unwrap();
        writer
            .write_all(
                b"GET /echo HTTP/1.1\r\nHost: baton.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
            )
            .unwrap();
        writer.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut reader = BufReader::new(writer.try_clone().unwrap());
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 101"), "{status:?}");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        Echo { reader, writer }
    }

    fn echo(&mut self, text: &str) -> std::io::Result<String> {
        self.writer.write_all(text.as_bytes())?;
        let mut back = vec![0u8; text.len()];
        self.reader.read_exact(&mut back)?;
        Ok(String::from_utf8_lossy(&back).into_owned())
    }

    fn client_port(&self) -> u16 {
        self.writer.local_addr().unwrap().port()
    }
}

fn pid_answer(sb: &Sandbox) -> String {
    http::get_fresh(sb.addr(), "/").unwrap().text()
}

#[test]
fn an_upgraded_connection_keeps_echoing_from_the_old_process_until_the_client_closes_it() {
    let sb = Sandbox::new();
    let mut app = start_app(&sb, &[("BATON_SHUTDOWN_TIMEOUT", "60s")]);
    let old = app.pid;
    let mut echo = Echo::open(&sb);
    assert_eq!(echo.echo("before the reload").unwrap(), "before the reload");
    assert_eq!(pid_answer(&sb), format!("pid {old}"));

    let r = common::reload(&sb.notify, old);
    assert_eq!(
        pid_answer(&sb),
        format!("pid {}", r.new),
        "new requests are the successor's"
    );
    let fresh = Echo::open(&sb);
    assert_eq!(
        procs::connection_owner(app.pid, sb.port, fresh.client_port()),
        Some(r.new),
        "an upgrade after the reload is served by the successor"
    );
    drop(fresh);

    // The old process keeps the upgraded connection and keeps echoing, well past its drain of
    // everything else.
    for i in 0..5 {
        let text = format!("after the reload, round {i}");
        assert_eq!(echo.echo(&text).unwrap(), text);
        assert_eq!(
            procs::connection_owner(app.pid, sb.port, echo.client_port()),
            Some(old),
            "the old process serves the upgraded connection"
        );
        thread::sleep(Duration::from_millis(400));
    }
    assert!(
        app.try_exit().is_none(),
        "the old process waits for its upgraded connection"
    );

    // The client closes: the old process has nothing left and exits.
    let closed = Instant::now();
    drop(echo);
    let st = app.wait_exit(DEADLINE);
    println!(
        "old process exited {:?} after the client closed its upgraded connection",
        closed.elapsed()
    );
    assert_eq!(st.code(), Some(0), "{}", app.log());
    assert_eq!(pid_answer(&sb), format!("pid {}", r.new));
}

#[test]
fn an_upgraded_connection_the_client_never_closes_is_cut_at_the_shutdown_timeout() {
    let sb = Sandbox::new();
    let mut app = start_app(&sb, &[("BATON_SHUTDOWN_TIMEOUT", "3s")]);
    let old = app.pid;
    let mut echo = Echo::open(&sb);
    assert_eq!(echo.echo("hello").unwrap(), "hello");
    let r = common::reload(&sb.notify, old);
    let since = Instant::now();
    assert_eq!(echo.echo("still here").unwrap(), "still here");
    let st = app.wait_exit(DEADLINE);
    let took = since.elapsed();
    println!("old process with an open upgraded connection exited {took:?} after the reload");
    assert_eq!(st.code(), Some(0), "{}", app.log());
    assert!(
        took >= Duration::from_secs(2),
        "it waited for the upgraded connection: {took:?}"
    );
    assert!(
        app.log().contains("shutdown timeout reached"),
        "{}",
        app.log()
    );
    // The connection went with the process.
    let mut buf = [0u8; 8];
    let n = echo.reader.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the cut connection is closed");
    assert_eq!(pid_answer(&sb), format!("pid {}", r.new));
}
