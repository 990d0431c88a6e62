#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Fault matrix: real cpr-vmm processes killed, frozen, starved and fed bad streams at every
phase of a switchover, in every mode.

usage: test_faults.py CPR_VMM_BINARY CPR_DUMP_BINARY MODE   (MODE: cpr-transfer live cpr-reboot cpr-exec mapped-ram
                                                             lazy-restore)

Each case asserts its documented outcome (docs/migration.md, "the point of no return"):
  - before the point of no return the old VMM resumes: query-migrate says failed with an
    error-desc, the run state is running, the heartbeat goes on and the guest re-verifies all
    its RAM with zero corruptions; the new VMM never runs;
  - past it the new VMM runs (heartbeat on from where it was, zero corruptions) and the old one
    stays in postmigrate;
  - a new VMM that gets a bad or partial stream refuses it with an error and stays in
    inmigrate: it never runs a guest on wrong state.
Never both running on the same RAM. The phases are hit with CPR_VMM_FAULT (tests/vmm/fault.h)
or, for the cpr channel itself, with a stand-in peer process. The run ends with a table:
case, expected outcome, observed outcome.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

from harness import rollback
from harness.channels import unix_channel
from harness.guest import base_args, check, check_after_switchover, log, serial_lines, wait_booted
from harness.guest import wait_heartbeat, wait_serial, wait_until
from harness.process import Vmm, kill_all, shutdown_all
from harness.qmp import QmpError
from harness.reports import sanitizer_reports

# Small RAM keeps the matrix fast; boot fill and a full re-verification take well under a second.
RAM_MB = 16

RESUMES = "old VMM resumes, guest intact"
NEW_RUNS = "new VMM runs, guest intact; old postmigrate"
REFUSED = "new VMM refuses the stream, stays inmigrate"
ROLLS_BACK = "previous image exec'd back, guest intact"

BINARY = DUMP = None


# ---- what every case checks ----------------------------------------------------------------

def fault_env(spec):
    return dict(os.environ, CPR_VMM_FAULT=spec)


def fault_hit(vm, phase, timeout=30):
    """Until the VMM said it reached the fault point."""
    needle = f"fault injection at {phase}:"
    wait_until(lambda: needle in open(vm.log_path, errors="replace").read(), timeout, f"{vm.name} reaches {phase}")


def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_frozen(vm):
    wait_until(lambda: proc_state(vm.pid) == "T", 30, f"{vm.name} frozen (SIGSTOP)")


def sigkill(vm):
    if vm.proc.poll() is None:
        vm.proc.send_signal(signal.SIGKILL)
    vm.proc.wait(30)


def verify_all(vm):
    """The guest re-verifies every page of its RAM from now on; none may be corrupt."""
    g0 = vm.guest()
    total = g0["pages-total"]
    g = wait_until(lambda: (g := vm.guest())["pages-verified"] - g0["pages-verified"] >= total and g, 60,
                   f"{vm.name}: guest re-verified all {total} pages")
    check(g["corruptions"] == 0, f"{vm.name}: zero corruptions over {total} pages")
    return g


def migration_failed(vm, timeout=60):
    info = vm.wait_migration(timeout)
    err = info.get("error-desc", "")
    check(info["status"] == "failed" and err, f"{vm.name}: query-migrate failed with '{err}'")
    return err


def old_resumed(old, hb_before):
    """The documented outcome before the point of no return."""
    err = migration_failed(old)
    old.wait_status("running")
    g = wait_heartbeat(old, hb_before)
    check(g["heartbeat"] > hb_before, f"old heartbeat goes on ({hb_before} -> {g['heartbeat']})")
    verify_all(old)
    return f"old resumed (failed: {err})"


def not_running(vm):
    """A new VMM that must never run the guest: dead, frozen, or alive in inmigrate."""
    if vm.proc.poll() is not None or proc_state(vm.pid) == "T":
        return "new dead" if vm.proc.poll() is not None else "new frozen"
    st = vm.status()
    check(st == "inmigrate", f"{vm.name}: status {st}, not running")
    # Its vCPUs do not run: they would burn CPU time. (Its heartbeat is no witness in the cpr
    # modes: the RAM it holds is the old VMM's, where the guest runs on.)
    t0 = cpu_seconds(vm.pid)
    time.sleep(0.5)
    used = cpu_seconds(vm.pid) - t0
    check(used < 0.1, f"{vm.name}: used {used:.2f} s of CPU in 0.5 s: no vCPU runs")
    return "new inmigrate, not running"


def refused(vm):
    """A new VMM that got a bad stream: failed with an error, inmigrate, guest not running."""
    err = migration_failed(vm)
    return f"{not_running(vm)} ({err})"


def thawed_after_ack(old, new):
    """New frozen past the acknowledgement: the old VMM completed and must not resume; the new
    one, thawed, runs the guest on."""
    info = old.wait_migration()
    check(info["status"] == "completed", "old: completed (the new VMM acknowledged)")
    check(old.status() == "postmigrate", "old stays in postmigrate while the new VMM is frozen")
    new.proc.send_signal(signal.SIGCONT)
    new.wait_status("running")
    check_after_switchover(new, old.guest()["heartbeat"], os.path.join(WD, "serial.log"))
    return "old postmigrate; new thawed and runs, guest intact"


