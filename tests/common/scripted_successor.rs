//! The binary on disk ([`Sandbox::exe`]) replaced, as an upgrade replaces it, by a small program
//! that speaks the hand-off protocol as a successor does — it dials `BATON_PREDECESSOR_SOCKET`,
//! asks for the listeners, says `ready` with its pid — and then, once `promoted` arrives, does
//! what the test wants instead of confirming: dies, or hangs. The real parent sees a real
//! process, its own child, on the real socket; only what happens after `promoted` is chosen.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Sandbox;

/// What the successor does once it read `promoted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPromoted {
    /// Exits with status 3 at once: a successor that dies right after promotion.
    Dies,
    /// Sleeps for an hour without a word: a successor that hangs right after promotion.
    Hangs,
}

pub struct ScriptedSuccessor {
    exe: PathBuf,
    real: PathBuf,
    installed: bool,
}

const SCRIPT: &str = r#"#!/usr/bin/python3
# A successor installed by a test: the hand-off protocol up to `promoted`, then AFTER.
import json, os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(os.environ["BATON_PREDECESSOR_SOCKET"])
s.sendall(b"get_listener")
f = s.makefile("rb")
json.loads(f.readline())
s.sendall(json.dumps({"event": "ready", "pid": os.getpid()}).encode() + b"\n")
if json.loads(f.readline() or b"{}").get("event") != "promoted":
    sys.exit(4)
if "AFTER" == "dies":
    sys.exit(3)
time.sleep(3600)
"#;

impl ScriptedSuccessor {
    pub fn install(sb: &Sandbox, after: AfterPromoted) -> ScriptedSuccessor {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let exe = sb.exe();
        let real = sb.path(&format!("bin/.real-scripted-{n}"));
        fs::hard_link(&exe, &real).expect("keep the real binary");
        let script = sb.path(&format!("bin/.scripted-{n}"));
        let after = match after {
            AfterPromoted::Dies => "dies",
            AfterPromoted::Hangs => "hangs",
        };
        fs::write(&script, SCRIPT.replace("AFTER", after)).expect("write the successor");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod it");
        fs::rename(&script, &exe).expect("replace the binary by the scripted successor");
        ScriptedSuccessor {
            exe,
            real,
            installed: true,
        }
    }

    /// Puts the real binary back.
    pub fn restore(&mut self) {
        if std::mem::take(&mut self.installed) {
            let tmp = self.exe.with_extension("restore");
            fs::hard_link(&self.real, &tmp).expect("link the real binary");
            fs::rename(&tmp, &self.exe).expect("put the real binary back");
        }
    }
}

impl Drop for ScriptedSuccessor {
    fn drop(&mut self) {
        if self.installed {
            let tmp = self.exe.with_extension("restore");
            if fs::hard_link(&self.real, &tmp).is_ok() {
                let _ = fs::rename(&tmp, &self.exe);
            }
        }
        let _ = fs::remove_file(&self.real);
    }
}
