"""The README's main job: `warden demo` runs end to end (SQLite and PostgreSQL), as a user would run it."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from langgraph_warden.cli import app

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
        "worker exited with -9 (SIGKILL)",
        "↺ ran once, replayed on resume  post_status_update",
        "⚠ in doubt → retried (idempotent)  update_crm_record",
        "ran without authorisation 0",
        "every signature checked — OK",
        "demo complete",
    ):
        assert line in out, f"missing {line!r} in demo output:\n{out}"
    # notify_finance shares a ToolNode step with send_email, which pauses for approval. Whether it runs
    # before that pause (and is replayed on resume) or is cancelled before it starts (LangGraph's
    # Executor.map drops calls not yet started when one pauses; the machine's load decides) and runs
    # on resume, it runs exactly once: the side-effect table counts it.
    assert ("↺ ran once, replayed on resume  notify_finance" in out) or ("✔ ran  notify_finance" in out), out
    assert re.search(r"finance_note\s*│\s*1\s*│", out), out


@pytest.fixture(scope="module")
def fresh_machine_demo(tmp_path_factory) -> subprocess.CompletedProcess[str]:
    """`pip install . && warden demo` on a fresh machine, run once for the tests that only read its
    output: psycopg (the 'postgres' extra) is not installed, and no terminal is attached (stdin is
    /dev/null), so the demo approves every request itself."""
    stub = tmp_path_factory.mktemp("no-psycopg")
    (stub / "psycopg.py").write_text('raise ImportError("psycopg is not installed (simulated by the test)")\n')
    pythonpath = os.pathsep.join(p for p in (str(stub), os.environ.get("PYTHONPATH", "")) if p)
    return _run_demo(env_extra={"PYTHONPATH": pythonpath})


def test_demo_runs_without_the_postgres_extra(fresh_machine_demo):
    proc = fresh_machine_demo
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_story(proc.stdout)


def test_demo_without_terminal_defaults_to_approving(fresh_machine_demo):
    proc = fresh_machine_demo
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no terminal attached" in proc.stdout
    _assert_story(proc.stdout)  # the same story as --approve-all (which the rerun tests below pass)


# ------------------------------------------------------------- issue 19 item 6: the demo tells the truth
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _thread_of(out: str) -> str:
    match = re.search(r"run: thread (ops-1042-[0-9a-f]+)", out)
    assert match, out
    return match.group(1)


def _pending(db: str) -> list[dict]:
    """`warden approvals list` (in this process: it only reads what the demo's processes left)."""
    res = CliRunner().invoke(app, ["approvals", "list", "--db", db, "--format", "json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_a_rerun_on_the_same_file_is_a_new_run_and_a_rejection_is_reported_truthfully(tmp_path):
    """The old demo reused its finished thread on a second run (no steps, "worker exited with 0
    (unexpected)"), said "Done: … refunded" after a rejected refund, and squeezed the audit table
    to `…` at 80 columns without a terminal."""
    db = tmp_path / "demo.db"
    first = _run_demo("--reject-all", "--db", f"sqlite:///{db}", env_extra={"COLUMNS": "80"})
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "assistant: Not refunded: the refund of O-77 was refused (rejected by bob@finance.example)" in " ".join(
        out.split()), out
    assert "Done:" not in out and "marked refunded" not in out and "We refunded" not in out
    assert "Rejected by bob@finance.example" in out
    assert "│ refund " not in out and "| refund" not in out  # no refund happened (side-effect table)
    audit = out[out.index("4. Audit trail"):out.index("side effects that happened")]
    for whole in ("export_all_customers", "post_status_update", "authorised+completed", "rejected_by_approver",
                  "outside_intent, unknown_tool", "by bob@finance.example"):
        assert whole in audit, audit
    assert "…" not in audit, audit
    long = [line for line in out.splitlines() if len(line) > 80 and not line.lstrip().startswith("warden audit")]
    assert not long, long

    second = _run_demo("--approve-all", "--db", str(db))  # a plain path is a SQLite file
    assert second.returncode == 0, second.stdout + second.stderr
    _assert_story(second.stdout)
    assert _thread_of(second.stdout) != _thread_of(out)
    assert "in 2 thread(s), every signature checked — OK" in second.stdout
    assert "assistant: Done: the duplicate charge on O-77 was refunded and the customer informed." in second.stdout


def test_ctrl_c_at_the_prompt_leaves_the_run_paused_and_a_rerun_starts_afresh(tmp_path):
    """At a terminal the prompt shows `[y/N]` (rich markup swallowed it); Ctrl-C there leaves the run
    paused, says so, and the rerun neither continues it nor claims its refund."""
    import pty

    db = f"sqlite:///{tmp_path / 'demo.db'}"
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "langgraph_warden.cli", "demo", "--db", db],
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    seen, deadline = b"", time.monotonic() + 180
    try:
        while b"? [y/N]" not in _ANSI.sub("", seen.decode("utf-8", "replace")).encode() and time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        text = _ANSI.sub("", seen.decode("utf-8", "replace"))
        assert "approve as bob@finance.example? [y/N]" in text, text
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends
        proc.wait(timeout=60)
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = " ".join(_ANSI.sub("", seen.decode("utf-8", "replace")).split())
    assert proc.returncode == 130, text
    paused = _thread_of(text)
    assert f"interrupted: run {paused} stays paused" in text and "Traceback" not in text, text
    assert [(r["thread_id"], r["tool"]) for r in _pending(db)] == [(paused, "issue_refund")]

    rerun = _run_demo("--approve-all", "--db", db)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    _assert_story(rerun.stdout)
    assert _thread_of(rerun.stdout) != paused
    assert [(r["thread_id"], r["tool"]) for r in _pending(db)] == [(paused, "issue_refund")]  # still not refunded


@requires_pg
@pytest.mark.postgres
def test_demo_on_postgres_keeps_earlier_runs(tmp_path):
    """The demo's story on PostgreSQL, twice: the old demo deleted its earlier rows from a shared
    PostgreSQL database without saying so."""
    url = pg_schema_url("demo")
    first = _run_demo("--approve-all", "--db", url)
    assert first.returncode == 0, first.stdout + first.stderr
    _assert_story(first.stdout)
    second = _run_demo("--approve-all", "--db", url)
    assert second.returncode == 0, second.stdout + second.stderr
    _assert_story(second.stdout)
    assert "in 2 thread(s), every signature checked — OK" in second.stdout
    verify = CliRunner().invoke(app, ["audit", "verify", "--db", url])  # in this process: it only reads
    assert verify.exit_code == 0 and "OK 2 thread(s)" in verify.stdout, verify.output
