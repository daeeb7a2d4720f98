//! The hand-off wire messages, byte-exact as specified in
//! [`docs/handoff-protocol.md`](../../docs/handoff-protocol.md). Pure: no I/O here, so every parser
//! is unit-tested and fuzzed on bytes.

use serde::{Deserialize, Serialize};

pub use crate::listen::Origin;

/// The base request, exactly these 12 bytes and nothing else.
pub const REQUEST: &[u8] = b"get_listener";
/// No message on the hand-off socket may be larger than this.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// The extension version this build speaks (2: `get_state`/`state`, `confirmed`).
pub const EXTENSION_VERSION: u32 = 2;
/// The largest application state a parent may hand over.
pub const MAX_STATE: u64 = 16 * 1024 * 1024;
/// The environment variable naming the predecessor's hand-off socket for a spawned successor.
pub const PREDECESSOR_ENV: &str = "BATON_PREDECESSOR_SOCKET";
/// The environment variable carrying the successor's generation.
pub const GENERATION_ENV: &str = "BATON_GENERATION";

/// The parent's answer to [`REQUEST`]: the documented base object plus baton's optional extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenerOffer {
    /// The first listener's configured address.
    pub addr: String,
    /// Its descriptor in the child: 3.
    pub fd: i32,
    /// Its name.
    pub filename: String,
    /// Present only when the parent is baton.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baton: Option<Extension>,
}

/// baton's extension of the offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extension {
    /// [`EXTENSION_VERSION`].
    pub version: u32,
    /// Hand-offs done by the parent's line so far.
    pub generation: u64,
    /// Every inherited listener, the first repeating the base fields.
    pub listeners: Vec<OfferedListener>,
    /// The parent holds application state for the child (version 2): the child may ask for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state: bool,
    /// The service's control socket (a listening Unix stream socket), inherited at this fd:
    /// the child serves `baton reload` on it once it is main. Absent from a parent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<i32>,
}

/// One inherited listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedListener {
    /// Its configured address (or, for systemd's sockets, the address it is bound to).
    pub addr: String,
    /// Its descriptor in the child.
    pub fd: i32,
    /// Its name.
    pub name: String,
    /// Where it originally came from.
    pub origin: Origin,
}

/// A line the child sends on the hand-off connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase", deny_unknown_fields)]
pub enum ChildMessage {
    /// It accepts on every listener.
    Ready {
        /// Its pid.
        pid: u32,
    },
    /// It cannot serve, and exits.
    Failed {
        /// Why, one line.
        reason: String,
    },
    /// Version 2, after the offer: send the application state.
    #[serde(rename = "get_state")]
    GetState,
    /// Version 2, after `promoted`: it told the service manager `READY=1` and serves as main.
    Confirmed,
    /// Version 2, between `ready` and its confirmation: it was told to stop (`SIGTERM`,
    /// `SIGINT`, or its application) and drains. The stop is meant for the whole service: a
    /// manager that follows one pid sends it to the announced `MAINPID`, the child.
    Stopping,
}

/// A line the parent sends on the hand-off connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase", deny_unknown_fields)]
pub enum ParentMessage {
    /// Version 2, the answer to `get_state`: exactly `len` bytes of state follow the line.
    State {
        /// How many bytes follow (at most [`MAX_STATE`]).
        len: u64,
    },
    /// systemd now knows the child as the main process.
    Promoted,
}

/// What the first bytes of a connection to the parent turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// The base request.
    Request,
    /// A child message (a successor that failed before it could import).
    Message(ChildMessage),
}

/// A malformed message. The text says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// More than [`MAX_MESSAGE`] bytes without a complete message.
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// Bytes that are neither the request nor a JSON line.
    #[error("expected \"get_listener\" or a JSON line, got {0}")]
    Unexpected(String),
    /// JSON that does not have the expected shape.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// serde_json's description.
        detail: String,
    },
    /// An offer that contradicts itself.
    #[error("inconsistent listener offer: {0}")]
    Inconsistent(String),
}

/// A short, printable preview of untrusted bytes for error messages.
pub fn preview(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(40)];
    let mut s = format!("{:?}", String::from_utf8_lossy(shown));
    if bytes.len() > shown.len() {
        s.push_str(&format!(" ({} bytes)", bytes.len()));
    }
    s
}

/// Classify the first bytes a peer sent the parent. `Ok(None)`: incomplete, read more.
pub fn parse_opening(buf: &[u8]) -> Result<Option<Opening>, ProtocolError> {
    if buf.len() <= REQUEST.len() && REQUEST.starts_with(buf) {
        return Ok((buf.len() == REQUEST.len()).then_some(Opening::Request));
    }
    if buf.first() == Some(&b'{') {
        return match parse_line::<ChildMessage>(buf, "child message")? {
            Some(msg) => Ok(Some(Opening::Message(msg))),
            None => Ok(None),
        };
    }
    Err(ProtocolError::Unexpected(preview(buf)))
}

