//! Logging: journald (through tracing-journald) when stderr is the journal, readable lines on
//! stderr otherwise, or one JSON object per line (`--log-format json`). `RUST_LOG` is respected.
//! Events of a baton process run inside a span with `pid` and `generation` (hand-offs since the
//! first start), so journald entries carry `PID` and `GENERATION` besides journald's own `_PID`;
//! events add `LISTENER`, `SOURCE` and so on. Access-log events (target
//! [`crate::access_log::TARGET`]) are printed as their one-line message in the text format; in
//! JSON and journald their fields are there too.

use std::fmt;
use std::os::fd::AsRawFd;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use super::args::LogFormat;
use crate::access_log;

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
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match format {
        LogFormat::Json => {
            let _ = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
            return;
        }
        LogFormat::Auto if stderr_is_journal() => {
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
        LogFormat::Auto | LogFormat::Text => {}
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .event_format(AccessLines(format::Format::default().with_target(false)))
        .try_init();
}

/// The text format, except that an access-log event is its time stamp and message only (its
/// fields repeat the message).
struct AccessLines<F>(F);

impl<S, N, F> FormatEvent<S, N> for AccessLines<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != access_log::TARGET {
            return self.0.format_event(ctx, writer, event);
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        SystemTime.format_time(&mut writer)?;
        writeln!(writer, " access {}", message.0)
    }
}

struct Message(String);

impl tracing::field::Visit for Message {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            use fmt::Write;
            let _ = write!(self.0, "{value:?}");
        }
    }
}
