# SPDX-License-Identifier: MIT
"""Postcopy between the two hosts of tests/bench/hosts (issue 22): variants "postcopy" (an idle
guest, libcpr and, with --with-qemu, QEMU 7.2 over the same link), "postcopy-dirty" (libcpr's
guest dirtying twice the pages the link carries; QEMU's BIOS guest cannot dirty) and
"postcopy-dirty-cap" (the same with max-postcopy-bandwidth at CAP_SHARE of the link).

Both implementations get capability postcopy-ram on both sides, the same downtime-limit and no
bandwidth cap (the tbf link is the cap). Idle: migrate-start-postcopy SWITCH_AFTER_S after
migrate, the same for both. Dirty: after PASSES precopy passes, which show that precopy does not
converge (what remains against what the downtime limit carries).

Figures of a run: start_to_running_ms, from the host's clock right before migrate-start-postcopy
to the destination's RESUME event (its own timestamp; the same measure for both); total_ms and
downtime_ms, as each source reports them in query-migrate; and for libcpr: pause_ms (the guest's
heartbeat gap across the switch, last-pause-ms), stall_worst_ms / stall_p99_ms / stall_samples
(the guest's own worst gap between loop iterations in each ~1 ms window while pages were
fetched, query-guest stalls), the same on the source for BASELINE_S before the migration
(baseline_stall_worst_ms, baseline_stall_p99_ms: what the guest's loop costs anyway), fault_pages
against pushed_pages, the re-verify, and the switch's breakdown (steps: both sides' trace steps
in ms from the source's stop-requested; the row has their medians, steps_median_ms).
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
BASELINE_S = 1.0
DOWNTIME_MS = 300
VARIANTS = ("postcopy", "postcopy-dirty", "postcopy-dirty-cap")
# postcopy-dirty-cap: the same dirtying guest with max-postcopy-bandwidth at this share of the link,
# so that the background pages do not fill the link's queue in front of the faults' replies.
CAP_SHARE = 0.8
FIGURES = ("start_to_running_ms", "total_ms", "downtime_ms", "pause_ms", "stall_worst_ms", "stall_p99_ms",
           "baseline_stall_worst_ms", "baseline_stall_p99_ms")
QEMU_NO_DIRTY = "QEMU's BIOS guest cannot dirty its RAM: libcpr's dirtying guest runs alone"


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


def libcpr_run(binary, wd, hosts, port, size, variant, rate, n, accel):
    """One cpr-vmm postcopy migration a -> b; returns its figures."""
    link = link_bytes_per_s(rate)
    dirty = 2 * link // PAGE if variant.startswith("postcopy-dirty") else 0
    params = {"downtime-limit": DOWNTIME_MS}
    if variant == "postcopy-dirty-cap":
        params["max-postcopy-bandwidth"] = int(link * CAP_SHARE)
    args = ["-accel", accel, "-smp", "1", "-guest-dirty-rate", str(dirty)]
    uri = f"tcp:{hosts.addr('b')}:{port}"
    src = Vmm(binary, wd, f"pc-src{n}", base_args(wd, f"pc{n}", args, ram_mb=size >> 20), wrap=hosts.wrap("a"))
    dst = Vmm(binary, wd, f"pc-dst{n}", base_args(wd, f"pc{n}", args + [
        "-global", "migration.postcopy-ram=on", "-incoming", uri], ram_mb=size >> 20), wrap=hosts.wrap("b"))
    try:
        wait_booted(src, timeout=600)
        wait_heartbeat(src)
        wait_until(lambda: dst.status() == "inmigrate", 60, "destination in inmigrate")
        src.qmp("x-record-stalls", record=True)
        time.sleep(BASELINE_S)
        src.qmp("x-record-stalls", record=False)
        base = src.guest()["stalls"]
        src.qmp("migrate-set-capabilities", capabilities=[{"capability": "postcopy-ram", "state": True}])
        src.qmp("migrate-set-parameters", **params)
        src.qmp("migrate", uri=uri)
        pre = {}
        if dirty:
            pre = wait_until(lambda: (i := src.qmp("query-migrate")).get("ram", {}).get("dirty-sync-count", 0)
                             >= PASSES and i, 600, f"{PASSES} precopy passes")["ram"]
        else:
            time.sleep(SWITCH_AFTER_S)
        switch_ms, sent = _start_postcopy(src, dst)
        info = _completed(src)
        steps = _switch_steps(src, dst, sent)
        print(f"hosts: postcopy switch, ms: {breakdown.line(steps)}", file=sys.stderr, flush=True)
        nin = wait_until(lambda: (i := dst.qmp("query-migrate"))["status"] == "completed" and i, 600,
                         "destination completed")
        g = wait_heartbeat(dst, dst.guest()["heartbeat"])
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
             "corruptions": g["corruptions"], "steps": steps}
        if dirty:
            r.update({"dirty_pages_per_s_asked": dirty, "dirty_pages_per_s": pre.get("dirty-pages-rate"),
                      "precopy_passes": pre.get("dirty-sync-count"), "precopy_remaining_bytes": pre.get("remaining"),
                      "downtime_limit_carries_bytes": link * DOWNTIME_MS // 1000})
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