def thawed_after_commit(old, new):
    """cpr-transfer: new frozen in its start hook, past its commit (the commit signal set) and
    before its acknowledgement: the old VMM keeps the guest paused, never resumes, and within
    the grace (1 s) completes on the signal alone, since the new one's start hook may be
    waiting for it; the new one, thawed, runs the guest."""
    info = old.wait_migration()
    check(info["status"] == "completed", f"old: completed on the commit signal while new is frozen ({info['status']})")
    check(old.status() == "postmigrate", f"old keeps the guest stopped ({old.status()})")
    old_read_commit_signal(old)
    with open(f"/proc/{new.pid}/stat") as f:
        check(f.read().rsplit(")", 1)[1].split()[0] == "T", "new is still frozen (SIGSTOP)")
    new.proc.send_signal(signal.SIGCONT)
    new.wait_status("running")
    check(old.status() == "postmigrate", "old stays in postmigrate")
    check_after_switchover(new, old.guest()["heartbeat"], os.path.join(WD, "serial.log"))
    return "old postmigrate on the commit signal while new frozen; new thawed and runs, guest intact"


def old_read_commit_signal(old):
    """The old VMM learnt of the commit from the commit signal, main having ended without the
    acknowledgement."""
    steps = [s["step"] for s in old.qmp("x-query-cpr-trace")["steps"]]
    check("commit-signal-read" in steps, f"old: the commit signal told it the new VMM committed ({steps[-6:]})")


def boot(name, args, **kw):
    vm = Vmm(BINARY, WD, name, args, **kw)
    wait_booted(vm)
    wait_heartbeat(vm)
    return vm


# ---- cpr-transfer ----------------------------------------------------------------------------

def transfer_args():
    return base_args(WD, "transfer", ["-machine", "aux-ram-share=on"], ram_mb=RAM_MB)


def transfer_new(name, env=None):
    """A new VMM with main and cpr channels, as in the seeds."""
    main_sock, cpr_sock = os.path.join(WD, f"{name}.main"), os.path.join(WD, f"{name}.cpr")
    vm = Vmm(BINARY, WD, name, transfer_args() + ["-incoming", f"unix:{main_sock}",
                                                   "-incoming", json.dumps(unix_channel("cpr", cpr_sock))], env=env)
    return vm, main_sock, cpr_sock


def transfer_migrate(old, main_sock, cpr_sock):
    old.qmp("migrate-set-parameters", mode="cpr-transfer")
    old.qmp("migrate", channels=[unix_channel("main", main_sock), unix_channel("cpr", cpr_sock)])


STANDIN = r"""
import os, signal, socket, sys
path, what = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path); s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
if what == "close":
    c.close()                      # the cpr socket closed before a byte was read
elif what == "half":
    c.recv(48)                     # part of the cpr state, then death
    os.kill(os.getpid(), signal.SIGKILL)
elif what == "hold":
    signal.pause()                 # connected, never reads: killed by the test
"""


def standin(path, what):
    """A stand-in for the new VMM on the cpr channel (a real process, in Python)."""
    p = subprocess.Popen([sys.executable, "-c", STANDIN, path, what], stdout=subprocess.PIPE)
    check(p.stdout.readline().strip() == b"listening", "stand-in listens on the cpr channel")
    return p


def case_transfer_new_fault(phase, action, expect):
    """The new VMM dies (or freezes) at PHASE; the old one is checked against the point of no return."""
    def run():
        old = boot("old", transfer_args())
        wait_serial(os.path.join(WD, "serial.log"))
        new, main_sock, cpr_sock = transfer_new("new", fault_env(f"{phase}:{action}"))
        if phase == "cpr-read":
            fault_hit(new, phase)
            new.proc.wait(30)  # dead before it listened on the cpr channel
        else:
            wait_until(lambda: os.path.exists(cpr_sock), 30, "new VMM listens on the cpr channel")
        hb = old.guest()["heartbeat"]
        try:
            transfer_migrate(old, main_sock, cpr_sock)
        except QmpError as e:
            # refused before the job started (nothing listening): the guest never stopped
            check(old.status() == "running", f"migrate refused at once ({e.desc}); guest running")
            verify_all(old)
            return f"migrate refused: {e.desc}; old running; {not_running(new)}"
        if action == "stop":
            fault_hit(new, phase)
            wait_frozen(new)
            if phase == "start":
                return thawed_after_commit(old, new)
            info = old.qmp("query-migrate")
            check(info["status"] not in ("completed", "failed"), f"old waits while the new VMM is frozen ({info['status']})")
            sigkill(new)
        else:
            fault_hit(new, phase)
            new.proc.wait(30)
        if phase == "start":
            info = old.wait_migration()
            check(info["status"] == "completed", "old: completed (the new VMM committed before dying)")
            old_read_commit_signal(old)
            time.sleep(0.3)
            check(old.status() == "postmigrate", "old stays in postmigrate: it never runs what the new VMM took over")
            return "old postmigrate (commit signal read), not resumed; new dead (guest lost with it)"
        out = old_resumed(old, hb)
        return f"{out}; {not_running(new)}"
    return run


def cont_refused(old, why):
    """`cont` on an old VMM whose guest runs elsewhere: refused, and it stays postmigrate."""
    try:
        old.qmp("cont")
    except QmpError as e:
        check(why in e.desc, f"cont refused: {e.desc}")
        check(old.status() == "postmigrate", "old stays in postmigrate")
        return e.desc
    raise AssertionError("cont was accepted on a VMM whose guest runs elsewhere")


def new_failed_before_commit(new, what):
    """A new VMM whose prepare failed: failed naming it, inmigrate, never ran."""
    err = migration_failed(new)
    check(what in err, f"new: the error names the {what} ('{err}')")
    return f"{not_running(new)} ({err})"


def case_transfer_prepare_fails():
    """The new VMM loads everything, then its own preparation fails: it has not committed, so
    the old one resumes (on the NAK) and `cont` there works."""
    def run():
        old = boot("old", transfer_args())
        wait_serial(os.path.join(WD, "serial.log"))
        new, main_sock, cpr_sock = transfer_new("new", fault_env("prepare:fail"))
        wait_until(lambda: os.path.exists(cpr_sock), 30, "new VMM listens on the cpr channel")
        hb = old.guest()["heartbeat"]
        transfer_migrate(old, main_sock, cpr_sock)
        fault_hit(new, "prepare")
        out = old_resumed(old, hb)
        check("negative acknowledgement" in old.qmp("query-migrate")["error-desc"], "old: resumed on the NAK")
        old.qmp("cont")
        check(old.status() == "running", "cont on the old VMM: running")
        return f"{out}; {new_failed_before_commit(new, 'prepare hook')}"
    return run


