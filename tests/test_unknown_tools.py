"""Undeclared tools are an explicit setting, and an allow-all policy means what the README says (issue 19, item 8).

Old behaviour: under a permissive policy an undeclared tool ran, while a declared tool that
needs a credential scope was refused — the tool the operator described was held to more than the
one they forgot.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import tool

from langgraph_warden import ConfigurationError, RegoEngine, ToolSpec, Warden
from langgraph_warden.events import EventKind
from langgraph_warden.guards.credentials import current_credential
from langgraph_warden.testing import ScriptedChatModel, tool_call

OWNER = "alice@example.com"


def allow_all(scopes: str = "[]") -> RegoEngine:
    """A policy that allows every call without approval and grants ``scopes`` (a Rego expression)."""
    return RegoEngine.from_source(
        "package warden\n"
        f'decision := {{"allow": true, "require_approval": false, "reasons": [], "scopes": {scopes}, '
        '"ttl_seconds": 60, "obligations": {}}\n'
    )


ran: list[str] = []


@tool
def forgotten(x: str) -> str:
    """A tool nobody declared."""
    ran.append("forgotten")
    return "forgotten ran"


@tool
def pay(x: str) -> str:
    """A declared tool that needs a credential scope."""
    assert current_credential().scopes == ("payments:write",)
    ran.append("pay")
    return "pay ran"


def run(tmp_path, policy: RegoEngine | None, **warden_kwargs: Any) -> tuple[Warden, dict[str, Any]]:
    ran.clear()
    warden = Warden.open(f"sqlite:///{tmp_path / 'u.db'}", ephemeral_keys=True, policy=policy, **warden_kwargs)
    warden.tools.register(ToolSpec("pay", scopes=("payments:write",)))
    model = ScriptedChatModel(script=[
        AIMessage("", tool_calls=[tool_call("forgotten", {"x": "1"}, "c_forgotten"), tool_call("pay", {"x": "1"}, "c_pay")]),
        AIMessage("done"),
    ])
    agent = create_agent(model, [forgotten, pay], middleware=[warden.middleware()], checkpointer=warden.checkpointer)
    out = agent.invoke({"messages": [("user", "go")]}, warden.start_run("t", owner=OWNER, intent="pay"))
    return warden, {m.tool_call_id: m for m in out["messages"] if m.type == "tool"}


def decisions(warden: Warden) -> dict[str, dict[str, Any]]:
    return {e.payload["tool_call_id"]: e.payload["decision"] for e in warden.ledger.events("t", kinds=[EventKind.POLICY_DECIDED])}


def test_an_allow_all_policy_cannot_run_an_undeclared_tool_by_default(tmp_path):
    warden, msgs = run(tmp_path, allow_all())
    with warden:
        assert "forgotten" not in ran
        msg = msgs["c_forgotten"]
        assert msg.status == "error" and "unknown_tool" in msg.content and "not run" in msg.content
        assert "unknown_tools='deny'" in msg.content and "warden.tools.register(ToolSpec('forgotten', ...))" in msg.content
        decided = decisions(warden)["c_forgotten"]
        # The policy was still asked: the record names its engine and revision, and the guard's reason.
        assert decided["allow"] is False and decided["reasons"] == ["unknown_tool"] and decided["engine"] == "rego"
        assert decided["scopes"] == []
        assert warden.audit("t").action("c_forgotten").status == "denied"
        assert warden.guard.unknown_tools == "deny" and "unknown_tools=deny" in repr(warden)


def test_allow_all_grants_no_scope_so_a_scoped_tool_is_refused_with_the_fix(tmp_path):
    warden, msgs = run(tmp_path, allow_all())
    with warden:
        assert "pay" not in ran
        content = msgs["c_pay"].content
        assert "ScopeNotGrantedError" in content and "input.tool.scopes" in content, content


def test_an_allow_all_policy_that_grants_the_declared_scopes_runs_declared_tools(tmp_path):
    warden, msgs = run(tmp_path, allow_all("input.tool.scopes"))
    with warden:
        assert ran == ["pay"] and msgs["c_pay"].content == "pay ran"
        assert msgs["c_forgotten"].status == "error"  # still undeclared: still denied


def test_unknown_tools_policy_hands_undeclared_tools_to_the_policy(tmp_path):
    warden, msgs = run(tmp_path, allow_all(), unknown_tools="policy")
    with warden:
        assert "forgotten" in ran and msgs["c_forgotten"].content == "forgotten ran"
        assert decisions(warden)["c_forgotten"]["allow"] is True


def test_the_shipped_policy_denies_undeclared_tools_either_way(tmp_path):
    warden, msgs = run(tmp_path, None, unknown_tools="policy")
    with warden:
        assert "forgotten" not in ran
        assert decisions(warden)["c_forgotten"]["reasons"] == ["unknown_tool"]
        assert "unknown_tools='deny'" not in msgs["c_forgotten"].content  # the policy itself denied it


def test_a_wrong_setting_names_the_choices(tmp_path):
    with pytest.raises(ConfigurationError, match=r"unknown_tools='allow'.*'deny'.*'policy'"):
        Warden.open(f"sqlite:///{tmp_path / 'x.db'}", ephemeral_keys=True, unknown_tools="allow")
