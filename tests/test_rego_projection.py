"""The embedded Rego engine converts only the input a compiled policy can read (guards/rego_projection.py).

The claim under test is soundness: for any policy, evaluating on the projected input gives
exactly what evaluating on the whole input gives. Each policy below observes the input in a
way a naive "which keys are dotted" scan would miss (a builtin over a whole value, iteration,
aliasing, a function argument, a comparison, `with input as`); each is evaluated on many
documents with and without the projection, and must agree.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from langgraph_warden.guards.policy import DEFAULT_REGO_POLICY
from langgraph_warden.guards.rego import RegoEngine

GOLDEN = [
    json.loads(p.read_text(encoding="utf-8"))["input"]
    for p in sorted((Path(__file__).parent / "data" / "policy_inputs").glob("v2_*.json"))
]


def _variants(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The document and changes to the parts the default policy does not read (and some it does)."""
    out = [doc]
    recent = [{"tool": "x", "decision": "allow", "outcome": "completed", "ts": "2025-01-01T09:00:00.000000Z"}] * 4
    for change in (
        lambda d: d["history"].__setitem__("recent", recent),
        lambda d: d["history"].__setitem__("recent", []),
        lambda d: d.__setitem__("approvals", [{"request_id": "r1", "tool": "x", "decision": "approved"}]),
        lambda d: d.__setitem__("args", {"amount_cents": 10_000, "note": "secret"}),
        lambda d: d.__setitem__("extra", {"owner": "mallory"}),
        lambda d: d.pop("target", None),
        lambda d: d["run"].__setitem__("owner", "alice"),
        lambda d: d["run"].pop("owner", None),
        lambda d: d["tool"].__setitem__("scopes", ["a", "b"]),
    ):
        changed = copy.deepcopy(doc)
        change(changed)
        out.append(changed)
    return out


DOCUMENTS = [v for doc in GOLDEN for v in _variants(doc)]

# Each policy defines data.t.result; comments say how it reads the input.
POLICIES = {
    "count_of_input": "result := count(input)",  # a builtin over the whole input
    "walk": 'result := [p | walk(input, [p, v]); v == "secret"]',
    "marshal": "result := json.marshal(input)",
    "keys_of_a_part": "result := object.keys(input.tool)",
    "iterate_history": "result := [k | input.history[k]]",
    "count_recent": "result := count(input.history.recent)",
    "scan_recent": 'result := [e.outcome | some e in input.history.recent; e.tool == "x"]',
    "alias": "r := input.run\nresult := r",
    "function_arg": "f(v) := object.keys(v)\nresult := f(input.run)",
    "compare_whole": 'result := input.args == {"amount_cents": 10000, "note": "secret"}',
    "dynamic_key": 'k := ["args", "target"][_]\nresult := {k: input[k]}',
    "with_input": 'inner := input.args\nresult := x if {\n  x := inner with input as {"args": 1}\n}',
    "dotted_only": "result := [input.run.owner, input.tool.name, input.history.run.allowed]",
    "undefined_check": "result := true if not input.run.owner",
    "approvals": "result := count(input.approvals) > 0",
}


def _engine(source: str) -> RegoEngine:
    return RegoEngine.from_source(
        "package t\nimport rego.v1\n" + source + "\n", filename="t.rego", query="data.t.result"
    )


def _raw(engine: RegoEngine, doc: dict[str, Any]) -> Any:
    try:
        return ("value", engine.evaluate(doc))
    except Exception as exc:  # noqa: BLE001 - an undefined result must agree too
        return ("error", type(exc).__name__)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_projected_evaluation_equals_whole_evaluation(name: str) -> None:
    projected = _engine(POLICIES[name])
    whole = _engine(POLICIES[name])
    whole._projection = None  # the reference: convert everything
    assert DOCUMENTS
    for doc in DOCUMENTS:
        assert _raw(projected, doc) == _raw(whole, doc), (name, doc)


def test_whole_input_observers_get_no_projection() -> None:
    for name in ("count_of_input", "walk", "marshal", "with_input"):
        assert _engine(POLICIES[name])._projection is None, name


def test_a_part_observed_whole_is_kept_whole() -> None:
    assert _engine(POLICIES["keys_of_a_part"])._projection == {"tool": True}
    assert _engine(POLICIES["count_recent"])._projection == {"history": {"recent": True}}
    assert _engine(POLICIES["alias"])._projection == {"run": True}
    assert _engine(POLICIES["function_arg"])._projection == {"run": True}


def test_default_policy_reads_no_window_args_or_approvals() -> None:
    """What the shipped policy's conversion leaves out: the parts that grow or carry free text."""
    tree = RegoEngine(DEFAULT_REGO_POLICY)._projection
    assert tree is not None
    for dropped in ("args", "target", "approvals", "now", "workload"):
        assert dropped not in tree, dropped
    # The called tool's counters at their fixed path: not every tool's (the document's size is then
    # independent of how many tools the run used), and of those only what the rate limit adds up.
    assert "recent" not in tree["history"] and "tools" not in tree["history"]
    assert tree["history"]["tool"] == {"allowed": True, "require_approval": True}
    assert tree["run"]["owner"] is True and tree["tool"]["name"] is True


def test_default_policy_decides_the_same_with_and_without_projection() -> None:
    projected = RegoEngine(DEFAULT_REGO_POLICY)
    whole = RegoEngine(DEFAULT_REGO_POLICY)
    whole._projection = None
    for doc in DOCUMENTS:
        assert projected.decide(doc) == whole.decide(doc)


def test_a_non_json_value_anywhere_still_fails_closed() -> None:
    # The projection would never convert `args`; the decision must still refuse a document that is not JSON.
    doc = copy.deepcopy(GOLDEN[0])
    doc["args"] = {"x": object()}
    decision = RegoEngine(DEFAULT_REGO_POLICY).decide(doc)
    assert not decision.allow and decision.reasons[0].startswith("policy_error:")
