#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""multifd benchmark (issue 21): normal-mode live migration of one guest over a unix socket,
plain against multifd 2 and 4 channels and multifd 2 with zstd, in one run on this machine.

usage: tests/bench/multifd.py [--build-dir DIR] [--size 1G] [--runs N] [--dirty-rate PAGES_PER_S]
                              [--accel soft|kvm] [--compress PCT,PCT,...]

Prints one JSON object per line and variant: `variant`, `ram_bytes`, `runs`, `compress_pct`,
the median `total_ms` (migrate to completed), `downtime_ms`, `wire_bytes` (query-migrate's
transferred: main channel plus multifd channels), `data_pages`, `zero_pages`, and `ratio_wire`
(wire bytes over the data pages' bytes: the compression the guest's RAM allowed).

The guest's RAM is as compressible as its -guest-compress says (tests/vmm/README.md): 0, the
default, is incompressible. Without --compress the variants are plain, multifd 2 and 4 channels
and multifd 2 with zstd, at 0. With --compress, the compression rows instead: multifd 2 without
and with zstd at each compressibility given (e.g. 0,50,90). Timings on the software backend are
relative figures for one machine, not absolutes.
"""
import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

from harness.guest import base_args, wait_booted, wait_until
from harness.process import Vmm, shutdown_all

VARIANTS = [
    ("plain", None, None),
    ("multifd-2", 2, None),
    ("multifd-4", 4, None),
    ("multifd-2-zstd", 2, "zstd"),
]


def compression_rows(pcts):
    """(variant, channels, compression, compressibility) for each setting, none against zstd."""
    return [(f"multifd-2{'-zstd' if comp else ''}-c{pct}", 2, comp, pct)
            for pct in pcts for comp in (None, "zstd")]


def one_run(binary, wd, ram_mb, rate, channels, compression, pct):
    extra = ["-guest-dirty-rate", str(rate)]
    g = []
    if channels:
        g = ["-global", "migration.multifd=on", "-global", f"migration.multifd-channels={channels}"]
        if compression:
            g += ["-global", f"migration.multifd-compression={compression}"]
    old = Vmm(binary, wd, "old", base_args(wd, "bench", extra + g + ["-guest-compress", str(pct)], ram_mb=ram_mb))
    wait_booted(old, timeout=600)
    sock = os.path.join(wd, "mig.sock")
    new = Vmm(binary, wd, "new", base_args(wd, "bench", extra + g + ["-incoming", f"unix:{sock}"], ram_mb=ram_mb))
    wait_until(lambda: os.path.exists(sock), 60, "new VMM listens")
    t0 = time.monotonic()
    old.qmp("migrate", uri=f"unix:{sock}")
    info = old.wait_migration(900)
    wall_ms = (time.monotonic() - t0) * 1000
    if info["status"] != "completed":
        raise RuntimeError(f"migration {info['status']}: {info.get('error-desc')}")
    new.wait_status("running")
    ram = info.get("ram", {})
    row = {"total_ms": info.get("total-time", wall_ms), "downtime_ms": info.get("downtime"),
           "wire_bytes": ram.get("transferred"), "data_pages": ram.get("normal"),
           "zero_pages": ram.get("duplicate")}
    old.shutdown()
    new.shutdown()
    os.unlink(os.path.join(wd, "serial.log"))
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default="build")
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--dirty-rate", type=int, default=1000)
    ap.add_argument("--accel", default="soft")
    ap.add_argument("--compress", help="compression rows at these compressibilities, e.g. 0,50,90")
    a = ap.parse_args()
    os.environ["CPR_VMM_ACCEL"] = a.accel
    import harness.guest as hg
    hg.ACCEL = a.accel
    ram_mb = int(a.size[:-1]) * (1024 if a.size.endswith("G") else 1)
    binary = os.path.join(a.build_dir, "tests/vmm/cpr-vmm")
    variants = (compression_rows([int(p) for p in a.compress.split(",")]) if a.compress
                else [v + (0,) for v in VARIANTS])
    for name, channels, compression, pct in variants:
        rows = []
        for _ in range(a.runs):
            wd = tempfile.mkdtemp(prefix="cpr-bench-multifd-")
            try:
                rows.append(one_run(binary, wd, ram_mb, a.dirty_rate, channels, compression, pct))
            finally:
                shutdown_all()
                shutil.rmtree(wd, ignore_errors=True)
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        med["ratio_wire"] = round(med["wire_bytes"] / max(1, med["data_pages"] * 4096), 3)
        print(json.dumps({"bench": "multifd", "variant": name, "compress_pct": pct, "ram_bytes": ram_mb << 20,
                          "runs": len(rows),
                          "accel": a.accel, "dirty_rate": a.dirty_rate, **med,
                          "loadavg_1m": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
