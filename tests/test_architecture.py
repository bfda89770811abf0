"""The architecture ARCHITECTURE.md describes is the one the code has.

Why a test: the floors (core records at the bottom, ``checkpointers`` and ``guards`` beside each
other, the facade and CLI on top) and the "small rooms" rules only stay true if something fails when
they stop being true. Read from the source with :mod:`ast`, nothing is imported.

- imports point down: the core never imports a floor above it, ``checkpointers`` and ``guards`` never
  import each other or the top floor (function-local imports included: a lazy import is still a
  dependency), and module-level imports have no cycle;
- no module is over ~500 lines; a function over 60 lines says why beside its ``def`` (a comment
  starting ``# long:`` on the ``def`` line or the line above it);
- ARCHITECTURE.md names every module of the package, and every module it names exists.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: folder -> the package it installs as (see [tool.setuptools] in pyproject.toml)
FOLDERS = {"plugin": "langgraph_warden", "checkpointers": "langgraph_warden.checkpointers", "guards": "langgraph_warden.guards"}
#: plugin/ modules on the top floor (with every ``cli*`` and ``demo*``): they may import guards and checkpointers;
#: every other plugin/ module is core.
TOP = {"__init__", "warden", "audit", "audit_table", "demo", "server", "testing"}
MAX_MODULE_LINES = 520  # "~500": a little slack for a docstring, not for a second job
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (Alembic's migration scripts excluded)."""
    out: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder)
            if "migrations" in rel.parts[:-1] and rel.parts[0] == "migrations" and "versions" in rel.parts:
                continue
            parts = [*rel.parts[:-1], rel.stem] if rel.stem != "__init__" else list(rel.parts[:-1])
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _is_top(name: str) -> bool:
    rest = name.removeprefix("langgraph_warden").lstrip(".")
    if rest.startswith(("guards", "checkpointers")):
        return False
    first = rest.split(".")[0] if rest else "__init__"
    return first in TOP or first.startswith(("cli", "demo"))


def _floor(name: str) -> str:
    if name.startswith("langgraph_warden.guards"):
        return "guards"
    if name.startswith("langgraph_warden.checkpointers"):
        return "checkpointers"
    return "top" if _is_top(name) else "core"


def _resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
    """The package modules an import statement names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("langgraph_warden")]
    if node.level:
        base = module.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    if not target.startswith("langgraph_warden"):
        return []
    # ``from pkg import name``: name may be a submodule.
    names = [f"{target}.{a.name}" for a in node.names]
    return [n for n in names if n in MODULES] or [target]


def _imports(module: str, path: Path, *, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                if not module_level_only:
                    visit(child, nested)
                continue
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and not (module_level_only and nested):
                found.update(_resolve(module, child, is_package))
            visit(child, inner)

    visit(tree, False)
    return {_owning_module(n) for n in found}


def _owning_module(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


ALLOWED = {"core": {"core"}, "checkpointers": {"core", "checkpointers"}, "guards": {"core", "guards"},
           "top": {"core", "checkpointers", "guards", "top"}}


def test_imports_point_down() -> None:
    wrong = []
    for module, path in MODULES.items():
        floor = _floor(module)
        for target in _imports(module, path, module_level_only=False):
            if target in MODULES and _floor(target) not in ALLOWED[floor]:
                wrong.append(f"{module} ({floor}) imports {target} ({_floor(target)})")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles_at_module_level() -> None:
    graph = {m: {t for t in _imports(m, p, module_level_only=True) if t in MODULES and t != m} for m, p in MODULES.items()}
    # A package's __init__ importing its own submodules is how a package is built, not a cycle between rooms.
    for m in graph:
        if MODULES[m].name == "__init__.py":
            graph[m] = {t for t in graph[m] if not t.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return [*stack[stack.index(t):], t]
            if t not in state and (cycle := walk(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := walk(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_modules_are_small_rooms() -> None:
    big = [f"{p.relative_to(ROOT)}: {n} lines" for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not big, f"modules over {MAX_MODULE_LINES} lines (split them by job):\n" + "\n".join(big)


def test_long_functions_say_why() -> None:
    unexplained = []
    for path in MODULES.values():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length <= MAX_FUNCTION_LINES:
                continue
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            near = lines[max(first - 2, 0): node.lineno + 1]
            if not any(re.search(r"#\s*long:", line, re.IGNORECASE) for line in near):
                unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not unexplained, (
        f"functions over {MAX_FUNCTION_LINES} lines without a '# long: <why>' comment beside the def:\n" + "\n".join(unexplained)
    )


def test_architecture_md_names_every_module() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"`((?:plugin|checkpointers|guards)/[\w/]+\.py)`", text))
    files = {str(p.relative_to(ROOT)) for p in MODULES.values()}
    missing = sorted(f for f in files - named if not f.endswith("__init__.py"))
    stale = sorted(named - files)
    assert not missing, "modules ARCHITECTURE.md does not describe:\n" + "\n".join(missing)
    assert not stale, "ARCHITECTURE.md names modules that do not exist:\n" + "\n".join(stale)
