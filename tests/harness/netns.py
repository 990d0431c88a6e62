# SPDX-License-Identifier: MIT
"""Two "hosts" on one machine: two network namespaces joined by a veth pair, for migrations over
tcp between VMMs that share no network stack (tests/integration/test_hosts.py, the bench).

    with TwoHosts(rate="1gbit") as hosts:          # rate=None: no shaping
        src = Vmm(binary, wd, "src", args, wrap=hosts.wrap("a"))
        dst = Vmm(binary, wd, "dst", args + ["-incoming", f"tcp:{hosts.addr('b')}:4444"], wrap=hosts.wrap("b"))

Host a has 10.203.0.1/30, host b 10.203.0.2/30 (each namespace has only its own loopback and
its end of the pair, so the addresses clash with nothing). A rate shapes both ends with a token
bucket (`tc qdisc ... tbf`; netem is not in these kernels).

Everything is named cprt<PID><a|b> after the test process that made it, and removed by the
context manager's exit, by an atexit hook when the test dies by an exception, and, for a run that
was killed outright, by the next run: cleanup_leftovers() removes every cprt namespace whose
process is gone. Nothing outside those namespaces is touched (a namespace's removal takes its
veth end, and with it the pair, along).

Where namespaces cannot be made (not root, no CONFIG_NET_NS, no `ip`), TwoHosts() raises
Unavailable with the reason, for the test to print and skip.
"""
import atexit
import os
import re
import shutil
import subprocess

PREFIX = "cprt"
SUBNET = "10.203.0"
ADDR = {"a": f"{SUBNET}.1", "b": f"{SUBNET}.2"}


class Unavailable(Exception):
    """Network namespaces cannot be used here; str() says why."""


def _ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def _namespaces():
    r = _ip("netns", "list", check=False)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def cleanup_leftovers():
    """Removes the namespaces of earlier runs whose process is gone (a run killed outright)."""
    for ns in _namespaces():
        m = re.fullmatch(rf"{PREFIX}(\d+)[ab]", ns)
        if m and not _pid_alive(int(m.group(1))):
            _ip("netns", "del", ns, check=False)


def unavailable_reason():
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if not shutil.which("ip") or not shutil.which("tc"):
        return "ip or tc is missing (install iproute2)"
    if not os.path.exists("/proc/self/ns/net"):
        return "the kernel has no network namespaces (CONFIG_NET_NS)"
    return None


class TwoHosts:
    """Two namespaces a and b joined by a veth pair; see the module's docstring."""

    def __init__(self, rate=None, burst="256kb"):
        self.rate = rate
        self.burst = burst
        tag = f"{PREFIX}{os.getpid()}"
        self.ns = {"a": f"{tag}a", "b": f"{tag}b"}
        self.made = []

    def addr(self, side):
        return ADDR[side]

    def wrap(self, side):
        """The command prefix that runs a program on host `side` (`ip netns exec` execs it in
        place: the pid is the program's)."""
        return ["ip", "netns", "exec", self.ns[side]]

    def run(self, side, *cmd):
        """Runs a command on host `side`; returns its CompletedProcess (text)."""
        return subprocess.run(self.wrap(side) + list(cmd), capture_output=True, text=True)

    def __enter__(self):
        why = unavailable_reason()
        if why:
            raise Unavailable(why)
        cleanup_leftovers()
        atexit.register(self.remove)
        try:
            for side in ("a", "b"):
                r = _ip("netns", "add", self.ns[side], check=False)
                if r.returncode != 0:
                    raise Unavailable(f"ip netns add: {r.stderr.strip()}")
                self.made.append(self.ns[side])
            a, b = self.ns["a"], self.ns["b"]
            _ip("link", "add", a, "netns", a, "type", "veth", "peer", "name", b, "netns", b)
            for side in ("a", "b"):
                ns = self.ns[side]
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "addr", "add", f"{ADDR[side]}/30", "dev", ns)
                _ip("-n", ns, "link", "set", ns, "up")
                if self.rate:
                    r = self.run(side, "tc", "qdisc", "add", "dev", ns, "root", "tbf", "rate", self.rate,
                                 "burst", self.burst, "latency", "100ms")
                    if r.returncode != 0:
                        raise Unavailable(f"tc tbf on {ns}: {r.stderr.strip()}")
            r = self.run("a", "ping", "-c", "1", "-W", "5", ADDR["b"]) if shutil.which("ping") else None
            if r is not None and r.returncode != 0:
                raise RuntimeError(f"host a cannot reach host b: {r.stdout.strip()} {r.stderr.strip()}")
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def remove(self):
        """Deletes the namespaces made here (idempotent)."""
        while self.made:
            _ip("netns", "del", self.made.pop(), check=False)
        atexit.unregister(self.remove)

    def link(self, side, up):
        """Takes host `side`'s end of the pair down (the link dies: packets go nowhere, no
        reset) or up again."""
        _ip("-n", self.ns[side], "link", "set", self.ns[side], "up" if up else "down")

    def qdisc(self, side):
        """Host `side`'s root qdisc on its veth end: {"kind", "rate", "sent", "overlimits"}."""
        out = self.run(side, "tc", "-s", "qdisc", "show", "dev", self.ns[side], "root").stdout
        kind = out.split()[1] if len(out.split()) > 1 else ""
        rate = re.search(r" rate (\S+)", out)
        sent = re.search(r"Sent (\d+) bytes", out)
        over = re.search(r"overlimits (\d+)", out)
        return {"kind": kind, "rate": rate.group(1) if rate else None, "sent": int(sent.group(1)) if sent else 0,
                "overlimits": int(over.group(1)) if over else 0}

    def describe(self):
        shaping = f", each end shaped to {self.rate} (tbf)" if self.rate else ""
        return f"namespaces {self.ns['a']} ({ADDR['a']}) and {self.ns['b']} ({ADDR['b']}) over a veth pair{shaping}"
