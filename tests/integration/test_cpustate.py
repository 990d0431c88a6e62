#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The vCPU and VM state sections, field by field (tests/vmm/dev_cpu.c).

usage: test_cpustate.py CPR_VMM_BINARY CPR_DUMP_BINARY

- a snapshot of today's VMM names every register: cpr-dump shows rip, cr3, the segments and
  the MSRs as {index, data}, in sections cpu and vm of version 2, and the snapshot restores;
- version skew: a snapshot written with -machine cpr-vmm-1.1 has the version-1 form (one bytes
  field "state"); a VMM without -machine restores it, and saves the guest in version 1 again
  (the guest keeps its type, so release 1.1 can still take it back);
- a VMM of another shape (vCPU count) refuses the vm section naming the field.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from harness.guest import (ACCEL, RAM_MB, base_args, check, check_after_switchover, log,
                           skip_software_twin, wait_booted, wait_serial)
from harness.process import VALGRIND, Vmm, shutdown_all
from harness.reports import sanitizer_reports, valgrind_reports

CPU_FIELDS = ["rax", "rbx", "rsp", "r15", "rip", "rflags", "cs", "ss", "tr", "gdt", "idt", "cr0", "cr2", "cr3",
              "cr4", "cr8", "efer", "apic_base", "fpu", "xsave", "xcrs", "events", "debugregs", "mp_state", "msrs"]


def dump(cpr_dump, path):
    out = subprocess.run([cpr_dump, path], capture_output=True, text=True, timeout=120)
    check(out.returncode == 0, f"cpr-dump {path} exit 0 ({out.stderr.strip()})")
    return json.loads(out.stdout)


def sections(doc, name):
    return [r for r in doc["records"] if r.get("section") == name and "fields" in r]


def schema_of(doc, name):
    """The description of section `name` in the stream's schema record."""
    found = []

    def walk(o):
        if isinstance(o, dict):
            if o.get("name") == name and "fields" in o and "min_version" in o:
                found.append(o)
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(doc)
    check(found, f"the stream's schema describes section {name}")
    return found[0]


def save(vm, path, what):
    vm.qmp("migrate", uri=f"file:{path}")
    info = vm.wait_migration()
    check(info["status"] == "completed", f"{what}: saved ({info.get('error-desc', '')})")
    hb = vm.guest()["heartbeat"]
    vm.shutdown()
    return hb


def restore(binary, wd, name, path, hb_old, serial, extra=()):
    vm = Vmm(binary, wd, name, base_args(wd, "cpu", list(extra) + ["-incoming", "defer"]))
    vm.qmp("migrate-incoming", uri=f"file:{path}")
    vm.wait_status("running")
    check_after_switchover(vm, hb_old, serial)
    return vm


def test_named_fields(binary, cpr_dump, wd, serial):
    snap = os.path.join(wd, "v2.state")
    vm = Vmm(binary, wd, "v2", base_args(wd, "cpu"))
    g = wait_booted(vm)
    wait_serial(serial)
    hb = save(vm, snap, "today's VMM")
    doc = dump(cpr_dump, snap)
    cpus = sections(doc, "cpu")
    check(len(cpus) == int(os.environ.get("CPR_VMM_SMP", "1")), f"one cpu section per vCPU ({len(cpus)})")
    for c in cpus:
        f = c["fields"]
        check(c["version"] == 2, f"cpu {c['instance']}: version 2")
        missing = [n for n in CPU_FIELDS if n not in f]
        check(not missing, f"cpu {c['instance']}: registers by name (missing {missing})")
        check(set(f["cs"]) >= {"selector", "base", "limit", "type", "present", "dpl", "db", "s", "l", "g", "avl"},
              f"cpu {c['instance']}: a segment is a struct of its parts")
        check(all(set(m) == {"index", "data"} for m in f["msrs"]), f"cpu {c['instance']}: each MSR is {{index, data}}")
        check(f["state"] == "" and f["state_len"] == 0, f"cpu {c['instance']}: version 1's bytes field is empty")
        if g["backend"] == "kvm":
            check(f["rip"] != 0 and f["cr0"] != 0 and f["msrs"], f"cpu {c['instance']}: KVM registers captured")
        log(f"cpu {c['instance']}: rip {f['rip']:#x} cr3 {f['cr3']:#x}, {len(f['msrs'])} MSRs")
    msrs = next(x for x in schema_of(doc, "cpu")["fields"] if x["name"] == "msrs")
    check(msrs["count_field"] == "nmsrs" and [x["name"] for x in msrs["struct"]["fields"]] == ["index", "data"],
          "the schema: msrs is an array of {index, data} counted by nmsrs")
    vmf = {x["name"]: x for x in schema_of(doc, "vm")["fields"]}
    check(all("equal" in vmf[n] for n in ("backend", "nvcpus", "ram_size")),
          "the schema: vm checks backend, nvcpus and ram_size with equal")
    (vm_sec,) = sections(doc, "vm")
    check(vm_sec["version"] == 2 and vm_sec["fields"]["ram_size"] == RAM_MB << 20 and
          "clock" in vm_sec["fields"], "vm: version 2 with ram_size and the clock")
    restore(binary, wd, "v2-restored", snap, hb, serial).shutdown()
    return snap


