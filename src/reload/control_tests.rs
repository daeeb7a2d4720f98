//! Unit tests of the control socket's running side (`control.rs`), in-process: a real socket in
//! a runtime directory, real connections; the hand-off is played by calling `begin`/`finish` as
//! the lifecycle does.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::control::{Control, Wake};
use super::{Answer, MAX_LINE};
use crate::runtime_dir::RuntimeDir;

const LONG: Duration = Duration::from_secs(30);

struct Bench {
    _tmp: tempfile::TempDir,
    path: PathBuf,
    control: Control,
    woken: mpsc::UnboundedReceiver<u8>,
}

/// A control socket bound in a fresh runtime directory and served (not accepting yet).
fn bench() -> Bench {
    let (tmp, socket) = crate::test_util::temp_path("run/handoff.sock");
    let (listener, path) = RuntimeDir::open(&socket).unwrap().bind_control().unwrap();
    let (inputs, woken) = mpsc::unbounded_channel();
    let control = Control::start(OwnedFd::from(listener), Wake { inputs, input: 1u8 }).unwrap();
    Bench {
        _tmp: tmp,
        path,
        control,
        woken,
    }
}

/// A client connected, its request not sent yet.
async fn connect(path: &Path) -> UnixStream {
    UnixStream::connect(path).await.unwrap()
}

/// Send the request on `stream` and read the answer line.
fn ask(mut stream: UnixStream) -> JoinHandle<Answer> {
    tokio::spawn(async move {
        stream
            .write_all(b"{\"request\":\"reload\"}\n")
            .await
            .unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    })
}

async fn woken(b: &mut Bench) {
    let woke = tokio::time::timeout(LONG, b.woken.recv()).await;
    assert_eq!(woke, Ok(Some(1)), "the owner was not told of a request");
}

async fn not_woken(b: &mut Bench) {
    let woke = tokio::time::timeout(Duration::from_millis(200), b.woken.recv()).await;
    assert!(woke.is_err(), "a request was read: {woke:?}");
}

async fn answer_of<T>(client: JoinHandle<T>) -> T {
    tokio::time::timeout(LONG, client)
        .await
        .expect("no answer")
        .unwrap()
}

#[tokio::test]
async fn requests_are_read_only_while_accepting_and_get_the_outcome_of_the_hand_off() {
    let mut b = bench();
    let name = b.control.name().unwrap();
    assert!(name.starts_with("control."), "{name}");
    assert_eq!(Some(name.as_str()), b.path.file_name().unwrap().to_str());

    let client = ask(connect(&b.path).await);
    not_woken(&mut b).await;
    b.control.accept();
    woken(&mut b).await;
    b.control.begin();
    let done = Answer::Reloaded {
        retired: 1,
        successor: 2,
    };
    assert!(
        !b.control.finish(done.clone(), true),
        "no request came meanwhile: no other hand-off"
    );
    assert_eq!(answer_of(client).await, done);
}

/// Two clients: `early` is accepted and says nothing yet, `first` asks; when the owner hears
/// of `first`, `early`'s connection was accepted too (the backlog is taken in order).
async fn one_asking_one_accepted(b: &mut Bench) -> (UnixStream, JoinHandle<Answer>) {
    b.control.accept();
    let early = connect(&b.path).await;
    let first = ask(connect(&b.path).await);
    woken(b).await;
    (early, first)
}

#[tokio::test]
async fn a_request_read_as_a_hand_off_began_gets_the_next_hand_offs_outcome() {
    let mut b = bench();
    let (early, first) = one_asking_one_accepted(&mut b).await;
    b.control.begin();
    let late = ask(early);
    woken(&mut b).await;
    let failed = Answer::Failed {
        pid: 1,
        reason: "bad".into(),
    };
    assert!(
        b.control.finish(failed.clone(), true),
        "a request came meanwhile: another hand-off starts at once"
    );
    assert_eq!(answer_of(first).await, failed);
    b.control.begin();
    let done = Answer::Reloaded {
        retired: 1,
        successor: 3,
    };
    assert!(!b.control.finish(done.clone(), true));
    assert_eq!(answer_of(late).await, done);
}

#[tokio::test]
async fn a_request_read_as_a_successor_took_over_is_told_to_ask_it_again() {
    let mut b = bench();
    let (early, first) = one_asking_one_accepted(&mut b).await;
    b.control.begin();
    let late = ask(early);
    woken(&mut b).await;
    let done = Answer::Reloaded {
        retired: 1,
        successor: 7,
    };
    assert!(!b.control.finish(done.clone(), false));
    assert_eq!(answer_of(first).await, done);
    assert_eq!(answer_of(late).await, Answer::AskAgain { main: 7 });
}

#[tokio::test]
async fn flush_waits_until_every_request_read_has_its_answer_written() {
    let mut b = bench();
    b.control.accept();
    let client = ask(connect(&b.path).await);
    woken(&mut b).await;
    let within = Duration::from_millis(300);
    let at = Instant::now();
    b.control.flush(within).await;
    assert!(
        at.elapsed() >= within,
        "flush returned with a request unanswered"
    );
    b.control.begin();
    b.control.finish(Answer::Stopping { pid: 1 }, false);
    let at = Instant::now();
    b.control.flush(LONG).await;
    assert!(
        at.elapsed() < LONG / 2,
        "flush waited with every request answered"
    );
    assert_eq!(answer_of(client).await, Answer::Stopping { pid: 1 });
}

