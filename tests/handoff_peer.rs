//! Story: a process that is not the successor's parent listens where the successor is told its
//! predecessor is (`BATON_PREDECESSOR_SOCKET`), running as the same user — a stale or planted
//! socket, or another service's. The successor asks the kernel who listens there (`SO_PEERCRED`),
//! sees that it is not the process that started it, and refuses before a byte is exchanged: it
//! exits 77 (permission), saying why, and neither asks for listeners nor reports its failure there.

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;

use common::{Sandbox, DEADLINE};

#[test]
fn a_successor_refuses_a_predecessor_socket_held_by_a_process_that_is_not_its_parent() {
    let sb = Sandbox::new();
    sb.write_config(&sb.config("never served"));
    // This test process plays the impostor: it listens (so SO_PEERCRED names it, as root or our
    // user, which passes the user check) but it is not the parent: baton runs under `sh`.
    let path = sb.path("impostor.sock");
    let impostor = UnixListener::bind(&path).unwrap();
    let mut cmd = sb.command("sh");
    // Not `exec`: sh stays the parent; its exit status is baton's.
    cmd.args(["-c", "\"$@\"; exit $?", "sh"])
        .arg(sb.exe())
        .arg("--config")
        .arg(sb.config_path())
        .env("BATON_PREDECESSOR_SOCKET", &path);
    let mut baton = sb.spawn(cmd);
    let log = baton.expect_exit_code(77, "EX_NOPERM for a stranger's socket");
    assert!(
        log.contains("is not the process that started us"),
        "the refusal says why: {log}"
    );
    // baton is gone: whatever it sent waits in the impostor's queue, up to an end of file.
    impostor.set_nonblocking(true).unwrap();
    let (mut dialed, mut received) = (0, Vec::new());
    while let Ok((mut c, _)) = impostor.accept() {
        dialed += 1;
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(DEADLINE)).unwrap();
        c.read_to_end(&mut received).unwrap();
    }
    assert!(
        dialed >= 1,
        "the successor never dialed the socket it was given\n{log}"
    );
    assert!(
        received.is_empty(),
        "the successor sent {:?} to a process it should not trust\n{log}",
        String::from_utf8_lossy(&received)
    );
    assert!(
        common::procs::listening_inodes_on_port(sb.port).is_empty(),
        "the refused successor bound the port itself"
    );
}
