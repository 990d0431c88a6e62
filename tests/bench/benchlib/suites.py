# SPDX-License-Identifier: MIT
"""The measurements per RAM size, for both implementations, in one run.

Each suite runs its runs in turn, interleaving implementations and references within a run so
that drift on a shared machine lands on all of them alike, then prints one row per figure set.
A run that fails is counted and named in its row; a figure nobody measured is a "skipped" row
with the reason, never a number.
"""
import os
import statistics
import time
import traceback

from . import breakdown, cprvmm, flows, host
from .host import GIB, log, unlink
from harness.host import meminfo

QEMU_NO_CPR = "QEMU 7.2 has no cpr-transfer or cpr-exec (they came in 10.0 and 10.2)"
QEMU_NO_DIRTY = "the QEMU guest idles in its BIOS: no guest that dirties at a set rate"


class Ctx:
    """What every suite needs: the report, the launchers (None when absent, with the reason),
    the run count, directories and rates."""

    def __init__(self, report, runs, workdir, shm_dir, disk_dir, dirty_rate, downtime_ms):
        self.report = report
        self.runs = runs
        self.workdir = workdir
        self.shm_dir = shm_dir
        self.disk_dir = disk_dir
        self.dirty_rate = dirty_rate
        self.downtime_ms = downtime_ms
        self.launchers = {}      # impl -> launcher
        self.absent = {}         # impl -> reason
        self.memcpy = None
        self.modes = None        # the cpr suite's modes (None: all)

    def shm(self, name):
        return os.path.join(self.shm_dir, f"cpr-bench-{os.getpid()}-{name}")

    def disk(self, name):
        return os.path.join(self.disk_dir, f"cpr-bench-{os.getpid()}-{name}")


def fits(nbytes, settle=3.0):
    """Whether nbytes more of memory are there, with 1 GiB to spare. A VMM that just quit gives
    its RAM back later (its teardown runs after the exit): wait while MemAvailable still grows,
    and give up once it stood still for `settle` s."""
    want = nbytes + GIB
    if meminfo("MemTotal") < want:
        return False
    avail, still_since = meminfo("MemAvailable"), time.monotonic()
    while avail < want:
        if time.monotonic() - still_since > settle:
            return False
        time.sleep(0.5)
        now = meminfo("MemAvailable")
        if now > avail:
            still_since = time.monotonic()
        avail = now
    return True


def _attempt(fn, errors):
    try:
        return fn()
    except Exception as e:  # a failed run is reported, not hidden
        errors.append(f"{type(e).__name__}: {e}")
        log("run failed: " + "".join(traceback.format_exception_only(type(e), e)).strip())
        return None


def _log_breakdown(r):
    """One run's pause breakdown (ms from the stop), where the VMM recorded one."""
    if r and r.get("breakdown"):
        log("  breakdown (ms from old.stop-requested): " + breakdown.line(r["breakdown"]))


def _emit(ctx, bench, impl, mode, size, results, errors, extra, figures):
    """One row from a list of per-run dicts (None for a failed run); with the median of each
    step of the pause breakdown when the runs have one."""
    ok = [r for r in results if r is not None]
    extra = dict(extra)
    steps = breakdown.medians([r.get("breakdown") for r in ok])
    if steps:
        extra["breakdown_median_ms"] = steps
        pauses = [r["pause_ms"] for r in ok if r.get("pause_ms") is not None]
        pause = f"pause {statistics.median(pauses):.2f} ms, " if pauses else ""
        what = bench if bench == mode else f"{bench} {mode}"
        log(f"{what} {size >> 20} MiB, median of {len(ok)} runs: {pause}breakdown (ms from "
            f"old.stop-requested): " + breakdown.line(steps))
    if errors:
        extra["failed_runs"] = len(errors)
        extra["error"] = errors[0][:300]
    if not ok:
        return ctx.report.skipped(bench, impl, mode, size, "every run failed: " +
                                  (errors[0][:300] if errors else "?"), extra)
    series = {f: [r.get(f) for r in ok] for f in figures}
    return ctx.report.figures(bench, impl, mode, size, ok, extra, **series)


class RamFiles:
    """Guest RAM for the suite: one file on /dev/shm, pre-filled with non-zero data, used in turn
    by every implementation (one VMM at a time runs on it; cpr-vmm's guest refills it at boot),
    removed when the suite ends. One file, not one per implementation, so that a 16 GiB guest
    fits beside its snapshot or its migration target."""

    def __init__(self, ctx, size):
        path = ctx.shm("guest.ram")
        host.prefill(path, size)
        self.path = path
        self.paths = {impl: path for impl in ctx.launchers}

    def __enter__(self):
        return self.paths

    def __exit__(self, *exc):
        unlink(self.path)


