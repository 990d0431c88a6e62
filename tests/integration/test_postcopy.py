#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Postcopy (capability postcopy-ram) between two cpr-vmm processes over a UNIX socket.

usage: test_postcopy.py CPR_VMM_BINARY TEST
       (TEST: complete dest-killed source-killed recover pause-source pause-dest full-socket)

complete: the guest dirties pages at twice the rate the bandwidth limit carries, so precopy
does not converge (the remaining bytes never fall to the downtime limit); migrate-start-postcopy
switches, the destination runs the guest at once and fetches the pages it misses on demand; the
guest then re-verifies all its RAM with zero corruptions, its heartbeat going on.
dest-killed: the destination dies after the switch: the source, which cannot tell that from a
cut link, goes postcopy-paused; migrate_cancel gives up: it reports it, keeps the guest paused
(it never runs it again) and still holds it.
source-killed: the source dies after the switch: the destination goes postcopy-paused (a cut
link looks the same); migrate_cancel gives up and it reports the guest lost, and the guest does
not run on pages that never arrived (its heartbeat stops instead of going on with zero pages,
which its re-verification would count as corruptions).
recover: the link (a relay process between the two) is killed after the switch: both sides go
postcopy-paused, nothing is lost (the guest runs on neither side's missing pages, no
corruption, the source's guest stays stopped); migrate-recover on the destination and
`migrate resume=true` on the source carry on over a new connection to completion, and the guest
re-verifies all its RAM.
pause-source, pause-dest: migrate-pause on that side (QMP at the source, HMP migrate_pause at the
destination) breaks the channel after the switch: both sides go postcopy-paused, the pausing one
saying migrate-pause did it, nothing lost; a second migrate-pause is refused naming the status.
The recovery goes over TCP (loopback): migrate-recover puts the destination in postcopy-recover
(pause-dest: a migrate-pause there ends it, paused again, and a second migrate-recover follows)
until the source's `migrate resume=true` connects, both go postcopy-active again, complete, and
the guest re-verifies all its RAM with its heartbeat continuous.
full-socket: over TCP (loopback), the destination is stopped (SIGSTOP) in precopy until the
source sends nothing more (its socket and the destination's are full); migrate-start-postcopy
must still stop the guest at the source at once (status postcopy-active there): precopy bounds
the bytes it queues in the socket, so it is never stuck in a write behind them
(docs/migration.md, "The postcopy switch"). Then the destination goes on (SIGCONT), runs the
guest, and it re-verifies all its RAM.
"""
import multiprocessing
import select
import signal
import socket
import os
import sys
import time

from harness.cases import run_named_case
from harness.channels import free_port
from harness.guest import (base_args, check, check_after_switchover, log, wait_booted, wait_heartbeat,
                           wait_serial, wait_until)
from harness.process import Vmm
from harness.transfer import live_pair

SKIP = 77
PAGE = 4096
# The link: 8 MiB/s; the guest dirties twice what it carries.
BANDWIDTH = 8 << 20
DIRTY_RATE = 2 * BANDWIDTH // PAGE


def uffd_available():
    return os.access("/dev/userfaultfd", os.R_OK | os.W_OK)


def pair(binary, wd, rate=DIRTY_RATE, postcopy_bandwidth=0, hmp=False):
    serial = os.path.join(wd, "serial.log")
    args = base_args(wd, "postcopy", ["-guest-dirty-rate", str(rate)])
    # The destination's job starts with -incoming: its capability comes with it.
    old, new, sock = live_pair(binary, wd, args, ["-global", "migration.postcopy-ram=on"], hmp=hmp)
    old.qmp("migrate-set-capabilities", capabilities=[{"capability": "postcopy-ram", "state": True}])
    old.qmp("migrate-set-parameters", **{"max-bandwidth": BANDWIDTH, "downtime-limit": 50,
                                         "max-postcopy-bandwidth": postcopy_bandwidth})
    return old, new, sock, serial


def precopy_then_switch(old, sock, passes=4):
    rewrites = old.guest()["rewrites"]
    old.qmp("migrate", uri=f"unix:{sock}")
    # Several passes: precopy does not get the dirty pages down to what the downtime limit sends.
    info = wait_until(lambda: (i := old.qmp("query-migrate")).get("ram", {}).get("dirty-sync-count", 0) >= passes and i,
                      120, f"{passes} precopy passes")
    ram = info["ram"]
    limit = BANDWIDTH * 50 // 1000
    check(info["status"] == "active" and ram["remaining"] > limit,
          f"precopy does not converge: after {ram['dirty-sync-count']} passes {ram['remaining']} bytes "
          f"remain, the downtime limit carries {limit} (dirty rate {ram['dirty-pages-rate']} pages/s)")
    # The engine's rate counts each page once a pass; the guest's own count shows it rewrote more
    # (after 3 whole passes; the first sync is the migration's start).
    rewrites = old.guest()["rewrites"] - rewrites
    if passes >= 4:
        check(rewrites > ram["total"] // PAGE, f"the guest rewrote {rewrites} pages during precopy, more "
              f"than its RAM's {ram['total'] // PAGE}")
    old.qmp("migrate-start-postcopy")


def test_complete(binary, wd):
    old, new, sock, serial = pair(binary, wd)
    precopy_then_switch(old, sock)
    info = old.wait_migration(180)
    check(info["status"] == "completed", f"source: postcopy completed ({info.get('error-desc', '')}; "
          f"destination: {new.qmp('query-migrate')})")
    check(old.status() == "postmigrate", "source VMM in postmigrate")
    hb_old = old.guest()["heartbeat"]
    new.wait_status("running")
    nin = wait_until(lambda: (i := new.qmp("query-migrate"))["status"] == "completed" and i, 120,
                     "destination: postcopy completed")
    ram = nin.get("ram", {})
    log(f"postcopy: source {info.get('ram', {}).get('postcopy-requests')} requests served; destination "
        f"{ram.get('postcopy-requests')} requests, {ram.get('x-postcopy-fault-pages')} pages on faults, "
        f"{ram.get('x-postcopy-pushed-pages')} in order")
    check(ram.get("postcopy-requests", 0) > 0, "the destination fetched pages after the switch")
    check(info["ram"]["postcopy-requests"] == ram["postcopy-requests"],
          "every request the destination sent was served by the source")
    blocktime, worst = nin.get("postcopy-blocktime"), nin.get("x-postcopy-worst-stall-us")
    log(f"postcopy: destination blocktime {blocktime} ms, worst stall {worst} us")
    if ram.get("x-postcopy-fault-pages", 0) > 0:
        check(blocktime >= 1 and worst >= 1 and blocktime * 1000 >= worst,
              "the vCPUs' faults are counted as blocktime, the worst stall within it")
    else:
        check(blocktime == 0 and worst == 0, "no fault, no blocktime")
    check("postcopy-blocktime" not in info, "blocktime is the destination's")
    stalls = new.guest()["stalls"]
    log(f"postcopy: the guest's own stalls {stalls}")
    check(stalls is not None and not stalls["recording"] and stalls["samples"] > 0
          and stalls["worst-ms"] >= stalls["p99-ms"] > 0,
          "the destination recorded the guest's stalls while pages were fetched, until the end")
    check_after_switchover(new, hb_old, serial)
    old.shutdown()
    new.shutdown()


def relay_main(listen, target, rate):
    """Carries one connection from `listen` to the unix socket `target`, both ways, at about
    `rate` bytes/s, until either side ends. Runs in its own process, so that killing it cuts
    the link at once."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(listen)
    srv.listen(1)
    a, _ = srv.accept()
    b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    b.connect(target)
    peer = {a: b, b: a}
    while True:
        for r in select.select([a, b], [], [])[0]:
            try:
                data = r.recv(1 << 16)
                if data:
                    peer[r].sendall(data)
            except OSError:  # a side broke the link (migrate-pause): the relay ends with it
                data = b""
            if not data:
                return
            time.sleep(len(data) / rate)


def start_relay(wd, target, rate):
    listen = os.path.join(wd, "relay.sock")
    p = multiprocessing.get_context("fork").Process(target=relay_main, args=(listen, target, rate), daemon=True)
    p.start()
    wait_until(lambda: os.path.exists(listen), 10, "relay listens")
    return p, listen


def switched(old, new, sock):
    """Until the destination runs the guest in postcopy-active, with pages still missing. Both
    sides say so as the status changes (the MIGRATION event), not once the job ends or pauses."""
    precopy_then_switch(old, sock)
    for vm, who in ((new, "destination"), (old, "source")):
        vm.monitor.wait_event("MIGRATION", lambda e: e["data"]["status"] == "postcopy-active", 60)
        check(vm.qmp("query-migrate")["status"] == "postcopy-active",
              f"{who}: the postcopy-active event while the job goes on")
    missing = new.qmp("query-migrate")["ram"]["remaining"]
    check(missing > 0, f"pages still missing at the destination ({missing} bytes)")


def paused(vm, who):
    # The VMM says so at once, as QEMU's MIGRATION event (read off the socket, not polled).
    vm.monitor.wait_event("MIGRATION", lambda e: e["data"]["status"] == "postcopy-paused", 60)
    info = vm.qmp("query-migrate")
    check(info["status"] == "postcopy-paused", f"{who} in postcopy-paused ({info['status']})")
    log(f"{who} paused: {info.get('error-desc', '')}")
    return info


def test_dest_killed(binary, wd):
    # 1 MiB/s after the switch: pages are still missing when a side dies.
    old, new, sock, _ = pair(binary, wd, postcopy_bandwidth=1 << 20)
    switched(old, new, sock)
    new.kill()
    paused(old, "source")
    old.qmp("migrate_cancel")  # gives the recovery up: nothing else can take the guest
    info = old.wait_migration(60)
    err = info.get("error-desc", "")
    check(info["status"] == "failed", f"source: migration failed ({err})")
    check("stays paused here" in err and "every page" in err,
          "the source says it keeps the guest paused and still holds every page")
    check(old.status() == "postmigrate" or old.status() == "paused" or old.status() == "finish-migrate",
          f"source guest not running ({old.status()})")
    hb = old.guest()["heartbeat"]
    time.sleep(0.5)
    check(old.guest()["heartbeat"] == hb, "the source never runs the guest again")
    refusal = ""
    try:
        old.qmp("cont")
    except Exception as e:  # noqa: BLE001 - the refusal is what is checked
        refusal = str(e)
    check("postcopy" in refusal and "stale" in refusal, f"cont is refused at the source: {refusal!r}")
    check(old.guest()["heartbeat"] == hb, "the guest did not run again at the source")
    old.shutdown()


def test_source_killed(binary, wd):
    # 1 MiB/s after the switch: pages are still missing when a side dies.
    old, new, sock, _ = pair(binary, wd, postcopy_bandwidth=1 << 20)
    switched(old, new, sock)
    old.kill()
    paused(new, "destination")
    g = new.guest()
    check(g["corruptions"] == 0, "paused: the guest read no page that did not arrive")
    # Listening for a source that never comes: a second listener is refused, the cancel ends
    # the wait.
    new.qmp("migrate-recover", uri=f"unix:{os.path.join(wd, 'recover.sock')}")
    try:
        new.qmp("migrate-recover", uri=f"unix:{os.path.join(wd, 'recover2.sock')}")
        check(False, "a second migrate-recover is refused")
    except Exception as e:  # noqa: BLE001 - the refusal is what is checked
        check("under way" in str(e), f"a second migrate-recover is refused: {e}")
    new.qmp("migrate_cancel")  # the operator gives up: the source is known dead
    nin = wait_until(lambda: (i := new.qmp("query-migrate"))["status"] == "failed" and i, 60,
                     "destination: postcopy failed")
    err = nin.get("error-desc", "")
    check("guest is lost" in err and "never arrived" in err,
          f"the destination reports the loss: {err}")
    g0 = new.guest()
    time.sleep(1.0)
    g1 = new.guest()
    check(g1["corruptions"] == 0, "the guest never read a page that did not arrive (no corruption)")
    check(g1["heartbeat"] == g0["heartbeat"], "the guest is blocked on a missing page, not running on")
    new.kill()


def recovered(old, new, hb_old, serial, what):
    """Both sides complete after a recovery, and the guest re-verifies all its RAM."""
    info = old.wait_migration(180)
    check(info["status"] == "completed", f"source: completed after the recovery ({info.get('error-desc', '')})")
    nin = wait_until(lambda: (i := new.qmp("query-migrate"))["status"] == "completed" and i, 120,
                     "destination: completed after the recovery")
    log(f"recovered ({what}): destination {nin['ram'].get('postcopy-requests')} requests")
    check(info["ram"]["postcopy-requests"] >= 1, "the source served pages after the recovery")
    check_after_switchover(new, hb_old, serial)
    old.shutdown()
    new.shutdown()


def test_recover(binary, wd):
    # The first link carries 16 MiB/s: pages are still missing when it goes; the new one is
    # not limited, so the rest comes at once.
    old, new, sock, serial = pair(binary, wd, hmp=True)
    relay, relay_sock = start_relay(wd, sock, 2 * BANDWIDTH)
    precopy_then_switch(old, relay_sock, passes=1)
    wait_until(lambda: new.qmp("query-migrate").get("status") == "postcopy-active", 60,
               "destination in postcopy-active")
    relay.kill()  # the link is cut: both connections end at once
    relay.join()
    src, dst = paused(old, "source"), paused(new, "destination")
    check(dst["ram"]["remaining"] > 0, f"pages were still missing when the link went ({dst['ram']})")
    hb_old = old.guest()["heartbeat"]
    g0 = new.guest()
    time.sleep(0.5)
    g1 = new.guest()
    check(g1["corruptions"] == 0, "paused: the guest ran on no page that did not arrive")
    check(old.guest()["heartbeat"] == hb_old, "paused: the source never runs the guest")
    check(old.status() != "running", f"paused: source guest stopped ({old.status()})")
    # Refusals that change nothing: a resume before the destination listens, a recover at the source.
    rec = os.path.join(wd, "recover.sock")
    for vm, cmd, args in ((new, "migrate", {"uri": f"unix:{rec}", "resume": True}),
                          (old, "migrate-recover", {"uri": f"unix:{rec}"})):
        try:
            vm.qmp(cmd, **args)
            check(False, f"{cmd} on the wrong side is refused")
        except Exception as e:  # noqa: BLE001 - the refusal is what is checked
            check("postcopy-paused" in str(e), f"{cmd} on the wrong side refused: {e}")
    # HMP, as QEMU's: migrate_recover URI on the destination, migrate -r URI on the source.
    for vm, line in ((new, f"migrate_recover unix:{rec}"), (old, f"migrate -r unix:{rec}")):
        out = vm.hmp(line)
        check(out.strip() == "", f"HMP {line}: accepted ({out!r})")
    recovered(old, new, hb_old, serial, f"guest heartbeat {g0['heartbeat']} -> {g1['heartbeat']} while paused")


def status_event(vm, status, since=0):
    return vm.monitor.wait_event("MIGRATION", lambda e: e["data"]["status"] == status, 60, since)


def refused(fn, words, what):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the refusal is what is checked
        check(all(w in str(e) for w in words), f"{what} refused: {e}")
        return
    check(False, f"{what} is refused")


def pause(vm, hmp):
    """migrate-pause; False while the source waits for the destination's acknowledgement of
    the switch (a postcopy-active source with no page channel yet: try again)."""
    try:
        out = vm.hmp("migrate_pause") if hmp else vm.qmp("migrate-pause")
    except Exception as e:  # noqa: BLE001 - "try again" is the one refusal expected here
        if "still under way" in str(e):
            return False
        raise
    if hmp:
        check(out.strip() == "", f"HMP migrate_pause accepted ({out!r})")
    return True


def test_pause(binary, wd, side):
    # The first link carries 16 MiB/s: pages are still missing at the pause; the recovery's
    # TCP connection is not limited, so the rest comes at once.
    old, new, sock, serial = pair(binary, wd, hmp=True)
    relay, relay_sock = start_relay(wd, sock, 2 * BANDWIDTH)
    precopy_then_switch(old, relay_sock, passes=1)
    new.monitor.wait_event("MIGRATION", lambda e: e["data"]["status"] == "postcopy-active", 60)
    vm = old if side == "source" else new
    wait_until(lambda: pause(vm, hmp=vm is new), 60, f"migrate-pause on the {side}")
    src, dst = paused(old, "source"), paused(new, "destination")
    check("migrate-pause" in (src if vm is old else dst).get("error-desc", ""),
          f"the {side} says migrate-pause broke the channel")
    check(dst["ram"]["remaining"] > 0, f"pages were still missing at the pause ({dst['ram']})")
    relay.join()  # the relay ends with the connection it carried
    hb_old = old.guest()["heartbeat"]
    g0 = new.guest()
    refused(lambda: vm.qmp("migrate-pause"), ("migrate-pause", "status postcopy-paused"),
            "migrate-pause in postcopy-paused")
    check(new.guest()["corruptions"] == 0, "paused: the guest ran on no page that did not arrive")
    check(old.guest()["heartbeat"] == hb_old, "paused: the source never runs the guest")
    uri = f"tcp:127.0.0.1:{free_port()}"
    n_old, n_new = len(old.monitor.events), len(new.monitor.events)
    new.qmp("migrate-recover", uri=uri)
    status_event(new, "postcopy-recover", n_new)
    check(new.qmp("query-migrate")["status"] == "postcopy-recover",
          "the destination recovers until its source connects")
    if vm is new:
        # As QEMU's, migrate-pause also ends a recovery under way: paused again, then recovered.
        new.hmp("migrate_pause")
        info = status_event(new, "postcopy-paused", n_new) and new.qmp("query-migrate")
        check(info["status"] == "postcopy-paused" and "migrate-pause" in info.get("error-desc", ""),
              f"migrate-pause in postcopy-recover: paused again ({info.get('error-desc')})")
        uri = f"tcp:127.0.0.1:{free_port()}"
        n_new = len(new.monitor.events)
        new.qmp("migrate-recover", uri=uri)
        status_event(new, "postcopy-recover", n_new)
    old.qmp("migrate", uri=uri, resume=True)
    for v in (old, new):
        status_event(v, "postcopy-recover", n_old if v is old else n_new)
        status_event(v, "postcopy-active", n_old if v is old else n_new)
    recovered(old, new, hb_old, serial, f"over TCP, guest heartbeat {g0['heartbeat']} at the pause")


def test_full_socket(binary, wd):
    serial = os.path.join(wd, "serial.log")
    args = base_args(wd, "postcopy", ["-guest-dirty-rate", str(DIRTY_RATE)])
    old = Vmm(binary, wd, "old", args)
    wait_booted(old)
    wait_heartbeat(old)
    wait_serial(serial)
    uri = f"tcp:127.0.0.1:{free_port()}"
    new = Vmm(binary, wd, "new", args + ["-global", "migration.postcopy-ram=on", "-incoming", uri])
    wait_until(lambda: new.status() == "inmigrate", 30, "TCP destination listens")
    old.qmp("migrate-set-capabilities", capabilities=[{"capability": "postcopy-ram", "state": True}])
    old.qmp("migrate-set-parameters", **{"max-bandwidth": 4 * BANDWIDTH, "downtime-limit": 50})
    old.qmp("migrate", uri=uri)
    wait_until(lambda: old.qmp("query-migrate").get("ram", {}).get("dirty-sync-count", 0) >= 1, 120,
               "a first precopy pass")
    os.kill(new.pid, signal.SIGSTOP)
    try:
        # Until the source puts nothing more in the stream for a second: every buffer is full.
        last = [None]

        def stuck():
            t = old.qmp("query-migrate")["ram"]["transferred"]
            same, last[0] = t == last[0], t
            return same
        wait_until(lambda: stuck() or time.sleep(1), 120, "the source's sending stalls")
        old.qmp("migrate-start-postcopy")
        wait_until(lambda: old.qmp("query-migrate")["status"] == "postcopy-active", 60,
                   "the source stopped the guest for postcopy with the destination's socket full")
        check(old.status() != "running", f"the source's guest is stopped ({old.status()})")
    finally:
        os.kill(new.pid, signal.SIGCONT)
    hb_old = old.guest()["heartbeat"]
    info = old.wait_migration(180)
    check(info["status"] == "completed", f"source: postcopy completed ({info.get('error-desc', '')})")
    new.wait_status("running")
    wait_until(lambda: new.qmp("query-migrate")["status"] == "completed", 120, "destination: completed")
    check_after_switchover(new, hb_old, serial)
    old.shutdown()
    new.shutdown()


TESTS = {"complete": test_complete, "dest-killed": test_dest_killed, "source-killed": test_source_killed,
         "recover": test_recover, "pause-source": lambda b, w: test_pause(b, w, "source"),
         "pause-dest": lambda b, w: test_pause(b, w, "destination"), "full-socket": test_full_socket}


def main():
    if not uffd_available():
        log("skipped: /dev/userfaultfd is not usable by this user (postcopy needs userfaultfd)")
        return SKIP
    return run_named_case(__doc__, "cpr-vmm-postcopy", TESTS)


if __name__ == "__main__":
    sys.exit(main())
