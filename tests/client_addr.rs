//! Story: a developer's axum app logs who its clients are, as axum's docs teach:
//! `baton_server::serve(app.into_make_service_with_connect_info::<SocketAddr>())` and a
//! `ConnectInfo<SocketAddr>` extractor, on a plain `Router` too (`examples/axum.rs`, built with
//! the `axum` feature). The address is the real client's, over TCP, TLS and a Unix socket, and
//! stays right across reloads.

mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;

use common::{http, tls, Sandbox};

/// One GET on an open TCP connection; the client's own address and the body.
fn get_from(addr: SocketAddr, path: &str) -> (SocketAddr, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let me = s.local_addr().expect("local addr");
    s.write_all(http::get_request(path, true).as_bytes())
        .expect("write");
    let r = http::read_response(&mut BufReader::new(s)).expect("response");
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    (me, r.text())
}

#[test]
fn the_client_address_reaches_connect_info_over_tcp_and_on_a_plain_router_across_reloads() {
    let sb = Sandbox::new();
    let admin = format!("127.0.0.1:{}", sb.extra_port(0));
    let listen = format!("{},{admin}", sb.listen());
    let app = sb.spawn(sb.app(
        "axum",
        &[("BATON_LISTEN", &listen), ("ADMIN_LISTEN", &admin)],
    ));
    app.wait_ready(&sb.notify);
    let admin_addr: SocketAddr = admin.parse().unwrap();
    let mut main = app.pid;
    for generation in 0..3 {
        // into_make_service_with_connect_info::<SocketAddr>()
        let (me, body) = get_from(sb.addr(), "/client");
        assert_eq!(body, format!("client {me}\n"), "generation {generation}");
        // a plain Router (the admin listener's) with a ConnectInfo<SocketAddr> extractor
        let (me, body) = get_from(admin_addr, "/whoami");
        assert_eq!(
            body,
            format!("admin: client {me}, pid {main}\n"),
            "generation {generation}"
        );
        if generation < 2 {
            main = common::reload(&sb.notify, main).new;
        }
    }
    let log = app.log();
    assert!(
        log.contains("GET /client"),
        "the app logs its clients: {log}"
    );
}

#[test]
fn the_client_address_reaches_connect_info_over_tls() {
    let sb = Sandbox::new();
    let ca = tls::Ca::new();
    let (cert, key) = (sb.path("fullchain.pem"), sb.path("privkey.pem"));
    ca.leaf(1).install(&cert, &key);
    let listen = format!("https://{}", sb.listen());
    let app = sb.spawn(sb.app(
        "axum",
        &[
            ("BATON_LISTEN", &listen),
            ("BATON_TLS_CERT", cert.to_str().unwrap()),
            ("BATON_TLS_KEY", key.to_str().unwrap()),
        ],
    ));
    app.wait_ready(&sb.notify);
    let config = ca.client_config(&[b"http/1.1"]);
    let mut main = app.pid;
    for generation in 0..2 {
        let tcp = TcpStream::connect(sb.addr()).expect("connect");
        let me = tcp.local_addr().unwrap();
        let mut stream = tls::handshake_on(tcp, &config).expect("handshake");
        stream
            .write_all(http::get_request("/client", true).as_bytes())
            .unwrap();
        let r = http::read_response(&mut BufReader::new(stream)).expect("response");
        assert_eq!(
            r.text(),
            format!("client {me}\n"),
            "generation {generation}"
        );
        if generation == 0 {
            main = common::reload(&sb.notify, main).new;
        }
    }
}

#[test]
fn a_unix_socket_client_gets_what_axum_gives_for_its_unix_listener() {
    let sb = Sandbox::new();
    let path = sb.path("app.sock");
    let listen = format!("{},unix:{}", sb.listen(), path.display());
    let app = sb.spawn(sb.app("axum", &[("BATON_LISTEN", &listen)]));
    app.wait_ready(&sb.notify);
    let mut main = app.pid;
    for generation in 0..2 {
        let get = |p: &str| {
            let mut s = UnixStream::connect(&path).expect("connect");
            s.write_all(http::get_request(p, true).as_bytes()).unwrap();
            http::read_response(&mut BufReader::new(s)).expect("response")
        };
        // ConnectInfo<tokio::net::unix::SocketAddr>: an unnamed client socket
        let r = get("/client-unix");
        assert_eq!(
            (r.status, r.text()),
            (200, "unix client (unnamed)\n".to_owned()),
            "generation {generation}"
        );
        // ConnectInfo<SocketAddr> on a Unix listener: the unspecified address, not a 500
        let r = get("/client");
        assert_eq!((r.status, r.text()), (200, "client 0.0.0.0:0\n".to_owned()));
        if generation == 0 {
            main = common::reload(&sb.notify, main).new;
        }
    }
}
