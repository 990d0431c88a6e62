#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""multifd: normal live migration with RAM pages over extra connections, real cpr-vmm processes.

usage: test_multifd.py CPR_VMM_BINARY CASE
  CASE: channels1 channels2 channels4 zstd tcp big-stop (a migration that completes; the guest then
        re-verifies all its RAM with zero corruptions), compressibility (zstd's bytes on the wire
        against -guest-compress 0 and 90), channel-closed (a proxy closes one
        multifd connection mid-pass), dest-killed (the new VMM is killed mid-pass), cancel
        (migrate_cancel mid-pass: cancelled, the old VMM runs on), no-zstd (a libcpr built
        without zstd refuses multifd-compression zstd, saying so), stray (a
        connection of another migration is refused), off-here (the destination without the
        capability refuses the stream), tls (tls-creds: main and each multifd channel begin
        with a TLS handshake, seen by a relay). In the failure cases the old VMM resumes: status
        failed, running, heartbeat on, RAM intact; the new one never runs.
"""
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from harness.channels import free_port
from harness.guest import (base_args, check, check_after_switchover, log, wait_booted,
                           wait_heartbeat, wait_serial, wait_until)
from harness.process import Vmm, shutdown_all
from test_faults import migration_failed, not_running, old_resumed, sigkill, verify_all

RAM_MB = 64


def guest_args(wd, name, extra=()):
    return base_args(wd, name, ["-guest-dirty-rate", "1000"] + list(extra), ram_mb=RAM_MB)


def multifd_globals(channels, compression=None):
    g = ["-global", "migration.multifd=on", "-global", f"migration.multifd-channels={channels}"]
    if compression:
        g += ["-global", f"migration.multifd-compression={compression}"]
    return g


def set_source(old, channels, compression=None, hmp=False):
    if hmp:
        for line in ("migrate_set_capability multifd on", f"migrate_set_parameter multifd-channels {channels}"):
            out = old.hmp(line)
            check("rror" not in out, f"HMP {line}: '{out.strip()}'")
    else:
        old.qmp("migrate-set-capabilities", capabilities=[{"capability": "multifd", "state": True}])
        old.qmp("migrate-set-parameters", **{"multifd-channels": channels})
    if compression:
        old.qmp("migrate-set-parameters", **{"multifd-compression": compression, "multifd-zstd-level": 3})
    params = old.qmp("query-migrate-parameters")
    check(params["multifd-channels"] == channels, f"multifd-channels reads back {channels}")
    caps = {c["capability"]: c["state"] for c in old.qmp("query-migrate-capabilities")}
    check(caps.get("multifd") is True, "capability multifd reads back on")


def boot(wd, name, extra=(), hmp=False):
    vm = Vmm(BINARY, wd, name, guest_args(wd, name, extra), hmp=hmp)
    wait_booted(vm)
    wait_heartbeat(vm)
    return vm


def listening(wd, name, uri_path, channels, compression=None, multifd=True, tcp_port=None, extra=()):
    g = (multifd_globals(channels, compression) if multifd else []) + list(extra)
    uri = f"tcp:127.0.0.1:{tcp_port}" if tcp_port else f"unix:{uri_path}"
    new = Vmm(BINARY, wd, name, guest_args(wd, "mfd", g + ["-incoming", uri]))
    if tcp_port:
        wait_until(lambda: new.status() == "inmigrate", 30, "new VMM listens")
    else:
        wait_until(lambda: os.path.exists(uri_path), 30, "new VMM listens")
    return new


def completes(wd, channels, compression=None, hmp=False, tcp=False, extra=()):
    """Migrates a fresh guest with these settings; the new VMM's guest re-verified all its RAM.
    Returns the old side's final query-migrate."""
    serial = os.path.join(wd, "serial.log")
    old = boot(wd, "old", extra, hmp=hmp)
    wait_serial(serial)
    set_source(old, channels, compression, hmp)
    sock = os.path.join(wd, "mig.sock")
    port = free_port() if tcp else None
    new = listening(wd, "new", sock, channels, compression, tcp_port=port)
    uri = f"tcp:127.0.0.1:{port}" if tcp else f"unix:{sock}"
    old.qmp("migrate", uri=uri)
    info = old.wait_migration(180)
    check(info["status"] == "completed", f"old: migration completed ({info.get('error-desc', '')})")
    check(old.status() == "postmigrate", "old VMM in postmigrate")
    ram = info.get("ram", {})
    log(f"multifd {channels} {compression or 'none'}: total {info.get('total-time')} ms, downtime "
        f"{info.get('downtime')} ms, {ram.get('transferred')} bytes, {ram.get('normal')} data pages, "
        f"{ram.get('dirty-sync-count')} syncs, {ram.get('downtime-bytes')} bytes after the stop")
    # The pages crossed somewhere: the bytes on the wire count the multifd channels' too.
    if compression is None:
        check(ram.get("transferred", 0) >= ram.get("normal", 0) * 4096 > 0, "data pages are counted on the wire")
    hb_old = old.guest()["heartbeat"]
    new.wait_status("running")
    check_after_switchover(new, hb_old, serial)
    old.shutdown()
    new.shutdown()
    return info


