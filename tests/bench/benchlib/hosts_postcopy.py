# SPDX-License-Identifier: MIT
"""Postcopy between the two hosts of tests/bench/hosts (issue 22): variants "postcopy" (an idle
guest, libcpr and, with --with-qemu, QEMU 7.2 over the same link), "postcopy-dirty" (libcpr's
guest dirtying twice the pages the link carries; QEMU's BIOS guest cannot dirty),
"postcopy-dirty-cap" (the same with max-postcopy-bandwidth at CAP_SHARE of the link) and
"precopy-dirty" (the same guest, precopy alone: PRECOPY_SHOWN passes whose remaining bytes are
recorded, then migrate_cancel; the guest must go on running on the source, unharmed).

Both implementations get capability postcopy-ram on both sides, the same downtime-limit and no
bandwidth cap (the tbf link is the cap). Idle: migrate-start-postcopy SWITCH_AFTER_S after
migrate, the same for both. Dirty: after PASSES precopy passes, which show that precopy does not
converge (what remains against what the downtime limit carries).

Figures of a run: start_to_running_ms, from the host's clock right before migrate-start-postcopy
to the destination's RESUME event (its own timestamp; the same measure for both); total_ms and
downtime_ms, as each source reports them in query-migrate; and for libcpr: pause_ms (the guest's
heartbeat gap across the switch, last-pause-ms), stall_worst_ms / stall_p99_ms / stall_samples
(the guest's own worst gap between loop iterations in each ~1 ms window while pages were
fetched, query-guest stalls), the destination's fault wait (fault_blocktime_ms, its
postcopy-blocktime; fault_worst_ms, one fault's longest wait; fault_mean_ms, blocktime over
requests), the same on the source for BASELINE_S before the migration
(baseline_stall_worst_ms, baseline_stall_p99_ms: what the guest's loop costs anyway), fault_pages
against pushed_pages, the re-verify, and the switch's breakdown (steps: both sides' trace steps
in ms from the source's stop-requested; the row has their medians, steps_median_ms).

A dirtying guest's rate is its own count of page rewrites (query-guest rewrites) over the
precopy passes, on the source with the migration's dirty logging on: guest_dirty_pages_per_s, and
dirty_ratio_link = that over the link's page rate (the claim "2x the link" is this ratio). The
engine's dirty-pages-rate (dirty_pages_per_s) counts distinct pages per pass over the pass's
length: a guest that rewrites its whole RAM several times a pass shows there as RAM / pass time,
about the link's rate, whatever it really writes. postcopy_dirty_pages_per_s is the guest's rate
from the last watched pass to the destination's completion (its faults included).
"""
import os
import sys
import time

from harness.guest import base_args, wait_booted, wait_heartbeat, wait_until
from harness.process import Vmm

from . import breakdown, host

PAGE = 4096
SWITCH_AFTER_S = 1.0
PASSES = 3
# precopy-dirty: passes shown not to converge before the migration is cancelled (the engine's own
# cap, 64 passes, would then stop the guest for as long as the whole RAM takes).
PRECOPY_SHOWN = 6
BASELINE_S = 1.0
DOWNTIME_MS = 300
VARIANTS = ("postcopy", "postcopy-dirty", "postcopy-dirty-cap", "precopy-dirty")
# postcopy-dirty-cap: the same dirtying guest with max-postcopy-bandwidth at this share of the link,
# so that the background pages do not fill the link's queue in front of the faults' replies.
CAP_SHARE = 0.8
FIGURES = ("start_to_running_ms", "total_ms", "downtime_ms", "pause_ms", "stall_worst_ms", "stall_p99_ms",
           "baseline_stall_worst_ms", "baseline_stall_p99_ms", "dirty_ratio_link", "fault_mean_ms")
QEMU_NO_DIRTY = "QEMU's BIOS guest cannot dirty its RAM: libcpr's dirtying guest runs alone"


def dirtying(variant):
    """Whether the variant's guest dirties twice the link's page rate (shaped links only)."""
    return variant.endswith("-dirty") or "-dirty-" in variant


def link_bytes_per_s(rate):
    """tc's rate spelling ("1gbit", "500mbit") in bytes per second; None unshaped."""
    if not rate or rate == "none":
        return None
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bit": 1}
    for u, mult in units.items():
        if rate.endswith(u):
            return int(float(rate[:-len(u)]) * mult / 8)
    raise ValueError(f"rate {rate!r}: not a tc rate in bit/kbit/mbit/gbit")


def _resume_after(vm, since, t0):
    """ms from t0 (host wall clock) to vm's first RESUME event after index `since`."""
    ev = vm.monitor.wait_event("RESUME", timeout=120, since=since)
    ts = ev.get("timestamp")
    when = ts["seconds"] + ts["microseconds"] / 1e6 if ts else ev["_received"]
    return (when - t0) * 1000


