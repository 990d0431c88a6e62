# SPDX-License-Identifier: MIT
"""cpr-exec rollback in the integration tests: the previous image, exec'd back by the guardian,
runs in another process (the guardian's), which this test process adopts.

The test process becomes a child subreaper, so the guardian (and the image it becomes) is
re-parented to it: it can be found among our children, waited for and killed like the VMMs we
start. adopt_rollback() rebinds a Vmm whose process exec'd a new image that failed to the
previous image that came back.
"""
import ctypes
import os
import signal
import stat
import subprocess
import time

PR_SET_CHILD_SUBREAPER = 36
GUARD_COMM = "cpr-exec-guard"


def become_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        head, rest = f.read().rsplit(")", 1)
    fields = rest.split()
    return head.split("(", 1)[1], fields[0], int(fields[1])  # comm, state, ppid


def children(comm=None):
    """Our live children (pid list), optionally only those whose comm is `comm`."""
    me, out = os.getpid(), []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            c, state, ppid = _stat(d)
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and state != "Z" and (comm is None or c == comm):
            out.append(int(d))
    return out


def reap_strays(known):
    """Reaps exited children that no Popen of ours waits for (a guardian that exited)."""
    me = os.getpid()
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and int(d) not in known and _stat(d)[1] == "Z" and _stat(d)[2] == me:
                os.waitpid(int(d), os.WNOHANG)
        except (OSError, IndexError, ValueError):
            pass


class Reparented:
    """A Popen-like handle on a child that we did not start (re-parented to us)."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self):
        self.send_signal(signal.SIGKILL)


def script(path, body):
    """An executable shell script: a stand-in for a new VMM binary (same command line)."""
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def adopt_rollback(vm, binary, wait_until, timeout=30):
    """vm's process exec'd a new image that failed: waits for the previous image (a child of
    ours running `binary`, not vm's process) and rebinds vm to it. Returns its pid."""
    old_pid = vm.pid
    vm.proc.wait(timeout)  # the failed new image is gone first: the guardian waits for that

    def back():
        for pid in children("cpr-vmm"):
            try:
                if pid != old_pid and os.readlink(f"/proc/{pid}/exe") == os.path.realpath(binary):
                    return pid
            except OSError:
                pass
        return None
    pid = wait_until(back, timeout, f"{vm.name}: the previous image comes back")
    vm.proc = Reparented(pid)
    vm.reconnect()
    return pid
