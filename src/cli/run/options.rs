//! `baton run`'s options: what `--ready`, `--stop-signal` and the durations mean, validated.

use std::ffi::OsString;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::cli::args::RunArgs;
use crate::listen::spec::{ListenSpec, Scheme};
use crate::settings::Settings;

/// When a new generation counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ready {
    /// `READY=1` on the private notify socket.
    Notify,
    /// Still running after this long (or `READY=1` before).
    Delay(Duration),
}

impl FromStr for Ready {
    type Err = String;
    fn from_str(s: &str) -> Result<Ready, String> {
        match s.split_once(':') {
            None if s == "notify" => Ok(Ready::Notify),
            Some(("delay", d)) => humantime::parse_duration(d)
                .map(Ready::Delay)
                .map_err(|e| format!("--ready={s}: {e}")),
            _ => Err(format!(
                "--ready={s}: expected notify or delay:DURATION (e.g. delay:2s)"
            )),
        }
    }
}

/// A signal named as `TERM`, `SIGTERM` or a number.
pub(crate) fn parse_signal(s: &str) -> Result<Signal, String> {
    let bad = || format!("--stop-signal={s}: not a signal name or number");
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| bad())
}

/// The validated options.
#[derive(Debug)]
pub(super) struct Options {
    pub(super) settings: Settings,
    pub(super) command: Vec<OsString>,
    pub(super) ready: Ready,
    pub(super) ready_timeout: Duration,
    pub(super) stop_signal: Signal,
    pub(super) grace: Duration,
}

impl Options {
    pub(super) fn parse(args: &RunArgs) -> Result<Options, String> {
        let duration = |name: &str, v: &str| {
            humantime::parse_duration(v).map_err(|e| format!("--{name}={v}: {e}"))
        };
        let mut settings = Settings::default();
        if !args.listen.is_empty() {
            let mut specs = Vec::new();
            for (i, text) in args.listen.iter().enumerate() {
                let spec: ListenSpec = text
                    .parse()
                    .map_err(|e| format!("--listen[{i}] {text:?}: {e}"))?;
                if spec.scheme() == Scheme::Https {
                    return Err(format!(
                        "--listen[{i}] {text:?}: baton run passes plain sockets; TLS is the application's (give host:port)"
                    ));
                }
                specs.push(spec);
            }
            settings = settings.listen(specs);
        }
        if let Some(path) = &args.handoff_socket {
            settings = settings.handoff_socket(path);
        }
        if args.command.is_empty() {
            return Err("no COMMAND given after --".into());
        }
        Ok(Options {
            settings,
            command: args.command.clone(),
            ready: args.ready.parse()?,
            ready_timeout: duration("ready-timeout", &args.ready_timeout)?,
            stop_signal: parse_signal(&args.stop_signal)?,
            grace: duration("grace", &args.grace)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_modes_parse() {
        assert_eq!("notify".parse::<Ready>(), Ok(Ready::Notify));
        assert_eq!(
            "delay:1500ms".parse::<Ready>(),
            Ok(Ready::Delay(Duration::from_millis(1500)))
        );
        for bad in ["probe:http://x/", "delay:soon", "", "notify:1"] {
            let e = bad.parse::<Ready>().unwrap_err();
            assert!(e.contains("--ready="), "{e}");
        }
    }

    #[test]
    fn signals_parse() {
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("sigquit"), Ok(Signal::SIGQUIT));
        assert_eq!(parse_signal("10"), Ok(Signal::SIGUSR1));
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
