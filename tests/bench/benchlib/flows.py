# SPDX-License-Identifier: MIT
"""One run of each measurement, driven over QMP, the same for QEMU and cpr-vmm.

A launcher (qemu.QemuLauncher, cprvmm.CprVmmLauncher) knows its implementation's command line
and its spelling of URIs; these functions only use QMP commands both implementations have.
Times come from the hosts' wall clock: the command is issued at time.time(), events carry their
own timestamps, so a pause between two processes is RESUME(new) - STOP(old).
"""
import os
import time

from harness.qmp import event_time

from . import breakdown
from .host import unlink

# How long a VMM asked to quit gets before it is killed (a big guest's teardown takes a while).
QUIT_TIMEOUT = 30.0

# A migration job of this many bytes gets at least this long (s), plus 20 s per GiB.
BASE_TIMEOUT = 60.0


def job_timeout(nbytes):
    return BASE_TIMEOUT + 20.0 * nbytes / (1 << 30)


def set_caps(vm, *caps):
    vm.qmp("migrate-set-capabilities",
           capabilities=[{"capability": c, "state": True} for c in caps])


def wait_job(vm, since, nbytes, what):
    status, ev = vm.monitor.wait_migration(job_timeout(nbytes), since)
    if status != "completed":
        info = vm.qmp("query-migrate")
        raise RuntimeError(f"{vm.name}: {what} {status}: {info.get('error-desc', '')}")
    return ev


def stop_time(vm, since):
    ev = vm.monitor.find_event("STOP", since=since)
    return event_time(ev) if ev else None


def resume_time(vm, since=0, timeout=60.0):
    return event_time(vm.monitor.wait_event("RESUME", timeout=timeout, since=since))


def snapshot(L, size, ram_path, path, via="file", name="snap"):
    """Snapshot of a running guest to `path`: live precopy into a file, as `migrate` does
    (via "mapped": with the mapped-ram capability and L.MAPPED_CHANNELS multifd-channels).
    Returns total_ms, gbps (RAM bytes over total time) and the file's size."""
    vm = L.start(name, size, ram_path=ram_path)
    try:
        L.ready(vm)
        if via == "mapped":
            L.mapped_ram(vm, save=True)
        unlink(path)
        if not path.startswith("/dev/shm"):
            os.sync()  # write-back of earlier runs must not land in this one
        fd = None
        if via == "fd":
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            vm.monitor.cmd("getfd", fdname="snapfd", fds=[fd])
            uri = "fd:snapfd"
        else:
            uri = L.save_uri(path, via)
        since = len(vm.monitor.events)
        t0 = time.time()
        vm.qmp("migrate", uri=uri)
        t1 = event_time(wait_job(vm, since, size, "snapshot"))
        if fd is not None:
            os.close(fd)
        info = vm.qmp("query-migrate")
        nbytes = os.path.getsize(path)
        ram = info.get("ram", {})
        return {"total_ms": (t1 - t0) * 1e3, "gbps": size / (t1 - t0) / 1e9,
                "file_bytes": nbytes, "downtime_ms": info.get("downtime"),
                "passes": ram.get("dirty-sync-count"), "bytes": ram.get("transferred")}
    finally:
        vm.shutdown(QUIT_TIMEOUT)


def restore(L, size, ram_path, path, name="restore", via="file"):
    """A new VMM loads a snapshot file and runs: time from migrate-incoming to RESUME."""
    vm = L.start(name, size, ram_path=ram_path, extra=["-incoming", "defer"])
    try:
        if via == "mapped":
            L.mapped_ram(vm, save=False)
        nbytes = os.path.getsize(path)
        t0 = time.time()
        vm.qmp("migrate-incoming", uri=L.load_uri(path))
        t1 = resume_time(vm, timeout=job_timeout(nbytes))
        L.verify(vm)
        return {"total_ms": (t1 - t0) * 1e3, "gbps": nbytes / (t1 - t0) / 1e9}
    finally:
        vm.shutdown(QUIT_TIMEOUT)


