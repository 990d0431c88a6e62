# SPDX-License-Identifier: MIT
"""A QMP client that keeps every event with its timestamp, for QEMU and cpr-vmm alike.

Pauses are measured between events of two processes (STOP in the old one, RESUME in the new
one), so events must not be lost while a command is in flight: every line read is either the
reply being waited for or an event appended to self.events.

The one client of the harness: the benchmarks' and the integration tests' (which stretch its
timeouts with timeout_scale when the VMMs run under valgrind).
"""
import json
import socket
import time


class QmpError(Exception):
    def __init__(self, cls, desc):
        super().__init__(f"{cls}: {desc}")
        self.cls = cls
        self.desc = desc


def event_time(ev):
    """The event's own timestamp (host wall clock, seconds as a float)."""
    ts = ev.get("timestamp")
    if not ts:
        return ev["_received"]
    return ts["seconds"] + ts["microseconds"] / 1e6


class Qmp:
    def __init__(self, path, timeout=30.0, alive=None, timeout_scale=1.0):
        """Connects to a QMP server on a UNIX socket, retrying while it starts.

        alive: a callable that says whether the server's process still runs, so that a process
        that died at start-up is reported at once instead of after the timeout.
        timeout_scale: every timeout this client is given, here and in its methods, is
        multiplied by it.
        """
        self.timeout_scale = timeout_scale
        timeout *= timeout_scale
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            self.sock = sock
            self.buf = b""
            self.events = []
            try:
                sock.connect(path)
                greeting = self._read(timeout)
                break
            except (OSError, EOFError):
                # Not listening yet, or (right after a cpr-exec) a connection the kernel
                # reset before the new image took over the socket path: try again.
                sock.close()
                if alive is not None and not alive():
                    raise RuntimeError(f"QMP server for {path} exited before it listened")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"QMP socket {path} did not come up in {timeout} s")
                time.sleep(0.005)
        if "QMP" not in greeting:
            raise RuntimeError(f"bad QMP greeting from {path}: {greeting}")
        self.cmd("qmp_capabilities")

    def _read(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        msg["_received"] = time.time()
        return msg

    def _send(self, req, fds=None):
        data = json.dumps(req).encode() + b"\n"
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.sendall(data)

    def cmd(self, name, timeout=60.0, fds=None, **args):
        """Runs a command; returns its "return" value or raises QmpError. fds ride along
        (SCM_RIGHTS) with the command, as getfd wants."""
        req = {"execute": name}
        if args:
            req["arguments"] = args
        self._send(req, fds)
        deadline = time.monotonic() + timeout * self.timeout_scale
        while True:
            msg = self._read(deadline - time.monotonic())
            if "event" in msg:
                self.events.append(msg)
                continue
            if "error" in msg:
                raise QmpError(msg["error"].get("class"), msg["error"].get("desc"))
            return msg.get("return")

    def send_only(self, name, **args):
        """Sends a command without waiting for the reply (for quit: the reply may never come)."""
        req = {"execute": name}
        if args:
            req["arguments"] = args
        try:
            self._send(req)
        except OSError:
            pass

    def find_event(self, name, pred=None, since=0):
        for ev in self.events[since:]:
            if ev["event"] == name and (pred is None or pred(ev)):
                return ev
        return None

    def wait_event(self, name, pred=None, timeout=60.0, since=0):
        """Returns the first event `name` (matching pred) at index >= since, reading as needed."""
        deadline = time.monotonic() + timeout * self.timeout_scale
        while True:
            ev = self.find_event(name, pred, since)
            if ev is not None:
                return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {name} event in {timeout * self.timeout_scale} s")
            try:
                msg = self._read(min(left, 1.0))
            except socket.timeout:
                continue
            if "event" in msg:
                self.events.append(msg)

    def wait_migration(self, timeout, since=0):
        """Waits for the MIGRATION event that ends a job; returns (status, event)."""
        final = ("completed", "failed", "cancelled")
        ev = self.wait_event("MIGRATION", lambda e: e["data"].get("status") in final, timeout, since)
        return ev["data"]["status"], ev

    def wait_closed(self, timeout=60.0):
        """Reads until the server closes the connection, keeping the events; each read may
        wait timeout s (socket.timeout when one waits longer)."""
        try:
            while True:
                msg = self._read(timeout * self.timeout_scale)
                if "event" in msg:
                    self.events.append(msg)
        except EOFError:
            return

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

