# SPDX-License-Identifier: MIT
"""--plot: guest pause against RAM size per mode and implementation (log scale), and a
throughput panel. matplotlib comes from Debian's python3-matplotlib, installed when missing."""
import json
import os
import subprocess
import sys

from .host import apt_install, log
from .stats import triplets

# Debian's own interpreter, which sees python3-matplotlib; the bench may run under another
# python3 (pyenv, a venv) that does not. Then the plot is drawn by this module run there.
DEBIAN_PYTHON = "/usr/bin/python3"


def _import_matplotlib():
    try:
        import matplotlib
        return matplotlib
    except ImportError:
        return None


def _matplotlib():
    matplotlib = _import_matplotlib()
    if matplotlib is None and apt_install("python3-matplotlib"):
        matplotlib = _import_matplotlib()
    if matplotlib is None:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _series(rows, fig, key):
    """{label: [(GiB, median, min, max)]} from the rows that have `fig`."""
    out = {}
    for r in rows:
        t = triplets(r).get(fig)
        if t is None or not r.get("ram_bytes"):
            continue
        out.setdefault(key(r), []).append((r["ram_bytes"] / (1 << 30), t[1], t[0], t[2]))
    return {k: sorted(v) for k, v in out.items()}


def _draw(ax, series):
    for label, pts in sorted(series.items()):
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        style = "-o" if label.startswith("libcpr") else "--s"
        ax.errorbar(xs, ys, yerr=err, fmt=style, capsize=3, label=label)


def _finish(ax, title, ylabel, ncol):
    """Both panels: log-log against RAM size, legend below."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("guest RAM (GiB)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if not ax.get_legend_handles_labels()[1]:
        ax.text(0.5, 0.5, "not measured in this run", ha="center", va="center",
                transform=ax.transAxes, color="gray")
        return
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=ncol)


def _impl(r):
    """The implementation, with its accelerator when it was not KVM (e.g. "libcpr [soft]"), and
    "[pinned]" when its VMMs ran with -x-affinity."""
    return (r["impl"] + (f" [{r['accel']}]" if r.get("accel", "kvm") != "kvm" else "")
            + (" [pinned]" if r.get("affinity") else ""))


def _write_elsewhere(rows, path, machine, title_extra):
    """Draws in Debian's python3 (`python3 -m benchlib.plot`, the rows on stdin)."""
    if not os.path.exists(DEBIAN_PYTHON) or os.path.realpath(sys.executable) == os.path.realpath(DEBIAN_PYTHON):
        return False
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    job = json.dumps({"rows": rows, "path": os.path.abspath(path), "machine": machine, "title_extra": title_extra})
    r = subprocess.run([DEBIAN_PYTHON, "-m", "benchlib.plot"], input=job, text=True, cwd=here)
    return r.returncode == 0


def write(rows, path, machine, title_extra=""):
    plt = _matplotlib()
    if plt is None:
        if _write_elsewhere(rows, path, machine, title_extra):
            return True
        log("no matplotlib: plot not written")
        return False
    plt.rcParams["axes.prop_cycle"] = plt.cycler(color=plt.get_cmap("tab20").colors)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 9))
    pause_rows = [r for r in rows if r.get("bench") in ("cpr-transfer", "cpr-exec", "restart", "live-migration")]
    _draw(ax1, _series(pause_rows, "pause_ms",
                       lambda r: f"{_impl(r)} {r['mode'] if r['bench'] == 'restart' and r['impl'] == 'libcpr' else r['bench']}"
                                 f" ({r.get('variant', '')})"))
    ax1.axhline(1.0, color="red", linestyle=":", linewidth=1, label="cpr-transfer/cpr-exec target 1 ms")
    _finish(ax1, "Guest pause", "guest-visible pause (ms, median, bars min..max)", 2)

    tp = _series([r for r in rows if r.get("bench") in ("snapshot", "restore")], "gbps",
                 lambda r: f"{_impl(r)} {r['bench']} {r.get('variant', '')}")
    refs = _series([r for r in rows if r.get("bench") == "snapshot" and r.get("impl") == "libcpr"],
                   "write_gbps", lambda r: f"write(2) {r.get('variant', '').split(':')[-1]}")
    mc = _series([r for r in rows if r.get("bench") == "snapshot" and r.get("impl") == "libcpr"
                  and r.get("variant") == "file:shm"], "memcpy_gbps", lambda r: "memcpy")
    for r in (r for r in rows if r.get("bench") == "savevm"):
        for name in (f for f in triplets(r) if f.endswith("gbps") and f != "memcpy_gbps"):
            tp.update(_series([r], name, lambda r: f"libcpr savevm {r.get('mode')} (bench_savevm)"))
    _draw(ax2, tp)
    for label, pts in list(refs.items()) + list(mc.items()):
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], ":", color="gray" if "write" in label else "black",
                 marker="x", label=label)
    _finish(ax2, "Snapshot and restore throughput", "GB/s (RAM bytes / time, median)", 3)
    fig.suptitle(f"libcpr vs QEMU - {machine.get('cores')} cores, "
                 f"{machine.get('mem_bytes', 0) / (1 << 30):.0f} GiB, kernel {machine.get('kernel')}, "
                 f"{machine.get('kvm')} {title_extra}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    log(f"plot written to {path}")
    return True


if __name__ == "__main__":
    # Run by _write_elsewhere() in Debian's python3.
    job = json.load(sys.stdin)
    sys.exit(0 if write(job["rows"], job["path"], job["machine"], job["title_extra"]) else 1)
