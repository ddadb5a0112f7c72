"""Print the import graph of inferline's packages, one line per edge between two of them (with the number of module
imports behind it and a few examples), and any cycle between packages. Static (grimp), function-level imports
included. Run: ``.venv/bin/python .ci/import_graph.py`` (``make import-graph``); ``lint-imports`` checks the layers."""

from __future__ import annotations

import collections
import sys

import grimp


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def main() -> int:
    graph = grimp.build_graph("inferline", cache_dir=None)
    edges: dict[tuple[str, str], list[tuple[str, str]]] = collections.defaultdict(list)
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            a, b = package(module), package(imported)
            if a != b:
                edges[(a, b)].append((module, imported))
    for (a, b), pairs in sorted(edges.items()):
        examples = "; ".join(f"{m.split('.', 2)[-1]} -> {i.split('.', 2)[-1]}" for m, i in pairs[:3])
        print(f"{a:>11} -> {b:<11} {len(pairs):3}  e.g. {examples}")
    cycles = sorted({tuple(sorted((a, b))) for a, b in edges if (b, a) in edges})
    print(f"\n{len(edges)} edges between packages; cycles: {', '.join(f'{a}<->{b}' for a, b in cycles) or 'none'}")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
