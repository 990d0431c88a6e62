#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""ctest bench.run_smoke: tests/bench/run on 64 MiB guests, one run, and its output contract.

usage: smoke.py RUN_SCRIPT BUILD_DIR
Exits 77 (skipped) when cpr-vmm is not built. Without a usable /dev/kvm (a machine whose
kernel is itself a kvm-pvm guest has none) it says so and checks the contract on cpr-vmm's
software backend, whose rows carry "accel": "soft". A second run, of the cpr suite with
--affinity (on machines with two CPUs or more), must carry "affinity" on its libcpr rows and
VMM targets. Fails when a line is not JSON, a row lacks a contract key, a figure is not ordered
min <= median <= max, a target line lacks its value or a boolean pass (or, on the software
backend, its "accel"), or a libcpr figure failed in every run.
"""
import json
import os
import subprocess
import sys

from harness.host import kvm_usable
from benchlib.targets import C_TARGETS

SKIP = 77
ROW_KEYS = ("bench", "impl", "mode", "ram_bytes", "runs")


def check_row(row, errors):
    missing = [k for k in ROW_KEYS if k not in row]
    if missing:
        errors.append(f"row without {missing}: {row}")
        return
    if row["impl"] not in ("libcpr", "qemu"):
        errors.append(f"impl {row['impl']!r} is neither libcpr nor qemu: {row}")
    if "skipped" in row:
        if row["impl"] == "libcpr" and row["skipped"].startswith("every run failed"):
            errors.append(f"{row['bench']} ({row.get('variant')}) failed: {row['skipped']}")
        return
    figs = [k[len("median_"):] for k in row if k.startswith("median_")]
    if not figs:
        errors.append(f"measured row without a min/median/max figure: {row}")
    for f in figs:
        lo, mid, hi = row.get(f"min_{f}"), row[f"median_{f}"], row.get(f"max_{f}")
        if lo is None or hi is None or not lo <= mid <= hi:
            errors.append(f"{row['bench']} {f}: min/median/max {lo}/{mid}/{hi}")


def check_output(r, accel, affinity, errors):
    """The contract over one run's output; with `affinity`, every libcpr row and VMM target
    must carry it."""
    rows = targets = 0
    if r.returncode != 0:
        errors.append(f"run exited {r.returncode}")
    for line in r.stdout.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            errors.append(f"not a JSON line: {line[:200]}")
            continue
        if "target" in obj:
            targets += 1
            if "value" not in obj or not isinstance(obj.get("pass"), bool):
                errors.append(f"target line without value or boolean pass: {obj}")
            # A VMM target from software-backend rows must say so; from KVM rows it says nothing.
            vmm_target = obj["target"] not in C_TARGETS
            want = {"libcpr": "soft"} if accel == "soft" and vmm_target else None
            if obj.get("accel") != want:
                errors.append(f"target line on {accel} says accel {obj.get('accel')!r}: {obj}")
            if obj.get("affinity") != (affinity if vmm_target else None):
                errors.append(f"target line with affinity {affinity!r} says {obj.get('affinity')!r}: {obj}")
        else:
            rows += 1
            if targets:
                errors.append(f"figure row after a target line: {obj}")
            check_row(obj, errors)
            if obj.get("native"):
                continue  # a C bench's row (bench_exec's floor): no VMM, no accel or affinity
            if obj.get("impl") == "libcpr" and "skipped" not in obj and obj.get("accel") != accel:
                errors.append(f"libcpr row measured on {accel} says accel {obj.get('accel')!r}: {obj}")
            if obj.get("impl") == "libcpr" and "skipped" not in obj and obj.get("affinity") != affinity:
                errors.append(f"libcpr row measured with affinity {affinity!r} says {obj.get('affinity')!r}: {obj}")
    measured = sum(1 for l in r.stdout.splitlines() if '"median_' in l and '"libcpr"' in l)
    print(f"{rows} rows ({measured} measured libcpr rows), {targets} targets")
    if measured == 0:
        errors.append("no libcpr figure was measured")
    if targets == 0:
        errors.append("no target line")


def run_bench(run, build, accel, only, affinity=None):
    argv = [sys.executable, run, "--sizes", "64M", "--runs", "1", "--no-warm",
            "--only", only, "--build-dir", build, "--accel", accel]
    if affinity:
        argv += ["--affinity", affinity]
    print("running:", " ".join(argv), flush=True)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=110)
    sys.stderr.write(r.stderr[-4000:])
    return r


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    run, build = sys.argv[1], sys.argv[2]
    if not os.access(os.path.join(build, "tests/vmm/cpr-vmm"), os.X_OK):
        print(f"skipped: cpr-vmm is not built in {build}/tests/vmm")
        return SKIP
    accel = "kvm" if kvm_usable() else "soft"
    if accel == "soft":
        print("no usable /dev/kvm here: the output contract is checked on the software backend")
    errors = []
    check_output(run_bench(run, build, accel, "cpr,restart,snapshot,live"), accel, None, errors)
    # --affinity pins every cpr-vmm; its rows and targets say so.
    if len(os.sched_getaffinity(0)) >= 2:
        cpus = sorted(os.sched_getaffinity(0))
        spec = f"vcpus={cpus[-1]},emulator={cpus[0]}"
        check_output(run_bench(run, build, accel, "cpr", spec), accel, spec, errors)
    else:
        print("one CPU only: --affinity not checked")
    for e in errors:
        print("FAIL:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
