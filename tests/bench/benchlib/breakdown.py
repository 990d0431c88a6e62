# SPDX-License-Identifier: MIT
"""The pause breakdown (docs/migration.md, "Pause breakdown"): the steps libcpr and cpr-vmm
record (QMP x-query-cpr-trace), from both processes, merged on their common clock.

Every step is a CLOCK_MONOTONIC time in ns, the clock Python's time.monotonic_ns() reads too,
so the bench adds its own steps ("bench.quit-sent", "bench.exited", "bench.spawned") to the
same timeline. Each step is named after its side: "old." for the process (or image) that gave
the guest up, "new." for the one that took it. Offsets are in ms from the old side's
"stop-requested": negative before the stop (work done while the guest ran), positive inside
the pause.
"""
import statistics
import time

STOP = "old.stop-requested"


def query(vm):
    """The VMM's trace: [(t_ns, step, pid)], oldest first."""
    t = vm.qmp("x-query-cpr-trace")
    return [(s["t-ns"], s["step"], s["pid"]) for s in t["steps"]]


def bench_step(name):
    return (time.monotonic_ns(), "bench." + name, 0)


def last_migration(steps):
    """The steps of the last migration of a source: from its last migrate-start on, or from
    the VMM's migrate-requested before it (cpr-vmm's own work between the command and the job,
    such as cpr-reboot's teardown helper)."""
    starts = [i for i, s in enumerate(steps) if s[1] == "migrate-start"]
    if not starts:
        return steps
    asked = [i for i, s in enumerate(steps[:starts[-1]]) if s[1] == "migrate-requested"]
    return steps[asked[-1] if asked else starts[-1]:]


def label(steps, side):
    return [(t, f"{side}.{name}", pid) for t, name, pid in steps]


def split_exec(steps):
    """cpr-exec: one trace with the old image's steps (up to and with "exec") and the new
    image's, same pid. The new image's own steps are the ones after the exec."""
    execs = [t for t, name, _ in steps if name == "exec"]
    if not execs:
        return [], steps
    t_exec = execs[-1]
    old = [s for s in steps if s[0] <= t_exec]
    new = [s for s in steps if s[0] > t_exec]
    return last_migration(old), new


def offsets(*parts):
    """{step: ms from the old side's stop-requested}, the steps merged by time. A step that
    repeats keeps its last time."""
    merged = sorted((s for p in parts for s in p), key=lambda s: s[0])
    t0 = next((t for t, name, _ in merged if name == STOP), None)
    if t0 is None:
        return {}
    return {name: round((t - t0) / 1e6, 3) for t, name, _ in merged}


def line(off):
    """One run's breakdown for the log, in time order."""
    return ", ".join(f"{k} {v:+.2f}" for k, v in sorted(off.items(), key=lambda kv: kv[1]))


def medians(runs):
    """{step: median ms} over the runs that have the step, in time order of the medians."""
    steps = {}
    for off in runs:
        for k, v in (off or {}).items():
            steps.setdefault(k, []).append(v)
    med = {k: round(statistics.median(v), 3) for k, v in steps.items()}
    return dict(sorted(med.items(), key=lambda kv: kv[1]))
