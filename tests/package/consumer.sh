#!/bin/bash
# SPDX-License-Identifier: MIT
# package.consumer: installs the build to a temporary prefix, builds examples/consumer
# against that installed copy (pkg-config + Makefile, find_package + CMake, and the static
# archive both ways when the build installs it), runs each and checks what it prints. Then
# builds examples/mini_vmm.c, the example VMM of docs/integration.md, the same way and runs
# its four commands: cpr-transfer between two processes, a snapshot and its restore.
#
# Usage: tests/package/consumer.sh BUILD_DIR SRC_DIR WORK_DIR CC [EXTRA_CFLAGS] [STATIC=ON|OFF]
set -uo pipefail

build=$1 src=$2 work=$3 cc=$4 extra=${5:-} static=${6:-OFF}
prefix=$work/prefix
fail=0
bad() { echo "FAIL: $*"; fail=1; }
step() { echo "== $*"; }

rm -rf "$work" && mkdir -p "$work" || exit 1

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log"; echo "FAIL: install"; exit 1; }

# What the install must contain.
pc=$(find "$prefix" -name libcpr.pc | head -n1)
cfg=$(find "$prefix" -name libcprConfig.cmake | head -n1)
so=$(find "$prefix" -name 'libcpr.so.1' | head -n1)
[[ -n $pc ]] || bad "libcpr.pc not installed"
[[ -n $cfg ]] || bad "libcprConfig.cmake not installed"
[[ -n $(find "$prefix" -name libcprConfigVersion.cmake) ]] || bad "libcprConfigVersion.cmake not installed"
[[ -n $so ]] || bad "libcpr.so.1 not installed"
[[ -f $prefix/include/cpr/cpr.h ]] || bad "include/cpr/cpr.h not installed"
for h in "$src"/include/cpr/*.h; do
    [[ -f $prefix/include/cpr/$(basename "$h") ]] || bad "include/cpr/$(basename "$h") not installed"
done
[[ -n $(find "$prefix" -path '*/include/*' -name '*.h' ! -path '*/include/cpr/*') ]] &&
    bad "headers installed outside include/cpr/: $(find "$prefix" -path '*/include/*' -name '*.h' ! -path '*/include/cpr/*')"
if [[ $static == ON ]]; then
    [[ -n $(find "$prefix" -name libcpr.a) ]] || bad "CPR_BUILD_STATIC=ON but libcpr.a not installed"
else
    [[ -z $(find "$prefix" -name libcpr.a) ]] || bad "libcpr.a installed without CPR_BUILD_STATIC"
fi
[[ $fail -eq 0 ]] || exit 1
libdir=$(dirname "$so")

export PKG_CONFIG_PATH=$(dirname "$pc")
export CMAKE_PREFIX_PATH=$prefix
export LD_LIBRARY_PATH=$libdir

step "pkg-config libcpr: $(pkg-config --modversion libcpr) $(pkg-config --cflags --libs libcpr)"
[[ $(pkg-config --variable=includedir libcpr) -ef $prefix/include ]] ||
    bad "libcpr.pc's includedir is not the install prefix's include/"
# A shared consumer needs no glib or json-c development files (docs/abi.md, "Dependencies of
# a consumer"); a static one gets their link names from Libs.private.
[[ -z $(pkg-config --print-requires libcpr) ]] || bad "libcpr.pc: public Requires should be empty"
[[ -z $(pkg-config --print-requires-private libcpr) ]] ||
    bad "libcpr.pc: Requires.private makes a shared consumer install glib/json-c -dev: $(pkg-config --print-requires-private libcpr)"
for l in -lglib-2.0 -ljson-c -pthread; do
    grep -qe "$l" <<<"$(pkg-config --static --libs libcpr)" || bad "libcpr.pc: --static --libs lacks $l"
done
grep -qe -lglib <<<"$(pkg-config --libs libcpr)" && bad "libcpr.pc: --libs (shared) names glib"
# Only libcpr's .pc visible, as on a machine without libglib2.0-dev and libjson-c-dev.
export PKG_CONFIG_LIBDIR=$PKG_CONFIG_PATH
pkg-config --cflags --libs libcpr >/dev/null 2>"$work/alone.err" ||
    bad "pkg-config --cflags --libs libcpr fails without glib's and json-c's .pc: $(cat "$work/alone.err")"

# run_consumer LABEL BINARY SHARED(yes|no): runs it and checks its output and its linkage.
run_consumer() {
    local label=$1 bin=$2 shared=$3 out
    if [[ $shared == yes ]]; then
        grep -q 'NEEDED.*\[libcpr\.so\.1\]' <<<"$(readelf -d "$bin")" || bad "$label: not linked against libcpr.so.1"
        grep -q "libcpr\.so\.1 => $libdir/" <<<"$(ldd "$bin")" || bad "$label: does not load the installed libcpr.so.1: $(ldd "$bin" | grep libcpr)"
    else
        grep -q 'NEEDED.*libcpr' <<<"$(readelf -d "$bin")" && bad "$label: static build still needs libcpr.so"
    fi
    out=$("$bin" 2>&1)
    local rc=$?
    echo "$out" | sed "s/^/    [$label] /"
    [[ $rc -eq 0 ]] || bad "$label: exit status $rc"
    grep -qx 'consumer: ok' <<<"$out" || bad "$label: did not print 'consumer: ok'"
    grep -q '^normal: refused (-1): migration in mode normal is blocked: disk d0 is on local storage$' <<<"$out" ||
        bad "$label: the blocker's reason is not in the error message"
    grep -q '^cpr-rebot: refused (-22): .*cpr-rebot' <<<"$out" ||
        bad "$label: the error for a bad mode name does not name it"
}

step "pkg-config + Makefile"
cp -r "$src/examples/consumer" "$work/make" && rm -rf "$work/make/build"
if make -C "$work/make" CC="$cc" CFLAGS="-O1 -g $extra" LDFLAGS="$extra" >"$work/make.log" 2>&1; then
    run_consumer pkg-config "$work/make/consumer" yes
else
    cat "$work/make.log"; bad "the pkg-config consumer does not build"
fi

# cmake_consumer LABEL [cmake args]: configure, build, check that the installed package was used.
cmake_consumer() {
    local label=$1; shift
    local dir=$work/$label
    if cmake -S "$src/examples/consumer" -B "$dir" -DCMAKE_C_COMPILER="$cc" \
            -DCMAKE_C_FLAGS="$extra" -DCMAKE_EXE_LINKER_FLAGS="$extra" "$@" >"$dir.log" 2>&1 &&
       cmake --build "$dir" >>"$dir.log" 2>&1; then
        grep -q "libcpr 1\.[0-9.]* from $prefix/" "$dir.log" ||
            bad "$label: find_package did not use the installed copy: $(grep 'libcpr .* from' "$dir.log")"
        return 0
    fi
    cat "$dir.log"; bad "$label: the find_package consumer does not build"
    return 1
}

step "find_package(libcpr CONFIG) + CMake"
cmake_consumer cmake && run_consumer find_package "$work/cmake/consumer" yes

step "find_package(libcpr 99) must be refused (version file)"
mkdir -p "$work/v99" && cat >"$work/v99/CMakeLists.txt" <<'V99'
cmake_minimum_required(VERSION 3.16)
project(v99 LANGUAGES C)
find_package(libcpr 99 CONFIG QUIET)
if(libcpr_FOUND)
  message(FATAL_ERROR "libcpr ${libcpr_VERSION} accepted for a request of 99")
endif()
V99
cmake -S "$work/v99" -B "$work/v99/build" >"$work/v99.log" 2>&1 || { cat "$work/v99.log"; bad "libcpr 99 was accepted"; }

# mini_vmm: the example VMM, one C file, built as its readers would (pkg-config, the shared
# library, no glib or json-c development files in sight).
step "examples/mini_vmm.c: cpr-transfer old -> new, snapshot -> restore"
vm=$work/mini_vmm
mkdir -p "$vm/dir"
# shellcheck disable=SC2046
if "$cc" -std=c11 -Wall -Wextra -Werror $extra $(pkg-config --cflags libcpr) -o "$vm/mini_vmm" \
        "$src/examples/mini_vmm.c" $(pkg-config --libs libcpr) -pthread >"$vm/build.log" 2>&1; then
    grep -q 'NEEDED.*\[libcpr\.so\.1\]' <<<"$(readelf -d "$vm/mini_vmm")" || bad "mini_vmm: not linked against libcpr.so.1"
    # The old VMM first: its migration waits for the new one's cpr channel.
    "$vm/mini_vmm" old "$vm/dir" >"$vm/old.out" 2>&1 &
    old_pid=$!
    "$vm/mini_vmm" new "$vm/dir" >"$vm/new.out" 2>&1 || bad "mini_vmm new failed"
    wait $old_pid || bad "mini_vmm old failed"
    "$vm/mini_vmm" snapshot "$vm/dir" >"$vm/snapshot.out" 2>&1 || bad "mini_vmm snapshot failed"
    "$vm/mini_vmm" restore "$vm/dir" >"$vm/restore.out" 2>&1 || bad "mini_vmm restore failed"
    for f in old new snapshot restore; do sed "s/^/    [$f] /" "$vm/$f.out"; done
    grep -q '^old: normal migration refused: .*disk d0 .* is local storage$' "$vm/old.out" ||
        bad "mini_vmm: the blocker did not refuse normal migration with its reason"
    grep -q '^old: cpr-transfer completed.*run state postmigrate$' "$vm/old.out" || bad "mini_vmm: old did not complete"
    grep -q '^new: RAM block pc.ram re-attached' "$vm/new.out" || bad "mini_vmm: RAM not re-attached"
    grep -q '^new: disk fd is the old process' "$vm/new.out" || bad "mini_vmm: disk fd not preserved"
    grep -q '^new: guest ran on' "$vm/new.out" || bad "mini_vmm: the guest did not run on in the new process"
    grep -q '^restore: guest ran on' "$vm/restore.out" || bad "mini_vmm: the guest did not run on after restore"
else
    cat "$vm/build.log"; bad "examples/mini_vmm.c does not build against the installed copy"
fi

unset PKG_CONFIG_LIBDIR
if [[ $static == ON ]]; then
    step "static: pkg-config --static + Makefile"
    cp -r "$src/examples/consumer" "$work/make-static"
    if make -C "$work/make-static" STATIC=1 CC="$cc" CFLAGS="-O1 -g $extra" LDFLAGS="$extra" >"$work/make-static.log" 2>&1; then
        run_consumer pkg-config-static "$work/make-static/consumer" no
    else
        cat "$work/make-static.log"; bad "the static pkg-config consumer does not build"
    fi
    step "static: find_package(libcpr CONFIG COMPONENTS static) + CMake"
    cmake_consumer cmake-static -DCONSUMER_STATIC=ON && run_consumer find_package-static "$work/cmake-static/consumer" no
else
    echo "== static consumers not built: this build has CPR_BUILD_STATIC=OFF"
fi

if [[ $fail -eq 0 ]]; then
    echo "ok: the installed libcpr builds and runs its consumers"
    rm -rf "$work"
fi
exit $fail
