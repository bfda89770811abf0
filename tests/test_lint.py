"""Lint and types as part of the suite: ``ruff check`` and ``mypy`` on the package must be clean.

Why a test: ``.ci/run`` runs exactly the README's command (``python -m pytest``), so this is how CI
runs them. The rules and settings live in ``pyproject.toml`` (``[tool.ruff]``, ``[tool.mypy]``).

mypy cannot follow setuptools' ``package-dir`` (``plugin/`` is ``langgraph_warden``, ``guards/`` is
``langgraph_warden.guards`` ...), so it checks ``-p langgraph_warden`` from a tree of links laid out as
the installed package. The tree and mypy's cache sit in one fixed place under the temporary directory,
so a second run on the same machine is incremental (a cold run takes ~20 s, a warm one ~5 s).

Run by hand: ``python tests/test_lint.py`` prints both reports.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: folder -> where setuptools installs it inside langgraph_warden (see [tool.setuptools] in pyproject.toml)
SOURCES = {"plugin": "", "checkpointers": "checkpointers", "guards": "guards"}


def _need(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        pytest.fail(f"{module} is not installed; install the test extras: pip install -e '.[test]'")


def _work_dir() -> Path:
    """A fixed place per checkout, so mypy's cache survives between runs."""
    tag = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"langgraph-warden-lint-{tag}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_tree(work: Path) -> Path:
    """``work/src/langgraph_warden``: links to ``plugin/``'s entries plus ``checkpointers`` and ``guards``."""
    src = work / "src"
    pkg = src / "langgraph_warden"
    shutil.rmtree(src, ignore_errors=True)  # rebuilt every run: added or removed modules are seen
    pkg.mkdir(parents=True)
    for entry in (ROOT / "plugin").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for folder, target in SOURCES.items():
        if target:
            (pkg / target).symlink_to(ROOT / folder, target_is_directory=True)
    return src


def _real_paths(text: str, src: Path) -> str:
    """Report findings under the repository's folder names, not the link tree's."""
    pkg = f"{src / 'langgraph_warden'}{os.sep}"
    for folder, target in SOURCES.items():
        if target:
            text = text.replace(f"{pkg}{target}{os.sep}", f"{folder}{os.sep}")
    return text.replace(pkg, f"plugin{os.sep}")


def run_ruff() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", *SOURCES],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def run_mypy() -> tuple[subprocess.CompletedProcess[str], Path]:
    work = _work_dir()
    src = _package_tree(work)
    env = {**os.environ, "MYPYPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(work / "mypy_cache"), "-p", "langgraph_warden"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    return done, src


def test_ruff_is_clean() -> None:
    _need("ruff")
    done = run_ruff()
    assert done.returncode == 0, f"ruff check found problems:\n{done.stdout}{done.stderr}"


def test_mypy_is_clean() -> None:
    _need("mypy")
    done, src = run_mypy()
    report = _real_paths(done.stdout + done.stderr, src)
    assert done.returncode == 0, f"mypy found problems:\n{report}"


if __name__ == "__main__":
    ruff = run_ruff()
    print(ruff.stdout + ruff.stderr)
    mypy, tree = run_mypy()
    print(_real_paths(mypy.stdout + mypy.stderr, tree))
    sys.exit(1 if ruff.returncode or mypy.returncode else 0)
