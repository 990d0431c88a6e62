#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""cpr-transfer's ordering: either process may start first, and neither waits forever.

usage: test_transfer_order.py CPR_VMM_BINARY

Real cpr-vmm processes, real sockets:
  late     the old VMM migrates before the new one exists (and over a stale socket file left
           at the cpr channel's path): the migration waits (status setup, guest running) and
           completes once the new VMM starts; the guest goes on in the new VMM intact.
  never    no new VMM: migrate_cancel ends the wait (cancelled); after
           cpr-transfer-connect-timeout the migration fails with an error naming the parameter
           and the path; the guest never stopped and runs on.
  incoming a new VMM whose old one never connects: with -global
           migration.cpr-transfer-accept-timeout=300 it exits with an error naming the
           parameter, and removes its cpr socket.
"""
import json
import os
import shutil
import socket
import sys
import tempfile
import time

from harness.channels import unix_channel
from harness.guest import base_args, check, check_after_switchover, log
from harness.guest import wait_booted, wait_heartbeat, wait_serial, wait_until
from harness.process import Vmm, kill_all, scaled, shutdown_all
from harness.reports import sanitizer_reports

RAM_MB = 16


def args(wd):
    return base_args(wd, "order", ["-machine", "aux-ram-share=on"], ram_mb=RAM_MB)


def boot_old(binary, wd):
    old = Vmm(binary, wd, "old", args(wd))
    wait_booted(old)
    wait_serial(os.path.join(wd, "serial.log"))
    return old


def migrate(old, main_sock, cpr_sock, **params):
    old.qmp("migrate-set-parameters", mode="cpr-transfer", **params)
    old.qmp("migrate", channels=[unix_channel("main", main_sock), unix_channel("cpr", cpr_sock)])


def test_late(binary, wd):
    old = boot_old(binary, wd)
    main_sock, cpr_sock = os.path.join(wd, "main.sock"), os.path.join(wd, "cpr.sock")
    # A socket file nobody listens on (a crashed earlier attempt): connect gets ECONNREFUSED.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(cpr_sock)
    stale.close()
    # Long enough for any machine (the wait ends as soon as the new VMM listens).
    migrate(old, main_sock, cpr_sock, **{"cpr-transfer-connect-timeout": int(scaled(120) * 1000)})
    hb = old.guest()["heartbeat"]
    time.sleep(0.5)
    info = old.qmp("query-migrate")
    check(info["status"] == "setup", f"old waits for the new VMM (status {info['status']})")
    check(old.status() == "running", "the guest runs on while the old VMM waits")
    wait_heartbeat(old, hb)
    new = Vmm(binary, wd, "new", args(wd) + ["-incoming", f"unix:{main_sock}",
                                             "-incoming", json.dumps(unix_channel("cpr", cpr_sock))])
    info = old.wait_migration()
    check(info["status"] == "completed", f"old: completed once the new VMM listened ({info.get('error-desc', '')})")
    new.wait_status("running")
    check_after_switchover(new, old.guest()["heartbeat"], os.path.join(wd, "serial.log"))


def test_never(binary, wd):
    old = boot_old(binary, wd)
    params = old.qmp("query-migrate-parameters")
    check(params.get("cpr-transfer-connect-timeout") == 10000 and params.get("cpr-transfer-accept-timeout") == 0,
          f"query-migrate-parameters shows the defaults: connect 10000 ms, accept 0 (forever): {params}")
    cpr_sock = os.path.join(wd, "nobody.cpr")
    migrate(old, os.path.join(wd, "nobody.main"), cpr_sock, **{"cpr-transfer-connect-timeout": 600000})
    wait_until(lambda: old.qmp("query-migrate")["status"] == "setup", 30, "old waits for a listener")
    old.qmp("migrate_cancel")
    info = old.wait_migration()
    check(info["status"] == "cancelled", f"migrate_cancel ends the wait ({info['status']})")
    check(old.status() == "running", "the guest runs on")
    migrate(old, os.path.join(wd, "nobody.main"), cpr_sock, **{"cpr-transfer-connect-timeout": 300})
    check(old.qmp("query-migrate-parameters")["cpr-transfer-connect-timeout"] == 300, "the parameter is set")
    hb = old.guest()["heartbeat"]
    info = old.wait_migration()
    err = info.get("error-desc", "")
    check(info["status"] == "failed", f"old: failed after the timeout: {err}")
    check("cpr-transfer-connect-timeout" in err and "300 ms" in err and cpr_sock in err,
          "the error names the parameter, its value and the socket path")
    check(old.status() == "running", "the guest runs on")
    wait_heartbeat(old, hb)


def test_incoming(binary, wd):
    cpr_sock = os.path.join(wd, "alone.cpr")
    new = Vmm(binary, wd, "new", args(wd) + ["-global", "migration.cpr-transfer-accept-timeout=300",
                                             "-incoming", f"unix:{os.path.join(wd, 'alone.main')}",
                                             "-incoming", json.dumps(unix_channel("cpr", cpr_sock))])
    rc = new.wait_exit(60)
    with open(new.log_path, errors="replace") as f:
        out = f.read()
    check(rc != 0, f"the new VMM exits with status {rc}")
    check("cpr-transfer-accept-timeout" in out and "300 ms" in out and cpr_sock in out,
          f"its error names the parameter, its value and the socket: {out.strip().splitlines()[-1]}")
    check(not os.path.exists(cpr_sock), "its cpr socket is removed")


TESTS = {"late": test_late, "never": test_never, "incoming": test_incoming}


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    binary = os.path.abspath(sys.argv[1])
    failed = []
    for name, fn in TESTS.items():
        wd = tempfile.mkdtemp(prefix=f"cpr-order-{name}-")
        log(f"=== {name}")
        try:
            fn(binary, wd)
            shutdown_all()
            bad = sanitizer_reports(wd)
            check(not bad, f"no sanitizer report in the VMMs' logs {bad}")
            shutil.rmtree(wd, ignore_errors=True)
        except Exception as e:  # noqa: BLE001 - report every case, then fail
            log(f"FAIL {name}: {e}; work directory kept: {wd}")
            failed.append(name)
        finally:
            kill_all()
    log(f"failed: {failed}" if failed else "all passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
