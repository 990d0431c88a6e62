# SPDX-License-Identifier: MIT
"""Drives cpr-vmm processes through their monitors (QMP on a UNIX socket, HMP on stdio).

Standard library only. Used by the integration tests, tests/vmm/demo and tests/bench/soak; its QMP
client is tests/bench/benchlib/qmp.py.
"""
import atexit
import os
import re
import subprocess
import sys
import threading
import time

# The QMP client, and how a VMM process is ended, are the benchmarks' (tests/bench/benchlib).
# QmpError is imported for the tests, which catch it.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from benchlib.qmp import Qmp, QmpError  # noqa: E402,F401
from benchlib.vmproc import end_process, wait_for_status, wait_quietly  # noqa: E402
from benchlib.host import kvm_usable  # noqa: E402,F401  (the demo's and the tests')

PROMPT = "(qemu) "

# CPR_VMM_VALGRIND=1 (tests/run-memcheck sets it) runs every VMM under valgrind memcheck, its
# report appended to NAME.vg.log in the work directory (a cpr-exec'd image appends to the same
# file: the log fd survives the exec); valgrind_reports() reads them. Every timeout here and in
# the tests stretches by TIMEOUT_SCALE (CPR_VMM_TIMEOUT_SCALE, default 5 under valgrind).
VALGRIND = os.environ.get("CPR_VMM_VALGRIND", "") not in ("", "0")
TIMEOUT_SCALE = float(os.environ.get("CPR_VMM_TIMEOUT_SCALE", "5" if VALGRIND else "1"))
VALGRIND_ERROR_EXIT = 97
# memcheck as every memcheck run here uses it (tests/run-memcheck's unit suites too): leaks that
# are definite or indirect fail, open fds at exit are listed, and --fair-sched=yes hands the lock
# round in turn, so a spinning thread (a vCPU, a test's eager peer) cannot starve another.
VALGRIND_BASE = ["valgrind", "--fair-sched=yes", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
                 "--show-leak-kinds=definite,indirect", f"--error-exitcode={VALGRIND_ERROR_EXIT}",
                 "--track-fds=yes", "--child-silent-after-fork=yes"]
VALGRIND_ARGS = VALGRIND_BASE + ["--trace-children=yes"]


def scaled(seconds):
    """A timeout, stretched when the VMMs run under valgrind."""
    return seconds * TIMEOUT_SCALE

# Every VMM started here, killed at exit whatever happened.
_ALL = []


def _kill_all():
    for vm in _ALL:
        vm.kill()


atexit.register(_kill_all)


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
        run, pass_fds = argv, ()
        if VALGRIND:
            vg_fd = os.open(os.path.join(workdir, f"{name}.vg.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            run, pass_fds = VALGRIND_ARGS + [f"--log-fd={vg_fd}"] + argv, (vg_fd,)
            env = dict(os.environ if env is None else env, G_SLICE="always-malloc")
        try:
            self.proc = subprocess.Popen(run, cwd=workdir, stdin=subprocess.PIPE if hmp else subprocess.DEVNULL,
                                         stdout=subprocess.PIPE if hmp else self.log, stderr=self.log, env=env,
                                         pass_fds=pass_fds)
        finally:
            for fd in pass_fds:
                os.close(fd)
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
            self._qmp = Qmp(self.qmp_path, timeout_scale=TIMEOUT_SCALE)
        return self._qmp.cmd(name, **args)

    def wait_qmp_closed(self, timeout=60.0):
        """Waits until the VMM closes this QMP connection (events before that are kept)."""
        self._qmp.wait_closed(timeout)

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
        deadline = time.monotonic() + scaled(timeout)
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
        wait_for_status(self.name, self.status, want, scaled(timeout), 0.02)

    def wait_migration(self, timeout=120.0):
        """Waits for query-migrate to reach a final status; returns the query-migrate reply."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            info = self.qmp("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: migration still {info.get('status')}")
            time.sleep(0.02)

    def wait_exit(self, timeout=30.0):
        try:
            return self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def shutdown(self, timeout=10.0):
        """Quits through QMP so that the process exits normally (sanitizers report then); kills
        it when that does not work."""
        if self.proc.poll() is None:
            try:
                if self._qmp is None:
                    self._qmp = Qmp(self.qmp_path, timeout=2.0, timeout_scale=TIMEOUT_SCALE)
                self._qmp.cmd("quit", timeout=timeout)
            except Exception:
                pass
            wait_quietly(self.proc, scaled(timeout))
        self.kill()

    def kill(self):
        end_process(self.proc, self._qmp, self.log)
        self._qmp = None


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


# fds that glib opens once per process and never closes (the default main context's and the
# worker thread's wakeup eventfds): not leaks of ours.
_GLIB_SINGLETON_FDS = ("g_main_context_default", "g_unix_signal_add", "g_child_watch_source_new",
                       "g_get_worker_context")


def _valgrind_fd_leaks(text):
    """The fds a process left open at exit (valgrind --track-fds), from its last summary."""
    at = text.rfind("FILE DESCRIPTORS:")
    if at < 0:
        return []
    leaks = []
    # Blocks: "Open file descriptor N: ..." / "Open AF_UNIX socket N: ..." then its stack.
    for block in re.split(r"==\d+== (?=Open )", text[at:])[1:]:
        head = block.split("\n", 1)[0]
        if "<inherited from parent>" in block or any(f in block for f in _GLIB_SINGLETON_FDS):
            continue
        leaks.append(head.strip())
    return leaks


def valgrind_reports(workdir):
    """What valgrind found in each VMM of workdir (CPR_VMM_VALGRIND): a list of problems, one
    per log: memory errors or definite/indirect leaks, fds left open at exit, or no summary at
    all (the process was killed, so its exit was never checked)."""
    bad = []
    for name in sorted(os.listdir(workdir)):
        if not name.endswith(".vg.log"):
            continue
        with open(os.path.join(workdir, name), errors="replace") as f:
            text = f.read()
        sums = [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) errors", text)]
        if not sums:
            bad.append(f"{name}: no valgrind summary (the VMM did not exit by itself)")
        elif any(sums):
            bad.append(f"{name}: {max(sums)} memcheck error(s) or leak(s)")
        leaks = _valgrind_fd_leaks(text)
        if leaks:
            bad.append(f"{name}: {len(leaks)} fd(s) open at exit: {'; '.join(leaks)}")
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