def case_transfer_then_migrate_again():
    """Issue 25: after a completed cpr-transfer, a later migration of the old VMM (which used to
    reset the guard) is refused, and `cont` stays refused."""
    def run():
        old = boot("old", transfer_args())
        wait_serial(os.path.join(WD, "serial.log"))
        new, main_sock, cpr_sock = transfer_new("new")
        wait_until(lambda: os.path.exists(cpr_sock), 30, "new VMM listens on the cpr channel")
        hb = old.guest()["heartbeat"]
        transfer_migrate(old, main_sock, cpr_sock)
        check(old.wait_migration()["status"] == "completed", "old: completed")
        new.wait_status("running")
        old.qmp("migrate-set-parameters", mode="normal")
        try:
            old.qmp("migrate", uri=f"file:{os.path.join(WD, 'again.state')}")
            raise AssertionError("a second migration of a handed-over guest was accepted")
        except QmpError as e:
            check("cannot migrate this VM again" in e.desc, f"second migration refused: {e.desc}")
        why = cont_refused(old, "handed over")
        check_after_switchover(new, hb, os.path.join(WD, "serial.log"))
        return f"second migrate and cont refused ({why}); new runs, guest intact"
    return run


def case_transfer_standin(what, desc):
    def run():
        old = boot("old", transfer_args())
        cpr_sock = os.path.join(WD, "standin.cpr")
        p = standin(cpr_sock, what)
        hb = old.guest()["heartbeat"]
        transfer_migrate(old, os.path.join(WD, "nobody.main"), cpr_sock)
        if what == "hold":
            time.sleep(0.5)
            check(old.qmp("query-migrate")["status"] == "active", "old waits for a peer that does not read")
            check(old.status() == "running", "the guest runs on meanwhile")
            p.kill()
        p.wait(30)
        return old_resumed(old, hb)
    return run


def case_transfer_main_refused():
    def run():
        old = boot("old", transfer_args())
        new, _, cpr_sock = transfer_new("new")
        wait_until(lambda: os.path.exists(cpr_sock), 30, "new VMM listens on the cpr channel")
        hb = old.guest()["heartbeat"]
        # The cpr channel reaches the new VMM; the main channel leads nowhere.
        transfer_migrate(old, os.path.join(WD, "nobody.main"), cpr_sock)
        out = old_resumed(old, hb)
        return f"{out}; {not_running(new)} (holds the RAM fds)"
    return run


def case_transfer_old_dies(phase):
    def run():
        old = Vmm(BINARY, WD, "old", transfer_args(), env=fault_env(f"{phase}:kill"))
        wait_booted(old)
        new, main_sock, cpr_sock = transfer_new("new")
        wait_until(lambda: os.path.exists(cpr_sock), 30, "new VMM listens on the cpr channel")
        transfer_migrate(old, main_sock, cpr_sock)
        old.proc.wait(30)
        check(old.proc.returncode == -signal.SIGKILL, "old VMM killed at the fault point")
        return refused(new)
    return run


# ---- normal live migration --------------------------------------------------------------------

def live_args():
    return base_args(WD, "live", ["-guest-dirty-rate", "500"], ram_mb=RAM_MB)


def case_live_new_fault(phase, action):
    def run():
        old = boot("old", live_args())
        wait_serial(os.path.join(WD, "serial.log"))
        sock = os.path.join(WD, "mig.sock")
        new = Vmm(BINARY, WD, "new", live_args() + ["-incoming", f"unix:{sock}"], env=fault_env(f"{phase}:{action}"))
        wait_until(lambda: os.path.exists(sock), 30, "new VMM listens")
        hb = old.guest()["heartbeat"]
        old.qmp("migrate", uri=f"unix:{sock}")
        fault_hit(new, phase)
        if action == "stop":
            wait_frozen(new)
            if phase == "start":
                return thawed_after_ack(old, new)
            time.sleep(0.3)
            info = old.qmp("query-migrate")
            check(info["status"] not in ("completed", "failed"), f"old waits for the acknowledgement ({info['status']})")
            sigkill(new)
        else:
            new.proc.wait(30)
        return f"{old_resumed(old, hb)}; {not_running(new)}"
    return run


def case_live_prepare_fails():
    def run():
        old = boot("old", live_args())
        sock = os.path.join(WD, "mig.sock")
        new = Vmm(BINARY, WD, "new", live_args() + ["-incoming", f"unix:{sock}"], env=fault_env("prepare:fail"))
        wait_until(lambda: os.path.exists(sock), 30, "new VMM listens")
        hb = old.guest()["heartbeat"]
        old.qmp("migrate", uri=f"unix:{sock}")
        fault_hit(new, "prepare")
        return f"{old_resumed(old, hb)}; {new_failed_before_commit(new, 'prepare hook')}"
    return run


def case_live_refused():
    def run():
        old = boot("old", live_args())
        hb = old.guest()["heartbeat"]
        try:
            old.qmp("migrate", uri=f"unix:{os.path.join(WD, 'nobody.sock')}")
        except QmpError as e:
            check(old.status() == "running", f"refused at once ({e.desc}); guest running")
            verify_all(old)
            return f"migrate refused: {e.desc}; old running"
        return old_resumed(old, hb)
    return run