def case_compressibility(wd):
    """zstd against the guest's compressibility (-guest-compress): a guest whose pages are 90 %
    one repeated word crosses in a fraction of its RAM's bytes, one at 0 % (the incompressible
    pattern) in about all of them; both re-verify all their RAM on the destination."""
    ram = RAM_MB << 20
    sent = {}
    for pct in (0, 90):
        run = os.path.join(wd, f"c{pct}")
        os.mkdir(run)
        info = completes(run, 2, "zstd", extra=["-guest-compress", str(pct)])
        sent[pct] = info["ram"]["transferred"]
        log(f"-guest-compress {pct}: {sent[pct]} bytes on the wire for {ram} bytes of RAM "
            f"({100 * sent[pct] / ram:.1f} %)")
    check(sent[0] > 0.9 * ram, f"an incompressible guest sends about all its RAM: {sent[0]} of {ram}")
    check(sent[90] < 0.3 * ram, f"a 90 % compressible guest sends a fraction: {sent[90]} of {ram}")


class Proxy:
    """A unix-socket relay between source and destination that closes the `victim`-th
    connection (0: main, 1..: multifd channels) once `after` bytes of it went through."""

    def __init__(self, path, target, victim, after):
        self.target, self.victim, self.after = target, victim, after
        self.closed = threading.Event()
        self.lsock = socket.socket(socket.AF_UNIX)
        self.lsock.bind(path)
        self.lsock.listen(16)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        n = 0
        while True:
            try:
                a, _ = self.lsock.accept()
            except OSError:
                return
            self.before_relay(n)
            b = socket.socket(socket.AF_UNIX)
            b.connect(self.target)
            kill = n == self.victim
            threading.Thread(target=self.pump, args=(a, b, kill, n), daemon=True).start()
            threading.Thread(target=self.pump, args=(b, a, False), daemon=True).start()
            n += 1

    def before_relay(self, n):
        """Called before the n-th connection is relayed."""

    def first_bytes(self, n, data):
        """Called with the first bytes the source sent on the n-th connection."""

    def pump(self, src, dst, kill, n=None):
        done = 0
        try:
            while True:
                data = src.recv(65536)
                if n is not None and done == 0 and data:
                    self.first_bytes(n, data)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
                done += len(data)
                if kill and done >= self.after:
                    self.closed.set()
                    for s in (src, dst):
                        s.shutdown(socket.SHUT_RDWR)
                        s.close()
                    return
        except OSError:
            return


def case_channel_closed(wd):
    old = boot(wd, "old", ["-global", "migration.max-bandwidth=33554432"])
    set_source(old, 2)
    sock = os.path.join(wd, "mig.sock")
    new = listening(wd, "new", sock, 2)
    proxy = Proxy(os.path.join(wd, "proxy.sock"), sock, victim=2, after=2 << 20)
    hb = old.guest()["heartbeat"]
    old.qmp("migrate", uri=f"unix:{os.path.join(wd, 'proxy.sock')}")
    wait_until(proxy.closed.is_set, 60, "the proxy closed multifd channel 1 mid-pass")
    log(old_resumed(old, hb))
    err = old.qmp("query-migrate").get("error-desc", "")
    check("multifd" in err or "main channel" in err, f"the error says which channel failed: '{err}'")
    log(not_running(new) if new.proc.poll() is None else "new VMM gone")
    old.shutdown()
    sigkill(new)


