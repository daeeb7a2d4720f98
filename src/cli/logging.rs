//! Logging: journald (through tracing-journald) when stderr is the journal, readable lines on
//! stderr otherwise. `RUST_LOG` is respected. Events of a baton process run inside a span with
//! `pid` and `generation` (hand-offs since the first start), so journald entries carry `PID` and
//! `GENERATION` besides journald's own `_PID`; events add `LISTENER`, `SOURCE` and so on.

use std::os::fd::AsRawFd;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// True when systemd connected our stderr to the journal (`JOURNAL_STREAM` names its device and
/// inode, see [systemd.exec(5)](https://www.freedesktop.org/software/systemd/man/latest/systemd.exec.html)).
pub fn stderr_is_journal() -> bool {
    let Some(expected) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_raw_fd()) else {
        return false;
    };
    expected.to_string_lossy() == format!("{}:{}", stat.st_dev, stat.st_ino)
}

/// Install the global subscriber.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_field_prefix(None)
                .with_syslog_identifier("baton".into());
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init();
            return;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
