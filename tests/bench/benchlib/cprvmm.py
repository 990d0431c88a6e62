# SPDX-License-Identifier: MIT
"""libcpr's side: the reference VMM cpr-vmm (tests/vmm) on KVM, driven like QEMU over QMP.

Its guest fills every page of RAM with a pattern at boot, then keeps a heartbeat and, when asked,
rewrites pages at a set rate; `query-guest` reports last-pause-ms, the largest gap between
heartbeats across the last switchover, measured on the host's clock: the guest-visible pause.
"""
import json
import os
import time

from harness.channels import unix_channel
from harness.process import Vmm
from harness.qmp import event_time

from . import breakdown
from .flows import QUIT_TIMEOUT, job_timeout, wait_job


class CprVmmLauncher:
    impl = "libcpr"

    def __init__(self, binary, workdir, downtime_ms, accel="kvm", affinity=None):
        self.binary = binary
        self.workdir = workdir
        self.downtime_ms = downtime_ms
        self.accel = accel
        self.affinity = affinity  # cpr-vmm's -x-affinity for every VMM, or None
        self.n = 0

    def args(self, name, size, ram_path, dirty_rate):
        mib = size >> 20
        if ram_path:
            mem = f"memory-backend-file,id=ram0,size={mib}M,mem-path={ram_path},share=on"
        else:
            mem = f"memory-backend-memfd,id=ram0,size={mib}M,share=on"
        return ["-name", name, "-accel", self.accel, "-m", f"{mib}M", "-smp", "1",
                "-object", mem, "-machine", "memory-backend=ram0", "-nodefaults",
                "-display", "none", "-guest-dirty-rate", str(dirty_rate)] + \
            (["-x-affinity", self.affinity] if self.affinity else [])

    def start(self, name, size, ram_path=None, extra=(), dirty_rate=0, connect=True):
        self.n += 1
        vm = Vmm(self.binary, self.workdir, f"vmm-{name}-{self.n}",
                 self.args(name, size, ram_path, dirty_rate) + list(extra))
        vm.poll_interval = 0.002  # the total time is taken after a wait for "running"
        if connect:
            self.connect(vm)
        return vm

    def connect(self, vm, timeout=120.0):
        try:
            vm.connect(timeout)
            vm.qmp("migrate-set-parameters", **{"downtime-limit": self.downtime_ms,
                                                "max-bandwidth": 0})
        except Exception:
            tail = vm.log_tail()
            vm.kill()
            raise RuntimeError(f"cpr-vmm did not start: {tail.strip()}")

    def ready(self, vm, timeout=300.0):
        """Until the guest has filled all its RAM and its heartbeat runs."""
        deadline = time.monotonic() + timeout
        while True:
            g = vm.qmp("query-guest")
            if g["pages-total"] and g["pages-filled"] >= g["pages-total"] and g["heartbeat"] > 0:
                return g
            if time.monotonic() > deadline:
                raise TimeoutError(f"{vm.name}: guest not booted: {g}")
            time.sleep(0.05)

    def verify(self, vm):
        vm.wait_status("running", timeout=60)
        g = vm.qmp("query-guest")
        if g["corruptions"]:
            raise RuntimeError(f"{vm.name}: guest reports {g['corruptions']} corruptions")

    def save_uri(self, path, via):
        return f"file:{path}"

    def load_uri(self, path):
        return f"file:{path}"

    # mapped-ram snapshots: one thread per core of these machines
    MAPPED_CHANNELS = 2

    def mapped_ram(self, vm, save):
        """The mapped-ram layout (the saver's capability; the file says so to the loader) and
        its multifd-channels threads, on either side."""
        if save:
            vm.qmp("migrate-set-capabilities",
                   capabilities=[{"capability": "mapped-ram", "state": True}])
        vm.qmp("migrate-set-parameters", **{"multifd-channels": self.MAPPED_CHANNELS})

    def restart_params(self, vm):
        vm.qmp("migrate-set-capabilities",
               capabilities=[{"capability": "x-ignore-shared", "state": True}])
        vm.qmp("migrate-set-parameters", mode="cpr-reboot")

    def guest_pause_ms(self, vm, timeout=10.0):
        """last-pause-ms once the VMM has measured it (a heartbeat after the resume)."""
        deadline = time.monotonic() + timeout
        while True:
            p = vm.qmp("query-guest").get("last-pause-ms")
            if p:
                return p
            if time.monotonic() > deadline:
                return None
            time.sleep(0.005)

    def backend(self, vm):
        return vm.qmp("query-guest").get("backend")

    def trace(self, vm):
        """The VMM's pause-breakdown steps (benchlib.breakdown)."""
        return breakdown.query(vm)


