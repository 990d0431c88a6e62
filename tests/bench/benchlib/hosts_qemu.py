# SPDX-License-Identifier: MIT
"""QEMU 7.2's side of tests/bench/hosts (--with-qemu): the same variant over the same link,
set QEMU's way over QMP on both sides.

The destination starts with `-incoming defer`: QEMU takes multifd and its parameters only
before it listens, so both sides get the capabilities and parameters first, then the
destination `migrate-incoming` and the source `migrate`. TLS: `-object tls-creds-x509` on both
command lines (cpr-test-certs writes the file names QEMU reads: ca-cert.pem, server-cert.pem,
server-key.pem, client-cert.pem, client-key.pem) and `tls-creds` on both sides; the source
checks the server certificate against the address it connects to (an IP SAN of the certificate).

The guest is benchlib/qemu.py's: it idles in its BIOS on RAM pre-filled from the host with
non-zero pages (one repeated byte each), so every page is sent as data, and zstd finds it very
compressible. It has no heartbeat: pause_ms is null, total and downtime are QEMU's own.
"""
import os
import time

from . import host
from .qemu import QemuLauncher

# variant -> (capabilities, parameters), the same set as hosts' VARIANTS for cpr-vmm.
MULTIFD4 = ({"multifd": True}, {"multifd-channels": 4})
VARIANTS = {
    "plain": ({}, {}),
    "tls": ({}, {"tls-creds": "tls0"}),
    "multifd2": ({"multifd": True}, {"multifd-channels": 2}),
    "multifd4": MULTIFD4,
    "zstd": (MULTIFD4[0], dict(MULTIFD4[1], **{"multifd-compression": "zstd", "multifd-zstd-level": 1})),
    "tls-multifd4": (MULTIFD4[0], dict(MULTIFD4[1], **{"tls-creds": "tls0"})),
}
DOWNTIME_MS = 300  # cpr-vmm's default downtime-limit (and QEMU's): the same for both
NO_PAUSE = "QEMU's BIOS guest has no heartbeat: no guest-measured pause"


def tx_bytes(hosts):
    """Bytes host a has sent on its end of the pair so far (its sysfs counter): the wire bytes of
    a migration, the same count for both implementations whatever each puts in `transferred`."""
    r = hosts.run("a", "cat", f"/sys/class/net/{hosts.ns['a']}/statistics/tx_bytes")
    return int(r.stdout) if r.returncode == 0 and r.stdout.strip().isdigit() else None


def find(accel):
    """(launcher arguments, None) or (None, why not): Debian's qemu-system-x86, installed with
    apt-get when missing; TCG beside cpr-vmm's software backend, KVM beside KVM."""
    binary = host.ensure_program("qemu-system-x86_64", "qemu-system-x86")
    if not binary:
        return None, "qemu-system-x86 is not installed and apt-get could not install it"
    qaccel = "tcg" if accel == "soft" else "kvm"
    if qaccel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return None, "/dev/kvm is not usable (with --accel soft, QEMU runs on TCG)"
    return (binary, qaccel), None


class QemuHosts:
    """Runs one QEMU migration between the two namespaces of `hosts` per call."""

    def __init__(self, found, wd):
        binary, self.accel = found
        self.launcher = QemuLauncher(binary, wd, DOWNTIME_MS, self.accel)
        self.wd = wd
        self.src_ram = {}  # size -> pre-filled RAM file of the source, reused by every run

    def version(self):
        return self.launcher.version()

    def ram(self, size):
        """The source's RAM file of `size`, pre-filled once and reused by every run."""
        if size not in self.src_ram:
            path = os.path.join("/dev/shm", f"cpr-bench-hosts-qemu-{os.getpid()}-{size >> 20}M")
            host.prefill(path, size)
            self.src_ram[size] = path
        return self.src_ram[size]

    def _setup(self, vm, variant):
        caps, params = VARIANTS[variant]
        if caps:
            vm.qmp("migrate-set-capabilities",
                   capabilities=[{"capability": k, "state": v} for k, v in caps.items()])
        if params:
            vm.qmp("migrate-set-parameters", **params)

    @staticmethod
    def _times(vm, info, timeout=10.0):
        """7.2's migration thread sets "completed" a moment before it computes total-time and
        downtime: a query in between reads 0 for them. Ask again until both are there."""
        deadline = time.monotonic() + timeout
        while not (info.get("total-time") and info.get("downtime")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"QEMU says completed without total-time/downtime: {info}")
            time.sleep(0.01)
            info = vm.qmp("query-migrate")
        return info

    def run(self, hosts, port, size, variant, tls_dir, n):
        """One migration a -> b; returns the same figures as cpr-vmm's run, pause_ms None."""
        tls = (lambda end: ["-object", f"tls-creds-x509,id=tls0,dir={tls_dir},endpoint={end},verify-peer=on"]) \
            if variant.startswith("tls") else (lambda end: [])
        dst_ram = os.path.join("/dev/shm", f"cpr-bench-hosts-qemu-{os.getpid()}-dst{n}")
        uri = f"tcp:{hosts.addr('b')}:{port}"
        L = self.launcher
        src = dst = None
        try:
            src = L.start(f"src{n}", size, self.ram(size), tls("client"), wrap=hosts.wrap("a"))
            dst = L.start(f"dst{n}", size, dst_ram, tls("server") + ["-incoming", "defer"], wrap=hosts.wrap("b"))
            L.ready(src)
            for vm in (src, dst):
                self._setup(vm, variant)
            dst.qmp("migrate-incoming", uri=uri)
            wire = tx_bytes(hosts)
            src.qmp("migrate", uri=uri)
            info = src.wait_migration(900)
            wire = tx_bytes(hosts) - wire if wire is not None else None
            if info["status"] != "completed":
                raise RuntimeError(f"QEMU migration {info['status']}: {info.get('error-desc')}")
            info = self._times(src, info)
            dst.wait_status("running", timeout=60)
            sent = info["ram"]["transferred"]
            return {"total_ms": info["total-time"], "downtime_ms": info.get("downtime", 0), "pause_ms": None,
                    "gbps": sent * 8 / (info["total-time"] / 1000) / 1e9, "bytes": sent, "wire_bytes": wire}
        finally:
            for vm in (src, dst):
                if vm:
                    vm.kill()
            host.unlink(dst_ram)

    def close(self):
        for path in self.src_ram.values():
            host.unlink(path)
        self.src_ram.clear()
