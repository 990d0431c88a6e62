# SPDX-License-Identifier: MIT
"""QEMU (Debian's qemu-system-x86, 7.2) as the peer: its command line, its URIs, its QMP set-up.

RAM is a memory-backend-file on /dev/shm with share=on, pre-filled from the host with non-zero
data (the guest idles in its BIOS and leaves it alone), so every page is a non-zero page to copy
and x-ignore-shared has shared RAM to skip. max-bandwidth is raised (7.2 defaults to 128 MiB/s,
which would measure the throttle); downtime-limit is the one both implementations get.
"""
import subprocess

from harness.process import Vmm

MAX_BANDWIDTH = 100 << 30  # bytes/s


class QemuLauncher:
    impl = "qemu"

    def __init__(self, binary, workdir, downtime_ms, accel="kvm"):
        self.binary = binary
        self.workdir = workdir
        self.downtime_ms = downtime_ms
        self.accel = accel  # "kvm", or "tcg" beside cpr-vmm's software backend
        self.n = 0

    def version(self):
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0] if out else "?"

    def start(self, name, size, ram_path, extra=(), dirty_rate=0, wrap=()):
        """Starts QEMU on `ram_path`; `wrap` is a command prefix that execs it in place (a
        network namespace's, netns.TwoHosts.wrap())."""
        self.n += 1
        mib = size >> 20
        # kvm_pvm refuses MSR 0x10a (IA32_ARCH_CAPABILITIES) and 7.2 asserts on it.
        cpu = "host,-arch-capabilities" if self.accel == "kvm" else "qemu64"
        args = ["-accel", self.accel, "-cpu", cpu, "-smp", "1", "-m", f"{mib}M",
                "-object", f"memory-backend-file,id=ram0,size={mib}M,mem-path={ram_path},share=on",
                "-machine", "pc,memory-backend=ram0", "-nodefaults", "-display", "none"] + list(extra)
        vm = Vmm(self.binary, self.workdir, f"qemu-{name}-{self.n}", args, wrap=wrap)
        vm.poll_interval = 0.002
        try:
            vm.connect()
            vm.qmp("migrate-set-capabilities",
                   capabilities=[{"capability": "events", "state": True}])
            vm.qmp("migrate-set-parameters", **{"max-bandwidth": MAX_BANDWIDTH,
                                                "downtime-limit": self.downtime_ms})
        except Exception:
            tail = vm.log_tail()
            vm.kill()
            raise RuntimeError(f"QEMU did not start: {tail.strip()}")
        return vm

    def ready(self, vm):
        vm.wait_status("running", timeout=30)

    def verify(self, vm):
        vm.wait_status("running", timeout=30)

    def save_uri(self, path, via):
        # 7.2 has no file: URI; exec: through cat is the spelling of its documentation.
        return f"exec:cat > {path}"

    def load_uri(self, path):
        return f"exec:cat {path}"

    def restart_params(self, vm):
        vm.qmp("migrate-set-capabilities",
               capabilities=[{"capability": "x-ignore-shared", "state": True}])

    def guest_pause_ms(self, vm):
        return None  # a BIOS guest has no heartbeat: blackout_ms is the guest-visible pause