def case_live_old_dies():
    def run():
        old = Vmm(BINARY, WD, "old", live_args(), env=fault_env("save-device:kill"))
        wait_booted(old)
        sock = os.path.join(WD, "mig.sock")
        new = Vmm(BINARY, WD, "new", live_args() + ["-incoming", f"unix:{sock}"])
        wait_until(lambda: os.path.exists(sock), 30, "new VMM listens")
        old.qmp("migrate", uri=f"unix:{sock}")
        old.proc.wait(30)
        return refused(new)
    return run


# ---- cpr-reboot -------------------------------------------------------------------------------

def reboot_args(size_mb=None, path=None):
    size_mb = size_mb or RAM_MB
    path = path or RAM_FILE
    return ["-name", "reboot", "-m", f"{size_mb}M", "-smp", "1", "-nodefaults", "-display", "none",
            "-serial", f"file:{os.path.join(WD, 'serial.log')}",
            "-object", f"memory-backend-file,id=ram0,size={size_mb}M,mem-path={path},share=on",
            "-machine", "memory-backend=ram0"]


def reboot_params(vm):
    vm.qmp("migrate-set-capabilities", capabilities=[{"capability": "x-ignore-shared", "state": True}])
    vm.qmp("migrate-set-parameters", mode="cpr-reboot")


def save_and_quit(args, set_params, env=None):
    """Boots, sets its parameters, saves to vm.state and quits; returns the heartbeat at the save."""
    old = Vmm(BINARY, WD, "old", args, env=env)
    wait_booted(old)
    wait_heartbeat(old)
    wait_serial(os.path.join(WD, "serial.log"))
    set_params(old)
    old.qmp("migrate", uri=f"file:{STATE}")
    check(old.wait_migration()["status"] == "completed", "saved")
    hb = old.guest()["heartbeat"]
    old.qmp("quit")
    old.wait_exit()
    return hb


def reboot_save(env=None):
    """Boots, saves to vm.state in cpr-reboot mode and quits; returns the heartbeat at the save."""
    return save_and_quit(reboot_args(), reboot_params, env)


def reboot_load(name, path=None, args=None, env=None):
    vm = Vmm(BINARY, WD, name, (args or reboot_args()) + ["-incoming", "defer"], env=env)
    reboot_params(vm)
    try:
        vm.qmp("migrate-incoming", uri=f"file:{path or STATE}")
    except EOFError:
        # The load runs on its own thread: a fault that kills the VMM there can beat the
        # command's reply. Only a VMM under fault injection may go away like that.
        if not env or "CPR_VMM_FAULT" not in env:
            raise
    return vm


def reboot_runs(vm, hb):
    vm.wait_status("running")
    check_after_switchover(vm, hb, os.path.join(WD, "serial.log"))
    return "restarted VMM runs, guest intact"


def case_reboot_full():
    def run():
        old = boot("old", reboot_args())
        hb = old.guest()["heartbeat"]
        reboot_params(old)
        old.qmp("migrate", uri="file:/dev/full")
        return old_resumed(old, hb)
    return run


def case_reboot_old_dies():
    def run():
        old = Vmm(BINARY, WD, "old", reboot_args(), env=fault_env("save-device:kill"))
        wait_booted(old)
        reboot_params(old)
        old.qmp("migrate", uri=f"file:{STATE}")
        old.proc.wait(30)
        return refused(reboot_load("new"))
    return run


def case_reboot_new_fault(phase):
    def run():
        hb = reboot_save()
        first = reboot_load("new", env=fault_env(f"{phase}:kill"))
        first.proc.wait(30)
        check(first.proc.returncode == -signal.SIGKILL, f"first restart killed at {phase}")
        return "killed; second restart: " + reboot_runs(reboot_load("again"), hb)
    return run


def case_reboot_prepare_fails():
    """A restart that fails before it runs (its prepare) leaves the file and the RAM file as
    they were: a second restart runs the guest intact."""
    def run():
        hb = reboot_save()
        first = reboot_load("new", env=fault_env("prepare:fail"))
        fault_hit(first, "prepare")
        new_failed_before_commit(first, "prepare hook")
        first.qmp("quit")
        first.wait_exit()
        return "refused; second restart: " + reboot_runs(reboot_load("again"), hb)
    return run


def record_offsets(path):
    """(offset, end) of every record in a stream, from cpr-dump."""
    d = json.loads(subprocess.run([DUMP, path], check=True, capture_output=True, text=True).stdout)
    return [(r["offset"], r["offset"] + 16 + r["length"] + 4, r) for r in d["records"]] + \
        ([(d["end"]["offset"], os.path.getsize(path), d["end"])] if "offset" in d.get("end", {}) else [])


def case_reboot_truncated():
    def run():
        hb = reboot_save()
        size = os.path.getsize(STATE)
        cuts = sorted({0, 16} | {start for start, _, _ in record_offsets(STATE)} | {size - 1})
        cuts = [c for c in cuts if c < size]
        data = open(STATE, "rb").read()
        for i, cut in enumerate(cuts):
            part = os.path.join(WD, f"cut{cut}.state")
            with open(part, "wb") as f:
                f.write(data[:cut])
            vm = reboot_load(f"cut{i}", path=part)
            refused(vm)
            vm.shutdown()
        return f"all {len(cuts)} truncations refused; full file: " + reboot_runs(reboot_load("whole"), hb)
    return run


def case_reboot_flipped():
    def run():
        hb = reboot_save()
        _, end, _ = next(r for r in record_offsets(STATE) if r[2].get("section") == "hbmon")
        bad = os.path.join(WD, "flipped.state")
        data = bytearray(open(STATE, "rb").read())
        data[end - 4] ^= 0x01  # the first byte of the record's payload checksum
        open(bad, "wb").write(data)
        vm = reboot_load("flipped", path=bad)
        out = refused(vm)
        check("checksum" in out.lower() or "crc" in out.lower(), "the error names the checksum")
        vm.shutdown()
        return f"{out}; intact file: " + reboot_runs(reboot_load("whole"), hb)
    return run


