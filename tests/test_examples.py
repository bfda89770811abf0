"""Every example script runs end to end (exit 0) and prints its key result line."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

EXAMPLES = {
    "guard_toolnode.py": ["RESULT: allowed, denied and approval-gated calls behaved as expected",
                          "DENIED  delete_order", "APPROVAL NEEDED issue_refund"],
    "guard_create_agent.py": ["RESULT: two approvals paused at once and were resumed together",
                              "paused with 2 interrupts at once"],
    "durable_checkpointer.py": ["RESULT: sync + async runs checkpointed, history read back, verification OK",
                                "$ warden audit verify --db", "| OK 2 thread(s)"],
    "resume_from_cli.py": ["RESULT: resumed from Python and from the CLI", "approved apr_"],
    "opa_server.py": ["RESULT: OPA decided while up; fail-closed deny while down", "policy_unavailable, opa_connection_error"],
    "cedar_policy.py": ["RESULT: Cedar allowed, denied and gated the calls as expected", "decided by: ['cedar']",
                        "(four_eyes)", "non_eu_order", "pii_outside_support"],
    "custom_credential_provider.py": ["RESULT: custom provider issued, the tool used, the guard revoked",
                                      "refused (revoked)"],
}


def test_every_example_script_is_covered():
    scripts = {p.name for p in (REPO / "examples").glob("*.py") if not p.name.startswith("_")}
    assert scripts - {"quickstart.py"} == set(EXAMPLES)  # quickstart has its own test


#: Run by tests/test_graph_from_cwd.py instead (in this process, recording the ``warden`` commands it
#: starts), which checks its output against the lines above: the suite runs it once, not twice.
RUN_ELSEWHERE = {"resume_from_cli.py"}


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_docstring_says_how_to_run_it(script):
    doc = ast.get_docstring(ast.parse((REPO / "examples" / script).read_text(encoding="utf-8"))) or ""
    assert "Run it" in doc, f"{script}: the docstring must say what it shows and how to run it"


@pytest.mark.parametrize("script", sorted(set(EXAMPLES) - RUN_ELSEWHERE))
def test_example_runs(script, tmp_path):
    path = REPO / "examples" / script
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(path), "--db", f"sqlite:///{tmp_path / 'example.db'}"],
        cwd=REPO, capture_output=True, text=True, encoding="utf-8", timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "140"},
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    for line in EXAMPLES[script]:
        assert line in proc.stdout, f"{line!r} missing from:\n{proc.stdout}"
    assert (tmp_path / "example.db").exists()  # --db was honoured
    print(f"{script}: {elapsed:.1f} s")
