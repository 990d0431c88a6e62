# SPDX-License-Identifier: MIT
"""A test script's cases run one by one: each in a work directory of its own, its VMMs shut
down and their logs checked for sanitizer reports, every case reported before the verdict."""
import os
import shutil
import sys
import tempfile

from .guest import check, finish_workdir, log, skip_software_twin
from .process import VALGRIND, kill_all, shutdown_all
from .reports import sanitizer_reports, valgrind_reports


def check_logs(wd):
    """No sanitizer report in the VMMs' logs; under valgrind (tests/run-memcheck) no memory
    error, leak or fd left open either."""
    bad = sanitizer_reports(wd)
    check(not bad, f"no sanitizer report in the VMMs' logs {bad}")
    if VALGRIND:
        bad = valgrind_reports(wd)
        check(not bad, "valgrind: no memory error, no leak, no fd left open in any VMM" +
              "".join(f"\n  {b}" for b in bad))


def run_named_case(doc, prefix, tests):
    """tests: {name: fn(binary, wd)}; argv: the script, CPR_VMM_BINARY and one case name.
    Runs that case in a work directory of its own (kept after a failure), then checks the
    VMMs' logs. Returns the exit status: 0 passed, 2 usage (a failure raises)."""
    if len(sys.argv) != 3 or sys.argv[2] not in tests:
        print(doc)
        return 2
    binary = os.path.abspath(sys.argv[1])
    if not os.access(binary, os.X_OK):
        print(f"{binary}: not an executable")
        return 1
    skip_software_twin()
    wd = tempfile.mkdtemp(prefix=f"{prefix}-{sys.argv[2]}-")
    ok = False
    try:
        tests[sys.argv[2]](binary, wd)
        shutdown_all()
        check_logs(wd)
        ok = True
    finally:
        shutdown_all()
        finish_workdir(wd, ok)
    return 0


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
