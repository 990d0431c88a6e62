#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Migration between two "hosts": cpr-vmm in two network namespaces joined by a veth pair
(tests/harness/netns.py), normal mode over tcp.

usage: test_hosts.py CPR_VMM_BINARY CPR_TEST_CERTS TEST   (TEST: plain tls tbf)

plain  a live migration from host a to host b; the guest goes on and re-verifies all its RAM.
tls    TLS (GnuTLS) on the main channel, with credentials made by cpr-test-certs: first the
       refusals, each leaving the source's guest running (status failed): a destination whose
       certificate comes from another CA, a wrong tls-hostname, a destination without TLS, a
       source without TLS, a file: channel; then the migration with TLS, set through HMP
       (migrate_set_parameter tls-creds), that the guest survives with its RAM intact.
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

from harness.guest import (base_args, check, check_after_switchover, log, wait_booted,
                           wait_heartbeat, wait_serial, wait_until)
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
    check(needle in err, f"{what}: the error names it ('{needle}')")
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


def test_tls(binary, certs_tool, wd, hosts):
    dirs = make_certs(certs_tool, wd)
    src, serial = start_source(binary, wd, hosts, creds(dirs["good"], "client"), hmp=True)
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
    refused(src, dst, "destination without TLS", "did not answer in TLS")

    src.qmp("migrate-set-parameters", **{"tls-creds": ""})
    dst = start_dest(binary, wd, hosts, "dst-tls-only", creds(dirs["good"], "server") + server)
    refused(src, dst, "source without TLS", "destination", dst_needle="did not answer in TLS")

    src.qmp("migrate-set-parameters", **{"tls-creds": "tls0"})

    try:
        src.qmp("migrate", uri=f"file:{os.path.join(wd, 'vm.state')}")
        err = ""
    except QmpError as e:
        err = str(e)
    check("cannot carry TLS" in err, f"file: with tls-creds refused before it starts ({err})")
    check(src.status() == "running", "the source's guest runs on")

    dst = start_dest(binary, wd, hosts, "dst", creds(dirs["good"], "server") + server)
    info = migrate_and_switch(src, dst, serial)
    log(f"TLS between namespaces: {info.get('total-time')} ms, {info['ram']['transferred']} bytes")


TESTS = {"plain": (test_plain, None), "tls": (test_tls, None), "tbf": (test_tbf, "1gbit")}


def main():
    global dst_addr
    if len(sys.argv) != 4 or sys.argv[3] not in TESTS:
        print(__doc__)
        return 2
    binary, certs_tool, name = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
    fn, rate = TESTS[name]
    if name == "tls" and not os.access(certs_tool, os.X_OK):
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
        if ok and not os.environ.get("CPR_KEEP_TMP"):
            shutil.rmtree(wd, ignore_errors=True)
        else:
            log(f"work directory kept: {wd}")
            for f in sorted(os.listdir(wd)):
                if f.endswith(".log"):
                    with open(os.path.join(wd, f), errors="replace") as fh:
                        log(f"--- {f} (tail)\n" + "".join(fh.readlines()[-30:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
