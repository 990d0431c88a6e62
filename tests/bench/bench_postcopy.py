#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Postcopy against precopy for a guest that dirties faster than the link (issue 22).

usage: bench_postcopy.py CPR_VMM_BINARY [RAM_MB ...]   (default 64 256)

Two cpr-vmm processes over a UNIX socket; the link is the source's max-bandwidth cap
(8 MiB/s), the guest dirties twice the pages that carries. For each RAM size: precopy's
remaining bytes after four passes against what the downtime limit (50 ms) carries (it does
not converge), then migrate-start-postcopy: the time until the destination reports its guest
running (polled over QMP: a bound, not the exact start; it includes the source's wait for
its current precopy step), the guest's own pause at the switch (its heartbeat gap,
`last-pause-ms`), the total time, requests and pages
fetched on faults against pages pushed in order, the destination's blocktime and worst single
stall, the guest's own worst stall and p99 (query-guest stalls: its worst gap between loop
iterations in each ~1 ms window while pages were fetched), and the zero-corruption re-verify.
One JSON line per size on stdout.
"""
import json
import os
import shutil
import sys
import tempfile
import time

from harness.guest import base_args, wait_booted, wait_heartbeat, wait_serial, wait_until
from harness.process import Vmm, shutdown_all

PAGE = 4096
BANDWIDTH = 8 << 20


def run(binary, ram_mb):
    wd = tempfile.mkdtemp(prefix="cpr-bench-postcopy-")
    try:
        args = base_args(wd, "postcopy", ["-guest-dirty-rate", str(2 * BANDWIDTH // PAGE)], ram_mb=ram_mb)
        old = Vmm(binary, wd, "old", args)
        wait_booted(old)
        wait_heartbeat(old)
        wait_serial(os.path.join(wd, "serial.log"))
        sock = os.path.join(wd, "mig.sock")
        new = Vmm(binary, wd, "new", args + ["-global", "migration.postcopy-ram=on", "-incoming", f"unix:{sock}"])
        wait_until(lambda: os.path.exists(sock), 30, "new VMM listens")
        old.qmp("migrate-set-capabilities", capabilities=[{"capability": "postcopy-ram", "state": True}])
        old.qmp("migrate-set-parameters", **{"max-bandwidth": BANDWIDTH, "downtime-limit": 50})
        t_start = time.monotonic()
        old.qmp("migrate", uri=f"unix:{sock}")
        info = wait_until(lambda: (i := old.qmp("query-migrate")).get("ram", {}).get("dirty-sync-count", 0) >= 4
                          and i, 600, "four precopy passes")
        pre = info["ram"]
        t0 = time.monotonic()
        old.qmp("migrate-start-postcopy")
        wait_until(lambda: new.status() == "running", 120, "destination runs the guest")
        switch_ms = (time.monotonic() - t0) * 1000
        src = old.wait_migration(600)
        nin = wait_until(lambda: (i := new.qmp("query-migrate"))["status"] == "completed" and i, 600,
                         "destination completed")
        total_s = time.monotonic() - t_start
        g = new.guest()
        ram = nin.get("ram", {})
        return {"ram_mb": ram_mb, "link_bytes_per_s": BANDWIDTH, "dirty_pages_per_s": pre["dirty-pages-rate"],
                "precopy_passes": pre["dirty-sync-count"], "precopy_remaining_bytes": pre["remaining"],
                "downtime_limit_carries_bytes": BANDWIDTH * 50 // 1000,
                "start_postcopy_to_dest_running_ms": round(switch_ms, 1),
                "source_status": src["status"], "total_s": round(total_s, 1),
                "postcopy_requests": ram.get("postcopy-requests"),
                "fault_pages": ram.get("x-postcopy-fault-pages"), "pushed_pages": ram.get("x-postcopy-pushed-pages"),
                "blocktime_ms": nin.get("postcopy-blocktime"),
                "worst_stall_us": nin.get("x-postcopy-worst-stall-us"),
                "guest_stall_worst_ms": (g.get("stalls") or {}).get("worst-ms"),
                "guest_stall_p99_ms": (g.get("stalls") or {}).get("p99-ms"),
                "guest_pause_ms": g.get("last-pause-ms"), "guest_pause_seen_ms": g.get("last-pause-seen-ms"),
                "corruptions": g["corruptions"], "pages_verified": g["pages-verified"]}
    finally:
        shutdown_all()
        shutil.rmtree(wd, ignore_errors=True)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    binary = os.path.abspath(sys.argv[1])
    for mb in [int(a) for a in sys.argv[2:]] or [64, 256]:
        print(json.dumps(run(binary, mb)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
