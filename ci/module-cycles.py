#!/usr/bin/env python3
"""Fails when the top-level modules of a crate import each other in a cycle.

docs/architecture.md promises that dependencies between the folders run one way; this
check keeps it true. It reads `crate::<module>` paths in each crate's sources (test
modules excluded) and reports every cycle it finds, one line each.
"""
import os
import re
import sys

CRATES = ["dataplane/src", "controlplane/src"]


def graph(root):
    edges = {}
    for directory, _, files in os.walk(root):
        for name in files:
            # Test-only files (`tests.rs`, `*_tests.rs`) may reach anything.
            if not name.endswith(".rs") or name == "tests.rs" or name.endswith("_tests.rs"):
                continue
            path = os.path.join(directory, name)
            parts = os.path.relpath(path, root)[:-3].split("/")
            if parts[0] in ("lib", "main", "bin"):
                continue
            text = re.split(r"#\[cfg\(test\)\]\s*mod tests \{", open(path, encoding="utf-8").read())[0]
            top = parts[0]
            edges.setdefault(top, set()).update(m for m in re.findall(r"crate::([a-z_]+)", text) if m != top)
    return edges


def cycle_through(edges, start):
    stack = [(start, [start])]
    seen = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


failed = False
for crate in CRATES:
    edges = graph(crate)
    for module in sorted(edges):
        cycle = cycle_through(edges, module)
        if cycle:
            print(f"{crate}: import cycle {' -> '.join(cycle)}: move the shared item down a layer")
            failed = True
if failed:
    sys.exit(1)
print("no import cycles between the top-level modules of " + ", ".join(CRATES))
