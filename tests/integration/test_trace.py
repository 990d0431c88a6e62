#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The pause breakdown (docs/migration.md, "Pause breakdown") from real cpr-vmm processes.

usage: test_trace.py CPR_VMM_BINARY

  cpr-transfer  x-query-cpr-trace on the old and the new VMM: every step of each side is there,
                once, in the documented order on the common clock (CLOCK_MONOTONIC), and the
                two sides interleave as the protocol does (the new VMM's hang-up before the old
                one stops the guest; its load after the old one wrote the state).
  cpr-exec      one trace from the new image holds the old image's steps (carried across the
                exec) and its own, in order; the rollback guardian started before the stop.
  cpr-reboot    the old VMM's teardown helper holds guest RAM before the guest stops (so neither
                its start nor the quit's unmapping is between the stop and the new VMM); a
                `cont` after the save lets it go and the guest runs on; a restart from the
                file runs the guest with every step of the new VMM in order.
No times are asserted, only order: speed belongs to tests/bench.
"""
import os
import sys

from harness.cases import run_cases
from harness.guest import base_args, check, wait_booted, wait_heartbeat, wait_until
from harness.process import VALGRIND, Vmm
from harness.transfer import cpr_transfer

RAM_MB = 16

# Each side's steps in the order they must come (docs/migration.md).
OLD_TRANSFER = ["migrate-start", "cpr-connected", "cpr-state-sent", "cpr-hangup-seen",
                "stop-requested", "vcpus-out", "stopped", "state-written", "main-closed", "migrate-end"]
NEW_TRANSFER = ["image-main", "cpr-state-received", "ram-registered", "machine-created",
                "devices-created", "main-listening", "cpr-hangup-sent", "main-accepted",
                "state-loaded", "prepared", "committed", "started", "ack-sent"]
OLD_EXEC = ["migrate-start", "exec-guard-started", "stop-requested", "vcpus-out", "stopped",
            "state-written", "main-closed", "exec"]
OLD_REBOOT = ["migrate-requested", "teardown-held", "migrate-start", "stop-requested", "vcpus-out",
              "stopped", "state-written", "main-closed", "migrate-end"]
NEW_REBOOT = ["image-main", "ram-registered", "machine-created", "devices-created", "main-listening",
              "incoming-start", "main-accepted",
              "state-loaded", "prepared", "committed", "vcpus-in"]
NEW_EXEC = ["image-main", "cpr-state-adopted", "ram-registered", "machine-created",
            "devices-created", "main-listening", "main-accepted", "state-loaded", "prepared",
            "committed", "vcpus-in"]


def steps(vm):
    t = vm.qmp("x-query-cpr-trace")
    check(t["clock"] == "monotonic" and t["dropped"] == 0, f"{vm.name}: monotonic clock, nothing dropped")
    return [(s["t-ns"], s["step"], s["pid"]) for s in t["steps"]]


def wait_step(vm, name, since):
    """Until the trace has `name` after the last `since` (or anywhere, with no `since` in it).
    vcpus-in: the heartbeat lives in guest RAM, which carries over, so it may have moved on
    before the stop and does not say the new side's vCPU ran; after a cpr-exec the old image's
    steps (its own vcpus-in at boot) come first. migrate-end: marked after the status change
    that the MIGRATION event reports."""
    def seen():
        names = [s[1] for s in steps(vm)]
        marks = [i for i, n in enumerate(names) if n == since]
        return name in names[marks[-1] + 1:] if marks else name in names
    wait_until(seen, 30, f"{vm.name}: {name}")


def wait_vcpus_in(vm):
    wait_step(vm, "vcpus-in", "exec")


def since_last(trace, name):
    i = max((k for k, s in enumerate(trace) if s[1] == name), default=None)
    check(i is not None, f"the trace has {name}: {[s[1] for s in trace]}")
    return trace[i:]


def check_order(side, trace, expected):
    """expected: each once, in this order, times not going back."""
    names = [s[1] for s in trace]
    for name in expected:
        check(names.count(name) == 1, f"{side}: {name} recorded once ({names})")
    times = [next(t for t, n, _ in trace if n == name) for name in expected]
    check(times == sorted(times), f"{side}: {' < '.join(expected)}")
    return dict(zip(expected, times))


def test_transfer(binary, wd):
    args = base_args(wd, "trace", ["-machine", "aux-ram-share=on"], ram_mb=RAM_MB)
    old = Vmm(binary, wd, "old", args)
    wait_booted(old)
    wait_heartbeat(old)
    new, _ = cpr_transfer(binary, wd, old, args)
    new.wait_status("running")
    wait_vcpus_in(new)
    wait_step(old, "migrate-end", "migrate-start")
    o = check_order("old", since_last(steps(old), "migrate-start"), OLD_TRANSFER)
    n_trace = steps(new)
    n = check_order("new", n_trace, NEW_TRANSFER)
    check({s[2] for s in n_trace} == {new.pid}, "the new VMM's steps carry its pid")
    # The two processes on one clock: the hand-over's causal order shows across them.
    # Across processes only what causality orders: a step marked before an action against
    # one marked after its effect on the other side.
    check(o["cpr-connected"] < n["cpr-state-received"], "the state arrives after the old VMM connected")
    check(n["main-listening"] < o["cpr-hangup-seen"] < o["stop-requested"],
          "the new VMM listens on main, then hangs up; the old one sees it, then stops")
    check(o["stopped"] < n["state-loaded"] < n["prepared"] < o["main-closed"],
          "the new VMM loads the state written after the stop and is prepared before the old "
          "one closes main (it waits for the acknowledgement, sent after prepare)")
    # The commit signal: the new VMM commits by setting it, starts the guest, and only then
    # acknowledges, so the old one's wake-up and completion are off the guest's pause.
    check(n["started"] < o["main-closed"],
          "the old VMM reads the acknowledgement only after the new one started the guest")
    vcpus_in = [t for t, name, _ in n_trace if name == "vcpus-in"]
    check(len(vcpus_in) == 1 and n["committed"] < vcpus_in[0], "the guest runs in the new VMM after its commit")


def test_exec(binary, wd):
    args = base_args(wd, "trace", ["-machine", "aux-ram-share=on"], ram_mb=RAM_MB)
    vm = Vmm(binary, wd, "vm", args)
    wait_booted(vm)
    wait_heartbeat(vm)
    pid = vm.pid
    state = os.path.join(wd, "vm.state")
    vm.qmp("migrate-set-parameters", mode="cpr-exec",
           **{"cpr-exec-command": vm.argv + ["-incoming", f"file:{state}"]})
    try:
        vm.qmp("migrate", uri=f"file:{state}")
        vm.wait_qmp_closed()
    except (EOFError, ConnectionError):
        pass
    vm.reconnect()
    vm.wait_status("running")
    wait_vcpus_in(vm)
    trace = steps(vm)
    check({s[2] for s in trace} == {pid}, "one process: every step has its pid")
    execs = [t for t, n, _ in trace if n == "exec"]
    check(len(execs) == 1, "the old image's steps came across the exec")
    old = since_last([s for s in trace if s[0] <= execs[0]], "migrate-start")
    new = [s for s in trace if s[0] > execs[0]]
    expected_old = OLD_EXEC if not VALGRIND else [s for s in OLD_EXEC if s != "exec-guard-started"]
    o = check_order("old image", old, expected_old)
    n = check_order("new image", new, NEW_EXEC)
    check(o["exec"] < n["image-main"], "the new image starts after the exec")
    if not VALGRIND:  # no guardian under valgrind (exec_guard.c)
        check(o["exec-guard-started"] < o["stop-requested"],
              "the rollback guardian started before the guest stopped (not in the pause)")


def reboot_save(vm):
    vm.qmp("migrate-set-capabilities", capabilities=[{"capability": "x-ignore-shared", "state": True}])
    vm.qmp("migrate-set-parameters", mode="cpr-reboot")
    vm.qmp("migrate", uri="file:vm.state")
    info = vm.wait_migration()
    check(info["status"] == "completed", f"{vm.name}: saved ({info.get('error-desc', '')})")
    wait_step(vm, "migrate-end", "migrate-requested")
    # The teardown helper started before the job, so before the stop (none under valgrind).
    expected = OLD_REBOOT if not VALGRIND else [s for s in OLD_REBOOT if s != "teardown-held"]
    check_order(vm.name, since_last(steps(vm), "migrate-requested"), expected)


def test_reboot(binary, wd):
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else wd
    ram = os.path.join(shm, f"cpr-trace-test-{os.getpid()}.ram")
    args = base_args(wd, "trace", [
        "-object", f"memory-backend-file,id=ram0,size={RAM_MB}M,mem-path={ram},share=on",
        "-machine", "memory-backend=ram0"], ram_mb=RAM_MB)
    try:
        old = Vmm(binary, wd, "old", args)
        wait_booted(old)
        wait_heartbeat(old)
        # Saved, then resumed here after all: the helper is let go and the guest runs on.
        reboot_save(old)
        hb = old.guest()["heartbeat"]
        old.qmp("cont")
        old.wait_status("running")
        wait_heartbeat(old, above=hb)
        # Saved again, and this time quit: a restart from the file.
        reboot_save(old)
        old.qmp("quit")
        check(old.wait_exit() == 0, "old VMM quit")
        new = Vmm(binary, wd, "new", args + ["-incoming", "defer"])
        new.qmp("migrate-set-capabilities", capabilities=[{"capability": "x-ignore-shared", "state": True}])
        new.qmp("migrate-set-parameters", mode="cpr-reboot")
        new.qmp("migrate-incoming", uri="file:vm.state")
        new.wait_status("running")
        wait_vcpus_in(new)
        check_order("new", steps(new), NEW_REBOOT)
    finally:
        if os.path.exists(ram):
            os.unlink(ram)


TESTS = {"cpr-transfer": test_transfer, "cpr-exec": test_exec, "cpr-reboot": test_reboot}


if __name__ == "__main__":
    sys.exit(run_cases(__doc__, "cpr-trace", TESTS))
