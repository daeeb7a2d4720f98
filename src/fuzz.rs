//! Everything that parses bytes from outside, fuzzed: hand-off messages, `LISTEN_*` variables,
//! listen address specs, the configuration file, the reload status file, the control socket's
//! answers, PEM certificate and key files, and the DER certificate reader.
//!
//! A small deterministic mutation fuzzer (no nightly toolchain needed): every input in
//! `tests/fuzz/corpus/<target>/` is replayed, then mutated (bit flips, truncation, splices,
//! inserted bytes) for `BATON_FUZZ_ITERS` rounds per target (default 3000, seed `BATON_FUZZ_SEED`).
//! Each round must not panic and must keep the target's invariant (what parses re-encodes to
//! something that parses the same). A failing input is printed so it can join the corpus.
//! `tests/fuzz/run` runs this for longer in CI (`cargo test --lib fuzz::`).

use std::path::Path;

use crate::handoff::protocol::{self, ChildMessage, Opening, ParentMessage};
use crate::listen::activation::ActivationEnv;
use crate::listen::spec::ListenSpec;
use crate::reload::Answer;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\n",
    b"{",
    b"}",
    b"\"",
    b":",
    b",",
    b"[",
    b"]",
    b"\\u0000",
    b"-1",
    b"4294967296",
    b"null",
    b"\"fd\":",
    b"\"addr\":",
    b"\"baton\":",
    b"\"event\":",
    b"unix:",
    b"[::]",
    b"\xff",
    b"\0",
];

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.truncate(rng.below(out.len() + 1)),
            2 => {
                let i = rng.below(out.len() + 1);
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(i..i, piece.iter().copied());
            }
            3 if !out.is_empty() => {
                let i = rng.below(out.len());
                let j = i + rng.below(out.len() - i);
                out.drain(i..j);
            }
            4 => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(other.len() + 1);
                let at = rng.below(out.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[cut..]);
            }
            _ => {
                let i = rng.below(out.len() + 1);
                out.insert(i, rng.next() as u8);
            }
        }
    }
    out
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "corpus {target} is empty");
    inputs
}

fn fuzz(target: &str, check: impl Fn(&[u8])) {
    let iters: usize = std::env::var("BATON_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("BATON_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_ba70);
    let corpus = corpus(target);
    let run = |input: &[u8]| {
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(input))).is_err() {
            panic!(
                "{target}: failing input (add it to the corpus): {:?}",
                String::from_utf8_lossy(input)
            );
        }
    };
    for input in &corpus {
        run(input);
    }
    let mut rng = Rng(seed | 1);
    for _ in 0..iters {
        let base = &corpus[rng.below(corpus.len())];
        run(&mutate(&mut rng, base, &corpus));
    }
    println!(
        "{target}: {} corpus inputs, {iters} mutations",
        corpus.len()
    );
}

#[test]
fn listener_offer() {
    fuzz("offer", |bytes| {
        // Whole input, and every prefix as it may arrive in pieces.
        for end in [bytes.len(), bytes.len() / 2] {
            match protocol::parse_offer(&bytes[..end]) {
                Ok(Some(offer)) => {
                    offer.validate().expect("a parsed offer is consistent");
                    let again = protocol::parse_offer(&protocol::encode_line(&offer))
                        .unwrap()
                        .unwrap();
                    assert_eq!(again, offer);
                    assert!(offer.listeners().iter().all(|l| l.fd >= 3));
                }
                Ok(None) => {}
                Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
            }
        }
    });
}

#[test]
fn parent_opening() {
    fuzz("opening", |bytes| match protocol::parse_opening(bytes) {
        Ok(Some(Opening::Request)) => assert_eq!(bytes, protocol::REQUEST),
        Ok(Some(Opening::Message(m))) => {
            let line = protocol::encode_line(&m);
            assert_eq!(
                protocol::parse_line::<ChildMessage>(&line, "x").unwrap(),
                Some(m)
            );
        }
        Ok(None) => assert!(
            bytes.len() <= protocol::MAX_MESSAGE + 1
                || bytes.contains(&b'\n')
                || bytes.starts_with(b"{")
        ),
        Err(e) => assert!(!e.to_string().contains('\n')),
    });
}

#[test]
fn child_and_parent_lines() {
    fuzz("child_line", |bytes| {
        if let Ok(Some(m)) = protocol::parse_line::<ChildMessage>(bytes, "child message") {
            let line = protocol::encode_line(&m);
            assert_eq!(
                protocol::parse_line::<ChildMessage>(&line, "x").unwrap(),
                Some(m)
            );
        }
        let _ = protocol::parse_line::<ParentMessage>(bytes, "parent message");
    });
}

