"""Plumbing for bench/suite.py: processes, a systemd-like notify socket, wrk, tiny HTTP client.

Everything here is deliberately boring: no threads, no third-party modules, Linux only.
"""

import ctypes
import json
import os
import signal
import socket
import struct
import subprocess
import time

SO_TIMESTAMPNS = 35  # asm-generic value (x86_64, aarch64); SCM_TIMESTAMPNS is the same number
PR_SET_CHILD_SUBREAPER = 36


class BenchError(Exception):
    """The harness itself could not do its job (not a failed target)."""


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# processes


def become_subreaper():
    """Orphans of the processes we start (old baton generations) are re-parented to us, so
    cleanup can find and kill every one of them and we can tell when a draining one exited."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log("warning: PR_SET_CHILD_SUBREAPER failed; old generations are re-parented to init")


def proc_state(pid):
    """Single-letter state from /proc/PID/stat, or None when the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data[data.rindex(b")") + 2:][:1].decode()


def proc_start(pid):
    """Start time of pid (clock ticks since boot): tells a pid apart from a later reuse of it
    (pid_max is often 32768 and a long run starts thousands of processes)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(data[data.rindex(b")") + 2:].split()[19])


def alive(pid, start=None):
    """True while pid runs (and, given start, is still the process that had that start time);
    reaps it if it is our zombie child."""
    try:
        got, _ = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            return False
    except ChildProcessError:
        pass
    st = proc_state(pid)
    if st is None or st in ("Z", "X"):
        return False
    return start is None or proc_start(pid) == start


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def descendants(root):
    """Every live descendant of root (scan of /proc, deepest last)."""
    parent = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rindex(b")") + 2:].split()
        parent[int(name)] = int(rest[1])
    out, frontier = [], [root]
    while frontier:
        p = frontier.pop()
        for c, pp in parent.items():
            if pp == p:
                out.append(c)
                frontier.append(c)
    return out


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_seconds(pids):
    """user+system CPU time used so far by pids (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                data = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        rest = data[data.rindex(b")") + 2:].split()
        total += int(rest[11]) + int(rest[12])
    return total / os.sysconf("SC_CLK_TCK")


class NoiseGauge:
    """CPU time the rest of the machine used while we measured: every process outside our own
    process tree (its utime+stime, plus cutime+cstime so that short-lived processes a foreign
    parent reaped are counted too) and the hypervisor's steal time. Kernel threads are left
    out (they mostly carry our own network traffic). A rough but useful gauge: on a quiet
    machine it reads ~0; a neighbour's compile or load test shows as whole CPUs."""

    def __init__(self):
        self.me = os.getpid()
        self.tck = os.sysconf("SC_CLK_TCK")

    def _sample(self):
        stat, parent = {}, {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            rest = data[data.rindex(b")") + 2:].split()
            pid = int(name)
            parent[pid] = int(rest[1])
            flags = int(rest[6])
            if flags & 0x00200000:  # PF_KTHREAD
                continue
            stat[pid] = sum(int(x) for x in rest[11:15])
        ours = {self.me}
        changed = True
        while changed:
            changed = False
            for pid, pp in parent.items():
                if pp in ours and pid not in ours:
                    ours.add(pid)
                    changed = True
        foreign = {p: t for p, t in stat.items() if p not in ours}
        steal = 0
        with open("/proc/stat") as f:
            fields = f.readline().split()
            if len(fields) > 8:
                steal = int(fields[8])
        return foreign, steal, time.monotonic()

    def start(self):
        return self._sample()

    def stop(self, start):
        """CPUs' worth of foreign work (1.0 = one whole CPU) since start."""
        f0, s0, t0 = start
        f1, s1, t1 = self._sample()
        used = sum(max(0, t - f0.get(p, t)) for p, t in f1.items() if p in f0)
        # processes born inside the window: their whole CPU time is inside it
        used += sum(t for p, t in f1.items() if p not in f0)
        used += max(0, s1 - s0)
        return used / self.tck / max(t1 - t0, 1e-6)


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def pinned(cpus):
    """preexec_fn restricting a child to cpus (None: inherit)."""
    if not cpus:
        return None

    def fn():
        os.sched_setaffinity(0, cpus)

    return fn


def kill_quietly(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def terminate_all(pids, grace=5.0):
    """SIGTERM, wait up to grace, SIGKILL the rest, reap what is ours."""
    pids = [p for p in pids if alive(p)]
    for p in pids:
        kill_quietly(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if alive(p)]
        time.sleep(0.02)
    for p in pids:
        kill_quietly(p, signal.SIGKILL)
    for p in pids:
        for _ in range(100):
            if not alive(p):
                break
            time.sleep(0.01)


def reap_all():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def port_free(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # SO_REUSEADDR: TIME_WAIT leftovers of an earlier run do not count, a listener does
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_port(host, port, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{proc.args[0]} exited with {proc.returncode} before listening")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise BenchError(f"nothing listens on {host}:{port} after {timeout}s")


# --------------------------------------------------------------------------------------------
# HTTP, just enough to warm a server up and probe it between reloads


def _read_response(sock, buf):
    """Read one response from sock (buf: leftover bytes). Returns (status, keep_alive, rest)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("connection closed before a response head")
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length, keep_alive = 0, True
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k, v = k.strip().lower(), v.strip().lower()
        if k == "content-length":
            length = int(v)
        elif k == "connection" and v == "close":
            keep_alive = False
        elif k == "transfer-encoding":
            raise BenchError("chunked responses are not expected here")
    while len(buf) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("connection closed inside a response body")
        buf += chunk
    return status, keep_alive, buf[length:]


def http_get(host, port, n=1, timeout=5.0):
    """n GETs of / on one keep-alive connection (reconnecting if the server says close).
    Returns the list of statuses."""
    req = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    statuses, sock, buf = [], None, b""
    try:
        while len(statuses) < n:
            if sock is None:
                sock = socket.create_connection((host, port), timeout=timeout)
                buf = b""
            sock.sendall(req)
            status, keep_alive, buf = _read_response(sock, buf)
            statuses.append(status)
            if not keep_alive:
                sock.close()
                sock = None
    finally:
        if sock is not None:
            sock.close()
    return statuses


# --------------------------------------------------------------------------------------------
# the notify socket: what systemd would see


class Message:
    __slots__ = ("pid", "fields", "raw", "recv_mono_ns", "sent_real_ns")

    def __init__(self, pid, raw, recv_mono_ns, sent_real_ns):
        self.pid = pid
        self.raw = raw
        self.recv_mono_ns = recv_mono_ns
        self.sent_real_ns = sent_real_ns
        self.fields = {}
        for line in raw.decode("utf-8", "replace").split("\n"):
            if "=" in line:
                k, _, v = line.partition("=")
                self.fields[k] = v

    def __repr__(self):
        return f"<pid {self.pid}: {self.raw!r}>"


class NotifySocket:
    """AF_UNIX datagram socket like systemd's: SO_PASSCRED for the sender's pid, fds received
    with a message (BARRIER=1) are closed at once, which is how the barrier completes.
    SO_TIMESTAMPNS stamps each datagram with the (CLOCK_REALTIME) time it was queued, so a
    busy benchmark process does not inflate the measured times by its own wake-up delay."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.kernel_stamps = True
        except OSError:
            self.kernel_stamps = False
        self.log = []  # every message, for the JSON / debugging
        self.pending = []

    def close(self):
        self.sock.close()

    def recv(self, timeout):
        """Next message or None after timeout seconds."""
        if self.pending:
            return self.pending.pop(0)
        self.sock.settimeout(max(timeout, 0.0001))
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(
                65536,
                socket.CMSG_SPACE(12) + socket.CMSG_SPACE(4 * 64) + socket.CMSG_SPACE(16),
            )
        except socket.timeout:
            return None
        now = time.monotonic_ns()
        pid, stamp = None, None
        for level, typ, payload in anc:
            if level != socket.SOL_SOCKET:
                continue
            if typ == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = struct.unpack("iII", payload[:12])
            elif typ == socket.SCM_RIGHTS:
                n = len(payload) // 4
                for fd in struct.unpack(f"{n}i", payload[: 4 * n]):
                    os.close(fd)
            elif typ == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", payload[:16])
                stamp = sec * 1_000_000_000 + nsec
        msg = Message(pid, data, now, stamp)
        self.log.append((now, pid, data.decode("utf-8", "replace")))
        return msg

    def wait_for(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"timed out after {timeout}s waiting for {what}")
                m = self.recv(left)
                if m is None:
                    continue
                if pred(m):
                    return m
                skipped.append(m)
        finally:
            self.pending = skipped + self.pending


# --------------------------------------------------------------------------------------------
# wrk


class Wrk:
    """One wrk process. Started with a duration, or open-ended (stop() sends SIGINT, on which
    wrk prints its report and runs the script's done())."""

    def __init__(self, url, *, threads, connections, duration_s, script, cpus, headers=(),
                 timeout_s=2, count_status=False, outfile=None):
        self.argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(duration_s)}s",
                     "--timeout", f"{timeout_s}s", "-s", script]
        for h in headers:
            self.argv += ["-H", h]
        self.argv.append(url)
        self.outfile = outfile
        self.out = open(outfile, "w+") if outfile else subprocess.PIPE
        env = dict(os.environ, BENCH_COUNT_STATUS="1" if count_status else "0")
        self.proc = subprocess.Popen(self.argv, stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, preexec_fn=pinned(cpus))
        self.started = time.monotonic()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.result()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def result(self, timeout=None):
        if self.outfile:
            self.proc.wait(timeout=timeout)
            self.out.seek(0)
            text = self.out.read()
            self.out.close()
        else:
            text, _ = self.proc.communicate(timeout=timeout)
            text = text.decode("utf-8", "replace")
        for line in text.splitlines():
            if line.startswith("BENCH_JSON "):
                r = json.loads(line[len("BENCH_JSON "):])
                r["socket_errors"] = sum(r["errors"][k] for k in ("connect", "read", "write", "timeout"))
                r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
                r["argv"] = self.argv
                return r
        raise BenchError(f"wrk gave no report (exit {self.proc.returncode}):\n{text[-2000:]}")