def case_reboot_deleted():
    def run():
        reboot_save()
        os.unlink(STATE)
        vm = Vmm(BINARY, WD, "new", reboot_args() + ["-incoming", "defer"])
        reboot_params(vm)
        try:
            vm.qmp("migrate-incoming", uri=f"file:{STATE}")
            out = refused(vm)  # refused later, by the job
        except QmpError as e:
            # refused at once, by the monitor command; the VMM goes on waiting for a stream
            out = f"migrate-incoming refused: {e.desc}; {not_running(vm)}"
        check(STATE in out, "the error names the file")
        return out
    return run


def case_reboot_other_size():
    def run():
        reboot_save()
        other = RAM_FILE + ".32"
        try:
            vm = reboot_load("bigger", args=reboot_args(2 * RAM_MB, other))
            return refused(vm)
        finally:
            if os.path.exists(other):
                os.unlink(other)
    return run


def case_reboot_memfd():
    """The VMM's RAM in a memfd, which ends with the process: the save must not leave it out."""
    def run():
        memfd = f"memory-backend-memfd,id=ram0,size={RAM_MB}M,share=on"
        old = boot("old", [memfd if a.startswith("memory-backend-file,") else a for a in reboot_args()])
        hb = old.guest()["heartbeat"]
        reboot_params(old)
        old.qmp("migrate", uri=f"file:{STATE}")
        out = old_resumed(old, hb)
        check("'ram0'" in out, "the error names the block")
        check(not os.path.exists(STATE), "no state file written")
        return out
    return run


def case_reboot_ram_reset():
    """The RAM file loses its contents while the VMM is down (same file, same inode)."""
    def run():
        reboot_save()
        os.truncate(RAM_FILE, 0)  # the restarted VMM extends it again: zeroed memory
        out = refused(reboot_load("new"))
        check("'ram0'" in out, "the error names the block")
        return out
    return run


# ---- cpr-exec ---------------------------------------------------------------------------------

def exec_args():
    return base_args(WD, "exec", ["-machine", "aux-ram-share=on"], ram_mb=RAM_MB)


def exec_start(env=None):
    vm = Vmm(BINARY, WD, "vm", exec_args(), env=env)
    wait_booted(vm)
    wait_heartbeat(vm)
    wait_serial(os.path.join(WD, "serial.log"))
    return vm


def exec_migrate(vm, command, uri):
    vm.qmp("migrate-set-parameters", mode="cpr-exec", **{"cpr-exec-command": command})
    try:
        vm.qmp("migrate", uri=uri)
        vm.wait_qmp_closed(5)
    except (EOFError, ConnectionError, TimeoutError, socket.timeout):
        pass
    vm.reconnect()


def case_exec_fails():
    def run():
        vm = exec_start()
        hb = vm.guest()["heartbeat"]
        vm.qmp("migrate-set-parameters", mode="cpr-exec",
               **{"cpr-exec-command": [os.path.join(WD, "no-such-vmm")]})
        vm.qmp("migrate", uri=f"file:{STATE}")
        return old_resumed(vm, hb)
    return run


def case_exec_full():
    def run():
        vm = exec_start()
        hb = vm.guest()["heartbeat"]
        vm.qmp("migrate-set-parameters", mode="cpr-exec", **{"cpr-exec-command": vm.argv + ["-incoming", "file:/dev/full"]})
        vm.qmp("migrate", uri="file:/dev/full")
        return old_resumed(vm, hb)
    return run


def new_vmm(name, body):
    """A stand-in for a new VMM binary: a script taking the VMM's command line (so that the
    rollback, which runs the previous binary with the same arguments, works)."""
    return rollback.script(os.path.join(WD, name), body.replace("@VMM@", BINARY))


def previous_comes_back(vm, hb):
    """The new image failed before it committed: the guardian exec'd the previous image back
    with the same state; it runs the guest on from where it stopped."""
    rollback.adopt_rollback(vm, BINARY, wait_until)
    vm.wait_status("running")
    check_after_switchover(vm, hb, os.path.join(WD, "serial.log"))
    return "previous image exec'd back, runs on, guest intact"


def case_exec_rollback(body, fault_phase=None):
    """cpr-exec-command is a new binary that fails before its guest runs (body: a script)."""
    def run():
        vm = exec_start()
        exec_migrate(vm, [new_vmm("new-vmm", body)] + vm.argv[1:] + ["-incoming", f"file:{STATE}"], f"file:{STATE}")
        if fault_phase:
            fault_hit(vm, fault_phase)
        # The heartbeat before the exec is the last one the console printed.
        hb = serial_lines(os.path.join(WD, "serial.log"))[-1][1]
        return previous_comes_back(vm, hb)
    return run


def case_exec_truncated():
    """The state file is cut between the exec and the load (a wrapper truncates it): the new
    image refuses it, and so does the previous image exec'd back; the guest is lost, never run
    on a partial stream."""
    def run():
        vm = exec_start()
        cmd = [new_vmm("cut-vmm", f'truncate -s 1000 "{STATE}" && exec @VMM@ "$@"')] + vm.argv[1:]
        exec_migrate(vm, cmd + ["-incoming", f"file:{STATE}"], f"file:{STATE}")
        rollback.adopt_rollback(vm, BINARY, wait_until)
        return "previous image back: " + refused(vm)
    return run


def case_exec_committed():
    """A new image that runs: the guardian exits at the commit; none stays behind."""
    def run():
        vm = exec_start()
        exec_migrate(vm, vm.argv + ["-incoming", f"file:{STATE}"], f"file:{STATE}")
        vm.wait_status("running")
        wait_until(lambda: not rollback.children(rollback.GUARD_COMM), 30, "the guardian exits at the commit")
        hb = serial_lines(os.path.join(WD, "serial.log"))[-1][1]
        check_after_switchover(vm, hb, os.path.join(WD, "serial.log"))
        check(not rollback.children(rollback.GUARD_COMM), "no guardian process remains")
        return "new image runs, guest intact; no guardian left"
    return run