def mid_pass(wd, channels, bandwidth, crossed):
    """A migration over `channels` channels under a bandwidth limit, once `crossed` bytes went:
    (old, new, the old heartbeat before it started)."""
    old = boot(wd, "old", ["-global", f"migration.max-bandwidth={bandwidth}"])
    set_source(old, channels)
    sock = os.path.join(wd, "mig.sock")
    new = listening(wd, "new", sock, channels)
    hb = old.guest()["heartbeat"]
    old.qmp("migrate", uri=f"unix:{sock}")
    wait_until(lambda: old.qmp("query-migrate").get("ram", {}).get("transferred", 0) > crossed, 60,
               f"{crossed} bytes crossed")
    return old, new, hb


def case_dest_killed(wd):
    old, new, hb = mid_pass(wd, 4, 33554432, 4 << 20)
    sigkill(new)
    log(old_resumed(old, hb))
    old.shutdown()


def case_cancel(wd):
    """A cancel mid-pass reaches every channel thread: cancelled, the old VMM runs on."""
    old, new, hb = mid_pass(wd, 4, 16777216, 2 << 20)
    old.qmp("migrate_cancel")
    info = old.wait_migration(60)
    check(info["status"] == "cancelled", f"old: cancelled ({info['status']})")
    old.wait_status("running")
    g = wait_heartbeat(old, hb)
    check(g["heartbeat"] > hb, "old heartbeat goes on")
    verify_all(old)
    log(not_running(new) if new.proc.poll() is None else "new VMM gone")
    old.shutdown()
    sigkill(new)


def hello(uuid, channel, count):
    """A multifd hello (docs/format.md, "multifd channels"), for a stray connection."""
    body = struct.pack("<IHH16sIII", 0x4c454843, 1, 0, uuid, channel, count, 0)
    return body + struct.pack("<I", crc32c(body))


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def case_stray(wd):
    """Connections with another migration's id reach the listener first: refused, the real
    channels are taken and the migration completes."""
    serial = os.path.join(wd, "serial.log")
    old = boot(wd, "old")
    wait_serial(serial)
    set_source(old, 2)
    sock = os.path.join(wd, "mig.sock")
    new = listening(wd, "new", sock, 2)
    proxy_path = os.path.join(wd, "proxy.sock")

    # A relay that, after the main connection, first opens two connections of its own to the
    # destination carrying hellos of another migration.
    strays = []

    class StrayProxy(Proxy):
        def before_relay(self, n):
            if n == 1:
                for i in range(2):
                    s = socket.socket(socket.AF_UNIX)
                    s.connect(self.target)
                    s.sendall(hello(b"\x55" * 16, i, 2))
                    strays.append(s)

    StrayProxy(proxy_path, sock, victim=-1, after=0)
    old.qmp("migrate", uri=f"unix:{proxy_path}")
    info = old.wait_migration(180)
    check(info["status"] == "completed", f"completed past two stray connections ({info.get('error-desc', '')})")
    for s in strays:
        s.settimeout(30)
        check(s.recv(1) == b"", "a stray connection was closed by the destination")
    hb_old = old.guest()["heartbeat"]
    new.wait_status("running")
    check_after_switchover(new, hb_old, serial)
    old.shutdown()
    new.shutdown()


def case_off_here(wd):
    old = boot(wd, "old")
    set_source(old, 2)
    sock = os.path.join(wd, "mig.sock")
    new = listening(wd, "new", sock, 2, multifd=False)
    hb = old.guest()["heartbeat"]
    old.qmp("migrate", uri=f"unix:{sock}")
    log(old_resumed(old, hb))
    err = migration_failed(new)
    check("multifd capability is off here" in err, f"the destination says why: '{err}'")
    old.shutdown()
    sigkill(new)