/// Parse one newline-terminated JSON line from the start of `buf`. `Ok(None)`: no newline yet.
pub fn parse_line<T: serde::de::DeserializeOwned>(
    buf: &[u8],
    what: &'static str,
) -> Result<Option<T>, ProtocolError> {
    let Some(end) = buf.iter().position(|b| *b == b'\n') else {
        return if buf.len() > MAX_MESSAGE {
            Err(ProtocolError::TooLarge)
        } else {
            Ok(None)
        };
    };
    if end > MAX_MESSAGE {
        return Err(ProtocolError::TooLarge);
    }
    serde_json::from_slice(&buf[..end])
        .map(Some)
        .map_err(|e| ProtocolError::Malformed {
            what,
            detail: crate::text::one_line(&e.to_string()),
        })
}

/// Encode a line message (JSON + `\n`).
pub fn encode_line<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail; fall back to an empty object if it ever did.
    let mut out = serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

/// [`parse_offer_at`] without the length.
#[cfg(test)]
pub fn parse_offer(buf: &[u8]) -> Result<Option<ListenerOffer>, ProtocolError> {
    Ok(parse_offer_at(buf)?.map(|(offer, _)| offer))
}

/// Parse the parent's answer as it arrives. `Ok(None)`: incomplete, read more (or, at EOF, fail).
/// Accepts the object with or without a trailing newline. Also returns how many bytes the object
/// (and one `\n` after it) took.
pub fn parse_offer_at(buf: &[u8]) -> Result<Option<(ListenerOffer, usize)>, ProtocolError> {
    if buf.len() > MAX_MESSAGE {
        return Err(ProtocolError::TooLarge);
    }
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<ListenerOffer>();
    match stream.next() {
        None => Ok(None),
        Some(Err(e)) if e.is_eof() => Ok(None),
        Some(Err(e)) => Err(ProtocolError::Malformed {
            what: "listener offer",
            detail: crate::text::one_line(&e.to_string()),
        }),
        Some(Ok(offer)) => {
            offer.validate()?;
            let mut end = stream.byte_offset();
            if buf.get(end) == Some(&b'\n') {
                end += 1;
            }
            Ok(Some((offer, end)))
        }
    }
}

impl ListenerOffer {
    /// The listeners offered: the extension's list, or the single base listener.
    pub fn listeners(&self) -> Vec<OfferedListener> {
        match &self.baton {
            Some(ext) => ext.listeners.clone(),
            None => vec![OfferedListener {
                addr: self.addr.clone(),
                fd: self.fd,
                name: self.filename.clone(),
                origin: Origin::Config,
            }],
        }
    }