def case_exec_start_frozen():
    def run():
        vm = exec_start(env=fault_env("start:stop"))
        exec_migrate(vm, vm.argv + ["-incoming", f"file:{STATE}"], f"file:{STATE}")
        wait_frozen(vm)
        vm.proc.send_signal(signal.SIGCONT)
        vm.wait_status("running")
        # The heartbeat before the exec is the last one the console printed.
        hb = serial_lines(os.path.join(WD, "serial.log"))[-1][1]
        check_after_switchover(vm, hb, os.path.join(WD, "serial.log"))
        return "new image thawed and runs, guest intact"
    return run


# ---- mapped-ram saves (snapshot to a file, RAM at fixed offsets by 4 threads) ------------------

def mapped_args(serial="serial.log"):
    args = base_args(WD, "mapped", ram_mb=RAM_MB)
    args[args.index("-serial") + 1] = f"file:{os.path.join(WD, serial)}"
    return args


def mapped_params(vm):
    vm.qmp("migrate-set-capabilities", capabilities=[{"capability": "mapped-ram", "state": True}])
    vm.qmp("migrate-set-parameters", **{"multifd-channels": 4})


def mapped_save():
    """Boots, snapshots to vm.state with mapped-ram and quits; returns the heartbeat at the save."""
    return save_and_quit(mapped_args(), mapped_params)


def mapped_load(name, path=None):
    vm = Vmm(BINARY, WD, name, mapped_args() + ["-incoming", "defer"])
    vm.qmp("migrate-set-parameters", **{"multifd-channels": 4})
    vm.qmp("migrate-incoming", uri=f"file:{path or STATE}")
    return vm


def case_mapped_killed(phase):
    """A second save over a good snapshot, killed midway: the old snapshot stays whole (the new
    one was never renamed over it) and loads."""
    def run():
        hb = mapped_save()
        before = open(STATE, "rb").read()
        vm = Vmm(BINARY, WD, "killed", mapped_args("serial2.log"), env=fault_env(f"{phase}:kill"))
        wait_booted(vm)
        mapped_params(vm)
        vm.qmp("migrate", uri=f"file:{STATE}")
        vm.proc.wait(30)
        check(vm.proc.returncode == -signal.SIGKILL, f"saving VMM killed at {phase}")
        check(open(STATE, "rb").read() == before, "the previous snapshot is byte for byte as it was")
        return "killed; previous snapshot: " + reboot_runs(mapped_load("new"), hb)
    return run


def case_mapped_disk_full():
    """The file system fills up while the threads write the regions (a 4 MiB tmpfs mounted in
    the saving VMM's own mount namespace): the save fails naming the file, the guest resumes."""
    def run():
        small = os.path.join(WD, "small")
        os.mkdir(small)
        wrapper = rollback.script(os.path.join(WD, "vmm-small-disk"),
                                  f'exec unshare -m --propagation private sh -c '
                                  f'\'mount -t tmpfs -o size=4M none "{small}" && exec "$0" "$@"\' "{BINARY}" "$@"')
        if os.geteuid() != 0 or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
            return "skipped: needs root for a private mount namespace"
        old = Vmm(wrapper, WD, "old", mapped_args())
        wait_booted(old)
        hb = wait_heartbeat(old)["heartbeat"]
        mapped_params(old)
        old.qmp("migrate", uri=f"file:{small}/vm.state")
        out = old_resumed(old, hb)
        check("No space left" in out, "the error says the disk is full")
        return out
    return run


def case_mapped_truncated():
    """The snapshot cut inside the region, in the records after it and one byte short: each
    refused (a cut in the region naming the chunk); the whole file runs."""
    def run():
        hb = mapped_save()
        regions = [r for r in json.loads(subprocess.run([DUMP, STATE], check=True, capture_output=True,
                                                        text=True).stdout)["mapped_ram"]]
        check(len(regions) == 1 and regions[0]["present"] > 0, f"one region with pages: {regions}")
        page0 = regions[0]["pages_offset"]
        size = os.path.getsize(STATE)
        data = open(STATE, "rb").read()
        cuts = [page0 + 4096 * 3 + 100, page0 + regions[0]["pages"] * 4096 + 10, size - 1]
        for i, cut in enumerate(cuts):
            part = os.path.join(WD, f"cut{cut}.state")
            with open(part, "wb") as f:
                f.write(data[:cut])
            out = refused(mapped_load(f"cut{i}", path=part))
            if i == 0:
                check("chunk 3 " in out, f"a cut in the region names the chunk: {out}")
        return f"all {len(cuts)} truncations refused; whole file: " + reboot_runs(mapped_load("whole"), hb)
    return run


# ---- lazy restore (memory-restore-mode=ondemand): the guest runs before its RAM is read ------

def lazy_load(name, path=None, serial="serial.log", env=None):
    """A new VMM restoring vm.state on demand (Cloud Hypervisor's -restore spelling)."""
    return Vmm(BINARY, WD, name, mapped_args(serial) +
               ["-restore", f"source_url=file://{path or STATE},memory_restore_mode=ondemand"], env=env)


def lazy_end(vm):
    """query-migrate's lazy-restore once it is no longer active."""
    return wait_until(lambda: (q := vm.qmp("query-migrate").get("lazy-restore", {})).get("status") != "active" and q,
                      60, f"{vm.name}: the lazy restore ended")


