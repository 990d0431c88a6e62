# SPDX-License-Identifier: MIT
"""Migration channels as QMP's `migrate` and -incoming spell them."""
import socket


def unix_channel(kind, path):
    """A channel of `kind` ("main" or "cpr") on a UNIX socket at path."""
    return {"channel-type": kind, "addr": {"transport": "socket", "type": "unix", "path": path}}


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