def _start_postcopy(src, dst):
    """migrate-start-postcopy on src; ms until dst's guest runs, and the bench's step."""
    since = len(dst.monitor.events)
    step = breakdown.bench_step("start-postcopy-sent")
    t0 = time.time()
    src.qmp("migrate-start-postcopy")
    return _resume_after(dst, since, t0), step


def _switch_steps(src, dst, sent):
    """The switch's breakdown (docs/migration.md, "Pause breakdown"): {step: ms from the source's
    stop-requested}, both processes' steps and the bench's migrate-start-postcopy."""
    return breakdown.offsets(breakdown.label(breakdown.last_migration(breakdown.query(src)), "old"),
                             breakdown.label(breakdown.query(dst), "new"), [sent])


def _completed(vm, timeout=900):
    """The source's final query-migrate, once it has its total-time (QEMU 7.2 sets "completed"
    a moment before it computes it)."""
    info = vm.wait_migration(timeout)
    if info["status"] != "completed":
        raise RuntimeError(f"migration {info['status']}: {info.get('error-desc')}")
    deadline = time.monotonic() + 10
    while not info.get("total-time") and time.monotonic() < deadline:
        time.sleep(0.01)
        info = vm.qmp("query-migrate")
    return info


def _watch_passes(src, passes):
    """Polls the source's query-migrate until `passes` dirty syncs; returns its last "ram" and,
    per pass, [sync count, remaining bytes, s since the first look]."""
    seen, t0, info = [], time.monotonic(), {}
    deadline = t0 + 600
    while not seen or seen[-1][0] < passes:
        info = src.qmp("query-migrate")
        if info.get("status") not in ("setup", "active"):
            raise RuntimeError(f"precopy ended early: {info.get('status')} {info.get('error-desc', '')}")
        ram = info.get("ram", {})
        count = ram.get("dirty-sync-count", 0)
        if count and (not seen or count > seen[-1][0]):
            seen.append([count, ram.get("remaining"), round(time.monotonic() - t0, 3)])
        if time.monotonic() > deadline:
            raise RuntimeError(f"{passes} precopy passes not reached in 600 s")
        time.sleep(0.01)
    return info.get("ram", {}), seen


def _precopy_cancel(src, r):
    """precopy-dirty's end: cancel, then the guest must still run on the source, unharmed."""
    t = time.monotonic()
    src.qmp("migrate_cancel")
    info = wait_until(lambda: (i := src.qmp("query-migrate"))["status"] in ("cancelled", "failed", "completed")
                      and i, 120, "precopy cancelled")
    if info["status"] != "cancelled":
        raise RuntimeError(f"precopy-dirty: migrate_cancel ended in {info['status']}")
    src.wait_status("running")
    g = wait_heartbeat(src, src.guest()["heartbeat"])
    if g["corruptions"]:
        raise RuntimeError(f"{g['corruptions']} corruptions on the source after the cancel")
    r.update({"cancel_ms": (time.monotonic() - t) * 1000, "corruptions": g["corruptions"]})
    return r


