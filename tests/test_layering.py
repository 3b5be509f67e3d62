"""The layering rules of docs/architecture.md, checked from the imports (AST; nothing is run).

Layers, each importing only the ones before it:
    compiler (IR, passes, reference, encoding, backend)  <-  frontends (import, training)
    <-  runtime (image, engines, kernels)  <-  runtime.lab (noise, twin, attacks, sweeps, ...)
    <-  faces (compiler/cli.py, runtime/cli/, runtime/reports/)  <-  snnc (the public facade)
Every import counts, function-local ones included: a lazy import hides a cycle, it does not
remove it. ``from pkg import submodule`` counts as an import of the submodule only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("compiler", "frontends", "runtime", "snnc")


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = p
    return mods


MODS = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODS:
        name = name.rpartition(".")[0]
    return name or None


def _imports(mod: str, path: Path) -> set[str]:
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for n in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - n.level + 1]
                base = ".".join(parts + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in n.names]
            # `from pkg import submodule` depends on the submodule, not on pkg/__init__'s body
            names = subs if all(x in MODS for x in subs) else [base] + subs
        for x in names:
            t = _resolve(x)
            if t and t != mod:
                out.add(t)
    return out


GRAPH = nx.DiGraph()
for _m, _p in MODS.items():
    GRAPH.add_node(_m)
    for _t in _imports(_m, _p):
        GRAPH.add_edge(_m, _t)

FACES = ("compiler.cli", "runtime.cli", "runtime.reports")


def _is(mod: str, *prefixes: str) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def _violations(rule) -> list[str]:
    return sorted(f"{a} -> {b}" for a, b in GRAPH.edges if rule(a, b))


def test_facade_exists():
    assert "snnc" in MODS


def test_no_import_cycles_between_files():
    cycles = [sorted(c) for c in nx.strongly_connected_components(GRAPH) if len(c) > 1]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("layer, forbidden", [
    ("compiler", ("frontends", "runtime", "snnc")),
    ("frontends", ("runtime", "snnc")),
    ("runtime", ("snnc",)),
])
def test_lower_layers_never_import_upper_ones(layer, forbidden):
    bad = _violations(lambda a, b: _is(a, layer) and not _is(a, *FACES) and _is(b, *forbidden))
    assert not bad, f"{layer} must not import {forbidden}: {bad}"


def test_execution_never_imports_the_lab_or_faces():
    # `runtime` itself (the package __init__) is a namespace of re-exports (runtime.train)
    bad = _violations(lambda a, b: _is(a, "runtime") and a != "runtime"
                      and not _is(a, "runtime.lab", *FACES) and _is(b, "runtime.lab", *FACES))
    assert not bad


def test_the_lab_returns_data_and_never_imports_faces():
    bad = _violations(lambda a, b: _is(a, "runtime.lab") and _is(b, *FACES))
    assert not bad
    printing = []
    for m, p in MODS.items():
        if _is(m, "runtime.lab"):
            for n in ast.walk(ast.parse(p.read_text())):
                if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print":
                    printing.append(m)
                if isinstance(n, (ast.Import, ast.ImportFrom)) and any(
                        (a.name if isinstance(n, ast.Import) else (n.module or "")) == "click"
                        for a in n.names):
                    printing.append(m)
    assert not printing, f"lab modules that print or use click: {sorted(set(printing))}"


def test_kernels_import_no_project_module():
    assert not [t for t in GRAPH.successors("runtime.kernels")]


def test_only_the_version_module_of_the_facade_is_imported_below_it():
    bad = _violations(lambda a, b: not _is(a, "snnc") and _is(b, "snnc") and b != "snnc._version")
    assert not bad