def case_no_zstd(wd):
    """A libcpr built without zstd: the migration fails saying so, and the old VMM runs on."""
    old = boot(wd, "old")
    set_source(old, 2, "zstd")
    sock = os.path.join(wd, "mig.sock")
    new = listening(wd, "new", sock, 2)
    hb = old.guest()["heartbeat"]
    old.qmp("migrate", uri=f"unix:{sock}")
    log(old_resumed(old, hb))
    err = old.qmp("query-migrate").get("error-desc", "")
    check("libcpr was built without zstd" in err, f"the source says why: '{err}'")
    old.shutdown()
    sigkill(new)


class Recorder(Proxy):
    """The relay, keeping the first bytes of each connection from the source's side."""

    def __init__(self, path, target):
        self.first = {}
        super().__init__(path, target, victim=-1, after=0)

    def first_bytes(self, n, data):
        self.first[n] = data[:3]


def case_tls(wd):
    """tls-creds with 4 multifd channels over a relay: the main channel and every multifd
    channel start with a TLS handshake record (0x16 0x03), never with a hello in the clear."""
    certs_tool = os.path.join(os.path.dirname(os.path.abspath(BINARY)), "..", "tls", "cpr-test-certs")
    if not os.access(certs_tool, os.X_OK):
        log(f"SKIP: no cpr-test-certs ({certs_tool}): libcpr was built without TLS (GnuTLS)")
        sys.exit(SKIP)
    certs = os.path.join(wd, "certs")
    subprocess.run([certs_tool, certs, "CA multifd", "dest.example"], check=True)

    def creds(endpoint):
        return ["-object", f"tls-creds-x509,id=tls0,dir={certs},endpoint={endpoint},verify-peer=on",
                "-global", "migration.tls-creds=tls0"]
    serial = os.path.join(wd, "serial.log")
    old = boot(wd, "old", creds("client") + ["-global", "migration.tls-hostname=dest.example"])
    wait_serial(serial)
    set_source(old, 4)
    sock = os.path.join(wd, "mig.sock")
    new = listening(wd, "new", sock, 4, extra=creds("server"))
    relay = Recorder(os.path.join(wd, "relay.sock"), sock)
    old.qmp("migrate", uri=f"unix:{os.path.join(wd, 'relay.sock')}")
    info = old.wait_migration(180)
    check(info["status"] == "completed", f"old: migration completed ({info.get('error-desc', '')})")
    log(f"first bytes per connection (0: main): {sorted((n, b.hex()) for n, b in relay.first.items())}")
    check(sorted(relay.first) == list(range(5)), "five connections: main and 4 multifd channels")
    for n, b in relay.first.items():
        check(b[:2] == b"\x16\x03", f"connection {n} starts with a TLS handshake record, not {b.hex()}")
    hb_old = old.guest()["heartbeat"]
    new.wait_status("running")
    check_after_switchover(new, hb_old, serial)
    old.shutdown()


CASES = {
    "channels1": lambda wd: completes(wd, 1),
    "channels2": lambda wd: completes(wd, 2, hmp=True),
    "channels4": lambda wd: completes(wd, 4),
    "zstd": lambda wd: completes(wd, 2, "zstd"),
    "compressibility": case_compressibility,
    "tcp": lambda wd: completes(wd, 2, tcp=True),
    # A guest that dirties fast under a generous downtime limit: tens of MiB left at the stop,
    # more than one part, all of it through the channels after the stop.
    "big-stop": lambda wd: completes(wd, 2, extra=["-guest-dirty-rate", "40000",
                                                   "-global", "migration.downtime-limit=20000"]),
    "channel-closed": case_channel_closed,
    "dest-killed": case_dest_killed,
    "stray": case_stray,
    "cancel": case_cancel,
    "off-here": case_off_here,
    "no-zstd": case_no_zstd,
    "tls": case_tls,
}


def main():
    global BINARY
    if len(sys.argv) != 3 or sys.argv[2] not in CASES:
        sys.exit(__doc__)
    BINARY = sys.argv[1]
    wd = tempfile.mkdtemp(prefix="cpr-multifd-")
    ok = False
    try:
        CASES[sys.argv[2]](wd)
        ok = True
    finally:
        shutdown_all()
        if ok:
            shutil.rmtree(wd, ignore_errors=True)
        else:
            log(f"kept {wd}")


BINARY = None
SKIP = 77

if __name__ == "__main__":
    main()
