# SPDX-License-Identifier: MIT
"""Facts about the host and its processes: is KVM usable, the machine's figures, what a process
maps and holds."""
import os
import platform


def kvm_usable():
    """Whether /dev/kvm opens: a machine whose kernel is itself a kvm-pvm guest has the module
    loaded but no /dev/kvm."""
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
        return True
    except OSError:
        return False


def meminfo(key):
    """A /proc/meminfo figure, in bytes."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def machine():
    """The machine a measurement ran on: cores, memory, kernel, CPU model, KVM, Python."""
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    kvm = [m for m in ("kvm_pvm", "kvm_intel", "kvm_amd") if os.path.exists(f"/sys/module/{m}")]
    return {
        "cores": os.cpu_count(),
        "mem_bytes": meminfo("MemTotal"),
        "kernel": platform.release(),
        "cpu": model,
        "kvm": (kvm[0] if kvm else "present") if kvm_usable() else
               (f"absent ({kvm[0]} loaded, no usable /dev/kvm)" if kvm else "absent"),
        "python": platform.python_version(),
    }


def memfd_inodes(pid):
    """Inodes of the memfds mapped by a process (from /proc/PID/maps)."""
    inodes = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and "/memfd:" in parts[5]:
                inodes.add(int(parts[4]))
    return inodes


def rss_and_fds(pid):
    """A process's resident set (bytes) and how many fds it holds open."""
    rss_kb = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return rss_kb * 1024, len(os.listdir(f"/proc/{pid}/fd"))
