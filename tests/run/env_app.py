"""A COMMAND for tests/run.rs that reports what `baton run` gave it: it writes its pid, process
group, LISTEN_* and NOTIFY_SOCKET to $APP_REPORT (JSON), checks that fd 3 is a listening socket,
then sends `MAINPID=1`, `STATUS=` and `READY=1` to $NOTIFY_SOCKET (a MAINPID= that must never
reach the real service manager) and waits for SIGTERM, which it reports too."""
import json
import os
import signal
import socket
import sys
import time

report = os.environ["APP_REPORT"]
sock = socket.socket(fileno=3)
info = {
    "pid": os.getpid(),
    "pgid": os.getpgid(0),
    "LISTEN_PID": os.environ.get("LISTEN_PID"),
    "LISTEN_FDS": os.environ.get("LISTEN_FDS"),
    "LISTEN_FDNAMES": os.environ.get("LISTEN_FDNAMES"),
    "NOTIFY_SOCKET": os.environ.get("NOTIFY_SOCKET"),
    "listening": sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1,
    "sighup_ignored": signal.getsignal(signal.SIGHUP) == signal.SIG_IGN,
}
sock.detach()
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
