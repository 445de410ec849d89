"""The layers (docs/architecture.md): no import cycle between robustart's sub-packages, lazy
imports inside functions included, and the low layers load none of the high ones."""

import ast
import subprocess
import sys
from pathlib import Path

import robustart

PKG = Path(robustart.__file__).parent
# Composition roots: they may import any layer (nothing imports them back).
ROOTS = {"__init__", "cli", "api"}


def import_graph() -> dict[str, set[str]]:
    """Sub-package -> the sub-packages its modules import (every import statement, at module
    level or inside a function, relative ones resolved)."""
    edges: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)  # robustart, noises, base
        package = parts[:-1]  # the package a relative import starts from (also for an __init__)
        src = parts[1] if len(parts) > 1 else "__init__"
        if src in ROOTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                # `from robustart import x` imports the module robustart.x
                mods = [f"{mod}.{a.name}" for a in node.names] if mod == PKG.name else [mod]
            else:
                continue
            for m in mods:
                p = m.split(".")
                if p[0] == PKG.name and len(p) > 1 and p[1] != src:
                    edges.setdefault(src, set()).add(p[1])
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_sub_packages_have_no_import_cycle():
    edges = import_graph()
    assert {"data", "zoo", "quant", "noises", "engine", "reports", "nas"} <= set(edges)  # the walk sees them
    found = cycles(edges)
    assert not found, "import cycles between sub-packages: " + "; ".join(" <-> ".join(c) for c in found) + \
        "\n" + "\n".join(f"  {a} -> {', '.join(sorted(b))}" for a, b in sorted(edges.items()))


def test_lower_layers_do_not_import_higher_ones():
    edges = import_graph()
    assert "nas" not in edges["zoo"], "the zoo learns of the nas family from robustart/plugins.py"
    assert not [a for a, b in edges.items() if "bench" in b and a != "bench"], "only cli.py and api.py use bench/"
    for low in ("data", "zoo", "quant", "results", "imagenet_s"):
        assert not edges.get(low, set()) & {"noises", "engine", "reports", "nas", "bench"}, (low, edges.get(low))
    for mid in ("noises", "engine", "reports", "nas"):  # bench (plans, executors) is above them all
        assert "bench" not in edges.get(mid, set()), (mid, edges.get(mid))
    code = ("import sys, robustart.data, robustart.quant, robustart.zoo; "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in "
            "(['robustart', 'noises'], ['robustart', 'engine'], ['robustart', 'reports'], ['robustart', 'nas'], "
            "['robustart', 'bench'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
