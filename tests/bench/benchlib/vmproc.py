# SPDX-License-Identifier: MIT
"""One VMM process (QEMU or cpr-vmm) with its QMP connection; killed at exit whatever happens."""
import atexit
import os
import subprocess
import time

from .qmp import Qmp

_LIVE = []


@atexit.register
def _kill_all():
    for p in list(_LIVE):
        p.kill()


def wait_quietly(proc, timeout):
    """Waits up to timeout s for proc to exit (a VMM asked to quit); the caller kills it after."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


def wait_for_status(name, status, want, timeout, interval):
    """Polls status() every interval s until it returns want; TimeoutError after timeout s.
    Shared with tests/integration/vmmtest.py."""
    deadline = time.monotonic() + timeout
    while True:
        st = status()
        if st == want:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: status {st}, wanted {want}")
        time.sleep(interval)


def end_process(proc, qmp, log):
    """Kills proc unless it has exited, and reaps it; closes its QMP client (when there is one)
    and its log file. Shared with tests/integration/vmmtest.py."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if qmp:
        qmp.close()
    if not log.closed:
        log.close()


class VmProcess:
    def __init__(self, argv, workdir, name, qmp_path, env=None):
        self.name = name
        self.argv = list(argv)
        self.qmp_path = qmp_path
        self.log_path = os.path.join(workdir, f"{name}.log")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=workdir, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log, env=env)
        _LIVE.append(self)
        self.qmp = None

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def connect(self, timeout=30.0):
        self.qmp = Qmp(self.qmp_path, timeout, alive=self.alive)
        return self.qmp

    def reconnect(self, timeout=30.0):
        """After cpr-exec the image, and so its QMP server, is new; events seen so far stay."""
        old = self.qmp.events if self.qmp else []
        if self.qmp:
            self.qmp.close()
        self.qmp = Qmp(self.qmp_path, timeout, alive=self.alive)
        self.qmp.events[:0] = old
        return self.qmp

    def cmd(self, name, **args):
        return self.qmp.cmd(name, **args)

    def status(self):
        return self.qmp.cmd("query-status")["status"]

    def wait_status(self, want, timeout=60.0, interval=0.002):
        wait_for_status(self.name, self.status, want, timeout, interval)

    def quit(self, timeout=30.0):
        if self.alive() and self.qmp:
            self.qmp.send_only("quit")
            wait_quietly(self.proc, timeout)
        self.kill()

    def kill(self):
        end_process(self.proc, self.qmp, self._log)
        self.qmp = None
        if self in _LIVE:
            _LIVE.remove(self)

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""
