# SPDX-License-Identifier: MIT
"""A test script's cases run one by one: each in a work directory of its own, its VMMs shut
down and their logs checked for sanitizer reports, every case reported before the verdict."""
import os
import shutil
import sys
import tempfile

from .guest import check, log
from .process import kill_all, shutdown_all
from .reports import sanitizer_reports


def run_cases(doc, prefix, tests):
    """tests: {name: fn(binary, wd)}; argv: the script and CPR_VMM_BINARY. Returns the exit
    status: 0 all passed, 1 some failed (work directories of failed cases kept), 2 usage."""
    if len(sys.argv) != 2:
        print(doc)
        return 2
    binary = os.path.abspath(sys.argv[1])
    failed = []
    for name, fn in tests.items():
        wd = tempfile.mkdtemp(prefix=f"{prefix}-{name}-")
        log(f"=== {name}")
        try:
            fn(binary, wd)
            shutdown_all()
            bad = sanitizer_reports(wd)
            check(not bad, f"no sanitizer report in the VMMs' logs {bad}")
            shutil.rmtree(wd, ignore_errors=True)
        except Exception as e:  # noqa: BLE001 - report every case, then fail
            log(f"FAIL {name}: {e}; work directory kept: {wd}")
            failed.append(name)
        finally:
            kill_all()
    log(f"failed: {failed}" if failed else "all passed")
    return 1 if failed else 0
