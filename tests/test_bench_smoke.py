"""``bench/scale.py --quick`` and a tiny ``bench/guard.py`` run end to end (~10 s each): the scripts keep
working while the code they measure changes.

It checks that the script runs and reports, not what it measures: the numbers of a quick run
on a shared machine say nothing, and its targets may be unmet while the work they track lands.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The peers of the `bench` extra (bench/peers.py); bench/scale.py ships beside them.
MISSING = [module for module in ("langgraph_ledger", "dbos") if importlib.util.find_spec(module) is None]

needs_bench_extra = pytest.mark.skipif(
    bool(MISSING), reason=f"the bench extra is not installed (no {', '.join(MISSING)}): pip install -e '.[bench]'"
)


@needs_bench_extra
def test_scale_quick_prints_its_table_and_targets(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "bench/scale.py", "--quick", "--db-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert "| measurement (ms, p50) | 10 | 100 | 100 / 10 (rounds) |" in lines
    for engine in ("rego", "cedar"):
        assert any(line.startswith(f"| {engine}: guard overhead, warm") for line in lines)
        assert any(line.startswith(f"| {engine}: first call after a restart, guarded") for line in lines)
    targets = [line for line in lines if line.startswith("target: ")]
    # per engine: overhead by depth, restart vs warm; then get_tuple, resume and list(limit=10)
    assert len(targets) == 7, targets
    assert all(line.endswith((": MET", ": NOT MET")) for line in targets), targets
    assert not list(tmp_path.iterdir()), "the bench left files behind"


def test_guard_bench_runs_every_engine_and_scenario(tmp_path: Path) -> None:
    """bench/guard.py needs no peer: it runs wherever the tests run (it once broke unnoticed)."""
    proc = subprocess.run(
        [sys.executable, "bench/guard.py", "--n", "2", "--warmup", "1", "--db-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and " | " in line and "engine" not in line and "---" not in line]
    assert {row.split("|")[1].strip() for row in rows} == {"rego", "cedar", "opa-fake"}, rows
    assert len(rows) == 9, rows  # three scenarios per engine
    assert "guard overhead p50: worst row" in proc.stdout
