# SPDX-License-Identifier: MIT
"""One VMM process (cpr-vmm or QEMU) with its QMP connection and, optionally, its human monitor
on stdio. Every process started here is killed at exit whatever happened (one atexit killer).

Under CPR_VMM_VALGRIND=1 (tests/run-memcheck sets it) every VMM runs under valgrind memcheck, its
report appended to NAME.vg.log in the work directory (a cpr-exec'd image appends to the same
file: the log fd survives the exec); harness.reports.valgrind_reports() reads them. Every timeout
here and in the tests stretches by TIMEOUT_SCALE (CPR_VMM_TIMEOUT_SCALE, default 5 under valgrind).
"""
import atexit
import os
import subprocess
import threading
import time

from .qmp import Qmp

PROMPT = "(qemu) "

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


# Every VMM started here and not yet killed.
_LIVE = []


@atexit.register
def kill_all():
    """Kills every VMM started here (at exit, and between the cases of a test that runs many)."""
    for vm in list(_LIVE):
        vm.kill()


def shutdown_all():
    """Quits every VMM started here, politely (so that sanitizers and valgrind report)."""
    for vm in list(_LIVE):
        vm.shutdown()


def _wait_quietly(proc, timeout):
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


class Vmm:
    """One VMM process. `binary` and `args` are the VMM's own command line; a QMP server on
    WORKDIR/NAME.qmp is always added, and with hmp=True the human monitor on stdio.

    `wrap` is a command prefix that execs the VMM in place (netns.TwoHosts.wrap()).

    qmp(name, **args) runs a QMP command; `monitor` is the QMP client itself (its events, fds
    passed with a command). poll_interval is how often wait_status() asks (the benchmarks, which
    time the wait, poll faster)."""

    poll_interval = 0.02

    def __init__(self, binary, workdir, name, args, hmp=False, env=None, wrap=()):
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
        self._client = None
        self._old_events = []
        run, pass_fds = list(wrap) + argv, ()
        if VALGRIND:
            vg_fd = os.open(os.path.join(workdir, f"{name}.vg.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            run, pass_fds = list(wrap) + VALGRIND_ARGS + [f"--log-fd={vg_fd}"] + argv, (vg_fd,)
            env = dict(os.environ if env is None else env, G_SLICE="always-malloc")
        try:
            self.proc = subprocess.Popen(run, cwd=workdir, stdin=subprocess.PIPE if hmp else subprocess.DEVNULL,
                                         stdout=subprocess.PIPE if hmp else self.log, stderr=self.log, env=env,
                                         pass_fds=pass_fds)
        finally:
            for fd in pass_fds:
                os.close(fd)
        _LIVE.append(self)
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

    def alive(self):
        return self.proc.poll() is None

    # ---- QMP ----------------------------------------------------------------------------------

    def connect(self, timeout=30.0):
        """Connects to the QMP server (retrying while it starts; at once RuntimeError when the
        process died first). Events seen before a reconnect() are kept in front."""
        client = Qmp(self.qmp_path, timeout, alive=self.alive, timeout_scale=TIMEOUT_SCALE)
        client.events[:0] = self._old_events
        self._old_events = []
        self._client = client
        return client

    @property
    def monitor(self):
        """The QMP client, connected on first use."""
        return self._client or self.connect()

    def qmp(self, name, **args):
        return self.monitor.cmd(name, **args)

    def reconnect(self):
        """After cpr-exec the process image is new: so is its QMP server. The next command
        connects to it; the events seen so far stay."""
        if self._client:
            self._old_events = self._client.events
            self._client.close()
        self._client = None

    def events(self):
        return self._client.events if self._client else list(self._old_events)

    def wait_qmp_closed(self, timeout=60.0):
        """Waits until the VMM closes this QMP connection (events before that are kept)."""
        self._client.wait_closed(timeout)

    # ---- HMP ----------------------------------------------------------------------------------

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

    # ---- state --------------------------------------------------------------------------------

    def status(self):
        return self.qmp("query-status")["status"]

    def guest(self):
        """cpr-vmm's guest figures (query-guest): heartbeat, pages filled/verified, corruptions."""
        return self.qmp("query-guest")

    def wait_status(self, want, timeout=60.0):
        """Polls query-status until it says `want`; TimeoutError after timeout s (scaled)."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            st = self.status()
            if st == want:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: status {st}, wanted {want}")
            time.sleep(self.poll_interval)

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

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    # ---- the end ------------------------------------------------------------------------------

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
                if self._client is None:
                    self._client = Qmp(self.qmp_path, timeout=2.0, alive=self.alive, timeout_scale=TIMEOUT_SCALE)
                self._client.cmd("quit", timeout=timeout)
            except Exception:
                pass
            _wait_quietly(self.proc, scaled(timeout))
        self.kill()

    def kill(self):
        """Kills the process unless it has exited, reaps it, closes its QMP client and log."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self._client:
            self._client.close()
        self._client = None
        if not self.log.closed:
            self.log.close()
        if self in _LIVE:
            _LIVE.remove(self)