def restart(L, size, ram_path, path, prestart=False):
    """cpr-reboot without the kernel reboot (QEMU 7.2: x-ignore-shared): save the device state
    with RAM left in its shared file, quit, start a new VMM on the same file, load, run.
    blackout_ms is STOP in the old VMM to RESUME in the new one; pause_ms is the guest's own
    measure where the VMM has one."""
    old = L.start("old", size, ram_path=ram_path)
    new = None
    trace = getattr(L, "trace", None)  # the pause breakdown, where the VMM records one
    try:
        L.ready(old)
        L.restart_params(old)
        if prestart:
            new = L.start("new", size, ram_path=ram_path, extra=["-incoming", "defer"])
            L.restart_params(new)
        since = len(old.monitor.events)
        t0 = time.time()
        old.qmp("migrate", uri=L.save_uri(path, "file"))
        t1 = event_time(wait_job(old, since, size, "save"))
        t_stop = stop_time(old, since)
        old_steps = breakdown.label(breakdown.last_migration(trace(old)), "old") if trace else []
        bench = [breakdown.bench_step("quit-sent")]
        old.shutdown(QUIT_TIMEOUT)
        bench.append(breakdown.bench_step("exited"))
        t_quit = time.time()
        if new is None:
            bench.append(breakdown.bench_step("spawned"))
            new = L.start("new", size, ram_path=ram_path, extra=["-incoming", "defer"])
            L.restart_params(new)
        t_new = time.time()
        bench.append(breakdown.bench_step("migrate-incoming-sent"))
        new.qmp("migrate-incoming", uri=L.load_uri(path))
        t_run = resume_time(new, timeout=job_timeout(0))
        L.verify(new)
        r = {"save_ms": (t1 - t0) * 1e3, "blackout_ms": (t_run - t_stop) * 1e3,
             "pause_ms": L.guest_pause_ms(new), "quit_ms": (t_quit - t1) * 1e3,
             "start_ms": (t_new - t_quit) * 1e3, "load_ms": (t_run - t_new) * 1e3,
             "file_bytes": os.path.getsize(path)}
        if trace:
            r["breakdown"] = breakdown.offsets(old_steps, bench, breakdown.label(trace(new), "new"))
        return r
    finally:
        old.shutdown(QUIT_TIMEOUT)
        if new is not None:
            new.shutdown(QUIT_TIMEOUT)


def live(L, size, src_ram, dst_ram, sock, dirty_rate=0):
    """Normal live migration over a UNIX socket into a new VMM with fresh RAM."""
    src = L.start("src", size, ram_path=src_ram, dirty_rate=dirty_rate)
    dst = None
    try:
        L.ready(src)
        unlink(sock)
        unlink(dst_ram)
        dst = L.start("dst", size, ram_path=dst_ram, extra=["-incoming", f"unix:{sock}"],
                      dirty_rate=dirty_rate)
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if time.monotonic() > deadline:
                raise TimeoutError("destination does not listen")
            time.sleep(0.002)
        since = len(src.monitor.events)
        t0 = time.time()
        src.qmp("migrate", uri=f"unix:{sock}")
        t1 = event_time(wait_job(src, since, 2 * size, "live migration"))
        info = src.qmp("query-migrate")
        t_stop = stop_time(src, since)
        t_run = resume_time(dst)
        L.verify(dst)
        ram = info.get("ram", {})
        return {"total_ms": (t1 - t0) * 1e3, "downtime_ms": info.get("downtime"),
                "blackout_ms": (t_run - t_stop) * 1e3 if t_stop else None,
                "pause_ms": L.guest_pause_ms(dst),
                "passes": ram.get("dirty-sync-count"), "bytes": ram.get("transferred")}
    finally:
        src.shutdown(QUIT_TIMEOUT)
        if dst is not None:
            dst.shutdown(QUIT_TIMEOUT)
        unlink(dst_ram)
