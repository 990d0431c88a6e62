#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The include graph of lib/, derived from its #include "..." lines, checked for circles.

A module is a .c and the header of the same name beside it (lib/core/error.c + error.h).
Module A depends on B when A's .c or .h includes B's header. A circle of modules is an error
unless every module in it is named on one "Include seam:" line in a file of lib/ (the top
comment of the file that owns the circle says why it is there).

  tools/include_graph.py [LIB_DIR]          check; exit 1 on an undocumented circle
  tools/include_graph.py --dot [LIB_DIR]    print the module graph as Graphviz dot
  tools/include_graph.py --layers [LIB_DIR] print the folder (layer) graph
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
SEAM = re.compile(r'Include seam:\s*([^\n]*)')


def modules(lib):
    deps = {}
    for layer in sorted(os.listdir(lib)):
        folder = os.path.join(lib, layer)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            stem, ext = os.path.splitext(name)
            if ext not in ('.c', '.h'):
                continue
            mod = layer + '/' + stem
            with open(os.path.join(folder, name), encoding='utf-8') as f:
                text = f.read()
            out = deps.setdefault(mod, set())
            for inc in INCLUDE.findall(text):
                target = os.path.splitext(inc)[0]
                if not os.path.exists(os.path.join(lib, inc)):
                    sys.exit(f'{layer}/{name}: includes "{inc}", which is not under {lib}/ '
                             '(private headers are included by their path from lib/)')
                if target != mod:
                    out.add(target)
    return deps


def circles(deps):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(deps.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(deps):
        if v not in index:
            visit(v)
    return comps


def seams(lib):
    """Each documented seam: the set of modules on one "Include seam:" line."""
    found = []
    for root, _, names in os.walk(lib):
        for name in sorted(names):
            if name.endswith(('.c', '.h')):
                with open(os.path.join(root, name), encoding='utf-8') as f:
                    for line in SEAM.findall(f.read()):
                        found.append(set(re.findall(r'[a-z_]+/[a-z_]+', line)))
    return found


def main(argv):
    flags = [a for a in argv if a.startswith('--')]
    args = [a for a in argv if not a.startswith('--')]
    lib = args[0] if args else os.path.join(os.path.dirname(__file__), '..', 'lib')
    deps = modules(lib)
    if '--dot' in flags:
        print('digraph lib {')
        for a in sorted(deps):
            for b in sorted(deps[a]):
                print(f'  "{a}" -> "{b}";')
        print('}')
        return 0
    if '--layers' in flags:
        edges = {}
        for a in deps:
            for b in deps[a]:
                la, lb = a.split('/')[0], b.split('/')[0]
                if la != lb:
                    edges.setdefault((la, lb), []).append(f'{a} -> {b}')
        for (la, lb), why in sorted(edges.items()):
            print(f'{la} -> {lb}: ' + ', '.join(sorted(why)))
        return 0
    allowed = seams(lib)
    found = circles(deps)
    bad = [c for c in found if not any(set(c) <= seam for seam in allowed)]
    for c in bad:
        print('include circle not documented on an "Include seam:" line: ' + ' <-> '.join(c))
    ok = [c for c in found if c not in bad]
    print(f'{len(deps)} modules, {sum(len(d) for d in deps.values())} edges, '
          f'{len(ok)} documented seam circle(s), {len(bad)} undocumented')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
