#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Migration between two "hosts": cpr-vmm in two network namespaces joined by a veth pair
(tests/harness/netns.py), normal mode over tcp.

usage: test_hosts.py CPR_VMM_BINARY CPR_TEST_CERTS TEST   (TEST: plain tls tls-cut tls-multifd tbf)

plain  a live migration from host a to host b; the guest goes on and re-verifies all its RAM.
tls    TLS (GnuTLS) on the main channel, with credentials made by cpr-test-certs: first the
       refusals, each leaving the source's guest running (status failed): a destination whose
       certificate comes from another CA, a wrong tls-hostname, a destination without TLS, a
       source without TLS, a source whose certificate comes from another CA, a file: channel, a
       destination whose tls-authz admits another certificate name; then the migration with TLS,
       set through HMP (migrate_set_parameter tls-creds), to a destination whose tls-authz names
       the source, that the guest survives with its RAM intact.
tls-cut the TLS handshake cut (docs/reliability.md): a stand-in destination reads the
       ClientHello and dies (the source fails saying so, its guest runs on); one that reads it
       and then loses its link (the source waits in setup with its guest running, migrate_cancel
       ends the wait, the guest runs on); a stand-in source that sends half a ClientHello and
       dies (the destination fails saying so and never runs a guest); then a TLS migration from
       the same source, which the guest survives with its RAM intact.
