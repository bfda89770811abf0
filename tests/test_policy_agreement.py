"""The shipped default.rego and default.cedar implement the same governance.

Each case states the expected decision, so the table checks both that the two
engines agree and that they agree on the *right* answer. Both read policy input
version 2: a case's history is either a list of earlier calls (folded into the
aggregates by tests.support.history_v2) or the aggregates themselves, to reach
counts (approvals, outcomes, the window) a list of calls cannot state.
"""

from __future__ import annotations

from typing import Any

import pytest

from langgraph_warden.guards.cedar import CedarEngine
from langgraph_warden.guards.policy import (
    DEFAULT_CEDAR_POLICY,
    DEFAULT_REGO_POLICY,
    build_policy_input,
    empty_counters_v2,
    empty_history_v2,
)
from langgraph_warden.guards.rego import RegoEngine
from langgraph_warden.guards.tools import ToolSpec
from tests.support.history_v2 import aggregate

LOOKUP = ToolSpec("lookup", sensitivity="public", scopes=("kb:read",))
INTERNAL = ToolSpec("wiki", sensitivity="internal")
CRM = ToolSpec("crm_get", sensitivity="confidential", data_classes={"pii"}, scopes=("crm:read",),
               target_arg="customer")
SECRET = ToolSpec("vault_read", sensitivity="restricted")
PAY = ToolSpec("pay", irreversible=True, scopes=("pay:write",))
SHARE = ToolSpec("share_doc", external=True)
GRANT = ToolSpec("grant_role", escalates=True)
ALL_THREE = ToolSpec("nuke", irreversible=True, external=True, escalates=True)


def allowed(n: int, tool: str = "lookup", decision: str = "allow") -> list[dict[str, Any]]:
    return [{"tool": tool, "decision": decision, "outcome": "completed", "ts": None}] * n


