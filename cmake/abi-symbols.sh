#!/bin/bash
# SPDX-License-Identifier: MIT
# The public symbol list of libcpr, from two sides:
#   - declared: every function (or object) marked CPR_API in include/cpr/*.h, found by
#     running each header through the C preprocessor (so comments, #if and macros are
#     handled) and keeping declarations that carry visibility("default");
#   - mapped:   every name listed under `global:` in a node of cmake/libcpr.map.
#
# Usage: cmake/abi-symbols.sh declared  [SRC_DIR]   prints "SYMBOL include/cpr/HEADER.h"
#        cmake/abi-symbols.sh mapped    [SRC_DIR]   prints "SYMBOL NODE"
#        cmake/abi-symbols.sh check-map [SRC_DIR]   exit 1 unless the two lists are equal
#        cmake/abi-symbols.sh fix-map   [SRC_DIR]   adds missing symbols to the newest node
# SRC_DIR defaults to the checkout this script lives in; CC to cc.
set -euo pipefail

cmd=${1:-}
src=${2:-$(cd "$(dirname "$0")/.." && pwd)}
CC=${CC:-cc}
map=$src/cmake/libcpr.map

die() { echo "abi-symbols: $*" >&2; exit 2; }

# Prints "SYMBOL include/cpr/H.h" for one header's own CPR_API declarations.
declared_in() {
    local h=$1 base pp decl name
    base=$(basename "$h")
    pp=$(printf '#include <cpr/%s>\n' "$base" | "$CC" -E -I "$src/include" -x c -) ||
        die "the preprocessor failed on include/cpr/$base"
    # Keep only lines from this header (not from those it includes), one declaration per
    # line, those with CPR_API's visibility("default"), without their __attribute__s.
    awk -v want="/cpr/$base\"" '
        /^# [0-9]+ "/ { cur = $3; keep = (length(cur) >= length(want) && substr(cur, length(cur) - length(want) + 1) == want); next }
        keep { print }' <<<"$pp" |
        tr '\n' ' ' | tr ';{}' '\n\n\n' |
        { grep 'visibility *( *"default" *)' || true; } |
        sed -E ':a; s/__attribute__ *\(\(([^()]|\([^()]*\))*\)\)//; ta' |
        while IFS= read -r decl; do
            if [[ $decl == *"("* ]]; then
                name=$(sed -E 's/^([^(]*)\(.*/ \1/; s/.*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*$/\1/' <<<"$decl")
            else
                name=$(sed -E 's/\[[^]]*\]//g; s/^/ /; s/.*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*$/\1/' <<<"$decl")
            fi
            [[ $name == cpr_* ]] ||
                die "cannot read the CPR_API declaration in include/cpr/$base: '$(echo $decl)'" \
                    "(write it as: CPR_API <type> cpr_name(<args>);)"
            echo "$name include/cpr/$base"
        done
}

declared() {
    local h
    for h in "$src"/include/cpr/*.h; do
        declared_in "$h"
    done | sort -u
}

# Prints "SYMBOL NODE" for every global name in the version script.
mapped() {
    [[ -f $map ]] || die "no version script at $map"
    tr '\n' ' ' <"$map" | sed -E 's:/\*([^*]|\*+[^*/])*\*+/: :g; s:([{};:]): \1 :g' |
        tr -s ' \t' '\n\n' | grep -v '^$' |
        awk '
            { t[n++] = $0 }
            END {
                node = ""; sect = ""
                for (i = 0; i < n; i++) {
                    if (t[i + 1] == "{" && node == "") { node = t[i]; sect = ""; i++; continue }
                    if ((t[i] == "global" || t[i] == "local") && t[i + 1] == ":") { sect = t[i]; i++; continue }
                    if (t[i] == "}") { node = ""; continue }
                    if (t[i] == ";" || node == "" || sect != "global") continue
                    if (t[i] ~ /[*?\[]/) { printf "WILDCARD %s %s\n", t[i], node; continue }
                    printf "%s %s\n", t[i], node
                }
            }' | sort -u
}

newest_node() {
    mapped_nodes=$(grep -oE '^[[:space:]]*LIBCPR_[0-9]+\.[0-9]+[[:space:]]*\{' "$map" | tr -d ' \t{')
    tail -n1 <<<"$mapped_nodes"
}

# only_in A B: the lines of A ("SYMBOL WHERE") whose symbol is not the first word of a line of B.
only_in() {
    awk 'NR == FNR { if (NF) seen[$1] = 1; next } NF && !($1 in seen)' <(printf '%s\n' "$2") <(printf '%s\n' "$1")
}

check_map() {
    local d m rc=0 node
    d=$(declared) || exit 2
    m=$(mapped) || exit 2
    node=$(newest_node)
    if grep -q '^WILDCARD ' <<<"$m"; then
        grep '^WILDCARD ' <<<"$m" | while read -r _ pat n; do
            echo "cmake/libcpr.map: node $n lists the pattern '$pat': list every symbol by name, so that each one stays in the node of the release that added it"
        done
        rc=1
    fi
    # declared but not mapped: the symbol would be hidden (local: *)
    while read -r sym hdr; do
        echo "$sym is declared CPR_API in $hdr but missing from cmake/libcpr.map:" \
             "add the line '    $sym;' under 'global:' in node $node (the newest, unreleased node;" \
             "a released node never changes), or run: cmake/abi-symbols.sh fix-map"
        rc=1
    done < <(only_in "$d" "$m")
    # mapped but not declared
    while read -r sym n; do
        [[ $sym != WILDCARD ]] || continue
        echo "$sym is listed in cmake/libcpr.map (node $n) but no include/cpr/*.h declares it CPR_API:" \
             "declare it, or, if node $n was never released, delete its line there" \
             "(removing a released symbol breaks the ABI: see docs/abi.md)"
        rc=1
    done < <(only_in "$m" "$d")
    if [[ $rc -eq 0 ]]; then
        echo "cmake/libcpr.map lists exactly the $(wc -l <<<"$d") CPR_API symbols of include/cpr/*.h"
    fi
    return $rc
}

fix_map() {
    local d m node missing
    d=$(declared) || exit 2
    m=$(mapped) || exit 2
    node=$(newest_node)
    missing=$(only_in "$d" "$m" | cut -d' ' -f1)
    if [[ -z $missing ]]; then
        echo "cmake/libcpr.map: nothing to add"
        return 0
    fi
    # Insert before the `local:` line of the newest node, or before its closing brace.
    awk -v node="$node" -v add="$missing" '
        $0 ~ "^[[:space:]]*" node "[[:space:]]*\\{" { in_node = 1 }
        in_node && !done && ($0 ~ /^[[:space:]]*local[[:space:]]*:/ || $0 ~ /^[[:space:]]*\}/) {
            n = split(add, a, "\n")
            for (i = 1; i <= n; i++) printf "    %s;\n", a[i]
            done = 1
        }
        { print }' "$map" >"$map.tmp"
    mv "$map.tmp" "$map"
    sed 's/^/cmake\/libcpr.map: added to '"$node"': /' <<<"$missing"
}

case $cmd in
    declared) declared ;;
    mapped) mapped ;;
    check-map) check_map ;;
    fix-map) fix_map ;;
    *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
