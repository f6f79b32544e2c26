"""No import cycles inside the thinktrace package: every `import` / `from ... import` counts, at module level or
inside a function (the rules of ``import_cycles.py PACKAGE --all``: relative imports resolved, ``from pkg import
name`` counting as an import of ``pkg`` and of ``pkg.name`` when that is a module, a name resolved to the longest
module it starts with; a package importing its own submodule that imports the package back is not reported)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "thinktrace"


def modules(root: Path) -> dict[str, Path]:
    """{dotted module name: file} of every .py file under the package folder `root`."""
    out = {}
    for f in root.rglob("*.py"):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, imports inside functions and under TYPE_CHECKING included."""
    mods = modules(root)
    pkg = root.name

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m if is_pkg else m.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    mod = f"{base}.{node.module}" if node.module else base
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                if t.split(".")[0] != pkg:
                    continue
                r = resolve(t)
                if r and r != m:
                    graph[m].add(r)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative), each sorted, minus a
    package paired with one of its own submodules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return sorted(c for c in found if not (len(c) == 2 and c[1].startswith(c[0] + ".")))


def test_cycles_finds_a_cycle_and_ignores_a_package_and_its_own_child():
    graph = {"p": {"p.a"}, "p.a": {"p"}, "p.b": {"p.c"}, "p.c": {"p.d"}, "p.d": {"p.b"}, "p.e": {"p.b"}}
    assert cycles(graph) == [["p.b", "p.c", "p.d"]]


def test_the_thinktrace_package_has_no_import_cycles():
    found = cycles(import_graph(PACKAGE))
    assert not found, "import cycles (imports inside functions count):\n" + "\n".join(
        "  " + " ".join(c) for c in found)
