# SPDX-License-Identifier: MIT
"""What the sanitizers and valgrind found in the VMMs' logs of a work directory."""
import os
import re

SANITIZER_RE = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error: ")


def sanitizer_reports(workdir):
    """Names of the logs in workdir in which a sanitizer reported something."""
    bad = []
    for name in sorted(os.listdir(workdir)):
        if name.endswith(".log"):
            with open(os.path.join(workdir, name), errors="replace") as f:
                if SANITIZER_RE.search(f.read()):
                    bad.append(name)
    return bad


# fds that glib opens once per process and never closes (the default main context's and the
# worker thread's wakeup eventfds): not leaks of ours.
_GLIB_SINGLETON_FDS = ("g_main_context_default", "g_unix_signal_add", "g_child_watch_source_new",
                       "g_get_worker_context")


def _valgrind_fd_leaks(text):
    """The fds a process left open at exit (valgrind --track-fds), from its last summary."""
    at = text.rfind("FILE DESCRIPTORS:")
    if at < 0:
        return []
    leaks = []
    # Blocks: "Open file descriptor N: ..." / "Open AF_UNIX socket N: ..." then its stack.
    for block in re.split(r"==\d+== (?=Open )", text[at:])[1:]:
        head = block.split("\n", 1)[0]
        if "<inherited from parent>" in block or any(f in block for f in _GLIB_SINGLETON_FDS):
            continue
        leaks.append(head.strip())
    return leaks


def valgrind_reports(workdir):
    """What valgrind found in each VMM of workdir (CPR_VMM_VALGRIND): a list of problems, one
    per log: memory errors or definite/indirect leaks, fds left open at exit, or no summary at
    all (the process was killed, so its exit was never checked)."""
    bad = []
    for name in sorted(os.listdir(workdir)):
        if not name.endswith(".vg.log"):
            continue
        with open(os.path.join(workdir, name), errors="replace") as f:
            text = f.read()
        sums = [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) errors", text)]
        if not sums:
            bad.append(f"{name}: no valgrind summary (the VMM did not exit by itself)")
        elif any(sums):
            bad.append(f"{name}: {max(sums)} memcheck error(s) or leak(s)")
        leaks = _valgrind_fd_leaks(text)
        if leaks:
            bad.append(f"{name}: {len(leaks)} fd(s) open at exit: {'; '.join(leaks)}")
    return bad
