//! A real second local user, created with `useradd` for one test and removed with `userdel`
//! afterwards, and commands run as that user with `setpriv` (real uid, gid and groups changed
//! before exec). Needs root; [`OtherUser::create`] says so and returns `None` otherwise.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

/// `useradd`/`userdel` lock /etc/passwd: one at a time within a test binary.
static ACCOUNTS: Mutex<()> = Mutex::new(());

pub struct OtherUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Runs `cmd`, retrying while /etc/passwd is locked; `Err` with the reason when it fails.
fn run_locked(cmd: &mut Command) -> Result<Output, String> {
    let _guard = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut why = String::new();
    // Another process (another test binary) may hold the lock on /etc/passwd for a moment.
    for _ in 0..50 {
        let out = super::reaper::output(cmd).map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            return Ok(out);
        }
        why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if !why.to_lowercase().contains("lock") {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    Err(why)
}

impl OtherUser {
    /// Creates a fresh user (no home, no login shell) with a group of its own; `None` only when
    /// the test may skip ([`super::prereq`]).
    pub fn create() -> Option<OtherUser> {
        if !super::prereq::root("a second user needs root to create") {
            return None;
        }
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "btn{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        if let Err(why) = run_locked(
            Command::new("useradd")
                .args(["--no-create-home", "--user-group", "--shell"])
                .arg("/usr/sbin/nologin")
                .arg(&name),
        ) {
            super::prereq::missing(&format!("useradd {name} failed: {why}"));
            return None;
        }
        let user = nix::unistd::User::from_name(&name)
            .ok()
            .flatten()
            .expect("the user just created");
        Some(OtherUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// `program` run as this user (real and effective ids, no supplementary groups).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .arg(program)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a shell script as this user; panics with its output if it fails.
    pub fn sh(&self, script: &str) {
        let mut cmd = self.command("/bin/sh");
        cmd.arg("-ec").arg(script);
        let out = super::reaper::output(&mut cmd).expect("run sh as the other user");
        assert!(
            out.status.success(),
            "as {}: {script}\n{}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A command that, as this user, listens on the Unix socket `path` like a foreign parent
    /// would, and prints `listening`, then `got N` for every connection (the bytes it received
    /// before the peer closed).
    pub fn fake_parent(&self, path: &Path) -> Command {
        let mut cmd = self.command("perl");
        cmd.arg("-e").arg(FAKE_PARENT).arg(path);
        cmd
    }
}

const FAKE_PARENT: &str = r#"
use IO::Socket::UNIX;
$| = 1;
my $path = shift;
my $l = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $path, Listen => 16)
    or die "listen $path: $!";
print "listening\n";
while (my $c = $l->accept) {
    my ($buf, $all) = ('', '');
    while (sysread($c, $buf, 4096)) { $all .= $buf; }
    print "got ", length($all), "\n";
    close $c;
}
"#;

impl Drop for OtherUser {
    fn drop(&mut self) {
        // Whatever still runs as the user first (the test's own children are killed by then).
        let _ = super::reaper::output(
            Command::new("pkill")
                .arg("-KILL")
                .arg("-U")
                .arg(self.uid.to_string()),
        );
        if let Err(why) = run_locked(Command::new("userdel").arg(&self.name)) {
            eprintln!("userdel {}: {why}", self.name);
        }
    }
}