def counts(tools: dict[str, dict[str, int]] | None = None, run: dict[str, int] | None = None, *,
           window: int = 20, recent: int = 0, classes: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """Version-2 aggregates stated directly (``run`` defaults to the sum over ``tools``)."""
    history = empty_history_v2(window)
    for name, c in (tools or {}).items():
        history["tools"][name] = {**empty_counters_v2(), **c, "first_ts": "2025-01-01T00:00:00.000000Z",
                                  "last_ts": "2025-01-01T00:05:00.000000Z"}
        for key, n in c.items():
            history["run"][key] += n if run is None else 0
    history["run"].update(run or {})
    history["recent"] = allowed(recent, tool="other")[:window]
    for cls, c in (classes or {}).items():
        history["data_classes"][cls] = {"allowed": 0, "require_approval": 0, "denied": 0, **c}
    return history


EVERYTHING_BUT_CALLS = {"denied": 500, "completed": 500, "failed": 500, "aborted": 500, "replayed": 500,
                        "approved": 500, "rejected": 500}
APPROVALS = [{"request_id": f"r{i}", "tool": "pay", "approver": "bob", "decision": "approve",
              "ts": "2025-01-01T00:00:00.000000Z"} for i in range(20)]


# (id, spec or unknown-tool name, run overrides, expected (allow, require_approval, reasons, ttl))
CASES: list[tuple[str, ToolSpec | str, dict[str, Any], tuple[bool, bool, tuple[str, ...], int]]] = [
    ("plain_low", LOOKUP, {}, (True, False, (), 300)),
    ("plain_medium", INTERNAL, {"risk_tier": "medium"}, (True, False, (), 120)),
    ("plain_high_public", LOOKUP, {"risk_tier": "high"}, (True, False, (), 60)),
    ("unknown_tool", "rm_rf", {}, (False, False, ("unknown_tool",), 0)),
    ("no_owner", LOOKUP, {"owner": None}, (False, False, ("no_owner",), 0)),
    ("empty_owner", LOOKUP, {"owner": ""}, (False, False, ("no_owner",), 0)),
    ("outside_allowed_tools", PAY, {"allowed_tools": ["lookup"]}, (False, False, ("outside_intent",), 0)),
    ("inside_allowed_tools", LOOKUP, {"allowed_tools": ["lookup"]}, (True, False, (), 300)),
    ("outside_data_classes", CRM, {"allowed_data_classes": ["billing"]}, (False, False, ("outside_intent",), 0)),
    ("inside_data_classes_low", CRM, {"allowed_data_classes": ["pii"]}, (True, False, (), 300)),
    ("irreversible", PAY, {}, (True, True, ("irreversible",), 300)),
    ("external", SHARE, {"risk_tier": "medium"}, (True, True, ("external_sharing",), 120)),
    ("escalates", GRANT, {}, (True, True, ("escalation",), 300)),
    ("all_three", ALL_THREE, {}, (True, True, ("escalation", "external_sharing", "irreversible"), 300)),
    ("high_risk_pii", CRM, {"risk_tier": "high"}, (True, True, ("sensitive_data",), 60)),
    ("high_risk_restricted", SECRET, {"risk_tier": "high"}, (True, True, ("sensitive_data",), 60)),
    ("medium_risk_restricted", SECRET, {"risk_tier": "medium"}, (True, False, (), 120)),
    ("high_risk_irreversible_pii", ToolSpec("wire", irreversible=True, data_classes={"finance"}),
     {"risk_tier": "high"}, (True, True, ("irreversible", "sensitive_data"), 60)),
    ("rate_limited_per_tool", LOOKUP, {"history": allowed(20)}, (False, False, ("rate_limited",), 0)),
    ("under_per_tool_limit", LOOKUP, {"history": allowed(19)}, (True, False, (), 300)),
    ("denied_calls_not_counted", LOOKUP, {"history": allowed(30, decision="deny")}, (True, False, (), 300)),
    ("approval_calls_counted", LOOKUP, {"history": allowed(20, decision="require_approval")},
     (False, False, ("rate_limited",), 0)),
    ("rate_limited_per_run", LOOKUP, {"history": allowed(100, tool="other")}, (False, False, ("rate_limited",), 0)),
    ("deny_beats_approval", PAY, {"owner": None, "allowed_tools": []},
     (False, False, ("no_owner", "outside_intent"), 0)),
    ("unknown_and_outside", "rm_rf", {"allowed_tools": ["lookup"], "history": allowed(25, tool="rm_rf")},
     (False, False, ("outside_intent", "rate_limited", "unknown_tool"), 0)),
    # version 2: the limits read allowed + require_approval off the aggregates, at the boundary
    ("v2_per_tool_19", LOOKUP, {"history": counts({"lookup": {"allowed": 12, "require_approval": 7}})},
     (True, False, (), 300)),
    ("v2_per_tool_20", LOOKUP, {"history": counts({"lookup": {"allowed": 12, "require_approval": 8}})},
     (False, False, ("rate_limited",), 0)),
    ("v2_per_tool_20_approvals_only", LOOKUP, {"history": counts({"lookup": {"require_approval": 20}})},
     (False, False, ("rate_limited",), 0)),
    ("v2_other_tool_at_limit", LOOKUP, {"history": counts({"other": {"allowed": 20}, "lookup": {"allowed": 19}})},
     (True, False, (), 300)),
    ("v2_per_run_99", LOOKUP, {"history": counts({"a": {"allowed": 19}, "b": {"require_approval": 19}},
                                                 run={"allowed": 80, "require_approval": 19})},
     (True, False, (), 300)),
    ("v2_per_run_100", LOOKUP, {"history": counts({"a": {"allowed": 19}, "b": {"require_approval": 19}},
                                                  run={"allowed": 80, "require_approval": 20})},
     (False, False, ("rate_limited",), 0)),
    ("v2_run_counts_not_tools", LOOKUP, {"history": counts(run={"allowed": 100})}, (False, False, ("rate_limited",), 0)),
    ("v2_other_counters_do_not_count", LOOKUP,
     {"history": counts({"lookup": EVERYTHING_BUT_CALLS}, run=EVERYTHING_BUT_CALLS)}, (True, False, (), 300)),
    ("v2_recent_and_approvals_present", PAY,
     {"history": counts({"pay": {"allowed": 3, "approved": 20}}, recent=20, classes={"pii": {"allowed": 4}}),
      "approvals": APPROVALS}, (True, True, ("irreversible",), 300)),
    ("v2_window_zero", LOOKUP, {"history": counts({"lookup": {"allowed": 20}}, window=0), "approvals": APPROVALS},
     (False, False, ("rate_limited",), 0)),
]


@pytest.fixture(scope="module")
def engines() -> tuple[RegoEngine, CedarEngine]:
    return RegoEngine(DEFAULT_REGO_POLICY), CedarEngine(DEFAULT_CEDAR_POLICY)


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 15 and len({c[0] for c in CASES}) == len(CASES)
    assert sum(c[0].startswith("v2_") for c in CASES) >= 10


def test_engines_read_version_2(engines) -> None:
    assert [e.input_version for e in engines] == [2, 2]


@pytest.mark.parametrize(("case_id", "tool", "run", "expected"), CASES, ids=[c[0] for c in CASES])
def test_engines_agree(engines, case_id, tool, run, expected) -> None:
    rego, cedar = engines
    kwargs: dict[str, Any] = {"owner": "alice", "risk_tier": "low"}
    kwargs.update(run)
    if isinstance(kwargs.get("history"), list):
        kwargs["history"] = aggregate(kwargs["history"])
    spec = tool if isinstance(tool, ToolSpec) else None
    policy_input = build_policy_input(
        workload_id="spiffe://example.org/agent", thread_id="t-1",
        tool_name=spec.name if spec else tool, tool_spec=spec,
        args={"customer": "c-1"}, now="2025-01-01T00:00:00Z", **kwargs,
    )
    assert policy_input["version"] == 2
    if "approvals" in run:
        window = policy_input["history"]["window"]
        assert policy_input["approvals"] == run["approvals"][len(run["approvals"]) - window:][:window]
    decisions = [e.decide(policy_input) for e in engines]
    for d in decisions:
        assert (d.allow, d.require_approval, d.reasons, d.ttl_seconds) == expected, d.engine
        assert d.scopes == ((spec.scopes if spec else ()) if d.allow else ())
    r, c = (d.to_dict() for d in decisions)
    for key in ("engine", "policy_revision"):
        r.pop(key), c.pop(key)
    assert r == c
