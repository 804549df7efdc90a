"""Fail if any import cycle exists in the package, function-level imports included.

Run on a plain install (``.ci/lint`` passes the folder it installed into): for every
direct import a -> b, no chain of imports may lead from b back to a.
"""
from __future__ import annotations

import sys

import grimp

graph = grimp.build_graph("autocompress", include_external_packages=False, exclude_type_checking_imports=True)
cycles = []
for importer in sorted(graph.modules):
    for imported in sorted(graph.find_modules_directly_imported_by(importer)):
        if importer == imported or imported.startswith(importer + ".") or importer.startswith(imported + "."):
            continue  # a package and its own submodules (an __init__ re-exporting them)
        back = graph.find_shortest_chain(importer=imported, imported=importer)
        if back:
            cycles.append(f"{importer} -> {' -> '.join(back)}")
print("\n".join(cycles) if cycles else "no import cycles")
sys.exit(1 if cycles else 0)