    /// Check the offer for contradictions: bad descriptors, duplicates, a first listener that
    /// differs from the base fields.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let bad = |m: String| Err(ProtocolError::Inconsistent(m));
        let listeners = self.listeners();
        let Some(first) = listeners.first() else {
            return bad("no listeners".into());
        };
        if first.addr != self.addr || first.fd != self.fd {
            return bad("first listener differs from addr/fd".into());
        }
        for (i, l) in listeners.iter().enumerate() {
            if l.fd < 3 {
                return bad(format!("fd {} is a standard stream", l.fd));
            }
            if listeners[..i].iter().any(|o| o.fd == l.fd) {
                return bad(format!("fd {} offered twice", l.fd));
            }
            if listeners[..i].iter().any(|o| o.addr == l.addr) {
                return bad(format!("address {:?} offered twice", l.addr));
            }
        }
        if let Some(fd) = self.baton.as_ref().and_then(|ext| ext.control) {
            if fd < 3 || listeners.iter().any(|l| l.fd == fd) {
                return bad(format!(
                    "control socket fd {fd} is a standard stream or a listener"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_offer_is_byte_compatible() {
        let offer = ListenerOffer {
            addr: "127.0.0.1:8000".into(),
            fd: 3,
            filename: "http".into(),
            baton: None,
        };
        assert_eq!(
            serde_json::to_string(&offer).unwrap(),
            r#"{"addr":"127.0.0.1:8000","fd":3,"filename":"http"}"#
        );
        let parsed = parse_offer(br#"{"addr": "127.0.0.1:8000", "fd": 3, "filename": "http"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(parsed, offer);
        assert_eq!(parsed.listeners()[0].origin, Origin::Config);
    }

    #[test]
    fn a_version_1_extension_still_parses() {
        let v1 = br#"{"addr":"a:1","fd":3,"filename":"x","baton":{"version":1,"generation":0,"listeners":[{"addr":"a:1","fd":3,"name":"x","origin":"config"}]}}"#;
        let (offer, end) = parse_offer_at(v1).unwrap().unwrap();
        assert_eq!(end, v1.len());
        assert!(!offer.baton.unwrap().state);
    }

    #[test]
    fn offer_parses_only_when_complete() {
        let full = br#"{"addr":"a:1","fd":3,"filename":"x"}"#;
        for cut in 0..full.len() {
            assert_eq!(parse_offer(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(parse_offer(full).unwrap().is_some());
        let mut nl = full.to_vec();
        nl.push(b'\n');
        assert!(parse_offer(&nl).unwrap().is_some());
        // the length taken: the object and one newline after it, never what follows
        assert_eq!(parse_offer_at(&nl).unwrap().unwrap().1, full.len() + 1);
        nl.extend_from_slice(b"\n{");
        assert_eq!(parse_offer_at(&nl).unwrap().unwrap().1, full.len() + 1);
    }

    #[test]
    fn extension_roundtrips_and_is_checked() {
        let mut offer = ListenerOffer {
            addr: "a:1".into(),
            fd: 3,
            filename: "http".into(),
            baton: Some(Extension {
                version: 2,
                generation: 2,
                state: true,
                control: None,
                listeners: vec![
                    OfferedListener {
                        addr: "a:1".into(),
                        fd: 3,
                        name: "http".into(),
                        origin: Origin::Systemd,
                    },
                    OfferedListener {
                        addr: "unix:/x".into(),
                        fd: 4,
                        name: "u".into(),
                        origin: Origin::Config,
                    },
                ],
            }),
        };
        let bytes = encode_line(&offer);
        assert_eq!(parse_offer(&bytes).unwrap(), Some(offer.clone()));
        if let Some(ext) = offer.baton.as_mut() {
            ext.listeners[1].fd = 3;
        }
        assert!(parse_offer(&encode_line(&offer))
            .unwrap_err()
            .to_string()
            .contains("fd 3 offered twice"));
    }

    #[test]
    fn bad_offers_are_refused() {
        assert!(matches!(
            parse_offer(b"[1,2]"),
            Err(ProtocolError::Malformed { .. })
        ));
        assert!(matches!(
            parse_offer(br#"{"addr":"a:1","fd":"3","filename":"x"}"#),
            Err(ProtocolError::Malformed { .. })
        ));
        assert!(parse_offer(br#"{"addr":"a:1","fd":1,"filename":"x"}"#).is_err());
        assert_eq!(
            parse_offer(&vec![b' '; MAX_MESSAGE + 1]),
            Err(ProtocolError::TooLarge)
        );
    }

    #[test]
    fn opening_distinguishes_request_message_and_garbage() {
        assert_eq!(parse_opening(b"get_").unwrap(), None);
        assert_eq!(
            parse_opening(b"get_listener").unwrap(),
            Some(Opening::Request)
        );
        assert!(parse_opening(b"get_listenerX").is_err());
        assert!(parse_opening(b"GET / HTTP/1.1").is_err());
        assert_eq!(parse_opening(b"{\"event\":\"failed\"").unwrap(), None);
        assert_eq!(
            parse_opening(b"{\"event\":\"failed\",\"reason\":\"bad\"}\n").unwrap(),
            Some(Opening::Message(ChildMessage::Failed {
                reason: "bad".into()
            }))
        );
        assert!(parse_opening(b"{\"event\":\"nope\"}\n").is_err());
    }

    #[test]
    fn lines_roundtrip() {
        let ready = ChildMessage::Ready { pid: 7 };
        assert_eq!(encode_line(&ready), b"{\"event\":\"ready\",\"pid\":7}\n");
        assert_eq!(
            parse_line::<ChildMessage>(&encode_line(&ready), "x").unwrap(),
            Some(ready)
        );
        assert_eq!(
            encode_line(&ParentMessage::Promoted),
            b"{\"event\":\"promoted\"}\n"
        );
        assert_eq!(
            encode_line(&ParentMessage::State { len: 3 }),
            b"{\"event\":\"state\",\"len\":3}\n"
        );
        assert_eq!(
            encode_line(&ChildMessage::GetState),
            b"{\"event\":\"get_state\"}\n"
        );
        assert_eq!(
            encode_line(&ChildMessage::Confirmed),
            b"{\"event\":\"confirmed\"}\n"
        );
        assert_eq!(
            encode_line(&ChildMessage::Stopping),
            b"{\"event\":\"stopping\"}\n"
        );
        assert_eq!(
            parse_line::<ParentMessage>(b"{\"event\":\"prom", "x").unwrap(),
            None
        );
    }

    /// The documented bound (docs/handoff-protocol.md): a message of 64 KiB is whole, one byte
    /// more is refused, for every parser.
    #[test]
    fn messages_of_64_kib_parse_and_one_byte_more_is_refused() {
        assert_eq!(MAX_MESSAGE, 65536, "the specification says 64 KiB");
        let line = |len: usize| {
            let head = br#"{"event":"failed","reason":""#;
            let tail = br#""}"#;
            let mut l = head.to_vec();
            l.resize(len - tail.len(), b'x');
            l.extend_from_slice(tail);
            assert_eq!(l.len(), len);
            l.push(b'\n');
            l
        };
        let whole = line(MAX_MESSAGE);
        assert!(matches!(
            parse_line::<ChildMessage>(&whole, "x"),
            Ok(Some(ChildMessage::Failed { .. }))
        ));
        assert!(matches!(
            parse_opening(&whole),
            Ok(Some(Opening::Message(ChildMessage::Failed { .. })))
        ));
        assert_eq!(
            parse_line::<ChildMessage>(&line(MAX_MESSAGE + 1), "x"),
            Err(ProtocolError::TooLarge)
        );
        // no newline yet: wait for more up to the bound, refuse beyond it
        assert_eq!(
            parse_line::<ChildMessage>(&whole[..MAX_MESSAGE], "x"),
            Ok(None)
        );
        assert_eq!(
            parse_line::<ChildMessage>(&vec![b'x'; MAX_MESSAGE + 1], "x"),
            Err(ProtocolError::TooLarge)
        );

        let mut offer = br#"{"addr":"a:1","fd":3,"filename":"x"}"#.to_vec();
        let object = offer.len();
        offer.resize(MAX_MESSAGE, b' ');
        let (parsed, end) = parse_offer_at(&offer).unwrap().unwrap();
        assert_eq!((parsed.fd, end), (3, object));
        offer.push(b' ');
        assert_eq!(parse_offer_at(&offer), Err(ProtocolError::TooLarge));
    }

    #[test]
    fn garbage_is_shown_in_the_error_bounded() {
        let err = parse_opening(b"GET / HTTP/1.1\r\n")
            .unwrap_err()
            .to_string();
        assert!(err.ends_with(r#"got "GET / HTTP/1.1\r\n""#), "{err}");
        let long = vec![b'A'; 100];
        let err = parse_opening(&long).unwrap_err().to_string();
        assert!(
            err.contains(&format!("\"{}\" (100 bytes)", "A".repeat(40))),
            "{err}"
        );
        assert!(!err.contains(&"A".repeat(41)), "{err}");
    }

    /// An offer with the given base fd and listeners `(addr, fd)` and control socket fd.
    fn offer(base: (&str, i32), listeners: &[(&str, i32)], control: Option<i32>) -> ListenerOffer {
        ListenerOffer {
            addr: base.0.into(),
            fd: base.1,
            filename: "x".into(),
            baton: Some(Extension {
                version: EXTENSION_VERSION,
                generation: 1,
                state: false,
                control,
                listeners: listeners
                    .iter()
                    .map(|(addr, fd)| OfferedListener {
                        addr: (*addr).into(),
                        fd: *fd,
                        name: "x".into(),
                        origin: Origin::Config,
                    })
                    .collect(),
            }),
        }
    }

    fn refusal(o: &ListenerOffer) -> String {
        match o.validate() {
            Err(ProtocolError::Inconsistent(why)) => why,
            other => panic!("{o:?} accepted: {other:?}"),
        }
    }

    #[test]
    fn the_first_listener_repeats_the_base_fields_exactly() {
        let two = [("a:1", 3), ("b:2", 4)];
        assert_eq!(offer(("a:1", 3), &two, None).validate(), Ok(()));
        for base in [("b:2", 3), ("a:1", 4), ("b:2", 4)] {
            assert!(refusal(&offer(base, &two, None)).contains("first listener differs"));
        }
        assert!(refusal(&offer(("a:1", 3), &[("a:1", 3), ("a:1", 4)], None))
            .contains("address \"a:1\" offered twice"));
        assert!(refusal(&offer(("a:1", 3), &[], None)).contains("no listeners"));
    }

    #[test]
    fn the_control_socket_is_neither_a_standard_stream_nor_a_listener() {
        let two = [("a:1", 3), ("b:2", 4)];
        assert_eq!(offer(("a:1", 3), &two, Some(5)).validate(), Ok(()));
        // any descriptor from 3 that no listener uses, even below the listeners'
        let after = [("a:1", 4), ("b:2", 5)];
        assert_eq!(offer(("a:1", 4), &after, Some(3)).validate(), Ok(()));
        for fd in [0, 1, 2, -1, 3, 4] {
            let why = refusal(&offer(("a:1", 3), &two, Some(fd)));
            assert!(why.contains(&format!("control socket fd {fd}")), "{why}");
        }
        assert!(refusal(&offer(("a:1", 4), &after, Some(5))).contains("control socket fd 5"));
    }
}
