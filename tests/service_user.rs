//! Story: baton runs as the unprivileged user of its service, as packaged (`User=baton`), not as
//! root. Each reload starts the successor as that same user; the successor asks the kernel who
//! listens on the hand-off socket (`SO_PEERCRED`), finds its parent running as its own user, and
//! takes the listeners. Every reload works and every answer is served, by a process of that user.

mod common;

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;

use common::users::OtherUser;
use common::Sandbox;

/// The uid a process runs as (`/proc/PID/status`, the real uid).
fn uid_of(pid: i32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no Uid: in /proc/{pid}/status"))
}

#[test]
fn a_service_running_as_its_own_unprivileged_user_reloads() {
    let Some(svc) = OtherUser::create() else {
        return;
    };
    let sb = Sandbox::new();
    sb.write_config(&sb.config("v1"));
    // The service user owns its directories (hand-off socket, PID file, runtime directory) as
    // systemd's RuntimeDirectory= would give it; it may send to the notify socket.
    for dir in [sb.dir().to_owned(), sb.path("xdg")] {
        chown(&dir, Some(svc.uid), Some(svc.gid)).unwrap();
    }
    fs::set_permissions(sb.notify.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = sb.serve(&[]);
    cmd.uid(svc.uid).gid(svc.gid); // as root, std also drops the supplementary groups
    let mut baton = sb.spawn(cmd);
    baton.wait_ready(&sb.notify);
    let mut main = baton.pid;
    assert_eq!(uid_of(main), svc.uid, "the service runs as its user");
    assert_eq!(sb.wait_serving().text(), "v1");

    for round in 1..=2 {
        let body = format!("v{}", round + 1);
        sb.write_config(&sb.config(&body));
        let r = common::try_reload(&sb.notify, main, common::DEADLINE).unwrap_or_else(|e| {
            panic!(
                "reload {round} of a service running as {}: {e}\nlog:\n{}",
                svc.name,
                baton.log()
            )
        });
        assert_ne!(r.new, main);
        assert_eq!(
            uid_of(r.new),
            svc.uid,
            "the successor runs as the same user"
        );
        main = r.new;
        let served = common::wait_until(&format!("{body} served"), common::DEADLINE, || {
            common::http::get_fresh(sb.addr(), "/")
                .ok()
                .filter(|resp| resp.status == 200 && resp.text() == body)
        });
        assert_eq!(served.text(), body);
    }
    let log = baton.log();
    assert!(!log.contains("refusing to deal with"), "{log}");
    common::sigterm_and_wait_gone(&sb, &mut baton, main);
}
