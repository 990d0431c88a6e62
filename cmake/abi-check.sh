#!/bin/bash
# SPDX-License-Identifier: MIT
# Compares a built libcpr.so with the ABI baseline abi/libcpr.abi (abigail-tools' abidiff).
#
# Usage: cmake/abi-check.sh BUILD_DIR            compare; fail on an incompatible change
#        cmake/abi-check.sh BUILD_DIR --update   regenerate abi/libcpr.abi from BUILD_DIR
#
# It builds nothing: build first (cmake --build BUILD_DIR). The library must carry debug
# info (the default RelWithDebInfo build does). Exit status: 0 compatible (added functions,
# added enumerators, growth at the end of a size-versioned struct), 1 any other change
# (abidiff bit 8 "incompatible", or bit 4 "change" left after filtering) or an error,
# 77 abidiff/abidw missing or no debug info (ctest reports the test as skipped).
# The baseline changes only on purpose, in a commit of its own (docs/abi.md).
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-}
mode=${2:-check}
baseline=$here/abi/libcpr.abi
suppr=$here/abi/libcpr.suppr
headers=$here/include

if [[ -z $build || ! -d $build ]]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 1
fi
lib=$(find "$build" -maxdepth 3 -name 'libcpr.so' \( -type l -o -type f \) | head -n1)
if [[ -z $lib ]]; then
    echo "abi-check: no libcpr.so under $build: build it first (cmake --build $build)"
    exit 1
fi
lib=$(readlink -f "$lib")
if ! grep -q '\.debug_info' <<<"$(readelf -S "$lib")"; then
    # A Release build cannot be compared; ctest reports a skip, tests/run-all a failure.
    echo "SKIP: $lib has no debug info: configure with CMAKE_BUILD_TYPE RelWithDebInfo (the default) or Debug"
    exit 77
fi

case $mode in
--update)
    command -v abidw >/dev/null || { echo "abi-check: abidw not found: apt-get install abigail-tools"; exit 77; }
    mkdir -p "$(dirname "$baseline")"
    abidw --headers-dir "$headers" --drop-private-types --no-corpus-path --no-comp-dir-path --short-locs \
        --out-file "$baseline.tmp" "$lib" || { rm -f "$baseline.tmp"; echo "abi-check: abidw failed"; exit 1; }
    mv "$baseline.tmp" "$baseline"
    echo "abi-check: wrote ${baseline#$here/} from $lib"
    echo "abi-check: commit it on its own, saying why the ABI changed (docs/abi.md)"
    exit 0 ;;
check) ;;
*)
    echo "abi-check: unknown option '$mode' (only --update)"; exit 1 ;;
esac

command -v abidiff >/dev/null || { echo "SKIP: abidiff not found: apt-get install abigail-tools"; exit 77; }
if [[ ! -f $baseline ]]; then
    echo "abi-check: no baseline ${baseline#$here/}: make one with cmake/abi-check.sh $build --update"
    exit 1
fi

args=(--no-added-syms --headers-dir2 "$headers" --drop-private-types)
[[ -f $suppr ]] && args+=(--suppressions "$suppr")
out=$(abidiff "${args[@]}" "$baseline" "$lib" 2>&1)
rc=$?
[[ -n $out ]] && echo "$out"
# abidiff's status is a bit mask: 1 error, 2 usage error, 4 ABI change, 8 incompatible change.
if (( rc & 3 )); then
    echo "abi-check: abidiff failed (status $rc)"
    exit 1
elif (( rc & 8 )); then
    echo "abi-check: INCOMPATIBLE ABI change against ${baseline#$here/} (abidiff status $rc)."
    echo "  Undo the change, or, for a deliberate break, follow docs/abi.md (new SONAME) and"
    echo "  regenerate the baseline in its own commit: cmake/abi-check.sh $build --update"
    exit 1
elif (( rc & 4 )); then
    # abidiff calls this a mere "change", but after its default filtering of harmless
    # changes (enumerators added, added functions) and our suppressions, what is left
    # (an enumerator's value, a member moved inside a struct, a parameter's type) breaks
    # callers built against the old headers just as well.
    echo "abi-check: ABI CHANGE against ${baseline#$here/} (abidiff status $rc): not allowed."
    echo "  Only added functions, added enumerators and growth at the end of a size-versioned"
    echo "  struct (abi/libcpr.suppr) pass. If the change is deliberate and compatible, regenerate"
    echo "  the baseline in its own commit: cmake/abi-check.sh $build --update (docs/abi.md)"
    exit 1
else
    echo "abi-check: ABI identical to ${baseline#$here/}"
fi
exit 0
