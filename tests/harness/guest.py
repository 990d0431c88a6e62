# SPDX-License-Identifier: MIT
"""cpr-vmm's test guest: its command line, and the checks every test makes after a switchover.

The guest fills every page of RAM with a pattern at boot, keeps a heartbeat, re-verifies its RAM
and counts corruptions (query-guest), and writes numbered lines "serial line N: heartbeat H
corruptions C" to its console. After a switchover the heartbeat must go on from where it was, the
guest must re-verify all its RAM clean, and the console's numbering must continue without a gap.
"""
import os
import re
import shutil
import sys
import time

from .host import kvm_usable
from .process import scaled

# Guest RAM of the tests, MiB (a test may pass its own to base_args).
RAM_MB = 64
# -accel for every VMM, from the environment (CPR_VMM_ACCEL=soft runs the software backend).
ACCEL = os.environ.get("CPR_VMM_ACCEL")
# vCPUs per VMM (CPR_VMM_SMP, default 1).
SMP = os.environ.get("CPR_VMM_SMP", "1")


def skip_software_twin():
    """Exits 77 (skipped, saying why) when this run is the software-backend twin of a test
    (ctest's integration.soft.*, CPR_VMM_SOFT_TWIN=1) on a host without a usable /dev/kvm:
    there the default backend is the software one, so the default-backend test ran exactly
    this already."""
    if os.environ.get("CPR_VMM_SOFT_TWIN") == "1" and not kvm_usable():
        log("SKIP: no usable /dev/kvm, so the default backend is the software one: the "
            "default-backend twin of this test (same name without .soft) ran it")
        sys.exit(77)


def base_args(wd, name, extra=(), ram_mb=RAM_MB):
    """cpr-vmm's command line for a test guest named `name`, its console in wd/serial.log."""
    accel = ["-accel", ACCEL] if ACCEL else []
    return accel + ["-name", name, "-m", f"{ram_mb}M", "-smp", SMP, "-nodefaults", "-display", "none",
            "-serial", f"file:{os.path.join(wd, 'serial.log')}"] + list(extra)


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


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def finish_workdir(wd, ok):
    """Removes a test's work directory after a pass (unless CPR_KEEP_TMP is set); after a
    failure keeps it and logs the tail of each VMM's log."""
    if ok and not os.environ.get("CPR_KEEP_TMP"):
        shutil.rmtree(wd, ignore_errors=True)
        return
    log(f"work directory kept: {wd}")
    for f in sorted(os.listdir(wd)):
        if f.endswith(".log"):
            with open(os.path.join(wd, f), errors="replace") as fh:
                log(f"--- {f} (tail)\n" + "".join(fh.readlines()[-30:]))


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    log(f"ok: {what}")


def wait_until(pred, timeout, what):
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s: {what}")


def wait_heartbeat(vm, above=0, timeout=30):
    return wait_until(lambda: (g := vm.guest())["heartbeat"] > above and g, timeout,
                      f"{vm.name}: heartbeat above {above}")


def wait_booted(vm, timeout=60):
    """Until the guest filled every page at boot (so there is a full pattern to verify)."""
    return wait_until(lambda: (g := vm.guest())["pages-total"] and g["pages-filled"] >= g["pages-total"] and g,
                      timeout, f"{vm.name}: boot fill done")


def wait_serial(path, n=2):
    """Until the console has n lines, so that its numbering spans the switchover."""
    wait_until(lambda: os.path.exists(path) and len(serial_lines(path)) >= n, 15, f"{n} serial lines")


def check_after_switchover(new, hb_old, serial_path):
    """The guest goes on where it was, re-verifies all its RAM clean, the console continues."""
    g0 = new.guest()
    check(g0["heartbeat"] >= hb_old, f"new heartbeat {g0['heartbeat']} starts at or above the old {hb_old}")
    g1 = wait_heartbeat(new, g0["heartbeat"])
    check(g1["heartbeat"] > hb_old, f"heartbeat goes on ({hb_old} -> {g1['heartbeat']})")
    total = g0["pages-total"]
    g2 = wait_until(lambda: (g := new.guest())["pages-verified"] - g0["pages-verified"] >= total and g,
                    120, f"guest re-verified all {total} pages")
    check(g2["corruptions"] == 0,
          f"zero corruptions after {g2['pages-verified'] - g0['pages-verified']} verifications of {total} pages")
    # Serial: at least two lines written after the switchover, numbering without gap or repeat.
    wait_until(lambda: sum(1 for s in serial_lines(serial_path) if s[1] > hb_old) >= 2, 10,
               "serial lines after the switchover")
    lines = serial_lines(serial_path)
    nums = [n for n, _, _ in lines]
    check(nums == list(range(nums[0], nums[0] + len(nums))) and nums[0] == 0,
          f"serial lines 0..{nums[-1]} continuous in {os.path.basename(serial_path)}")
    hbs = [h for _, h, _ in lines]
    check(hbs == sorted(hbs), "serial heartbeats never go back")
    check(any(h <= hb_old for h in hbs) and any(h > hb_old for h in hbs),
          "the console has lines from before and after the switchover")
    g3 = new.guest()
    log(f"guest after the switchover: {g3}")
    if ACCEL:
        check(g3["backend"] == ACCEL, f"ran on the {ACCEL} backend")
    return g2