tls-multifd  TLS with multifd (4 channels): each channel runs its own handshake (and passes
       the destination's tls-authz), and the guest survives with its RAM intact.
tbf    the plain migration over a link shaped to 1 Gbit/s: the stream went through the token
       bucket, which held packets back, and it took at least the time the bytes need at that
       rate (lower bounds only, so that a slow machine cannot make it flake).

Exits 77 (skipped) where network namespaces cannot be made, saying why.
"""
import os
import shutil
import subprocess
import sys
import tempfile

from harness.guest import (base_args, check, check_after_switchover, finish_workdir, log,
                           wait_booted, wait_heartbeat, wait_serial, wait_until)
from harness.netns import TwoHosts, Unavailable
from harness.process import Vmm, shutdown_all
from harness.qmp import QmpError
from harness.reports import sanitizer_reports

SKIP = 77
PORT = 4444


def start_source(binary, wd, hosts, extra=(), hmp=False):
    serial = os.path.join(wd, "serial.log")
    src = Vmm(binary, wd, "src", base_args(wd, "hosts", ["-guest-dirty-rate", "1000"] + list(extra)),
              hmp=hmp, wrap=hosts.wrap("a"))
    wait_booted(src)
    wait_heartbeat(src)
    wait_serial(serial)
    return src, serial


def start_dest(binary, wd, hosts, name, extra=()):
    dst = Vmm(binary, wd, name, base_args(wd, "hosts", list(extra) + ["-incoming", f"tcp:{hosts.addr('b')}:{PORT}"]),
              wrap=hosts.wrap("b"))
    # Listening once QMP answers inmigrate: the listener is made before the monitors run.
    wait_until(lambda: dst.status() == "inmigrate", 30, f"{name} waits in inmigrate")
    return dst


def migrate_and_switch(src, dst, serial):
    src.qmp("migrate", uri=f"tcp:{dst_addr}:{PORT}")
    info = src.wait_migration(300)
    check(info["status"] == "completed", f"source: migration completed ({info.get('error-desc', '')})")
    check(src.status() == "postmigrate", "source in postmigrate")
    hb_old = src.guest()["heartbeat"]
    dst.wait_status("running")
    check_after_switchover(dst, hb_old, serial)
    return info


dst_addr = None


def test_plain(binary, certs, wd, hosts):
    src, serial = start_source(binary, wd, hosts)
    dst = start_dest(binary, wd, hosts, "dst")
    info = migrate_and_switch(src, dst, serial)
    log(f"plain tcp between namespaces: {info.get('total-time')} ms, {info['ram']['transferred']} bytes")


def test_tbf(binary, certs, wd, hosts):
    src, serial = start_source(binary, wd, hosts)
    dst = start_dest(binary, wd, hosts, "dst")
    info = migrate_and_switch(src, dst, serial)
    sent = info["ram"]["transferred"]
    # 1 Gbit/s: sent*8/1e9 s at least; the bucket's 256 KiB burst and rounding allow 10% less.
    floor_ms = sent * 8 / 1e9 * 1000 * 0.9
    log(f"over 1 Gbit/s tbf: {info.get('total-time')} ms for {sent} bytes (the link needs {floor_ms / 0.9:.0f} ms)")
    check(info["total-time"] >= floor_ms, f"the shaped link bounded the migration ({info['total-time']} ms "
          f">= {floor_ms:.0f} ms)")
    q = hosts.qdisc("a")
    log(f"host a's qdisc: {q}")
    check(q["kind"] == "tbf" and q["rate"] == "1Gbit", "host a's veth end is shaped by tbf at 1Gbit")
    check(q["sent"] >= sent, f"the stream went through it ({q['sent']} >= {sent} bytes)")
    check(q["overlimits"] > 0, f"the bucket held packets back ({q['overlimits']} times)")


def make_certs(certs_tool, wd):
    """Credentials of CA "good" (the destination's certificate names 10.203.0.2 and
    dest.example) and of another CA "other"."""
    dirs = {}
    for name in ("good", "other"):
        d = os.path.join(wd, f"certs-{name}")
        subprocess.run([certs_tool, d, f"CA {name}", f"dest.example,{dst_addr}"], check=True)
        dirs[name] = d
    return dirs


# The distinguished name of cpr-test-certs' client certificate, as GnuTLS writes it.
SOURCE_DN = "CN=migration source,O=libcpr tests"


def creds(d, endpoint):
    return ["-object", f"tls-creds-x509,id=tls0,dir={d},endpoint={endpoint},verify-peer=on"]


def refused(src, dst, what, needle, dst_needle=None):
    """The migration fails naming what failed (on the destination too, with dst_needle); the
    source's guest runs on; the destination does not run it."""
    try:
        src.qmp("migrate", uri=f"tcp:{dst_addr}:{PORT}")
        info = src.wait_migration(120)
    except QmpError as e:
        info = {"status": "failed", "error-desc": str(e)}
    err = info.get("error-desc", "")
    log(f"{what}: {err}")
    check(info["status"] == "failed", f"{what}: the migration failed")
    needles = needle if isinstance(needle, tuple) else (needle,)
    check(any(n in err for n in needles), f"{what}: the error names it ({' or '.join(needles)})")
    check(src.status() == "running", f"{what}: the source's guest runs on")
    hb = src.guest()["heartbeat"]
    wait_heartbeat(src, hb)
    check(not dst.alive() or dst.status() != "running", f"{what}: the destination does not run the guest")
    if dst_needle:
        d = wait_until(lambda: (i := dst.qmp("query-migrate")).get("status") == "failed" and i, 30,
                       f"{what}: the destination's incoming migration failed")
        log(f"{what}, destination: {d.get('error-desc')}")
        check(dst_needle in d.get("error-desc", ""), f"{what}: the destination's error names it ('{dst_needle}')")
    dst.kill()
    return err


def gnutls_mapped(vm):
    """Whether the VMM's process has GnuTLS loaded (libcpr opens it with its first credentials)."""
    with open(f"/proc/{vm.pid}/maps") as f:
        return "libgnutls" in f.read()


def test_tls(binary, certs_tool, wd, hosts):
    dirs = make_certs(certs_tool, wd)
    src, serial = start_source(binary, wd, hosts, creds(dirs["good"], "client"), hmp=True)
    check(gnutls_mapped(src), "the source, given TLS credentials, has loaded GnuTLS")
    out = src.hmp("migrate_set_parameter tls-creds tls0")
    check("rror" not in out, f"HMP migrate_set_parameter tls-creds tls0 ({out.strip()})")
    params = src.qmp("query-migrate-parameters")
    check(params.get("tls-creds") == "tls0", "query-migrate-parameters shows tls-creds tls0")

    server = ["-global", "migration.tls-creds=tls0"]
    dst = start_dest(binary, wd, hosts, "dst-other-ca", creds(dirs["other"], "server") + server)
    refused(src, dst, "destination certificate from another CA", "issuer is unknown")

    src.qmp("migrate-set-parameters", **{"tls-hostname": "wrong.example"})
    dst = start_dest(binary, wd, hosts, "dst-wrong-name", creds(dirs["good"], "server") + server)
    refused(src, dst, "wrong tls-hostname", "does not match")
    src.qmp("migrate-set-parameters", **{"tls-hostname": ""})

    dst = start_dest(binary, wd, hosts, "dst-plain")
    check(not gnutls_mapped(dst), "a VMM without TLS credentials never loads GnuTLS")
    refused(src, dst, "destination without TLS", "did not answer in TLS")

    src.qmp("migrate-set-parameters", **{"tls-creds": ""})
    dst = start_dest(binary, wd, hosts, "dst-tls-only", creds(dirs["good"], "server") + server)
    # The destination drains what the source sends for at most 1 s before it closes: a source
    # still writing then (a loaded machine) fails on the write instead of reading the end.
    refused(src, dst, "source without TLS", ("destination", "write to fd"), dst_needle="did not answer in TLS")

    # The source's certificate from another CA (its CA file still trusts the destination): in
    # TLS 1.3 its handshake ends before the destination checks it, so it learns of the refusal
    # while it sends. Added at run time (QMP object-add), as a monitor would.
    mixed = os.path.join(wd, "certs-mixed")
    os.makedirs(mixed)
    shutil.copy(os.path.join(dirs["good"], "ca-cert.pem"), mixed)
    for f in ("client-cert.pem", "client-key.pem"):
        shutil.copy(os.path.join(dirs["other"], f), mixed)
    src.qmp("object-add", **{"qom-type": "tls-creds-x509", "id": "tls1", "dir": mixed, "endpoint": "client",
                             "verify-peer": True})
    src.qmp("migrate-set-parameters", **{"tls-creds": "tls1"})
    dst = start_dest(binary, wd, hosts, "dst-refuses-source", creds(dirs["good"], "server") + server)
    # It fails either while it sends (the destination closed) or at the acknowledgement,
    # depending on how much of the stream the refusing destination drains before it closes.
    refused(src, dst, "source certificate from another CA", ("destination", "write to fd"),
            dst_needle="sent no certificate from a CA this side trusts")
    src.qmp("object-del", id="tls1")

    src.qmp("migrate-set-parameters", **{"tls-creds": "tls0"})

    try:
        src.qmp("migrate", uri=f"file:{os.path.join(wd, 'vm.state')}")
        err = ""
    except QmpError as e:
        err = str(e)
    check("cannot carry TLS" in err, f"file: with tls-creds refused before it starts ({err})")
    check(src.status() == "running", "the source's guest runs on")

    # tls-authz: a destination that admits only another certificate name refuses this source,
    # naming the source's name; one that names it admits it (QEMU's doubled commas in -object).
    authz = ["-global", "migration.tls-authz=auth0", "-object", "authz-simple,id=auth0,identity=CN=%s,,O=libcpr tests"]
    dst = start_dest(binary, wd, hosts, "dst-authz-other", creds(dirs["good"], "server") + server +
                     authz[:-1] + [authz[-1] % "someone else"])
    err = refused(src, dst, "source certificate of another name (tls-authz)", ("destination", "write to fd"),
                  dst_needle=f"the client's certificate '{SOURCE_DN}' is not authorized")
    # The NAK says why (when the source got as far as reading it), without the admitted name.
    check("negative acknowledgement" not in err or "refused the source's TLS certificate" in err,
          f"the source is told its certificate was refused ({err})")
    check("someone else" not in err, "the source is not told which name the destination admits")

    dst = start_dest(binary, wd, hosts, "dst", creds(dirs["good"], "server") + server +
                     authz[:-1] + [authz[-1] % "migration source"])
    check(dst.qmp("query-migrate-parameters").get("tls-authz") == "auth0", "the destination shows tls-authz auth0")
    info = migrate_and_switch(src, dst, serial)
    log(f"TLS between namespaces: {info.get('total-time')} ms, {info['ram']['transferred']} bytes")


def test_tls_multifd(binary, certs_tool, wd, hosts):
    """TLS with multifd: every channel (main and 4 multifd) handshakes; the destination, with
    tls-creds set, accepts no multifd connection that does not, and with tls-authz checks each
    channel's certificate name (the source's, so all are admitted)."""
    dirs = make_certs(certs_tool, wd)
    mfd = ["-global", "migration.multifd=on", "-global", "migration.multifd-channels=4"]
    src, serial = start_source(binary, wd, hosts, creds(dirs["good"], "client") + mfd +
                               ["-global", "migration.tls-creds=tls0"])
    dst = start_dest(binary, wd, hosts, "dst", creds(dirs["good"], "server") + mfd +
                     ["-global", "migration.tls-creds=tls0", "-global", "migration.tls-authz=auth0",
                      "-object", "authz-simple,id=auth0,identity=" + SOURCE_DN.replace(",", ",,")])
    info = migrate_and_switch(src, dst, serial)
    log(f"TLS + multifd 4 between namespaces: {info.get('total-time')} ms, {info['ram']['transferred']} bytes")


# A stand-in peer for the handshake cut, run on one host: "dest-dies" accepts, reads the
# ClientHello, SIGKILLs itself; "dest-holds" accepts, reads it, says so, then waits to be killed;
# "source-dies" connects, sends the first half of a real ClientHello (Python's ssl), SIGKILLs
# itself. Prints "ready" once it listens or connected, "hello" once it read the ClientHello.
STAND_IN = r"""
import os, signal, socket, ssl, sys, time
what, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def say(w):
    print(w, flush=True)
if what == "source-dies":
    c = socket.create_connection((host, port))
    say("ready")
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(inc, out, server_hostname="dest.example")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    c.sendall(hello[:len(hello) // 2])
    time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)
l = socket.create_server((host, port))
say("ready")
c, _ = l.accept()
data = c.recv(65536)
say("hello" if data[:1] == b"\x16" else f"not a ClientHello: {data[:8]!r}")
if what == "dest-dies":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(3600)
"""


def stand_in(wd, hosts, side, what):
    path = os.path.join(wd, "stand_in.py")
    with open(path, "w") as f:
        f.write(STAND_IN)
    p = subprocess.Popen(hosts.wrap(side) + [sys.executable, path, what, hosts.addr("b"), str(PORT)],
                         stdout=subprocess.PIPE, text=True)
    check(p.stdout.readline().strip() == "ready", f"stand-in {what} ready")
    return p


def source_runs_on(src, what):
    check(src.status() == "running", f"{what}: the source's guest runs on")
    wait_heartbeat(src, src.guest()["heartbeat"])


def test_tls_cut(binary, certs_tool, wd, hosts):
    dirs = make_certs(certs_tool, wd)
    src, serial = start_source(binary, wd, hosts, creds(dirs["good"], "client"))
    src.qmp("migrate-set-parameters", **{"tls-creds": "tls0"})

    # The destination dies once it has the ClientHello.
    peer = stand_in(wd, hosts, "b", "dest-dies")
    src.qmp("migrate", uri=f"tcp:{dst_addr}:{PORT}")
    check(peer.stdout.readline().strip() == "hello", "the stand-in destination read a ClientHello")
    peer.wait(30)
    info = src.wait_migration(60)
    err = info.get("error-desc", "")
    log(f"destination killed mid-handshake: {info['status']}: {err}")
    check(info["status"] == "failed", "destination killed mid-handshake: the migration failed")
    check("the server closed the connection mid-handshake" in err, "the error says the server went away mid-handshake")
    source_runs_on(src, "destination killed mid-handshake")

    # The link dies once the destination has the ClientHello: no reset ever comes.
    peer = stand_in(wd, hosts, "b", "dest-holds")
    src.qmp("migrate", uri=f"tcp:{dst_addr}:{PORT}")
    check(peer.stdout.readline().strip() == "hello", "the stand-in destination read a ClientHello")
    hosts.link("b", False)
    try:
        hb = src.guest()["heartbeat"]
        wait_heartbeat(src, hb)
        info = src.qmp("query-migrate")
        check(info["status"] == "setup" and src.status() == "running",
              f"link cut mid-handshake: the source waits in setup ({info['status']}), its guest running")
        src.qmp("migrate_cancel")
        info = src.wait_migration(30)
        log(f"link cut mid-handshake, then migrate_cancel: {info['status']}: {info.get('error-desc', '')}")
        check(info["status"] == "cancelled", "link cut mid-handshake: migrate_cancel ends the wait")
        source_runs_on(src, "link cut mid-handshake")
    finally:
        hosts.link("b", True)
        peer.kill()
        peer.wait()

    # The source dies halfway through its ClientHello: the destination fails and runs nothing.
    server = creds(dirs["good"], "server") + ["-global", "migration.tls-creds=tls0"]
    dst = start_dest(binary, wd, hosts, "dst-cut", server)
    peer = stand_in(wd, hosts, "a", "source-dies")
    peer.wait(30)
    d = wait_until(lambda: (i := dst.qmp("query-migrate")).get("status") == "failed" and i, 30,
                   "source killed mid-handshake: the destination's incoming migration failed")
    log(f"source killed mid-handshake, destination: {d.get('error-desc')}")
    check("the client closed the connection mid-handshake" in d.get("error-desc", ""),
          "the destination's error says the client went away mid-handshake")
    check(dst.status() != "running", "the destination runs no guest")
    dst.kill()

    dst = start_dest(binary, wd, hosts, "dst", server)
    info = migrate_and_switch(src, dst, serial)
    log(f"TLS after the cuts: {info.get('total-time')} ms, {info['ram']['transferred']} bytes")


TESTS = {"plain": (test_plain, None), "tls": (test_tls, None), "tls-cut": (test_tls_cut, None),
         "tls-multifd": (test_tls_multifd, None),
         "tbf": (test_tbf, "1gbit")}


def main():
    global dst_addr
    if len(sys.argv) != 4 or sys.argv[3] not in TESTS:
        print(__doc__)
        return 2
    binary, certs_tool, name = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
    fn, rate = TESTS[name]
    if name.startswith("tls") and not os.access(certs_tool, os.X_OK):
        print(f"SKIP: no cpr-test-certs ({certs_tool}): libcpr was built without TLS (GnuTLS)")
        return SKIP
    wd = tempfile.mkdtemp(prefix=f"cpr-hosts-{name}-")
    ok = False
    try:
        with TwoHosts(rate=rate) as hosts:
            dst_addr = hosts.addr("b")
            log(hosts.describe())
            try:
                fn(binary, certs_tool, wd, hosts)
            finally:
                shutdown_all()
        bad = sanitizer_reports(wd)
        check(not bad, f"no sanitizer report in the VMMs' logs {bad}")
        ok = True
    except Unavailable as e:
        print(f"SKIP: two-host tests need network namespaces: {e}")
        ok = True
        return SKIP
    finally:
        finish_workdir(wd, ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
