# SPDX-License-Identifier: MIT
"""The host side of the benchmark: packages, pre-filled RAM files, and the physical references
every figure is compared with (write(2) of the same bytes, memcpy). The machine's facts (its
figures, KVM) are the harness's (tests/harness/host.py)."""
import ctypes
import mmap
import os
import shutil
import subprocess
import sys
import time

GIB = 1 << 30
MIB = 1 << 20
PAGE = 4096
MADV_POPULATE_READ = 22

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.memmove.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_libc.memmove.restype = ctypes.c_void_p
_libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
_libc.memset.restype = ctypes.c_void_p


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def apt_install(pkg):
    """Installs a Debian package with apt-get; says so on stderr. Returns True on success."""
    log(f"installing Debian package {pkg} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", pkg], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        log(f"apt-get install {pkg} failed: {r.stderr.strip()[-400:]}")
        return False
    return True


def ensure_program(name, pkg):
    path = shutil.which(name)
    if path is None and apt_install(pkg):
        path = shutil.which(name)
    return path


def _pattern_chunk(size):
    """A chunk with no zero byte: page i of the chunk holds byte (i % 255) + 1."""
    pages = size // PAGE
    return b"".join(bytes([(i % 255) + 1]) * PAGE for i in range(pages))


def prefill(path, size):
    """Creates `path` with `size` bytes of non-zero data (guest RAM filled from the host)."""
    chunk = _pattern_chunk(16 * MIB)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        off = 0
        while off < size:
            off += os.pwrite(fd, chunk[:min(len(chunk), size - off)], off)
    finally:
        os.close(fd)


def unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Mapped:
    """A read-only shared mapping of a file, populated up front so that timed reads from it
    pay no page-table cost (the VMM's RAM is mapped and touched too)."""

    def __init__(self, path, size):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        self.size = size
        self.view = memoryview(self.mm)
        # A read-only mapping cannot be exported through from_buffer; ask the kernel instead.
        self.addr = _mapping_address(path, size)
        _libc.madvise(self.addr, size, MADV_POPULATE_READ)

    def close(self):
        self.view.release()
        self.mm.close()


def _mapping_address(path, size):
    """Where this process mapped `path` (from /proc/self/maps)."""
    real = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].strip() == real:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if hi - lo == size:
                    return lo
    raise RuntimeError(f"mapping of {path} not found")


def write_file(src, path, chunk=8 * MIB):
    """Writes src's bytes to a new file at path with plain write(2) calls; returns seconds.
    No fsync, as the snapshots compared with it do none."""
    unlink(path)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        off = 0
        while off < src.size:
            off += os.write(fd, src.view[off:off + chunk])
    finally:
        os.close(fd)
    return time.perf_counter() - t0


class MemcpyRef:
    """memcpy bandwidth, one thread, into memory that is already touched (not the first-touch
    cost)."""

    def __init__(self, size=GIB):
        self.size = size
        self.dst = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.dst))
        _libc.memset(self.addr, 1, size)

    def measure(self, src):
        n = min(self.size, src.size)
        t0 = time.perf_counter()
        _libc.memmove(self.addr, src.addr, n)
        return n / (time.perf_counter() - t0) / 1e9