#[test]
fn listen_spec() {
    fuzz("listen_spec", |bytes| {
        let text = String::from_utf8_lossy(bytes);
        match text.parse::<ListenSpec>() {
            Ok(spec) => {
                assert_eq!(spec.as_str(), text);
                let again: ListenSpec = spec.as_str().parse().unwrap();
                assert!(again.same_socket(&spec));
                assert_eq!(again.scheme(), spec.scheme());
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    });
}

#[test]
fn activation_variables() {
    fuzz("activation", |bytes| {
        // NUL-separated: LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, BATON_LISTEN_FDS_WITHOUT_PID;
        // a part that is a single \x01 byte is an unset variable.
        let text = String::from_utf8_lossy(bytes);
        let mut parts = text
            .split('\0')
            .map(|p| (p != "\x01").then(|| p.to_owned()));
        let env = ActivationEnv {
            listen_pid: parts.next().flatten(),
            listen_fds: parts.next().flatten(),
            listen_fdnames: parts.next().flatten(),
            without_pid: parts.next().flatten(),
        };
        if let Some(warning) = env.warning() {
            assert!(!warning.contains('\n'), "{warning}");
        }
        match env.parse(42) {
            Ok(fds) => {
                for (i, fd) in fds.iter().enumerate() {
                    assert_eq!(fd.fd, 3 + i as i32);
                }
                if !fds.is_empty() {
                    match env.listen_pid.as_deref() {
                        Some(pid) => {
                            assert_eq!(pid.trim_start_matches('0'), "42", "only our pid passes")
                        }
                        None => assert!(
                            matches!(env.without_pid.as_deref(), Some("1" | "true")),
                            "no LISTEN_PID passes only when opted in"
                        ),
                    }
                    assert_eq!(env.warning(), None, "a warning about fds that are taken");
                }
            }
            Err(e) => assert!(!e.to_string().contains('\n')),
        }
    });
}

#[cfg(feature = "cli")]
#[test]
fn configuration_file() {
    use crate::cli::{FileConfig as Config, FileOverrides as Overrides};
    fuzz("config", |bytes| {
        let text = String::from_utf8_lossy(bytes);
        match Config::from_text(
            &Overrides::default(),
            Path::new("/etc/baton/baton.json"),
            &text,
        ) {
            Ok(config) => {
                assert!(!config.settings.listen.is_empty());
                assert!(!config.settings.child_timeout.is_zero());
                let https = config
                    .settings
                    .listen
                    .iter()
                    .any(|l| l.scheme() == crate::listen::spec::Scheme::Https);
                assert!(
                    !https || config.settings.tls.is_some(),
                    "https without a pair"
                );
            }
            Err(e) => {
                let line = e.to_string();
                assert!(line.starts_with("config /etc/baton/baton.json"), "{line}");
                assert!(!line.contains('\n'), "{line}");
            }
        }
    });
}

#[test]
fn control_answers() {
    fuzz("answer", |bytes| {
        if let Ok(answer) = serde_json::from_slice::<Answer>(bytes) {
            let again: Answer =
                serde_json::from_slice(&serde_json::to_vec(&answer).unwrap()).unwrap();
            assert_eq!(again, answer);
        }
    });
}

#[test]
fn reload_status_file() {
    fuzz("status", |bytes| match crate::reload::parse_status(bytes) {
        Ok(status) => {
            let again = crate::reload::parse_status(&serde_json::to_vec(&status).unwrap()).unwrap();
            assert_eq!(again, status);
        }
        Err(e) => assert!(!e.contains('\n'), "{e}"),
    });
}

#[cfg(feature = "tls")]
#[test]
fn pem_files() {
    use crate::tls;
    let path = Path::new("/etc/baton/fullchain.pem");
    fuzz("pem", |bytes| {
        match tls::parse_chain(path, bytes) {
            Ok(chain) => {
                assert!(!chain.is_empty());
                if let Err(e) = tls::check::Leaf::parse(&chain[0]) {
                    assert!(!e.is_empty());
                }
            }
            Err(e) => {
                let line = e.to_string();
                assert!(line.starts_with("tls certificate /etc/baton/"), "{line}");
                assert!(!line.contains('\n'), "{line}");
            }
        }
        match tls::parse_key(path, bytes) {
            Ok(key) => {
                // What the provider makes of it must not panic either.
                let _ = tls::provider().key_provider.load_private_key(key);
            }
            Err(e) => {
                let line = e.to_string();
                assert!(line.starts_with("tls key /etc/baton/"), "{line}");
                assert!(!line.contains('\n'), "{line}");
            }
        }
    });
}

#[cfg(feature = "tls")]
#[test]
fn x509_der() {
    use crate::tls::x509;
    fuzz("x509", |bytes| match x509::parse(bytes) {
        Ok(facts) => {
            // What `baton check` prints of it must not panic either.
            let _ = crate::tls::check::utc(facts.not_before);
            let _ = crate::tls::check::utc(facts.not_after);
            assert!(!facts.serial.is_empty());
        }
        Err(e) => assert!(!e.contains('\n'), "{e}"),
    });
}