def lazy_refused_page(vm, what):
    """The lazy restore failed after the guest started: the VMM was told (query and event name
    the chunk), the guest found no corruption: it never ran on the page, its toucher waits."""
    end = lazy_end(vm)
    check(end["status"] == "failed", f"lazy restore failed ({end})")
    check("chunk" in end.get("error-desc", ""), f"the error names the chunk: {end.get('error-desc')}")
    check(end["resident-pages"] < end["total-pages"], f"pages missing ({end['resident-pages']} of {end['total-pages']})")
    # The event is queued to the VMM's main loop after the status the query read: read the
    # monitor until it comes (events() alone only holds what earlier commands read).
    ev = vm.monitor.wait_event("LAZY_RESTORE", timeout=60)
    check(ev["data"]["status"] == "failed", f"LAZY_RESTORE failed event ({ev})")
    check(vm.guest()["corruptions"] == 0, "the guest saw no corruption")
    check(all(c == 0 for _, _, c in serial_lines(os.path.join(WD, "serial.log"))), "no corruption on the console")
    vm.kill()
    return f"VMM told ({what}), guest never ran on the page"


def mapped_region():
    regions = json.loads(subprocess.run([DUMP, STATE], check=True, capture_output=True, text=True).stdout)["mapped_ram"]
    check(len(regions) == 1 and regions[0]["present"] > 0, f"one region with pages: {regions}")
    return regions[0]


def case_lazy_flipped():
    """A byte flipped in a chunk in the middle of the region: the load commits (the chunk is
    read after the guest started), the chunk fails its check when read."""
    def run():
        mapped_save()
        r = mapped_region()
        off = r["pages_offset"] + (r["pages"] // 2) * 4096 + 100
        with open(STATE, "r+b") as f:
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0x40]))
        vm = lazy_load("new")
        vm.wait_status("running")
        return lazy_refused_page(vm, "checksum")
    return run


def case_lazy_truncated():
    """The file cut near the end of the region right after the guest started: a page either came
    before the cut (and is the saved one) or the cut is reported and its toucher waits."""
    def run():
        hb = mapped_save()
        r = mapped_region()
        cut = r["pages_offset"] + (r["pages"] - 64) * 4096 + 100
        vm = lazy_load("new")
        vm.wait_status("running")
        os.truncate(STATE, cut)
        end = lazy_end(vm)
        if end["status"] == "completed":
            check(end["resident-pages"] == end["total-pages"], f"every page came before the cut ({end})")
            check_after_switchover(vm, hb, os.path.join(WD, "serial.log"))
            return "every page came before the cut, guest intact"
        return lazy_refused_page(vm, "short read")
    return run


def case_lazy_killed():
    """The restoring VMM killed while pages arrive: the file is only read, so a second
    restore of it runs the guest intact."""
    def run():
        hb = mapped_save()
        before = open(STATE, "rb").read()
        vm = lazy_load("killed", serial="serial2.log")
        vm.wait_status("running")
        vm.kill()
        check(open(STATE, "rb").read() == before, "the snapshot is byte for byte as it was")
        again = lazy_load("again")
        out = reboot_runs(again, hb)
        check(lazy_end(again)["status"] == "completed", "the second lazy restore completed")
        return "killed; restored again: " + out
    return run


# ---- the matrix ---------------------------------------------------------------------------------

