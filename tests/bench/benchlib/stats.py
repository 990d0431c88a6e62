# SPDX-License-Identifier: MIT
"""Rows of the output contract: one JSON object per line, figures as min/median/max with the
unit in the key (min_pause_ms, median_pause_ms, max_pause_ms, ...), as the C benches print them."""
import json
import statistics
import sys


def summarize(name, values):
    vals = [v for v in values if v is not None]
    if not vals:
        return {}
    r = lambda x: round(x, 4) if isinstance(x, float) else x
    return {f"min_{name}": r(min(vals)), f"median_{name}": r(statistics.median(vals)),
            f"max_{name}": r(max(vals))}


def triplets(row):
    """{figure: (min, median, max)} from a row in any of the spellings the benches use:
    min_total_ms (this script, bench_fd: min_ms) or gbps_min (bench_savevm)."""
    out = {}
    for k, v in row.items():
        for stat in ("median",):
            if k.startswith(stat + "_"):
                fig = k[len(stat) + 1:]
                lo, hi = row.get(f"min_{fig}"), row.get(f"max_{fig}")
            elif k.endswith("_" + stat):
                fig = k[:-len(stat) - 1]
                lo, hi = row.get(f"{fig}_min"), row.get(f"{fig}_max")
            else:
                continue
            if isinstance(v, (int, float)) and lo is not None and hi is not None:
                out[fig] = (lo, v, hi)
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class Report:
    """Collects and prints rows; keeps them for the targets and the plot."""

    def __init__(self, out=sys.stdout):
        self.out = out
        self.rows = []
        self.accel = {}  # impl -> the accelerator its VMMs ran on, stamped on its measured rows
        self.stamps = {}  # impl -> other keys of how its VMMs ran (e.g. affinity), on its rows

    def emit(self, row):
        self.rows.append(row)
        print(json.dumps(row, sort_keys=False), file=self.out, flush=True)

    def figures(self, bench, impl, mode, ram_bytes, runs, extra=None, **series):
        """A measured row: `series` maps a figure name with its unit (pause_ms) to the values of
        each run."""
        row = {"bench": bench, "impl": impl, "mode": mode, "ram_bytes": ram_bytes,
               "runs": len(runs) if isinstance(runs, list) else runs}
        row.update(extra or {})
        if impl in self.accel:
            row["accel"] = self.accel[impl]
        row.update(self.stamps.get(impl, {}))
        for name, values in series.items():
            row.update(summarize(name, values))
        row["loadavg_1m"] = loadavg()  # the machine is shared: say how busy it was
        self.emit(row)
        return row

    def skipped(self, bench, impl, mode, ram_bytes, reason, extra=None):
        row = {"bench": bench, "impl": impl, "mode": mode, "ram_bytes": ram_bytes, "runs": 0}
        row.update(extra or {})
        row["skipped"] = reason
        self.emit(row)
        return row

    def find(self, **match):
        return [r for r in self.rows
                if "target" not in r and all(r.get(k) == v for k, v in match.items())]