def cpr_transfer(L, size):
    """Old VMM on a memfd; new VMM started with main and cpr channels; migrate with both."""
    main_sock = os.path.join(L.workdir, "main.sock")
    cpr_sock = os.path.join(L.workdir, "cpr.sock")
    for p in (main_sock, cpr_sock):
        if os.path.exists(p):
            os.unlink(p)
    old = L.start("old", size)
    new = None
    try:
        L.ready(old)
        new = L.start("new", size, connect=False, extra=[
            "-incoming", f"unix:{main_sock}", "-incoming", json.dumps(unix_channel("cpr", cpr_sock))])
        deadline = time.monotonic() + 60
        while not os.path.exists(cpr_sock):
            if not new.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"new VMM does not listen on the cpr channel: {new.log_tail()}")
            time.sleep(0.002)
        old.qmp("migrate-set-parameters", mode="cpr-transfer")
        since = len(old.monitor.events)
        t0 = time.time()
        old.qmp("migrate", channels=[unix_channel("main", main_sock), unix_channel("cpr", cpr_sock)])
        t1 = event_time(wait_job(old, since, size, "cpr-transfer"))
        info = old.qmp("query-migrate")
        stop = old.monitor.find_event("STOP", since=since)
        L.connect(new)
        new.wait_status("running", timeout=job_timeout(size))
        pause = L.guest_pause_ms(new)
        L.verify(new)
        resume = new.monitor.find_event("RESUME")
        blackout = (event_time(resume) - event_time(stop)) * 1e3 if (stop and resume) else None
        steps = breakdown.offsets(breakdown.label(breakdown.last_migration(L.trace(old)), "old"),
                                  breakdown.label(L.trace(new), "new"))
        return {"pause_ms": pause, "blackout_ms": blackout, "total_ms": (t1 - t0) * 1e3,
                "bytes": info.get("ram", {}).get("transferred"), "breakdown": steps}
    finally:
        old.shutdown(QUIT_TIMEOUT)
        if new is not None:
            new.shutdown(QUIT_TIMEOUT)


def _reconnect_new_image(vm, timeout):
    """The old image may still hold its QMP socket for a moment: retry until the new one
    greets."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            vm.reconnect()
            return vm.connect(timeout=max(deadline - time.monotonic(), 0.1))
        except (EOFError, ConnectionError, OSError):
            if time.monotonic() > deadline or not vm.alive():
                raise
            time.sleep(0.005)


def cpr_exec(L, size):
    """One process: stop, state to a file, exec the same command line plus -incoming file:."""
    state = os.path.join(L.workdir, "exec.state")
    vm = L.start("exec", size)
    try:
        L.ready(vm)
        vm.qmp("migrate-set-parameters", mode="cpr-exec",
               **{"cpr-exec-command": vm.argv + ["-incoming", f"file:{state}"]})
        since = len(vm.monitor.events)
        t0 = time.time()
        try:
            vm.qmp("migrate", uri=f"file:{state}")
            # The old image answers, stops the guest and execs: its monitor goes away.
            vm.monitor.wait_event("NO-SUCH-EVENT", timeout=job_timeout(size))
        except (EOFError, ConnectionError, OSError):
            pass
        _reconnect_new_image(vm, job_timeout(size))
        vm.wait_status("running", timeout=job_timeout(size))
        t1 = time.time()
        pause = L.guest_pause_ms(vm)
        L.verify(vm)
        stop = vm.monitor.find_event("STOP", since=since)
        resume = vm.monitor.find_event("RESUME", since=since)
        blackout = (event_time(resume) - event_time(stop)) * 1e3 if (stop and resume) else None
        old, new = breakdown.split_exec(L.trace(vm))
        steps = breakdown.offsets(breakdown.label(old, "old"), breakdown.label(new, "new"))
        return {"pause_ms": pause, "blackout_ms": blackout, "total_ms": (t1 - t0) * 1e3,
                "file_bytes": os.path.getsize(state), "breakdown": steps}
    finally:
        vm.shutdown(QUIT_TIMEOUT)
