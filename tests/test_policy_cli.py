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



def test_usage_errors_exit_4_never_2_which_means_approval(tmp_path) -> None:
    """Issue 19 item 7: a missing --input exited 2, the code that means "approval needed"."""
    inp = write_input(tmp_path, ToolSpec("lookup"))
    for args, says in (
        (["eval", "--policy", str(DEFAULT_REGO_POLICY)], "Missing option '--input'"),
        (["eval", "--input", str(inp), "--engine", "cedar", "--query", "data.x.y"], "--engine rego only"),
        (["eval", "--input", str(inp), "--engine", "cedar", "-p", "a.cedar", "-p", "b.cedar"], "exactly one --policy"),
        (["eval", "--input", str(inp), "--engine", "opa"], "'opa' is not one of"),
        (["evl", "--input", str(inp)], "No such command"),
        (["schema", "--version", "7"], "--version"),
        (["example-input", "--version", "0"], "--version"),
        (["show-default", "--engine", "opa"], "'opa' is not one of"),
    ):
        result = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 4, (args, result.exit_code, result.output)
        assert says in result.output, (args, result.output)


def test_an_invalid_input_points_at_the_schema_and_the_example() -> None:
    result = runner.invoke(app, ["eval", "--input", "-"], input="{}")
    assert result.exit_code == 3, result.output
    (line,) = result.stderr.splitlines()
    assert "policy input version: expected one of 1, 2, got None" in line
    assert "`warden policy schema`" in line and "`warden policy example-input`" in line


@pytest.mark.parametrize("engine", ["rego", "cedar"])
@pytest.mark.parametrize("version", [1, 2])
def test_example_input_is_valid_and_evaluates_with_the_shipped_policy(engine, version) -> None:
    """`warden policy example-input | warden policy eval --input -` (no --policy: the shipped one)."""
    from langgraph_warden.guards.policy import validate_policy_input
    from langgraph_warden.guards.policy_schema import policy_input_schema

    example = runner.invoke(app, ["example-input", "--version", str(version)])
    assert example.exit_code == 0, example.output
    doc = json.loads(example.stdout)
    assert doc["version"] == version and validate_policy_input(doc) == doc
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, policy_input_schema(version))
    result = runner.invoke(app, ["eval", "--input", "-", "--engine", engine], input=example.stdout)
    decision = json.loads(result.stdout)
    if engine == "rego" and version == 1:  # the shipped Rego policy reads version 2 and says so
        assert result.exit_code == 3 and "policy_input_version_mismatch" in decision["reasons"], result.output
        return
    assert result.exit_code == 2, result.output  # the refund is irreversible: approval needed
    assert decision["allow"] is True and decision["require_approval"] is True and decision["engine"] == engine
    default = runner.invoke(app, ["example-input"])
    assert json.loads(default.stdout)["version"] == 2


@pytest.mark.parametrize(("engine", "path"), [("rego", DEFAULT_REGO_POLICY), ("cedar", DEFAULT_CEDAR_POLICY)])
def test_show_default_prints_the_shipped_policy(engine, path) -> None:
    result = runner.invoke(app, ["show-default", "--engine", engine])
    assert result.exit_code == 0 and result.stdout == path.read_text(encoding="utf-8")
    where = runner.invoke(app, ["show-default", "--engine", engine, "--path"])
    assert where.exit_code == 0 and where.stdout == f"{path}\n"


def test_the_exit_codes_are_documented_in_the_help() -> None:
    for args in (["--help"], ["eval", "--help"]):
        result = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 0
        text = " ".join(result.output.split())
        assert "0 allow, 1 deny, 2 approval needed, 3 error" in text and "4 usage error" in text, text


def test_eval_reads_stdin(tmp_path) -> None:
    inp = write_input(tmp_path, ToolSpec("lookup"))
    result = runner.invoke(app, ["eval", "--policy", str(DEFAULT_REGO_POLICY), "--input", "-"],
                           input=inp.read_text())
    assert result.exit_code == 0 and json.loads(result.stdout)["allow"] is True