CASES = {
    "cpr-transfer": [
        ("kill new before it reads the cpr channel", RESUMES, case_transfer_new_fault("cpr-read", "kill", RESUMES)),
        ("new killed in the middle of cpr state (stand-in)", RESUMES, case_transfer_standin("half", "")),
        ("cpr socket closed early (stand-in)", RESUMES, case_transfer_standin("close", "")),
        ("cpr peer connected, never reads, killed (stand-in)", RESUMES, case_transfer_standin("hold", "")),
        ("kill new after fds arrived, before hang-up", RESUMES, case_transfer_new_fault("cpr-loaded", "kill", RESUMES)),
        ("SIGSTOP new after fds arrived, then kill", RESUMES, case_transfer_new_fault("cpr-loaded", "stop", RESUMES)),
        ("kill new in the middle of device state", RESUMES, case_transfer_new_fault("device-load", "kill", RESUMES)),
        ("SIGSTOP new in device state, then kill", RESUMES, case_transfer_new_fault("device-load", "stop", RESUMES)),
        ("kill new after load, before the ack", RESUMES, case_transfer_new_fault("loaded", "kill", RESUMES)),
        ("kill new in its prepare hook, before the commit", RESUMES, case_transfer_new_fault("prepare", "kill", RESUMES)),
        ("new's prepare hook fails (before the commit); cont on old", RESUMES, case_transfer_prepare_fails()),
        ("kill new after its commit, before run", "old postmigrate, never resumes", case_transfer_new_fault("start", "kill", "")),
        ("SIGSTOP new after its commit, then SIGCONT", "old waits paused; new runs, guest intact; old postmigrate",
         case_transfer_new_fault("start", "stop", NEW_RUNS)),
        ("main channel refused", RESUMES, case_transfer_main_refused()),
        ("kill old in the middle of device state", REFUSED, case_transfer_old_dies("save-device")),
        ("kill old as it stops the guest", REFUSED, case_transfer_old_dies("save-stop")),
        ("completed, then migrate and cont on old", "both refused on old; new runs", case_transfer_then_migrate_again()),
    ],
    "live": [
        ("main channel refused", RESUMES, case_live_refused()),
        ("kill new in the middle of device state", RESUMES, case_live_new_fault("device-load", "kill")),
        ("SIGSTOP new in device state, then kill", RESUMES, case_live_new_fault("device-load", "stop")),
        ("kill new after load, before the ack", RESUMES, case_live_new_fault("loaded", "kill")),
        ("new's prepare hook fails (before the commit)", RESUMES, case_live_prepare_fails()),
        ("SIGSTOP new after the ack, then SIGCONT", NEW_RUNS, case_live_new_fault("start", "stop")),
        ("kill old in the middle of device state", REFUSED, case_live_old_dies()),
    ],
    "cpr-reboot": [
        ("disk full (/dev/full)", RESUMES, case_reboot_full()),
        ("kill old in the middle of the save", REFUSED, case_reboot_old_dies()),
        ("kill restarted VMM in the middle of device state", "a second restart runs", case_reboot_new_fault("device-load")),
        ("kill restarted VMM after load, before run", "a second restart runs", case_reboot_new_fault("loaded")),
        ("restarted VMM's prepare hook fails", "refused; a second restart runs", case_reboot_prepare_fails()),
        ("stream truncated at every record boundary", REFUSED + "; whole file runs", case_reboot_truncated()),
        ("one checksum byte flipped", REFUSED + " naming the checksum", case_reboot_flipped()),
        ("state file deleted between quit and restart", REFUSED + " naming the file", case_reboot_deleted()),
        ("restart with another RAM size", REFUSED, case_reboot_other_size()),
        ("RAM in a memfd (x-ignore-shared)", RESUMES + ", the save refused naming the block", case_reboot_memfd()),
        ("RAM file zeroed between quit and restart", REFUSED + " naming the block", case_reboot_ram_reset()),
    ],
    "mapped-ram": [
        ("kill the saving VMM in its device state", "previous snapshot whole, loads; guest intact",
         case_mapped_killed("save-device")),
        ("kill the saving VMM as it stops the guest", "previous snapshot whole, loads; guest intact",
         case_mapped_killed("save-stop")),
        ("disk full while the threads write (4 MiB tmpfs)", RESUMES, case_mapped_disk_full()),
        ("snapshot truncated in the region and after it", REFUSED + "; whole file runs", case_mapped_truncated()),
    ],
    "lazy-restore": [
        ("a byte flipped in a chunk, read after the guest started", "VMM told naming the chunk; guest never runs on it",
         case_lazy_flipped()),
        ("file truncated after the guest started", "every page before the cut, or VMM told; never a wrong page",
         case_lazy_truncated()),
        ("kill the VMM during the lazy restore", "restored again, guest intact", case_lazy_killed()),
    ],
    "cpr-exec": [
        ("exec of the new binary fails", RESUMES, case_exec_fails()),
        ("disk full (/dev/full)", RESUMES, case_exec_full()),
        ("stream truncated before the new image loads", "both images refuse it, stay inmigrate", case_exec_truncated()),
        ("new binary fails at start-up (exit 1)", ROLLS_BACK, case_exec_rollback("exit 1")),
        ("kill new image before it reads the cpr state", ROLLS_BACK,
         case_exec_rollback('CPR_VMM_FAULT=cpr-read:kill exec @VMM@ "$@"', "cpr-read")),
        ("new image exits before loading", ROLLS_BACK,
         case_exec_rollback('CPR_VMM_FAULT=cpr-read:exit exec @VMM@ "$@"', "cpr-read")),
        ("kill new image in the middle of device state", ROLLS_BACK,
         case_exec_rollback('CPR_VMM_FAULT=device-load:kill exec @VMM@ "$@"', "device-load")),
        ("new image fails its load", ROLLS_BACK, case_exec_rollback('exec @VMM@ "$@" -smp 2')),
        ("new image runs: the guardian goes at the commit", "new image runs; no guardian left", case_exec_committed()),
        ("SIGSTOP new image before run, then SIGCONT", "new image runs, guest intact", case_exec_start_frozen()),
    ],
}


def print_table(mode, rows):
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print(f"\nfault matrix: {mode}")
    print(f"{'case':<{w0}} | {'expected':<{w1}} | result | observed")
    print("-" * (w0 + w1 + 30))
    for name, exp, ok, obs in rows:
        print(f"{name:<{w0}} | {exp:<{w1}} | {'PASS' if ok else 'FAIL'}   | {obs}")
    sys.stdout.flush()


def main():
    global BINARY, DUMP, WD, STATE, RAM_FILE
    if len(sys.argv) != 4 or sys.argv[3] not in CASES:
        print(__doc__)
        return 2
    BINARY, DUMP, mode = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), sys.argv[3]
    only = os.environ.get("CPR_FAULT_CASE")  # a substring: run only the cases it matches
    rollback.become_subreaper()  # a cpr-exec guardian and the image it execs are ours to reap
    rows = []
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    for name, expected, fn in CASES[mode]:
        if only and only not in name:
            continue
        WD = tempfile.mkdtemp(prefix="cpr-fault-")
        STATE = os.path.join(WD, "vm.state")
        RAM_FILE = os.path.join(shm, f"cpr-fault-{os.getpid()}.ram")
        log(f"=== {mode}: {name}")
        t0 = time.monotonic()
        ok = False
        try:
            observed = fn()
            shutdown_all()
            bad = sanitizer_reports(WD)
            check(not bad, f"no sanitizer report in the VMMs' logs {bad}")
            ok = True
        except Exception as e:  # noqa: BLE001 - every failure becomes a row
            traceback.print_exc()
            observed = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            for f in sorted(os.listdir(WD)):
                if f.endswith(".log"):
                    with open(os.path.join(WD, f), errors="replace") as fh:
                        log(f"--- {f} (tail)\n" + "".join(fh.readlines()[-15:]))
        finally:
            # every VMM of this case goes; the next case starts from nothing
            kill_all()
            for pid in rollback.children():  # a guardian, or an image it exec'd, left by a failure
                os.kill(pid, signal.SIGKILL)
            rollback.reap_strays(set())
            if os.path.exists(RAM_FILE):
                os.unlink(RAM_FILE)
            if ok and not os.environ.get("CPR_KEEP_TMP"):
                shutil.rmtree(WD, ignore_errors=True)
        log(f"{'PASS' if ok else 'FAIL'} in {time.monotonic() - t0:.1f} s: {observed}")
        rows.append((name, expected, ok, observed))
    print_table(mode, rows)
    return 0 if all(r[2] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
