"""The shipped default.rego and default.cedar implement the same governance.

Each case states the expected decision, so the table checks both that the two
engines agree and that they agree on the *right* answer.
"""

from __future__ import annotations

from typing import Any

import pytest

from langgraph_warden.guards.cedar import CedarEngine
from langgraph_warden.guards.policy import DEFAULT_CEDAR_POLICY, DEFAULT_REGO_POLICY, build_policy_input
from langgraph_warden.guards.rego import RegoEngine
from langgraph_warden.guards.tools import ToolSpec

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
]


@pytest.fixture(scope="module")
def engines() -> tuple[RegoEngine, CedarEngine]:
    return RegoEngine(DEFAULT_REGO_POLICY), CedarEngine(DEFAULT_CEDAR_POLICY)


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 15 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("case_id", "tool", "run", "expected"), CASES, ids=[c[0] for c in CASES])
def test_engines_agree(engines, case_id, tool, run, expected) -> None:
    rego, cedar = engines
    kwargs: dict[str, Any] = {"owner": "alice", "risk_tier": "low"}
    kwargs.update(run)
    spec = tool if isinstance(tool, ToolSpec) else None
    policy_input = build_policy_input(
        workload_id="spiffe://example.org/agent", thread_id="t-1",
        tool_name=spec.name if spec else tool, tool_spec=spec,
        args={"customer": "c-1"}, now="2025-01-01T00:00:00Z", **kwargs,
    )
    decisions = [e.decide(policy_input) for e in engines]
    for d in decisions:
        assert (d.allow, d.require_approval, d.reasons, d.ttl_seconds) == expected, d.engine
        assert d.scopes == ((spec.scopes if spec else ()) if d.allow else ())
    r, c = (d.to_dict() for d in decisions)
    for key in ("engine", "policy_revision"):
        r.pop(key), c.pop(key)
    assert r == c