def libcpr_run(binary, wd, hosts, port, size, variant, rate, n, accel):
    """One cpr-vmm postcopy migration a -> b (precopy-dirty: precopy alone, cancelled after
    PRECOPY_SHOWN passes); returns its figures."""
    link = link_bytes_per_s(rate)
    dirty = 2 * link // PAGE if dirtying(variant) else 0
    postcopy = variant.startswith("postcopy")
    params = {"downtime-limit": DOWNTIME_MS}
    if variant == "postcopy-dirty-cap":
        params["max-postcopy-bandwidth"] = int(link * CAP_SHARE)
    args = ["-accel", accel, "-smp", "1", "-guest-dirty-rate", str(dirty)]
    uri = f"tcp:{hosts.addr('b')}:{port}"
    src = Vmm(binary, wd, f"pc-src{n}", base_args(wd, f"pc{n}", args, ram_mb=size >> 20), wrap=hosts.wrap("a"))
    dst = Vmm(binary, wd, f"pc-dst{n}", base_args(wd, f"pc{n}", args + (
        ["-global", "migration.postcopy-ram=on"] if postcopy else []) + ["-incoming", uri], ram_mb=size >> 20),
        wrap=hosts.wrap("b"))
    try:
        wait_booted(src, timeout=600)
        wait_heartbeat(src)
        wait_until(lambda: dst.status() == "inmigrate", 60, "destination in inmigrate")
        src.qmp("x-record-stalls", record=True)
        time.sleep(BASELINE_S)
        src.qmp("x-record-stalls", record=False)
        base = src.guest()["stalls"]
        if postcopy:
            src.qmp("migrate-set-capabilities", capabilities=[{"capability": "postcopy-ram", "state": True}])
        src.qmp("migrate-set-parameters", **params)
        g0, t0 = src.guest(), time.monotonic()
        src.qmp("migrate", uri=uri)
        pre, per_pass, dr = {}, [], {}
        if dirty:
            pre, per_pass = _watch_passes(src, PASSES if postcopy else PRECOPY_SHOWN)
            g1, t1 = src.guest(), time.monotonic()
            rw = (g1["rewrites"] - g0["rewrites"]) / (t1 - t0)
            dr = {"dirty_pages_per_s_asked": dirty, "guest_dirty_pages_per_s": round(rw),
                  "dirty_ratio_link": round(rw * PAGE / link, 3), "dirty_pages_per_s": pre.get("dirty-pages-rate"),
                  "precopy_passes": pre.get("dirty-sync-count"), "precopy_remaining_bytes": pre.get("remaining"),
                  "precopy_remaining_per_pass": [p[1] for p in per_pass],
                  "precopy_pass_end_s": [p[2] for p in per_pass],
                  "downtime_limit_carries_bytes": link * DOWNTIME_MS // 1000}
        else:
            time.sleep(SWITCH_AFTER_S)
        if not postcopy:
            return _precopy_cancel(src, dict(dr, total_ms=(time.monotonic() - t0) * 1000,
                                             converged=False, baseline_stall_worst_ms=base["worst-ms"],
                                             baseline_stall_p99_ms=base["p99-ms"]))
        switch_ms, sent = _start_postcopy(src, dst)
        info = _completed(src)
        steps = _switch_steps(src, dst, sent)
        print(f"hosts: postcopy switch, ms: {breakdown.line(steps)}", file=sys.stderr, flush=True)
        nin = wait_until(lambda: (i := dst.qmp("query-migrate"))["status"] == "completed" and i, 600,
                         "destination completed")
        g = wait_heartbeat(dst, dst.guest()["heartbeat"])
        if dirty:
            dr["postcopy_dirty_pages_per_s"] = round((g["rewrites"] - g1["rewrites"]) / (time.monotonic() - t1))
        if g["corruptions"]:
            raise RuntimeError(f"{g['corruptions']} corruptions after the migration")
        stalls = g.get("stalls") or {}
        ram = nin.get("ram", {})
        r = {"start_to_running_ms": switch_ms, "total_ms": info["total-time"],
             "downtime_ms": info.get("downtime"), "pause_ms": g.get("last-pause-ms"),
             "stall_worst_ms": stalls.get("worst-ms"), "stall_p99_ms": stalls.get("p99-ms"),
             "stall_samples": stalls.get("samples"), "baseline_stall_worst_ms": base["worst-ms"],
             "baseline_stall_p99_ms": base["p99-ms"], "postcopy_requests": ram.get("postcopy-requests"),
             "fault_pages": ram.get("x-postcopy-fault-pages"), "pushed_pages": ram.get("x-postcopy-pushed-pages"),
             "corruptions": g["corruptions"], "steps": steps, "fault_blocktime_ms": nin.get("postcopy-blocktime"),
             "fault_worst_ms": (nin["x-postcopy-worst-stall-us"] / 1000
                                if nin.get("x-postcopy-worst-stall-us") is not None else None)}
        if r["fault_blocktime_ms"] is not None and r["postcopy_requests"]:
            r["fault_mean_ms"] = round(r["fault_blocktime_ms"] / r["postcopy_requests"], 2)
        r.update(dr)
        return r
    finally:
        for vm in (src, dst):
            vm.kill()


def qemu_run(qh, hosts, port, size, n):
    """One QEMU 7.2 postcopy-ram migration a -> b of its idle BIOS guest (qh: hosts_qemu's
    QemuHosts); the same figures where QEMU has them."""
    dst_ram = os.path.join("/dev/shm", f"cpr-bench-hosts-qemu-{os.getpid()}-pcdst{n}")
    uri = f"tcp:{hosts.addr('b')}:{port}"
    L = qh.launcher
    src = dst = None
    try:
        src = L.start(f"pc-src{n}", size, qh.ram(size), wrap=hosts.wrap("a"))
        dst = L.start(f"pc-dst{n}", size, dst_ram, ["-incoming", "defer"], wrap=hosts.wrap("b"))
        L.ready(src)
        for vm in (src, dst):
            vm.qmp("migrate-set-capabilities", capabilities=[{"capability": "postcopy-ram", "state": True}])
        dst.qmp("migrate-incoming", uri=uri)
        src.qmp("migrate", uri=uri)
        time.sleep(SWITCH_AFTER_S)
        switch_ms, _ = _start_postcopy(src, dst)
        info = _completed(src)
        dst.wait_status("running", timeout=60)
        return {"start_to_running_ms": switch_ms, "total_ms": info["total-time"],
                "downtime_ms": info.get("downtime"), "pause_ms": None, "stall_worst_ms": None,
                "stall_p99_ms": None, "postcopy_requests": info.get("ram", {}).get("postcopy-requests")}
    finally:
        for vm in (src, dst):
            if vm:
                vm.kill()
        host.unlink(dst_ram)
