# SPDX-License-Identifier: MIT
"""Markdown tables from the JSON lines of a run (for docs/benchmarks.md and the README)."""
import json

from .stats import triplets

FIGS = ("pause_ms", "blackout_ms", "total_ms", "save_ms", "quit_ms", "start_ms", "load_ms", "downtime_ms", "gbps",
        "ratio_write", "ratio_memcpy", "write_gbps", "passes", "bytes", "file_bytes", "ms")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def _figures(row):
    t = triplets(row)
    order = [f for f in FIGS if f in t] + sorted(f for f in t if f not in FIGS)
    return "; ".join(f"{f} " + "/".join(_fmt(x) for x in t[f]) for f in order)


def _variant(r):
    if "variant" in r:
        return str(r["variant"])
    parts = [f"{k} {r[k]}" for k in ("fds", "page_size", "prefault") if k in r]
    return ", ".join(parts)


def render(lines):
    rows, targets = [], []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        obj = json.loads(line)
        (targets if "target" in obj else rows).append(obj)
    out = ["| bench | impl | mode | variant | RAM | runs | figures (min/median/max) |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        ram = f"{r['ram_bytes'] / (1 << 30):g} GiB" if r.get("ram_bytes") else "-"
        if "skipped" in r:
            figs = f"skipped: {r['skipped']}"
        else:
            figs = _figures(r)
            if r.get("failed_runs"):
                figs += f"; {r['failed_runs']} failed run(s): {r.get('error', '')}"
        variant = _variant(r)
        # Figures measured without KVM, or with pinned VMMs, say so next to the implementation.
        impl = r["impl"] + (f" ({r['accel']})" if r.get("accel", "kvm") != "kvm" else "")
        impl += f" (-x-affinity {r['affinity']})" if r.get("affinity") else ""
        out.append(f"| {r['bench']} | {impl} | {r['mode']} | {variant} | {ram} | {r['runs']} | {figs} |")
    out += ["", "| target | value | limit | pass |", "|---|---|---|---|"]
    for t in targets:
        val = _fmt(t["value"]) if t.get("value") is not None else f"- ({t.get('skipped', '')})"
        name = t["target"]
        if t.get("accel"):
            name += " (" + ", ".join(f"{k} {v}" for k, v in sorted(t["accel"].items())) + ")"
        if t.get("affinity"):
            name += f" (-x-affinity {t['affinity']})"
        out.append(f"| {name} | {val} | {t.get('limit', '')} | {'yes' if t['pass'] else 'no'} |")
    return "\n".join(out) + "\n"
