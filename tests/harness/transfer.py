# SPDX-License-Identifier: MIT
"""A cpr-transfer of a running cpr-vmm over UNIX sockets, as QEMU's documentation runs it."""
import json
import os

from .channels import unix_channel
from .guest import check, wait_until
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
