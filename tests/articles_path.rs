//! Story: the Go article's own hand-off path, `/tmp/api.sock`, in a sticky world-writable
//! directory. Its server (a parent that speaks only the base exchange) hands its listener to
//! baton, and that baton then hands off to baton again and again, under load — making its files
//! in a private directory of its own (`/tmp/baton-<uid>/`), never through a name another user
//! controls (docs/handoff-protocol.md, "Files baton creates").

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::load::{body_is_one_of, Load};
use common::users::OtherUser;
use common::{Baton, PathLock, Sandbox, DEADLINE};

/// Plays the article's server: listens at `path`, starts baton with the listener at fd 3 and
/// `BATON_HANDOFF_SOCKET=path`, answers its `get_listener` with the base answer, and exits (its
/// hand-off socket is removed, as the Go server's defer does). Returns baton, serving.
fn base_parent_hands_over(sb: &Sandbox, path: &Path, listener: &TcpListener) -> Baton {
    let _ = fs::remove_file(path);
    let unix = UnixListener::bind(path).unwrap();
    let mut cmd = sb.baton();
    cmd.env_remove("BATON_LISTEN")
        .env("BATON_HANDOFF_SOCKET", path);
    common::place_at_fd3(&mut cmd, listener.as_raw_fd());
    let baton = sb.spawn(cmd);
    unix.set_nonblocking(true).unwrap();
    let mut conn = common::try_wait_until(DEADLINE, || unix.accept().ok().map(|(s, _)| s))
        .unwrap_or_else(|| panic!("baton never dialed {}:\n{}", path.display(), baton.log()));
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut req = [0u8; 12];
    conn.read_exact(&mut req).unwrap();
    assert_eq!(&req, b"get_listener");
    let port = listener.local_addr().unwrap().port();
    conn.write_all(
        format!("{{\"addr\":\"127.0.0.1:{port}\",\"fd\":3,\"filename\":\"http\"}}\n").as_bytes(),
    )
    .unwrap();
    drop(conn);
    baton.wait_ready(&sb.notify);
    assert!(baton.log().contains("source=import"), "{}", baton.log());
    drop(unix);
    let _ = fs::remove_file(path);
    baton
}

fn private_dir_of(shared: &Path) -> PathBuf {
    shared.join(format!("baton-{}", nix::unistd::geteuid()))
}

#[test]
fn the_articles_tmp_api_sock_imports_once_then_hands_off_baton_to_baton_under_load() {
    let _heavy = common::heavy();
    let _lock = PathLock::take("/tmp/baton-apisock.lock");
    let sb = Sandbox::new();
    let path = Path::new("/tmp/api.sock");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut baton = base_parent_hands_over(&sb, path, &listener);

    let load = Load::start(
        addr,
        4,
        2,
        Duration::from_millis(2),
        body_is_one_of(&["Hello, world!"]),
    );
    load.wait_more_ok(20, DEADLINE);
    const HANDOFFS: usize = 10;
    let mut main = baton.pid;
    for i in 0..HANDOFFS {
        let r = common::try_reload(&sb.notify, main, DEADLINE)
            .unwrap_or_else(|e| panic!("hand-off {i} of {main}: {e}\nlog:\n{}", baton.log()));
        main = r.new;
        load.wait_more_ok(10, DEADLINE);
    }
    load.stop_without_failures(&format!("/tmp/api.sock: 1 import from a base parent, then {HANDOFFS} baton -> baton hand-offs under load"));

    // baton's files are in its private directory in /tmp, and nothing of a hand-off is left.
    let private = private_dir_of(Path::new("/tmp"));
    let meta = fs::symlink_metadata(&private).unwrap();
    assert!(meta.is_dir(), "{}", private.display());
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(meta.mode() & 0o7777, 0o700);
    common::wait_until("no hand-off directory of ours left", DEADLINE, || {
        fs::read_dir(&private)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("handoff."))
            .filter_map(|n| n.split('.').nth(1).and_then(|p| p.parse::<i32>().ok()))
            .all(|pid| !baton.live_members().contains(&pid))
            .then_some(())
    });
    common::sigterm_and_wait_gone(&sb, &mut baton, main);
}

#[test]
fn names_another_user_made_first_in_a_sticky_directory_are_refused_and_nothing_is_made_through_them(
) {
    let Some(mallory) = OtherUser::create() else {
        panic!("this test needs root to create a second user");
    };
    let sb = Sandbox::new();
    let shared = sb.shared_tmp();
    let path = shared.join("api.sock");
    let private = private_dir_of(&shared);
    let trap = shared.join("mallory");
    // 1. Before baton starts, a symlink to a directory of mallory's in place of baton's private
    //    directory.
    mallory.sh(&format!(
        "mkdir -m 777 {t} && ln -s {t} {p}",
        t = trap.display(),
        p = private.display()
    ));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut baton = base_parent_hands_over(&sb, &path, &listener);
    let main = baton.pid;
    let status = common::reload_expect_failure(&sb.notify, main);
    println!("symlink planted: {status}");
    assert!(
        status.contains(&private.display().to_string()) && status.contains("symlink"),
        "{status}"
    );
    assert!(!status.contains('\n'));
    // 2. A directory of mallory's, open to everybody.
    mallory.sh(&format!(
        "rm {p} && mkdir -m 777 {p}",
        p = private.display()
    ));
    let status = common::reload_expect_failure(&sb.notify, main);
    println!("directory planted: {status}");
    assert!(
        status.contains(&private.display().to_string())
            && status.contains(&format!("uid {}", mallory.uid)),
        "{status}"
    );
    for dir in [&trap, &private] {
        let left: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(
            left.is_empty(),
            "made through mallory's {}: {left:?}",
            dir.display()
        );
    }
    // Nothing of root's anywhere in the shared directory: only mallory's names.
    for e in fs::read_dir(&shared).unwrap().flatten() {
        let meta = fs::symlink_metadata(e.path()).unwrap();
        assert_eq!(
            meta.uid(),
            mallory.uid,
            "{} is not mallory's",
            e.path().display()
        );
    }
    // The old process served on throughout.
    let addr = listener.local_addr().unwrap();
    assert_eq!(common::http::get_fresh(addr, "/").unwrap().status, 200);

    // 3. Once the name is free again, baton makes its own private directory and hands off.
    mallory.sh(&format!("rmdir {p}", p = private.display()));
    let r = common::reload(&sb.notify, main);
    let meta = fs::symlink_metadata(&private).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    assert_eq!(meta.mode() & 0o7777, 0o700);
    common::sigterm_and_wait_gone(&sb, &mut baton, r.new);
}
