#!/bin/bash
# SPDX-License-Identifier: MIT
# abi.exports: the dynamic symbol table of the built libcpr.so exports nothing but the
# public API, each symbol under the version node cmake/libcpr.map gives it, and the SONAME
# is libcpr.so.SOVERSION. Reads `objdump -T`, as a user checking the library would.
#
# Usage: tests/abi/exports.sh LIBCPR_SO SRC_DIR SOVERSION [--allow-undefined]
#   --allow-undefined: a CPR_API function declared in a header but not defined in the
#   library is a warning instead of a failure (while a header's .c is still on its way).
set -uo pipefail

lib=$1 src=$2 soversion=$3 allow_undefined=${4:-}
fail=0
bad() { echo "FAIL: $*"; fail=1; }

[[ -f $lib ]] || { echo "FAIL: no library at $lib"; exit 1; }
command -v objdump >/dev/null || { echo "FAIL: objdump not found (binutils)"; exit 1; }

soname=$(objdump -p "$lib" | awk '$1 == "SONAME" { print $2 }')
if [[ $soname == "libcpr.so.$soversion" ]]; then
    echo "ok: SONAME $soname"
else
    bad "SONAME is '${soname}', expected libcpr.so.$soversion"
fi

mapped=$("$src/cmake/abi-symbols.sh" mapped "$src") || { echo "FAIL: cannot read cmake/libcpr.map"; exit 1; }
declared=$("$src/cmake/abi-symbols.sh" declared "$src") || { echo "FAIL: cannot read include/cpr/*.h"; exit 1; }
nodes=$(awk '{ print $2 }' <<<"$mapped" | sort -u)

# Defined dynamic symbols as "NAME VERSION" (objdump -T: ... SECTION SIZE VERSION NAME).
exports=$(objdump -T "$lib" | awk '/^[0-9a-f]+ / && !/\*UND\*/ { print $NF, $(NF - 1) }' | sort -u)
[[ -n $exports ]] || bad "objdump -T shows no defined symbol in $lib"

n=0
while read -r name ver; do
    [[ -n $name ]] || continue
    # the version nodes themselves appear as absolute symbols named after the node
    if [[ $name == "$ver" ]] && grep -qx "$name" <<<"$nodes"; then
        continue
    fi
    n=$((n + 1))
    case $name in
        g_* | glib_* | json_* | json_c_* | lh_* | array_list_* | printbuf_*)
            bad "$name ($ver) is a glib or json-c symbol exported by libcpr: it must stay local"
            continue ;;
        cpr_*) ;;
        *)
            bad "$name ($ver) is exported but is not a cpr_ symbol: mark internal functions static or rely on -fvisibility=hidden"
            continue ;;
    esac
    want=$(awk -v s="$name" '$1 == s { print $2 }' <<<"$mapped")
    if [[ -z $want ]]; then
        bad "$name is exported ($ver) but not listed in cmake/libcpr.map"
    elif [[ $ver != "$want" ]]; then
        bad "$name is exported with version '$ver', expected '$want' (cmake/libcpr.map)"
    fi
    grep -q "^$name " <<<"$declared" ||
        bad "$name is exported but no include/cpr/*.h declares it CPR_API"
done <<<"$exports"

# Every declared function should be in the library.
missing=0
while read -r name hdr; do
    [[ -n $name ]] || continue
    if ! grep -q "^$name " <<<"$exports"; then
        missing=$((missing + 1))
        if ! grep -q "^$name " <<<"$mapped"; then
            bad "$name is declared CPR_API in $hdr but not exported: cmake/libcpr.map does not list it (add it, see abi.map)"
        elif [[ $allow_undefined == --allow-undefined ]]; then
            echo "warning: $name is declared CPR_API in $hdr but not defined in $(basename "$lib")"
        else
            bad "$name is declared CPR_API in $hdr but not defined in $(basename "$lib"): implement it in lib/"
        fi
    fi
done <<<"$declared"

if [[ $fail -eq 0 ]]; then
    echo "ok: $n exported symbols, all cpr_* with their version node from cmake/libcpr.map" \
         "($missing declared but not defined)"
fi
exit $fail
