"""``warden policy eval``: decision JSON on stdout, exit code by outcome."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from langgraph_warden.cli_policy import app
from langgraph_warden.guards.policy import DEFAULT_CEDAR_POLICY, DEFAULT_REGO_POLICY, build_policy_input
from langgraph_warden.guards.tools import ToolSpec
from tests.support.history_v2 import aggregate

runner = CliRunner()


def write_input(tmp_path: Path, spec: ToolSpec | None, name: str = "lookup", **run: Any) -> Path:
    kwargs: dict[str, Any] = {"owner": "alice", "risk_tier": "low"}
    kwargs.update(run)
    doc = build_policy_input(workload_id="spiffe://e/a", thread_id="t", tool_name=spec.name if spec else name,
                             tool_spec=spec, args={}, now="2025-01-01T00:00:00Z", **kwargs)
    path = tmp_path / "input.json"
    path.write_text(json.dumps(doc))
    return path


CASES = [
    (ToolSpec("lookup", scopes=("kb:read",)), 0, True, False),
    (None, 1, False, False),
    (ToolSpec("pay", irreversible=True), 2, True, True),
]


@pytest.mark.parametrize("engine", ["rego", "cedar"])
@pytest.mark.parametrize(("spec", "code", "allow", "approval"), CASES)
def test_eval_exit_codes(tmp_path, engine, spec, code, allow, approval) -> None:
    policy = DEFAULT_REGO_POLICY if engine == "rego" else DEFAULT_CEDAR_POLICY
    inp = write_input(tmp_path, spec, name="rm_rf")
    result = runner.invoke(app, ["eval", "--policy", str(policy), "--input", str(inp), "--engine", engine])
    assert result.exit_code == code, result.output
    decision = json.loads(result.stdout)
    assert decision["allow"] is allow and decision["require_approval"] is approval
    assert decision["engine"] == engine and decision["input_digest"].startswith("sha256:")


def test_eval_with_data_and_query(tmp_path) -> None:
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"warden_config": {"limits": {"per_tool": 1}}}))
    inp = write_input(tmp_path, ToolSpec("lookup"), history=aggregate([{"tool": "lookup", "decision": "allow"}]))
    result = runner.invoke(app, ["eval", "-p", str(DEFAULT_REGO_POLICY), "-i", str(inp), "-d", str(data),
                                 "-q", "data.warden.decision"])
    assert result.exit_code == 1 and json.loads(result.stdout)["reasons"] == ["rate_limited"]


def test_eval_errors_exit_3(tmp_path) -> None:
    inp = write_input(tmp_path, ToolSpec("lookup"))
    bad = tmp_path / "bad.rego"
    bad.write_text("package warden\ndecision := := 1\n")
    result = runner.invoke(app, ["eval", "--policy", str(bad), "--input", str(inp)])
    assert result.exit_code == 3 and f"{bad}:2:" in result.stderr

    undefined = tmp_path / "undef.rego"
    undefined.write_text("package warden\nimport rego.v1\ndecision := {} if false\n")
    result = runner.invoke(app, ["eval", "--policy", str(undefined), "--input", str(inp)])
    assert result.exit_code == 3 and json.loads(result.stdout)["reasons"] == ["policy_undefined"]

    not_json = tmp_path / "x.json"
    not_json.write_text("{")
    result = runner.invoke(app, ["eval", "--policy", str(DEFAULT_REGO_POLICY), "--input", str(not_json)])
    assert result.exit_code == 3 and "not JSON" in result.stderr

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**json.loads(inp.read_text()), "version": 3}))
    result = runner.invoke(app, ["eval", "--policy", str(DEFAULT_REGO_POLICY), "--input", str(wrong)])
    assert result.exit_code == 3 and "version" in result.stderr

    result = runner.invoke(app, ["eval", "--policy", str(DEFAULT_CEDAR_POLICY), "--input", str(inp),
                                 "--engine", "cedar", "--query", "data.x.y"])
    assert result.exit_code == 3 and "--engine rego only" in result.stderr


def test_eval_reads_stdin(tmp_path) -> None:
    inp = write_input(tmp_path, ToolSpec("lookup"))
    result = runner.invoke(app, ["eval", "--policy", str(DEFAULT_REGO_POLICY), "--input", "-"],
                           input=inp.read_text())
    assert result.exit_code == 0 and json.loads(result.stdout)["allow"] is True
