#!/bin/bash
# SPDX-License-Identifier: MIT
# package.vmm: the reference VMM is a model consumer. Installs the build to a temporary prefix,
# builds tests/vmm out of tree against that installed copy (find_package(libcpr), nothing of
# lib/ on any include path), checks that cpr-vmm loads the installed libcpr.so.1, and runs it:
# -version, then one real migration (the cpr-reboot integration test) when python3 is there.
#
# Usage: tests/package/vmm.sh BUILD_DIR SRC_DIR WORK_DIR CC [EXTRA_FLAGS]
set -uo pipefail

build=$1 src=$(cd "$2" && pwd) work=$3 cc=$4 extra=${5:-}
prefix=$work/prefix
fail=0
bad() { echo "FAIL: $*"; fail=1; }
step() { echo "== $*"; }

rm -rf "$work" && mkdir -p "$work" || exit 1

step "no internal header in tests/vmm"
# Private headers are lib/<layer>/*.h, included as "core/error.h" and the like.
hits=$(grep -rnE '#include "(core|format|channel|handover|migration)/|lib/(core|format|channel|handover|migration)' \
    "$src/tests/vmm" --include='*.c' --include='*.h' --include='CMakeLists.txt')
[[ -z $hits ]] || bad "tests/vmm reaches into lib/: $hits"

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; echo "FAIL: install"; exit 1; }
so=$(find "$prefix" -name 'libcpr.so.1' | head -n1)
[[ -n $so ]] || { echo "FAIL: libcpr.so.1 not installed"; exit 1; }
libdir=$(dirname "$so")

step "cmake -S tests/vmm (out of tree, against $prefix)"
if cmake -S "$src/tests/vmm" -B "$work/vmm" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER="$cc" \
        -DCMAKE_C_FLAGS="$extra" -DCMAKE_EXE_LINKER_FLAGS="$extra" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
        >"$work/vmm.log" 2>&1 && cmake --build "$work/vmm" -j2 >>"$work/vmm.log" 2>&1; then
    grep -q "libcpr 1\.[0-9.]* from $prefix/" "$work/vmm.log" ||
        bad "find_package did not use the installed copy: $(grep 'libcpr .* from' "$work/vmm.log")"
else
    cat "$work/vmm.log"; bad "cpr-vmm does not build against the installed library"
fi
vmm=$work/vmm/cpr-vmm
if [[ -x $vmm ]]; then
    # Nothing of the libcpr tree but its public headers' installed copies on the include path.
    grep -qF -e "-I$src/lib" -e "-isystem $src/lib" -e "-I$src/include" -e "-isystem $src/include" \
        "$work/vmm/compile_commands.json" &&
        bad "the out-of-tree build includes from the source tree: $(grep -o -- "-I[^ ]*" "$work/vmm/compile_commands.json" | sort -u)"
    grep -q 'NEEDED.*\[libcpr\.so\.1\]' <<<"$(readelf -d "$vmm")" || bad "cpr-vmm is not linked against libcpr.so.1"
    ldd_out=$(LD_LIBRARY_PATH=$libdir ldd "$vmm")
    grep -q "libcpr\.so\.1 => $libdir/" <<<"$ldd_out" ||
        bad "cpr-vmm does not load the installed libcpr.so.1: $(grep libcpr <<<"$ldd_out")"
    echo "    $(grep libcpr <<<"$ldd_out")"
    LD_LIBRARY_PATH=$libdir "$vmm" -version | grep -q 'cpr-vmm' || bad "cpr-vmm -version"
    if command -v python3 >/dev/null; then
        step "integration cpr-reboot with the out-of-tree cpr-vmm"
        LD_LIBRARY_PATH=$libdir CPR_VMM_ACCEL=soft python3 "$src/tests/integration/test_modes.py" "$vmm" cpr-reboot \
            >"$work/run.log" 2>&1
        rc=$?
        [[ $rc -eq 0 || $rc -eq 77 ]] || { tail -n 30 "$work/run.log"; bad "cpr-reboot with the out-of-tree cpr-vmm (exit $rc)"; }
    fi
fi

if [[ $fail -eq 0 ]]; then
    echo "ok: cpr-vmm builds against the installed libcpr and runs on libcpr.so.1"
    rm -rf "$work"
fi
exit $fail
