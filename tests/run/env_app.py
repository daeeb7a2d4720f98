"""A COMMAND for tests/run.rs that reports what `baton run` gave it: it writes its pid, process
group, LISTEN_* and NOTIFY_SOCKET to $APP_REPORT (JSON), checks that fds 3, 4, ... (LISTEN_FDS of
them) are listening sockets, lists the signals it was started with ignored (but SIGPIPE and
SIGXFSZ, which Python ignores itself) and the blocked ones, then sends `MAINPID=1`, `STATUS=`
and `READY=1` to $NOTIFY_SOCKET (a MAINPID= that must never reach the real service manager) and
waits for SIGTERM, which it reports too."""
import json
import os
import signal
import socket
import sys
import time

report = os.environ["APP_REPORT"]


def listening(fd):
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    finally:
        sock.detach()


def blocked():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16)
    return None


count = int(os.environ.get("LISTEN_FDS") or "0")
pythons_own = {signal.SIGPIPE, signal.SIGXFSZ}
info = {
    "pid": os.getpid(),
    "pgid": os.getpgid(0),
    "LISTEN_PID": os.environ.get("LISTEN_PID"),
    "LISTEN_FDS": os.environ.get("LISTEN_FDS"),
    "LISTEN_FDNAMES": os.environ.get("LISTEN_FDNAMES"),
    "NOTIFY_SOCKET": os.environ.get("NOTIFY_SOCKET"),
    "listening": count > 0 and all(listening(fd) for fd in range(3, 3 + count)),
    "sighup_ignored": signal.getsignal(signal.SIGHUP) == signal.SIG_IGN,
    "ignored": sorted(
        int(s)
        for s in signal.valid_signals()
        if s not in pythons_own and signal.getsignal(s) == signal.SIG_IGN
    ),
    "blocked": blocked(),
}
with open(report + ".tmp", "w") as f:
    json.dump(info, f)
os.rename(report + ".tmp", report)


def stopped(signum, frame):
    with open(report + ".stopped", "w") as f:
        f.write(str(signum))
    sys.exit(0)


signal.signal(signal.SIGTERM, stopped)
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.sendto(b"MAINPID=1\nSTATUS=env_app up\nREADY=1", os.environ["NOTIFY_SOCKET"])
while True:
    time.sleep(1)
