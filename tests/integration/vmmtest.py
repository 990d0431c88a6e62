# SPDX-License-Identifier: MIT
"""Drives cpr-vmm processes through their monitors (QMP on a UNIX socket, HMP on stdio).

Standard library only. Used by the integration tests and by tests/vmm/demo.
"""
import atexit
import json
import os
import re
import socket
import subprocess
import threading
import time

PROMPT = "(qemu) "

# Every VMM started here, killed at exit whatever happened.
_ALL = []


def _kill_all():
    for vm in _ALL:
        vm.kill()


atexit.register(_kill_all)


class QmpError(Exception):
    def __init__(self, cls, desc):
        super().__init__(f"{cls}: {desc}")
        self.cls = cls
        self.desc = desc


class Qmp:
    """A QMP client: connects (retrying while the VMM starts), negotiates, sends commands."""

    def __init__(self, path, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.buf = b""
            self.events = []
            try:
                self.sock.connect(path)
                greeting = self._read(timeout)
                break
            except (OSError, EOFError):
                # Not listening yet, or (right after a cpr-exec) a connection the kernel
                # reset before the new image took over the socket path: try again.
                self.sock.close()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"QMP socket {path} did not come up in {timeout} s")
                time.sleep(0.02)
        if "QMP" not in greeting:
            raise RuntimeError(f"bad QMP greeting: {greeting}")
        self.cmd("qmp_capabilities")

    def _read(self, timeout=60.0):
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, timeout=60.0, **args):
        req = {"execute": name}
        if args:
            req["arguments"] = args
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while True:
            msg = self._read(timeout)
            if "event" in msg:
                self.events.append(msg)
                continue
            if "error" in msg:
                raise QmpError(msg["error"]["class"], msg["error"]["desc"])
            return msg["return"]

    def close(self):
        self.sock.close()


class Vmm:
    """One cpr-vmm process. args are the VMM's own arguments; a QMP socket is always added."""

    def __init__(self, binary, workdir, name, args, hmp=False, env=None):
        self.name = name
        self.workdir = workdir
        self.qmp_path = os.path.join(workdir, f"{name}.qmp")
        self.args = list(args)
        argv = [os.path.abspath(binary)] + self.args + ["-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        if hmp:
            argv += ["-monitor", "stdio"]
        self.argv = argv
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.log = open(self.log_path, "ab")
        self.out = ""
        self.out_lock = threading.Condition()
        self.hmp_pos = 0
        self.proc = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.PIPE if hmp else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if hmp else self.log, stderr=self.log, env=env)
        _ALL.append(self)
        self._qmp = None
        if hmp:
            self.reader = threading.Thread(target=self._read_stdout, daemon=True)
            self.reader.start()

    def _read_stdout(self):
        while True:
            data = self.proc.stdout.read1(65536) if hasattr(self.proc.stdout, "read1") else self.proc.stdout.read(1)
            if not data:
                break
            with self.out_lock:
                self.out += data.decode(errors="replace")
                self.out_lock.notify_all()

    @property
    def pid(self):
        return self.proc.pid

    def qmp(self, name, **args):
        if self._qmp is None:
            self._qmp = Qmp(self.qmp_path)
        return self._qmp.cmd(name, **args)

    def wait_qmp_closed(self, timeout=60.0):
        """Waits until the VMM closes this QMP connection (events before that are kept)."""
        try:
            while True:
                msg = self._qmp._read(timeout)
                if "event" in msg:
                    self._qmp.events.append(msg)
        except EOFError:
            return

    def reconnect(self):
        """After cpr-exec the process image is new: so is its QMP server."""
        if self._qmp:
            self._qmp.close()
        self._qmp = None

    def events(self):
        return self._qmp.events if self._qmp else []

    def hmp(self, line, timeout=60.0):
        """Types a line into the human monitor; returns what it printed before the next prompt."""
        with self.out_lock:
            # The first prompt must be out before the first command.
            self._wait_for(lambda: self.out.find(PROMPT, self.hmp_pos) >= 0, timeout)
            start = self.out.find(PROMPT, self.hmp_pos) + len(PROMPT)
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        with self.out_lock:
            echo_end = start + len(line) + 1
            self._wait_for(lambda: self.out.find(PROMPT, echo_end) >= 0, timeout)
            end = self.out.find(PROMPT, echo_end)
            self.hmp_pos = end
            return self.out[echo_end:end]

    def _wait_for(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and not pred()):
                raise TimeoutError(f"{self.name}: no monitor prompt; output so far:\n{self.out}")
            self.out_lock.wait(min(left, 0.2))

    def transcript(self):
        with self.out_lock:
            return self.out

    def status(self):
        return self.qmp("query-status")["status"]

    def guest(self):
        return self.qmp("query-guest")

    def wait_status(self, want, timeout=60.0):
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            if st == want:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: status {st}, wanted {want}")
            time.sleep(0.02)

    def wait_migration(self, timeout=120.0):
        """Waits for query-migrate to reach a final status; returns the query-migrate reply."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.qmp("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: migration still {info.get('status')}")
            time.sleep(0.02)

    def wait_exit(self, timeout=30.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def shutdown(self, timeout=10.0):
        """Quits through QMP so that the process exits normally (sanitizers report then); kills
        it when that does not work."""
        if self.proc.poll() is None:
            try:
                if self._qmp is None:
                    self._qmp = Qmp(self.qmp_path, timeout=2.0)
                self._qmp.cmd("quit", timeout=timeout)
            except Exception:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._qmp:
            self._qmp.close()
            self._qmp = None
        if not self.log.closed:
            self.log.close()


def shutdown_all():
    """Quits every VMM started here, politely."""
    for vm in _ALL:
        vm.shutdown()


SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error: ")


def sanitizer_reports(workdir):
    """Names of the logs in workdir in which a sanitizer reported something."""
    bad = []
    for name in sorted(os.listdir(workdir)):
        if name.endswith(".log"):
            with open(os.path.join(workdir, name), errors="replace") as f:
                if SANITIZER_RE.search(f.read()):
                    bad.append(name)
    return bad


def memfd_inodes(pid):
    """Inodes of the memfds mapped by a process (from /proc/PID/maps)."""
    inodes = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and "/memfd:" in parts[5]:
                inodes.add(int(parts[4]))
    return inodes


SERIAL_RE = re.compile(r"^serial line (\d+): heartbeat (\d+) corruptions (\d+)$")


def serial_lines(path):
    """The serial console's numbered lines as (number, heartbeat, corruptions)."""
    out = []
    with open(path) as f:
        for line in f:
            m = SERIAL_RE.match(line.rstrip("\n"))
            if m:
                out.append(tuple(int(x) for x in m.groups()))
    return out
