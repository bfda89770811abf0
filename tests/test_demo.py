"""The README's main job: `warden demo` runs end to end (SQLite and PostgreSQL), as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import pg_schema_url, requires_pg


def _run_demo(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "langgraph_warden.cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _assert_story(out: str) -> None:
    for line in (
        "run charter (signed as run.started)",
        "✘ refused  export_all_customers: Denied by policy (rego): outside_intent",
        "✘ refused  drop_orders_table",
        "approval needed for issue_refund",
        "the same token replayed at the payments API: refused (revoked)",
        "↺ ran once, replayed on resume  notify_finance",
        "worker exited with -9 (SIGKILL)",
        "↺ ran once, replayed on resume  post_status_update",
        "⚠ in doubt → retried (idempotent)  update_crm_record",
        "ran without authorisation 0",
        "every signature checked — OK",
        "demo complete",
    ):
        assert line in out, f"missing {line!r} in demo output:\n{out}"


def test_demo_on_sqlite_approving_everything():
    proc = _run_demo("--approve-all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_story(proc.stdout)


def test_demo_runs_without_the_postgres_extra(tmp_path):
    """`pip install . && warden demo` on a fresh machine: psycopg (the 'postgres' extra) is not installed."""
    (tmp_path / "psycopg.py").write_text('raise ImportError("psycopg is not installed (simulated by the test)")\n')
    pythonpath = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)
    proc = _run_demo("--approve-all", env_extra={"PYTHONPATH": pythonpath})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_story(proc.stdout)


def test_demo_without_terminal_defaults_to_approving():
    proc = _run_demo()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no terminal attached" in proc.stdout


def test_demo_rejections_are_reported():
    proc = _run_demo("--reject-all")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Rejected by bob@finance.example" in proc.stdout
    assert "| refund" not in proc.stdout and "│ refund " not in proc.stdout  # no refund happened


@requires_pg
@pytest.mark.postgres
def test_demo_on_postgres():
    proc = _run_demo("--approve-all", "--db", pg_schema_url("demo"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_story(proc.stdout)