#[tokio::test]
async fn a_dropped_control_socket_is_no_longer_listened_on() {
    let b = bench();
    b.control.accept();
    let Bench {
        _tmp,
        path,
        control,
        ..
    } = b;
    drop(control);
    let deadline = Instant::now() + LONG;
    while UnixStream::connect(&path).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still listened on after the drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_request_from_another_user_is_refused_even_where_the_socket_lets_it_connect() {
    if !crate::test_util::root_for("a process of another user") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mut b = bench();
    // Permissions that let anybody connect (a mistake, or a process with CAP_DAC_OVERRIDE):
    // the check of the peer's user still refuses it.
    let mode = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    mode(b._tmp.path(), 0o755);
    mode(b.path.parent().unwrap(), 0o755);
    mode(&b.path, 0o666);
    b.control.accept();
    // SAFETY: an all-zero sockaddr_un is valid; the path is copied into it below.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let path = std::os::unix::ffi::OsStrExt::as_bytes(b.path.as_os_str());
    assert!(path.len() < addr.sun_path.len());
    for (to, from) in addr.sun_path.iter_mut().zip(path) {
        *to = *from as libc::c_char;
    }
    let request = b"{\"request\":\"reload\"}\n";
    // SAFETY: the child calls only async-signal-safe system calls (setresuid, socket, connect,
    // write, read, _exit) on memory prepared before the fork.
    let child = unsafe {
        let pid = libc::fork();
        if pid == 0 {
            if libc::setresuid(65534, 65534, 65534) != 0 {
                libc::_exit(1);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) != 0 {
                libc::_exit(2);
            }
            libc::write(fd, request.as_ptr().cast(), request.len());
            let mut byte = 0u8;
            // Closed unanswered: 0 (end of file) or -1 (reset: the request was not read);
            // answered: 1.
            let n = libc::read(fd, (&mut byte as *mut u8).cast(), 1);
            libc::_exit(if n <= 0 { 0 } else { 3 });
        }
        pid
    };
    assert!(child > 0);
    let pid = nix::unistd::Pid::from_raw(child);
    let status = tokio::task::spawn_blocking(move || nix::sys::wait::waitpid(pid, None));
    not_woken(&mut b).await;
    let status = tokio::time::timeout(LONG, status).await;
    if status.is_err() {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    assert!(
        matches!(status, Ok(Ok(Ok(nix::sys::wait::WaitStatus::Exited(_, 0))))),
        "the other user's connection was not closed unanswered: {status:?}"
    );
}

/// Send `bytes` on `stream` (then end the sending side) and read what comes back: the answer,
/// or `None` when the connection was closed without one.
fn send(mut stream: UnixStream, bytes: Vec<u8>) -> JoinHandle<Option<Answer>> {
    tokio::spawn(async move {
        stream.write_all(&bytes).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut line = String::new();
        match BufReader::new(stream).read_line(&mut line).await {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))),
            // Closed with bytes of the request unread.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("{e}"),
        }
    })
}

/// `{"request":"reload"` padded with spaces to `len` bytes by its closing brace: valid JSON of
/// exactly that length.
fn padded_request(len: usize) -> Vec<u8> {
    let mut line = b"{\"request\":\"reload\"".to_vec();
    line.resize(len - 1, b' ');
    line.push(b'}');
    line
}

/// The protocol's bound (docs/handoff-protocol.md): one newline-terminated line of at most
/// 64 KiB before its newline. A line of exactly 64 KiB is read; one byte more, a request that
/// would parse if cut at the bound, or a line whose newline never comes is closed unanswered and
/// starts nothing.
#[tokio::test]
async fn a_request_line_of_at_most_64_kib_and_its_newline_is_read_and_no_other() {
    let mut b = bench();
    b.control.accept();
    let mut longest = padded_request(MAX_LINE);
    longest.push(b'\n');
    let client = send(connect(&b.path).await, longest);
    woken(&mut b).await;
    b.control.begin();
    let done = Answer::Reloaded {
        retired: 1,
        successor: 2,
    };
    b.control.finish(done.clone(), true);
    assert_eq!(answer_of(client).await, Some(done));

    let mut too_long = padded_request(MAX_LINE + 1);
    too_long.push(b'\n');
    let mut parses_when_cut = b"{\"request\":\"reload\"}".to_vec();
    parses_when_cut.resize(MAX_LINE + 100, b' ');
    parses_when_cut.push(b'\n');
    let without_newline = b"{\"request\":\"reload\"}".to_vec();
    for (what, bytes) in [
        ("a line one byte over 64 KiB", too_long),
        (
            "a request followed by more than 64 KiB of spaces",
            parses_when_cut,
        ),
        ("a request without its newline", without_newline),
    ] {
        let client = send(connect(&b.path).await, bytes);
        assert_eq!(answer_of(client).await, None, "{what} was answered");
        not_woken(&mut b).await;
    }
}

/// A connection accepted just before the process stopped taking requests, whose line comes
/// later: `flush` (what a process does before it exits) waits until it is read and answered,
/// rather than letting the exit close it unanswered.
#[tokio::test]
async fn flush_waits_for_a_connection_accepted_before_a_close_whose_line_comes_late() {
    let mut b = bench();
    let (early, first) = one_asking_one_accepted(&mut b).await;
    let closing = Answer::AskAgain { main: 9 };
    b.control.close(closing.clone());
    assert_eq!(answer_of(first).await, closing);
    let late_by = Duration::from_millis(300);
    let late = tokio::spawn(async move {
        tokio::time::sleep(late_by).await;
        ask(early).await.unwrap()
    });
    let at = Instant::now();
    b.control.flush(LONG).await;
    assert!(
        at.elapsed() >= late_by,
        "flush returned before the accepted connection's line came"
    );
    assert_eq!(answer_of(late).await, closing);
    not_woken(&mut b).await;
}
