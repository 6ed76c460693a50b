"""The import graph of scepd: no circles, and a configuration that loads no service code.

The graph is read from the source with `ast`, so an import inside a function
(the usual way a circle is hidden) counts as much as one at the top of a
module, and so do imports only made for type checkers.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "scepd"

# Libraries that mean I/O, a running service or a token: what a leaf must not pull in.
SERVICE_LIBRARIES = ("httpx", "trio", "pkcs11", "sqlite3", "hypercorn", "quart", "quart_trio", "prometheus_client")


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module under `package` by its dotted name (a package by its own name, not `__init__`)."""
    found: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(module: str, node: ast.Import | ast.ImportFrom, is_package: bool, known: dict[str, Path]) -> set[str]:
    """The scepd modules one import statement names (a submodule when `from pkg import sub`)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            parts = module.split(".") if is_package else module.split(".")[:-1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    out = set()
    for name in names:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]  # `scepd.x.Y` where Y is a class: the module is scepd.x
        if name in known and name != module:
            out.add(name)
    return out


def third_party(path: Path) -> set[str]:
    """Top-level names of everything `path` imports that is not scepd."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module.split(".")[0])
    return out - {"scepd"}


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the scepd modules it imports anywhere in its body (top level, functions, TYPE_CHECKING)."""
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(module, node, path.name == "__init__.py", known)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_no_import_circles() -> None:
    graph = import_graph(module_files())
    found = cycles(graph)
    detail = "\n".join(
        f"{' <-> '.join(c)}: " + "; ".join(f"{m} imports {sorted(graph[m] & set(c))}" for m in c) for c in found
    )
    assert not found, f"import circles in scepd:\n{detail}"


def test_config_imports_only_leaves() -> None:
    """scepd.config and everything it reaches import no service library: the config can be read
    (by `scepd config check`, by the docs generator, by a test) without loading any service."""
    known = module_files()
    graph = import_graph(known)
    closure = reachable(graph, "scepd.config") | {"scepd.config"}
    assert "scepd.intune.client" not in closure
    offenders = {m: sorted(third_party(known[m]) & set(SERVICE_LIBRARIES)) for m in sorted(closure)}
    offenders = {m: libs for m, libs in offenders.items() if libs}
    assert not offenders, f"scepd.config reaches modules that import service libraries: {offenders}"


def test_config_loads_no_service_library_at_run_time() -> None:
    """The same, as Python sees it: importing scepd.config (package __init__ files included)."""
    code = f"import sys, scepd.config; print(sorted(m for m in {SERVICE_LIBRARIES!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_cycle_finder_sees_a_circle_through_a_function_level_import(tmp_path: Path) -> None:
    """The checker itself: a circle closed only by an import inside a function is found."""
    pkg = tmp_path / "scepd"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from scepd.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from scepd.a import thing\n")
    (pkg / "c.py").write_text("from . import a\n")
    graph = import_graph(module_files(pkg))
    assert cycles(graph) == [["scepd.a", "scepd.sub.b"]]
    assert graph["scepd.c"] == {"scepd.a"}


def test_no_private_imports_across_modules() -> None:
    """Modules share public names only (the CLI once reached for `cli._config` from three modules)."""
    bad = []
    for name, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scepd"):
                bad += [f"{name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad
