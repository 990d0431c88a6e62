# SPDX-License-Identifier: MIT
"""The C benchmarks of the other issues (bench_fd, bench_savevm): run them and pass their JSON
lines through into the report, rows and targets alike."""
import json
import os
import subprocess

from .host import log


def find_build_file(build_dir, rel):
    path = os.path.join(build_dir, rel)
    return path if os.access(path, os.X_OK) else None


def run_c_bench(report, name, path, args, timeout):
    """Runs one C bench; its JSON lines go into the report. Returns the targets it printed."""
    if path is None:
        report.skipped(name, "libcpr", "n/a", 0, f"{name} is not built (tests/bench/{name}.c "
                       "comes from another branch, or the build dir is elsewhere: --build-dir)")
        return []
    log(f"running {os.path.basename(path)} {' '.join(args)}")
    try:
        r = subprocess.run([path] + args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        report.skipped(name, "libcpr", "n/a", 0, f"{name} took longer than {timeout} s")
        return []
    targets = []
    for line in r.stdout.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "target" in obj:
            targets.append(obj)
        else:
            obj["native"] = True  # no VMM, no guest: accel and affinity do not apply
            report.emit(obj)
    if r.returncode != 0:
        report.skipped(name, "libcpr", "n/a", 0,
                       f"{name} exited {r.returncode}: {r.stderr.strip()[-300:]}")
    return targets
