# SPDX-License-Identifier: MIT
"""Migration channels as QMP's `migrate` and -incoming spell them."""


def unix_channel(kind, path):
    """A channel of `kind` ("main" or "cpr") on a UNIX socket at path."""
    return {"channel-type": kind, "addr": {"transport": "socket", "type": "unix", "path": path}}