# ---- snapshot to a file and restore -------------------------------------------------------

SNAP_FIGS = ("total_ms", "gbps", "ratio_write", "ratio_memcpy", "write_gbps", "memcpy_gbps",
             "file_bytes", "downtime_ms", "passes", "bytes")


def _snapshot_runs(ctx, size, ram, names, res, errs, restores, rerrs):
    """The runs of the snapshot suite. In each run and for each kind of file: the write(2) and
    memcpy references, then every implementation's snapshot and its restore."""
    if not ram:
        return
    src = host.Mapped(next(iter(ram.values())), size)
    try:
        for run in range(ctx.runs):
            for kind in ("shm", "disk"):
                target = ctx.shm if kind == "shm" else ctx.disk
                if kind == "disk":
                    os.sync()
                wpath = target("write.ref")
                wgbps = size / host.write_file(src, wpath) / 1e9
                unlink(wpath)
                mgbps = ctx.memcpy.measure(src)
                for n in names:
                    impl, via, k = n
                    if k != kind or impl not in ctx.launchers:
                        continue
                    L = ctx.launchers[impl]
                    spath = target(f"{impl}-{via}.snap")
                    log(f"snapshot {impl} {via}:{kind} {size >> 20} MiB run {run + 1}")
                    r = _attempt(lambda: flows.snapshot(L, size, ram[impl], spath, via), errs[n])
                    if r:
                        r.update(write_gbps=wgbps, memcpy_gbps=mgbps, ratio_write=r["gbps"] / wgbps,
                                 ratio_memcpy=r["gbps"] / mgbps)
                        log(f"  {r['total_ms']:.0f} ms, {r['gbps']:.2f} GB/s, write(2) {wgbps:.2f} GB/s")
                        restores[n].append(_attempt(lambda: flows.restore(L, size, ram[impl], spath, via=via),
                                                    rerrs[n]))
                    res[n].append(r)
                    unlink(spath)
    finally:
        src.close()


def snapshot_suite(ctx, size):
    # libcpr's "mapped": mapped-ram with multifd-channels threads (issue 20); QEMU 7.2 has none
    variants = {"libcpr": ["file", "mapped"], "qemu": ["exec", "fd"]}
    kinds = ("shm", "disk")
    names = [(impl, via, kind) for kind in kinds for impl in ("libcpr", "qemu")
             for via in variants[impl]]
    if not fits(2 * size):
        for impl, via, kind in names:
            ctx.report.skipped("snapshot", impl, "normal", size,
                               "not enough memory for RAM and its snapshot file on /dev/shm",
                               {"variant": f"{via}:{kind}"})
        return
    res = {n: [] for n in names}
    errs = {n: [] for n in names}
    restores = {n: [] for n in names}
    rerrs = {n: [] for n in names}
    with RamFiles(ctx, size) as ram:
        _snapshot_runs(ctx, size, ram, names, res, errs, restores, rerrs)
    for n in names:
        impl, via, kind = n
        extra = {"variant": f"{via}:{kind}", "target_dir": ctx.shm_dir if kind == "shm" else ctx.disk_dir}
        if impl in ctx.absent:
            ctx.report.skipped("snapshot", impl, "normal", size, ctx.absent[impl], extra)
            ctx.report.skipped("restore", impl, "normal", size, ctx.absent[impl], extra)
            continue
        _emit(ctx, "snapshot", impl, "normal", size, res[n], errs[n], extra, SNAP_FIGS)
        _emit(ctx, "restore", impl, "normal", size, restores[n], rerrs[n], extra,
              ("total_ms", "gbps"))


# ---- cpr-reboot without the kernel reboot / x-ignore-shared restart --------------------------

RESTART_FIGS = ("pause_ms", "blackout_ms", "save_ms", "quit_ms", "start_ms", "load_ms",
                "file_bytes")


