"""Static import checks: no import cycle anywhere in ``lolctl`` (function-level and TYPE_CHECKING imports included),
and scoring does not import the training module.

Every module is parsed with ``ast``; ``from lolctl.x import y`` is an edge to ``lolctl.x.y`` when y is a submodule,
else to ``lolctl.x``; relative imports are resolved. Importing ``lolctl.x.y`` also runs ``lolctl/x/__init__.py``:
that implicit edge to the parent package is not counted (a package re-exporting its submodules is not a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lolctl"


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """{dotted module name: file} of every module of the package at ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, source: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package modules that the module ``name`` (its ``source``) imports anywhere in its body."""
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*here[: len(here) - node.level + 1], *([node.module] if node.module else [])]) \
                if node.level else (node.module or "")
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import lolctl.x.y.attr` → its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = module_files(root)
    return {name: imports_of(name, path.read_text(encoding="utf-8"), path.name == "__init__.py", set(files))
            for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, deterministic order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_cycle_finder_finds_a_cycle_and_only_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond is no cycle


def test_import_parser_sees_function_level_relative_and_submodule_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .b import f\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from pkg import c\n")
    (pkg / "c.py").write_text("from pkg.sub import b\nfrom . import d\n")
    (pkg / "d.py").write_text("")
    graph = import_graph(pkg)
    assert graph == {"pkg": set(), "pkg.sub": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.c"}, "pkg.c": {"pkg.sub.b", "pkg.d"},
                     "pkg.d": set()}
    assert find_cycle(graph) == ["pkg.c", "pkg.sub.b", "pkg.c"]


def test_no_import_cycle_in_lolctl() -> None:
    graph = import_graph()
    assert len(graph) > 50 and "lolctl.zoo.format" in graph["lolctl.nn.data"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_scoring_does_not_import_training() -> None:
    """Inference (checkpoint loading and prediction) reaches neither the training loop nor the zoo builder."""
    graph = import_graph()
    reached = reachable(graph, "lolctl.nn.checkpoint")
    assert "lolctl.nn.infer" in reached
    assert not reached & {"lolctl.nn.train", "lolctl.nn.workflow", "lolctl.zoo.builder"}
