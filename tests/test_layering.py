"""Import layering of the smg package (in the spirit of aiohttp's test_circular_imports).

1. Every module imports on its own in a fresh interpreter: an import cycle that only
   works when some other module happens to be imported first fails here.
2. A module imports only from its own layer or a lower one (``LAYERS``, lowest first),
   checked by an AST scan of every ``import`` and ``from ... import`` in smg/, including
   those inside functions (a lazy import is still a dependency); imports under
   ``if TYPE_CHECKING:`` are exempt (they never run).

A module's layer is the longest ``LAYERS`` prefix of its dotted name; ``smg`` itself (the
package ``__init__``, which only re-exports the version) sits with the lowest layer.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

# Lowest first; a module may import from its own line or any line above it.
LAYERS = [
    ["smg", "smg.errors", "smg._version", "smg._native", "smg.http1", "smg.streaming", "smg.text", "smg.parsers",
     "smg.engine_grpc"],
    ["smg.config", "smg.api"],
    ["smg.routing", "smg.admission"],
    ["smg.upstream", "smg.history", "smg.mcp"],
    ["smg.workers", "smg.auth"],
    ["smg.observability"],
    ["smg.server", "smg.responses"],
    ["smg.testing", "smg.cli", "smg.__main__"],
]

# Violations of LAYERS that exist today, as "importer -> imported" (module names). While
# this is not empty, test_layer_order is a strict xfail (fixing the last one makes it
# XPASS, a failure that asks for this list to be emptied) and test_no_new_violations
# keeps the list from growing.
KNOWN_VIOLATIONS: list[str] = []

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "smg")

_RANK = {prefix: i for i, line in enumerate(LAYERS) for prefix in line}


def layer_of(module: str) -> int | None:
    """Index in LAYERS of the longest matching prefix; None outside smg."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        rank = _RANK.get(".".join(parts[:n]))
        if rank is not None:
            return rank
    return None


def _modules() -> dict[str, tuple[str, bool]]:
    """module name -> (path, is_package) for every .py file under smg/."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(PKG):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel = os.path.relpath(dirpath, ROOT).split(os.sep)
        for f in sorted(filenames):
            if not f.endswith(".py"):
                continue
            if f == "__init__.py":
                out[".".join(rel)] = (os.path.join(dirpath, f), True)
            else:
                out[".".join(rel + [f[:-3]])] = (os.path.join(dirpath, f), False)
    return out


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: str, is_pkg: bool) -> list[tuple[str, int]]:
    """(imported smg module, line) for every import in the file that runs."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if is_pkg else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    visit_one(other)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                # "from pkg import mod" imports the module pkg.mod
                found.append((sub if sub in MODULES else target, node.lineno))
        visit(node)

    visit(tree)
    return [(m, line) for m, line in found if m == "smg" or m.startswith("smg.")]


def violations() -> list[str]:
    out = []
    for module, (path, is_pkg) in MODULES.items():
        own = layer_of(module)
        assert own is not None, f"{module} is in no layer: add it to LAYERS"
        seen = set()
        for target, line in _imports(module, path, is_pkg):
            theirs = layer_of(target)
            if theirs is not None and theirs > own and target not in seen:
                seen.add(target)
                out.append(f"{module} -> {target}")
    return sorted(out)


def test_every_module_has_a_layer():
    assert [m for m in MODULES if layer_of(m) is None] == []
    # every layer prefix names something that exists (the table is not stale)
    assert [p for p in _RANK if p not in MODULES and not any(m.startswith(p + ".") for m in MODULES)] == []


def test_no_new_violations():
    new = [v for v in violations() if v not in KNOWN_VIOLATIONS]
    assert new == [], "a module imports from a higher layer:\n" + "\n".join(new)


@pytest.mark.xfail(
    bool(KNOWN_VIOLATIONS), strict=True, reason="known layering violations:\n" + "\n".join(KNOWN_VIOLATIONS)
)
def test_layer_order():
    found = violations()
    assert found == [], "a module imports from a higher layer:\n" + "\n".join(found)


def _import_alone(module: str) -> tuple[str, int, str]:
    res = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    return module, res.returncode, res.stderr


def test_every_module_imports_alone():
    """A fresh interpreter per module (``__main__`` modules run a CLI, so they are left
    out; the AST scan still covers them). Two at a time: the machine is small."""
    mods = [m for m in MODULES if not m.endswith(".__main__") and m != "smg.__main__"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_import_alone, mods))
    failed = [f"{m}:\n{err.strip().splitlines()[-1] if err.strip() else rc}" for m, rc, err in results if rc]
    assert failed == [], "modules that do not import on their own:\n" + "\n".join(failed)