def restart_suite(ctx, size):
    plan = [("libcpr", "cpr-reboot", "x-ignore-shared,restart", False),
            ("qemu", "normal", "x-ignore-shared,restart", False),
            ("qemu", "normal", "x-ignore-shared,prestarted", True)]
    if not fits(size):
        for impl, mode, variant, _ in plan:
            ctx.report.skipped("restart", impl, mode, size, "not enough memory", {"variant": variant})
        return
    out = {p: [] for p in plan}
    errs = {p: [] for p in plan}
    with RamFiles(ctx, size) as ram:
        for run in range(ctx.runs):
            for p in plan:
                impl, mode, variant, pre = p
                if impl not in ctx.launchers:
                    continue
                L = ctx.launchers[impl]
                log(f"restart {impl} {variant} {size >> 20} MiB run {run + 1}")
                state = ctx.shm(f"{impl}.state")
                r = _attempt(lambda: flows.restart(L, size, ram[impl], state, pre), errs[p])
                if r and r.get("pause_ms") is None:
                    r["pause_ms"] = r["blackout_ms"]  # no heartbeat: the blackout is the pause
                if r:
                    log(f"  pause {r['pause_ms']:.1f} ms, blackout {r['blackout_ms']:.1f} ms")
                _log_breakdown(r)
                out[p].append(r)
                unlink(state)
    for p in plan:
        impl, mode, variant, _ = p
        extra = {"variant": variant,
                 "pause_source": "guest heartbeat" if impl == "libcpr" else "STOP->RESUME events"}
        if impl in ctx.absent:
            ctx.report.skipped("restart", impl, mode, size, ctx.absent[impl], extra)
            continue
        _emit(ctx, "restart", impl, mode, size, out[p], errs[p], extra, RESTART_FIGS)


# ---- normal live migration over a UNIX socket ----------------------------------------------

LIVE_FIGS = ("total_ms", "downtime_ms", "pause_ms", "blackout_ms", "passes", "bytes")


def live_suite(ctx, size):
    plan = [("libcpr", 0), ("libcpr", ctx.dirty_rate), ("qemu", 0), ("qemu", ctx.dirty_rate)]
    if not fits(2 * size):
        for impl, rate in plan:
            ctx.report.skipped("live-migration", impl, "normal", size,
                               "not enough memory for two copies of RAM",
                               {"variant": "idle" if not rate else "dirty",
                                "dirty_rate_pages_per_s": rate})
        return
    out = {p: [] for p in plan}
    errs = {p: [] for p in plan}
    with RamFiles(ctx, size) as ram:
        for run in range(ctx.runs):
            for p in plan:
                impl, rate = p
                if impl not in ctx.launchers or (impl == "qemu" and rate):
                    continue
                L = ctx.launchers[impl]
                log(f"live migration {impl} {rate} pages/s {size >> 20} MiB run {run + 1}")
                r = _attempt(lambda: flows.live(L, size, ram[impl], ctx.shm(f"{impl}.dst"),
                                                os.path.join(ctx.workdir, "mig.sock"), rate), errs[p])
                if r and r.get("pause_ms") is None:
                    r["pause_ms"] = r["blackout_ms"]
                if r:
                    log(f"  total {r['total_ms']:.0f} ms, pause {r['pause_ms']} ms, passes {r['passes']}")
                out[p].append(r)
    for p in plan:
        impl, rate = p
        extra = {"variant": "idle" if not rate else "dirty", "dirty_rate_pages_per_s": rate,
                 "downtime_limit_ms": ctx.downtime_ms,
                 "pause_source": "guest heartbeat" if impl == "libcpr" else "STOP->RESUME events"}
        if impl in ctx.absent:
            ctx.report.skipped("live-migration", impl, "normal", size, ctx.absent[impl], extra)
        elif impl == "qemu" and rate:
            ctx.report.skipped("live-migration", impl, "normal", size, QEMU_NO_DIRTY, extra)
        else:
            _emit(ctx, "live-migration", impl, "normal", size, out[p], errs[p], extra, LIVE_FIGS)


# ---- cpr-transfer and cpr-exec (libcpr only) -------------------------------------------------

def cpr_suite(ctx, size):
    for mode, fn, figs in (("cpr-transfer", cprvmm.cpr_transfer, ("pause_ms", "blackout_ms", "total_ms", "bytes")),
                           ("cpr-exec", cprvmm.cpr_exec, ("pause_ms", "blackout_ms", "total_ms", "file_bytes"))):
        if ctx.modes is not None and mode not in ctx.modes:
            continue
        extra = {"variant": "memfd", "pause_source": "guest heartbeat"}
        if "libcpr" in ctx.absent:
            ctx.report.skipped(mode, "libcpr", mode, size, ctx.absent["libcpr"], extra)
        elif not fits(size):
            ctx.report.skipped(mode, "libcpr", mode, size, "not enough memory", extra)
        else:
            L = ctx.launchers["libcpr"]
            out, errs = [], []
            for run in range(ctx.runs):
                log(f"{mode} {size >> 20} MiB run {run + 1}")
                r = _attempt(lambda: fn(L, size), errs)
                if r:
                    log(f"  pause {r['pause_ms']} ms, total {r['total_ms']:.0f} ms")
                _log_breakdown(r)
                out.append(r)
            _emit(ctx, mode, "libcpr", mode, size, out, errs, extra, figs)
        ctx.report.skipped(mode, "qemu", mode, size, QEMU_NO_CPR, {"variant": "-"})
