#!/bin/bash
# SPDX-License-Identifier: MIT
# abi.headers: every include/cpr/*.h, found by glob when the test runs (a new header is
# covered without touching this file), must
#   - compile on its own, twice included, as C99 with -pedantic -Werror -Wall -Wextra;
#   - compile on its own as C++11 with -pedantic -Werror, with every CPR_API function it
#     declares referenced, and those references must be to unmangled (extern "C") names;
#   - define nothing: all the objects link together (ld -r) without a clash and export
#     no symbol of their own;
#   - pull in no glib or json-c header;
#   - be included by the umbrella include/cpr/cpr.h.
#
# Usage: tests/abi/headers.sh SRC_DIR WORK_DIR [CC [CXX]]
set -uo pipefail

src=$1 work=$2 CC=${3:-cc} CXX=${4:-}
[[ -n $CXX ]] || CXX=$(command -v g++ || command -v c++ || true)
fail=0
bad() { echo "FAIL: $*"; fail=1; }

if [[ -z $CXX ]] || ! command -v "$CXX" >/dev/null; then
    echo "FAIL: no C++ compiler found (install g++, part of build-essential)"
    exit 1
fi
rm -rf "$work" && mkdir -p "$work" || exit 1

cflags=(-std=c99 -pedantic -Werror -Wall -Wextra -Wstrict-prototypes -Wmissing-prototypes -I "$src/include")
cxxflags=(-std=c++11 -pedantic -Werror -Wall -Wextra -Wno-deprecated-declarations -I "$src/include")
umbrella=$src/include/cpr/cpr.h
declared=$(CC=$CC "$src/cmake/abi-symbols.sh" declared "$src") || { echo "FAIL: cannot list CPR_API declarations"; exit 1; }

objs=()
n=0
for h in "$src"/include/cpr/*.h; do
    base=$(basename "$h")
    stem=${base%.h}
    id=$(tr -c 'A-Za-z0-9_\n' '_' <<<"$stem")
    n=$((n + 1))

    # C99, twice included (the include guard works)
    printf '#include <cpr/%s>\n#include <cpr/%s>\n' "$base" "$base" >"$work/$stem.c"
    if "$CC" "${cflags[@]}" -c "$work/$stem.c" -o "$work/$stem.c.o" 2>"$work/$stem.c.log"; then
        objs+=("$work/$stem.c.o")
    else
        bad "include/cpr/$base does not compile on its own as C99 -pedantic:"; sed 's/^/    /' "$work/$stem.c.log"
    fi

    # no glib or json-c behind a public header
    deps=$("$CC" "${cflags[@]}" -M "$work/$stem.c" 2>/dev/null | tr ' \\' '\n\n' | grep -E '/(glib|gio|gobject|json-c|json)[^/]*/' || true)
    [[ -z $deps ]] || bad "include/cpr/$base includes glib or json-c headers: $(echo $deps)"

    # C++11: every CPR_API function of this header referenced through a C function pointer
    syms=$(awk -v h="include/cpr/$base" '$2 == h { print $1 }' <<<"$declared")
    {
        printf '#include <cpr/%s>\n#include <cpr/%s>\n' "$base" "$base"
        printf 'typedef void (*cpr_hdrtest_fn)(void);\n'
        printf 'extern const cpr_hdrtest_fn cpr_hdrtest_%s[];\n' "$id"
        printf 'const cpr_hdrtest_fn cpr_hdrtest_%s[] = {\n' "$id"
        for s in $syms; do printf '    reinterpret_cast<cpr_hdrtest_fn>(&%s),\n' "$s"; done
        printf '    0\n};\n'
    } >"$work/$stem.cc"
    if "$CXX" "${cxxflags[@]}" -c "$work/$stem.cc" -o "$work/$stem.cc.o" 2>"$work/$stem.cc.log"; then
        objs+=("$work/$stem.cc.o")
        undef=$(nm -u "$work/$stem.cc.o" | awk '{ print $NF }')
        for s in $syms; do
            grep -qx "$s" <<<"$undef" ||
                bad "include/cpr/$base: $s does not have C linkage in C++ (mangled as $(grep "$s" <<<"$undef" | head -1)): declare it between CPR_BEGIN_DECLS and CPR_END_DECLS"
        done
    else
        bad "include/cpr/$base does not compile on its own as C++11 -pedantic:"; sed 's/^/    /' "$work/$stem.cc.log"
    fi

    if [[ $base != cpr.h ]] && ! grep -Eq "^[[:space:]]*#[[:space:]]*include[[:space:]]*<cpr/$base>" "$umbrella"; then
        bad "include/cpr/$base is not included by the umbrella header: add '#include <cpr/$base>' to include/cpr/cpr.h"
    fi
done

# All objects together: a header that defines a function or object clashes here.
if [[ ${#objs[@]} -gt 0 ]]; then
    if "$CXX" -r -nostdlib -o "$work/all.o" "${objs[@]}" 2>"$work/link.log"; then
        defined=$(nm --defined-only "$work/all.o" | awk '$2 ~ /^[A-Z]$/ { print $3 }' | grep -v '^cpr_hdrtest_' || true)
        [[ -z $defined ]] || bad "public headers define symbols (use static inline, or declare CPR_API and define in lib/): $(echo $defined)"
    else
        bad "the header test objects do not link together:"; sed 's/^/    /' "$work/link.log"
    fi
fi

if [[ $fail -eq 0 ]]; then
    echo "ok: $n headers compile alone as C99 -pedantic and C++11 -pedantic, with C linkage," \
         "define nothing, include no glib/json-c and are all in cpr/cpr.h"
fi
exit $fail