def test_version_skew(binary, cpr_dump, wd, serial):
    snap = os.path.join(wd, "v1.state")
    again = os.path.join(wd, "v1-again.state")
    vm = Vmm(binary, wd, "v1", base_args(wd, "cpu", ["-machine", "cpr-vmm-1.1"]))
    wait_booted(vm)
    wait_serial(serial)
    hb = save(vm, snap, "-machine cpr-vmm-1.1")
    doc = dump(cpr_dump, snap)
    for name in ("cpu", "vm"):
        for s in sections(doc, name):
            check(s["version"] == 1 and list(s["fields"]) == ["state"],
                  f"{name} {s['instance']}: version 1, one bytes field 'state' ({list(s['fields'])[:4]})")
    new = restore(binary, wd, "v1-restored", snap, hb, serial)
    check(new.guest()["machine"] == "cpr-vmm-1.1", f"the guest kept its type: {new.guest()['machine']}")
    hb = save(new, again, "a version-1 guest, again")
    doc = dump(cpr_dump, again)
    check(all(s["version"] == 1 for n in ("cpu", "vm") for s in sections(doc, n)),
          "the guest came in version 1 and is written in version 1 again")
    restore(binary, wd, "v1-restored-again", again, hb, serial, ["-machine", "cpr-vmm-1.1"]).shutdown()


def test_mismatch(binary, wd, snap):
    smp = int(os.environ.get("CPR_VMM_SMP", "1"))
    args = base_args(wd, "cpu", ["-incoming", "defer"])
    args[args.index("-smp") + 1] = str(smp + 1)
    vm = Vmm(binary, wd, "other-smp", args)
    vm.qmp("migrate-incoming", uri=f"file:{snap}")
    info = vm.wait_migration()
    desc = info.get("error-desc", "")
    check(info["status"] == "failed" and "section 'vm'" in desc and "field 'nvcpus'" in desc and
          f"stream has {smp}" in desc, f"a VMM with {smp + 1} vCPUs refuses the vm section naming the field: {desc}")
    check(vm.status() == "inmigrate", "the refusing VMM did not start a guest")
    vm.shutdown()


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    binary, cpr_dump = (os.path.abspath(a) for a in sys.argv[1:])
    skip_software_twin()
    wd = tempfile.mkdtemp(prefix="cpr-vmm-cpustate-")
    ok = False
    try:
        # One directory per guest: each has its own console log (base_args names serial.log).
        dirs = [os.path.join(wd, d) for d in ("v2", "v1", "mismatch")]
        for d in dirs:
            os.mkdir(d)
        snap = test_named_fields(binary, cpr_dump, dirs[0], os.path.join(dirs[0], "serial.log"))
        test_version_skew(binary, cpr_dump, dirs[1], os.path.join(dirs[1], "serial.log"))
        test_mismatch(binary, dirs[2], snap)
        shutdown_all()
        for what, reports, on in (("sanitizer", sanitizer_reports, True), ("valgrind", valgrind_reports, VALGRIND)):
            bad = [b for d in dirs for b in reports(d)] if on else []
            check(not bad, f"no {what} report (memory error, leak, fd left open) in the VMMs' logs {bad}")
        ok = True
    finally:
        if ok and not os.environ.get("CPR_KEEP_TMP"):
            shutil.rmtree(wd, ignore_errors=True)
        else:
            log(f"work directory kept: {wd} (accel {ACCEL or 'default'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
