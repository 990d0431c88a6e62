# SPDX-License-Identifier: MIT
"""Two cpr-vmm processes for a migration over UNIX sockets: a live pair (a running source, a
destination listening), and a cpr-transfer run as QEMU's documentation runs it."""
import json
import os

from .channels import unix_channel
from .guest import check, wait_booted, wait_heartbeat, wait_serial, wait_until
from .process import Vmm


def cpr_transfer(binary, wd, old, args, name="new"):
    """Starts a new VMM with `args` listening on main and cpr sockets in wd, migrates `old` to
    it in cpr-transfer mode and checks that the migration completed. Returns the new VMM and
    the old one's final query-migrate."""
    main_sock, cpr_sock = os.path.join(wd, "main.sock"), os.path.join(wd, "cpr.sock")
    new = Vmm(binary, wd, name, args + ["-incoming", f"unix:{main_sock}",
                                        "-incoming", json.dumps(unix_channel("cpr", cpr_sock))])
    wait_until(lambda: os.path.exists(cpr_sock), 30, f"{name} VMM listens on the cpr channel")
    old.qmp("migrate-set-parameters", mode="cpr-transfer")
    old.qmp("migrate", channels=[unix_channel("main", main_sock), unix_channel("cpr", cpr_sock)])
    info = old.wait_migration()
    check(info["status"] == "completed", f"{old.name}: migration completed ({info.get('error-desc', '')})")
    return new, info


def live_pair(binary, wd, args, dest_args=(), hmp=False):
    """A running source VMM with `args` (booted, heartbeat and console going) and a destination
    with the same `args` plus `dest_args`, listening with -incoming on wd/mig.sock; both with
    an HMP on stdin when `hmp`. Returns (old, new, sock)."""
    old = Vmm(binary, wd, "old", args, hmp=hmp)
    wait_booted(old)
    wait_heartbeat(old)
    wait_serial(os.path.join(wd, "serial.log"))
    sock = os.path.join(wd, "mig.sock")
    new = Vmm(binary, wd, "new", args + list(dest_args) + ["-incoming", f"unix:{sock}"], hmp=hmp)
    wait_until(lambda: os.path.exists(sock), 30, "new VMM listens")
    return old, new, sock
