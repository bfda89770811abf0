"""Just-in-time credentials end to end, through the Warden facade and the real ledger.

A tool reads its per-step credential with ``current_credential()`` and calls a
loopback resource service that checks the Bearer token with
``LocalTokenProvider.verify``: it works during the step, is rejected right
after (revoked) and after expiry. Bad input reaching the guard (a scope the
policy did not grant, an unknown provider, a keyring without the secret) gives a
clear typed error and no side effect. A run that died holding a lease (in
process, and a child process SIGKILLed inside a tool) gets every outstanding
lease revoked and recorded when it resumes; ``warden credentials`` does the same
from the command line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from typer.testing import CliRunner

from langgraph_warden.cli_credentials import app as credentials_cli
from langgraph_warden.events import EventKind
from langgraph_warden.guards.credentials import (
    CredentialRejected,
    KeyringSecretProvider,
    current_credential,
    short_digest,
)
from langgraph_warden.guards.policy import DEFAULT_REGO_POLICY, PolicyDecision
from langgraph_warden.guards.rego import RegoEngine
from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.warden import Warden

from .conftest import sqlite_url
from .support.agents import ScriptedChatModel, SideEffects, call, turn
from .support.forker import Launcher
from .support.guard_probe import PolicyWrapper
from .support.resource_service import ResourceService
from .support.resource_service import call as http_get

OWNER = "alice@example.com"
SERVICE = "warden-upstream"





@pytest.fixture(scope="module")
def rego() -> RegoEngine:
    return RegoEngine(DEFAULT_REGO_POLICY)


class Reshaped(PolicyWrapper):
    """A real engine whose allowed decisions are changed (e.g. narrower scopes, longer TTL)."""

    def __init__(self, inner: RegoEngine, **changes: Any) -> None:
        super().__init__(inner)
        self.changes = changes

    def decide(self, policy_input) -> PolicyDecision:
        d = self.inner.decide(policy_input)
        return dataclasses.replace(d, **self.changes) if d.allow else d


def graph_for(warden: Warden, tools, script):
    model = ScriptedChatModel(script=script)

    def agent(state: MessagesState) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    b = StateGraph(MessagesState)
    b.add_node("agent", agent)
    b.add_node("tools", ToolNode(tools, wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap))
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition)
    b.add_edge("tools", "agent")
    return b.compile(checkpointer=warden.checkpointer)


def tool_messages(result) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}


def payloads(warden: Warden, thread: str, kind: str) -> list[dict]:
    return [dict(e.payload) for e in warden.ledger.events(thread, kinds=[kind])]


# --------------------------------------------------------------------------- works during the step only


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_token_works_during_the_step_only(tmp_path, rego, mode):
    effects = SideEffects(tmp_path / "effects.jsonl")
    tokens: list[str] = []
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True, policy=rego) as warden:
        local = warden.broker.providers["local"]
        with ResourceService(local, audience="fetch_invoice", scope="invoices:read") as svc:

            @tool
            def fetch_invoice(invoice_id: str) -> str:
                """Fetch an invoice from the billing API."""
                cred = current_credential()
                tokens.append(cred.reveal())  # kept by the test only, to replay it later
                status, body = http_get(svc.url, cred.reveal())
                effects.record("fetch_invoice", invoice_id=invoice_id, status=status)
                return json.dumps({"status": status, "sub": body.get("sub"), "tool_call_id": body.get("tool_call_id")})

            # the model sees only invoice_id: the credential is not part of the tool's signature
            assert set(fetch_invoice.tool_call_schema.model_json_schema()["properties"]) == {"invoice_id"}
            warden.tools.register(ToolSpec("fetch_invoice", scopes=("invoices:read",)))
            graph = graph_for(warden, [fetch_invoice], [turn(call("fetch_invoice", {"invoice_id": "42"}, "f1")), turn(text="ok")])
            cfg = warden.start_run(f"t-e2e-{mode}", owner=OWNER, intent="read invoice 42", risk_tier="low")
            inputs = {"messages": [HumanMessage("invoice 42?")]}
            out = await graph.ainvoke(inputs, cfg) if mode == "async" else graph.invoke(inputs, cfg)

            result = json.loads(tool_messages(out)["f1"].content)
            assert result == {"status": 200, "sub": str(warden.identity.spiffe_id), "tool_call_id": "f1"}
            (token,) = tokens
            # right after the step: revoked
            assert http_get(svc.url, token) == (401, {"error": "invalid_token", "reason": "revoked"})
            # after expiry (the resource server's clock moves on)
            real_clock = local.clock
            local.clock = lambda: real_clock() + 3600
            try:
                assert http_get(svc.url, token)[1]["reason"] == "expired"
            finally:
                local.clock = real_clock
            assert [s for s, _ in svc.seen] == [200, 401, 401]

        thread = f"t-e2e-{mode}"
        (issued,) = payloads(warden, thread, EventKind.CREDENTIAL_ISSUED)
        (revoked,) = payloads(warden, thread, EventKind.CREDENTIAL_REVOKED)
        for p in (issued, revoked):
            assert p["lease_id"] and p["provider"] == "local" and p["jit"] is True
            assert p["scopes"] == ["invoices:read"] and p["audience"] == "fetch_invoice" and p["tool_call_id"] == "f1"
            assert p["expires_at"].endswith("Z") and p["token_digest"] == short_digest(token)
            assert token not in json.dumps(p) and token.rsplit(".", 1)[-1] not in json.dumps(p)
        assert revoked["lease_id"] == issued["lease_id"]
        assert revoked["reason"] == "step_ended" and revoked["revoked"] is True
        assert 0 < issued["ttl_seconds"] <= warden.broker.max_ttl_seconds
        started = payloads(warden, thread, EventKind.TOOL_STARTED)[0]
        assert started["lease_id"] == issued["lease_id"]
        # ordering: issued before the side effect started, revoked after it completed
        kinds = [e.kind for e in warden.ledger.events(thread) if e.kind.startswith(("credential.", "tool."))]
        assert kinds == ["credential.issued", "tool.started", "tool.completed", "credential.revoked"]
        assert warden.lease_store.outstanding(thread) == []
        assert warden.audit(thread).verified
        assert effects.count("fetch_invoice") == 1


def test_policy_ttl_above_the_maximum_is_capped(tmp_path, rego):
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True, policy=Reshaped(rego, ttl_seconds=86_400)) as warden:

        @tool
        def fetch_invoice(invoice_id: str) -> str:
            """Fetch an invoice."""
            lease = current_credential()
            return str(int((lease.expires_at - lease.issued_at).total_seconds()))

        warden.tools.register(ToolSpec("fetch_invoice", scopes=("invoices:read",)))
        graph = graph_for(warden, [fetch_invoice], [turn(call("fetch_invoice", {"invoice_id": "1"}, "f1")), turn(text="ok")])
        cfg = warden.start_run("t-ttl", owner=OWNER, intent="read", risk_tier="low")
        out = graph.invoke({"messages": [HumanMessage("x")]}, cfg)
        lifetime = int(tool_messages(out)["f1"].content)
        assert 0 < lifetime <= warden.broker.max_ttl_seconds
        (issued,) = payloads(warden, "t-ttl", EventKind.CREDENTIAL_ISSUED)
        # the policy asked for a day; the guard caps at the run's tier profile, the broker at its maximum
        profile_max = warden.charter("t-ttl").effective_profile.max_credential_ttl_seconds
        assert lifetime == issued["ttl_seconds"] == min(profile_max, warden.broker.max_ttl_seconds)


# --------------------------------------------------------------------------- bad input through the guard


def bad_input_case(tmp_path, warden: Warden, tool_name: str, spec: ToolSpec, thread: str, effects: SideEffects):
    @tool(tool_name)
    def the_tool(x: str) -> str:
        """Call an upstream system."""
        effects.record(tool_name, secret_len=len(current_credential().reveal()))
        return "done"

    warden.tools.register(spec)
    graph = graph_for(warden, [the_tool], [turn(call(tool_name, {"x": "1"}, "b1")), turn(text="ok")])
    cfg = warden.start_run(thread, owner=OWNER, intent="call upstream", risk_tier="low")
    out = graph.invoke({"messages": [HumanMessage("x")]}, cfg)
    return tool_messages(out)["b1"]


def assert_refused(warden: Warden, thread: str, msg: ToolMessage, error: str, needle: str, effects: SideEffects, tool_name: str):
    assert msg.status == "error"
    assert f"({error}:" in msg.content and needle in msg.content and "the tool was not run" in msg.content
    assert effects.count(tool_name) == 0
    (denied,) = payloads(warden, thread, EventKind.TOOL_DENIED)
    assert denied["reasons"] == [f"credential_refused:{error}"]
    assert payloads(warden, thread, EventKind.TOOL_STARTED) == []
    assert payloads(warden, thread, EventKind.CREDENTIAL_ISSUED) == []
    assert warden.lease_store.outstanding(thread) == []
    trail = warden.audit(thread)
    assert trail.verified and trail.action("b1").status == "denied"


def test_scope_the_policy_did_not_grant(tmp_path, rego):
    effects = SideEffects(tmp_path / "e.jsonl")
    # The tool declares read+write; this policy grants read only.
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True, policy=Reshaped(rego, scopes=("invoices:read",))) as warden:
        spec = ToolSpec("edit_invoice", scopes=("invoices:read", "invoices:write"))
        msg = bad_input_case(tmp_path, warden, "edit_invoice", spec, "t-scope", effects)
        assert_refused(warden, "t-scope", msg, "ScopeNotGrantedError",
                       "scopes_requested ['invoices:write'] were not granted by the policy", effects, "edit_invoice")


def test_unknown_provider(tmp_path, rego):
    effects = SideEffects(tmp_path / "e.jsonl")
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True, policy=rego) as warden:
        warden.broker.route("call_vault", "vault")  # no provider named vault
        msg = bad_input_case(tmp_path, warden, "call_vault", ToolSpec("call_vault", scopes=("vault:read",)), "t-prov", effects)
        assert_refused(warden, "t-prov", msg, "UnknownProviderError", "provider='vault' is not registered", effects, "call_vault")


def test_keyring_without_the_secret_then_with_it(tmp_path, rego, memory_keyring):
    effects = SideEffects(tmp_path / "e.jsonl")
    provider = KeyringSecretProvider(SERVICE, {"call_crm": "crm-key"})
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True, policy=rego, providers=[provider]) as warden:
        warden.broker.route("call_crm", "keyring")
        spec = ToolSpec("call_crm", scopes=("crm:read",))
        msg = bad_input_case(tmp_path, warden, "call_crm", spec, "t-kr", effects)
        assert_refused(warden, "t-kr", msg, "SecretNotFoundError", f"keyring set {SERVICE} crm-key", effects, "call_crm")

        # Once the secret is stored, the same tool gets it for its step, recorded as non-JIT.
        memory_keyring.set_password(SERVICE, "crm-key", "sk-crm-123456")
        @tool("call_crm")
        def call_crm(x: str) -> str:
            """Call the CRM."""
            effects.record("call_crm", secret_len=len(current_credential().reveal()))
            return "done"

        graph = graph_for(warden, [call_crm], [turn(call("call_crm", {"x": "1"}, "k1")), turn(text="ok")])
        cfg = warden.start_run("t-kr-ok", owner=OWNER, intent="call upstream", risk_tier="low")
        assert tool_messages(graph.invoke({"messages": [HumanMessage("x")]}, cfg))["k1"].content == "done"
        assert effects.entries() == [{"tool": "call_crm", "pid": os.getpid(), "secret_len": len("sk-crm-123456")}]
        (issued,) = payloads(warden, "t-kr-ok", EventKind.CREDENTIAL_ISSUED)
        (revoked,) = payloads(warden, "t-kr-ok", EventKind.CREDENTIAL_REVOKED)
        assert issued["provider"] == "keyring" and issued["jit"] is False and issued["token_digest"] is None
        assert revoked["reason"] == "not_revocable_step_ended" and revoked["revoked"] is False


# --------------------------------------------------------------------------- crash recovery


def test_resume_revokes_leases_left_by_a_dead_step(tmp_path, rego):
    url = sqlite_url(tmp_path)
    with Warden.open(url, ephemeral_keys=True, policy=rego) as first:
        local = first.broker.providers["local"]
        cfg = first.start_run("t-crash", owner=OWNER, intent="read", risk_tier="low")
        # A step issued its credential and the process died before the step's `finally`.
        a = first.broker.issue("t-crash", "c1", "fetch_invoice", ["invoices:read"])
        b = first.broker.issue("t-crash", "c2", "fetch_invoice", ["invoices:read"])
        other = first.broker.issue("t-other", "c3", "fetch_invoice", ["invoices:read"])
        assert local.verify(a.reveal(), "fetch_invoice", "invoices:read")["jti"] == a.lease_id
        assert {r.lease_id for r in first.lease_store.outstanding("t-crash")} == {a.lease_id, b.lease_id}

        # The resumed process (new keys, no memory of the leases) starts the run again.
        with Warden.open(url, ephemeral_keys=True, policy=rego) as resumed:
            assert resumed.start_run("t-crash", owner=OWNER, intent="read", risk_tier="low") == cfg
            assert resumed.lease_store.outstanding("t-crash") == []
            recovered = payloads(resumed, "t-crash", EventKind.CREDENTIAL_REVOKED)
            assert sorted(p["lease_id"] for p in recovered) == sorted([a.lease_id, b.lease_id])
            for p in recovered:
                assert p["reason"] == "run_revoked" and p["revoked"] is True and p["recovered"] is True
                assert p["provider"] == "local" and p["scopes"] == ["invoices:read"] and p["audience"] == "fetch_invoice"
            # idempotent: nothing left to do, nothing recorded twice
            assert resumed.recover("t-crash") == []
            assert len(payloads(resumed, "t-crash", EventKind.CREDENTIAL_REVOKED)) == 2
            assert resumed.audit("t-crash").verified
            # other runs are untouched
            assert [r.lease_id for r in resumed.lease_store.outstanding("t-other")] == [other.lease_id]

        # The resource server (still holding the first process's key set) now rejects them.
        for lease in (a, b):
            with pytest.raises(CredentialRejected) as info:
                local.verify(lease.reveal(), "fetch_invoice", "invoices:read")
            assert info.value.reason == "revoked"
        assert local.verify(other.reveal(), "fetch_invoice", "invoices:read")


def crash_child(url: str, effects_path: str) -> None:
    """The other process of the SIGKILL tests (run by the ``forked`` fixture): dies inside the tool."""
    with Warden.open(url, ephemeral_keys=True) as warden:
        graph = crash_graph(warden, effects_path, die=True)
        cfg = warden.start_run("t-kill", owner="alice@example.com", intent="transfer", risk_tier="low")
        graph.invoke({"messages": [HumanMessage("go")]}, cfg)
    raise SystemExit(3)  # not reached: the tool SIGKILLs this process


def crash_graph(warden: Warden, effects_path: str, *, die: bool):
    """The graph of the SIGKILL test, built identically by the child and the parent."""
    effects = SideEffects(effects_path)

    @tool
    def transfer(amount: int) -> str:
        """Move money (not idempotent)."""
        lease = current_credential()
        effects.record("transfer", amount=amount, lease=lease.lease_id)
        if die:
            os.kill(os.getpid(), 9)  # the process dies inside the step, holding its credential
        return "moved"

    warden.tools.register(ToolSpec("transfer", scopes=("payments:write",)))
    return graph_for(warden, [transfer], [turn(call("transfer", {"amount": 5}, "x1")), turn(text="ok")])


def _killed_inside_the_step(tmp_path, forked: Launcher) -> tuple[str, str]:
    """Run crash_child: another process SIGKILLed inside the tool, holding its credential. (db url, effects file)"""
    url = sqlite_url(tmp_path)
    effects_path = str(tmp_path / "effects.jsonl")
    proc = forked.run("tests.test_credentials_e2e", url, effects_path, function="crash_child")
    assert proc.returncode == -9, proc.stderr[-2000:]
    return url, effects_path


def test_sigkilled_run_leases_revoked_on_resume(tmp_path, rego, forked):
    url, effects_path = _killed_inside_the_step(tmp_path, forked)
    (effect,) = SideEffects(effects_path).entries()

    with Warden.open(url, ephemeral_keys=True, policy=rego) as warden:
        (left,) = warden.lease_store.outstanding("t-kill")
        assert left.lease_id == effect["lease"] and left.scopes == ("payments:write",)
        kinds = [e.kind for e in warden.ledger.events("t-kill") if e.kind.startswith(("tool.", "credential."))]
        assert kinds == ["credential.issued", "tool.started"]  # died mid-step

        cfg = warden.start_run("t-kill", owner=OWNER, intent="transfer", risk_tier="low")
        assert warden.lease_store.outstanding("t-kill") == []
        (rev,) = payloads(warden, "t-kill", EventKind.CREDENTIAL_REVOKED)
        assert rev["lease_id"] == left.lease_id and rev["reason"] == "run_revoked" and rev["recovered"] is True

        # Resume: the in-doubt call is recorded aborted and not re-run (not idempotent).
        graph = crash_graph(warden, effects_path, die=False)
        out = graph.invoke(None, cfg)
        msg = tool_messages(out)["x1"]
        assert msg.status == "error" and "outcome is unknown" in msg.content
        assert len(SideEffects(effects_path).entries()) == 1
        trail = warden.audit("t-kill")
        assert trail.verified and trail.summary.credentials_outstanding == []


def test_resume_without_start_run_revokes_the_aborted_calls_credential(tmp_path, rego, forked):
    """Resuming with a bare thread id (no start_run recovery): aborting the in-doubt call revokes its lease."""
    url, effects_path = _killed_inside_the_step(tmp_path, forked)

    with Warden.open(url, ephemeral_keys=True, policy=rego) as warden:
        (left,) = warden.lease_store.outstanding("t-kill")
        token = left.lease_id
        graph = crash_graph(warden, effects_path, die=False)
        out = graph.invoke(None, {"configurable": {"thread_id": "t-kill"}})
        assert "outcome is unknown" in tool_messages(out)["x1"].content
        assert warden.lease_store.outstanding("t-kill") == []
        (rev,) = payloads(warden, "t-kill", EventKind.CREDENTIAL_REVOKED)
        assert rev["lease_id"] == token and rev["reason"] == "call_aborted" and rev["recovered"] is True
        kinds = [e.kind for e in warden.ledger.events("t-kill") if e.kind.startswith(("tool.", "credential."))]
        assert kinds[:4] == ["credential.issued", "tool.started", "credential.revoked", "tool.aborted"]
        assert len(SideEffects(effects_path).entries()) == 1  # not re-run
        trail = warden.audit("t-kill")
        assert trail.verified and trail.summary.credentials_outstanding == []


# --------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_list_and_revoke_run(tmp_path, rego):
    url = sqlite_url(tmp_path)
    with Warden.open(url, ephemeral_keys=True, policy=rego) as warden:
        warden.start_run("t-cli", owner=OWNER, intent="read", risk_tier="low")
        a = warden.broker.issue("t-cli", "c1", "fetch_invoice", ["invoices:read"])
        other = warden.broker.issue("t-keep", "c2", "fetch_invoice", ["invoices:read"])
        token = a.reveal()
        local = warden.broker.providers["local"]

        res = runner.invoke(credentials_cli, ["list", "--db", url])
        assert res.exit_code == 0, res.output
        assert a.lease_id in res.output and other.lease_id in res.output and "2 outstanding lease(s)" in res.output
        res = runner.invoke(credentials_cli, ["list", "--db", url, "--thread", "t-cli", "--format", "json"])
        assert res.exit_code == 0, res.output
        (row,) = json.loads(res.output)["outstanding"]
        assert row["lease_id"] == a.lease_id and row["thread_id"] == "t-cli" and row["scopes"] == ["invoices:read"]
        assert row["jit"] is True and row["provider"] == "local"

        res = runner.invoke(credentials_cli, ["revoke-run", "t-cli", "--db", url, "--ephemeral-keys"])
        assert res.exit_code == 0, res.output
        assert res.output.strip() == f"revoked 1 lease(s) of run t-cli: {a.lease_id}"
        assert token not in res.output
        with pytest.raises(CredentialRejected, match="revoked"):
            local.verify(token, "fetch_invoice", "invoices:read")
        (rev,) = payloads(warden, "t-cli", EventKind.CREDENTIAL_REVOKED)
        assert rev["lease_id"] == a.lease_id and rev["reason"] == "run_revoked"
        assert warden.audit("t-cli").verified  # signed by the CLI's (ephemeral, registered) key

        res = runner.invoke(credentials_cli, ["revoke-run", "t-cli", "--db", url, "--ephemeral-keys"])
        assert res.exit_code == 0 and "no outstanding leases" in res.output
        res = runner.invoke(credentials_cli, ["list", "--db", url, "--format", "json"])
        assert [r["lease_id"] for r in json.loads(res.output)["outstanding"]] == [other.lease_id]


def test_cli_errors_are_clear(tmp_path):
    res = runner.invoke(credentials_cli, ["list", "--db", "mysql://nope/x"])
    assert res.exit_code == 2 and "error:" in res.output and "sqlite" in res.output
    # The CLI is mounted as `warden credentials`.
    from langgraph_warden.cli import app as warden_cli

    res = runner.invoke(warden_cli, ["credentials", "--help"])
    assert res.exit_code == 0 and "revoke-run" in res.output


def test_lease_row_and_its_event_commit_together(tmp_path, rego):
    """The lease list and the history never disagree: a failed event append undoes the row change."""
    url = sqlite_url(tmp_path)
    with Warden.open(url, ephemeral_keys=True, policy=rego) as warden:
        warden.start_run("t-atomic", owner=OWNER, intent="read", risk_tier="low")
        ledger = warden.saver.ledger
        original = ledger.append_in
        fail_kind: list[str] = []

        def failing_append_in(tx, thread_id, drafts):
            if fail_kind and any(d.kind == fail_kind[0] for d in drafts):
                raise RuntimeError("disk full")
            return original(tx, thread_id, drafts)

        ledger.append_in = failing_append_in
        fail_kind.append(EventKind.CREDENTIAL_ISSUED)
        with pytest.raises(RuntimeError, match="disk full"):
            warden.broker.issue("t-atomic", "c1", "fetch_invoice", ["invoices:read"])
        assert warden.lease_store.outstanding("t-atomic") == []  # no row without its event
        assert payloads(warden, "t-atomic", EventKind.CREDENTIAL_ISSUED) == []

        fail_kind.clear()
        lease = warden.broker.issue("t-atomic", "c2", "fetch_invoice", ["invoices:read"])
        fail_kind.append(EventKind.CREDENTIAL_REVOKED)
        with pytest.raises(RuntimeError, match="disk full"):
            warden.broker.revoke(lease)
        # Not on the revocation list without its event: still outstanding, so recovery finds it.
        assert [r.lease_id for r in warden.lease_store.outstanding("t-atomic")] == [lease.lease_id]
        fail_kind.clear()
        assert warden.recover("t-atomic") == [lease.lease_id]
        assert warden.lease_store.outstanding("t-atomic") == []
        assert [p["lease_id"] for p in payloads(warden, "t-atomic", EventKind.CREDENTIAL_REVOKED)] == [lease.lease_id]
        warden.broker.revoke(lease)  # already revoked: nothing recorded twice
        assert len(payloads(warden, "t-atomic", EventKind.CREDENTIAL_REVOKED)) == 1
        assert warden.audit("t-atomic").verified


def _scoped_tool_graph(warden: Warden, effects: SideEffects):
    """``START -> ToolNode([fetch_invoice]) -> END`` (no checkpointer: only the guard's records commit)."""
    from langgraph.graph import END

    @tool
    def fetch_invoice(invoice_id: str) -> str:
        """Fetch an invoice."""
        current_credential().reveal()
        effects.record("fetch_invoice", invoice_id=invoice_id)
        return "ok"

    warden.tools.register(ToolSpec("fetch_invoice", scopes=("invoices:read",)))
    b = StateGraph(MessagesState)
    b.add_node("tools", ToolNode([fetch_invoice], wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap))
    b.add_edge(START, "tools")
    b.add_edge("tools", END)
    return b.compile()


def _call_message(tool_call_id: str):
    from langchain_core.messages import AIMessage

    return {"messages": [AIMessage("", tool_calls=[{"name": "fetch_invoice", "args": {"invoice_id": "7"},
                                                     "id": tool_call_id, "type": "tool_call"}])]}


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_scoped_call_commits_decision_lease_and_start_in_one_transaction(tmp_path, rego, mode):
    """Before its side effect a scoped call makes one durable commit, not three: the policy decision,
    the lease row, credential.issued and tool.started together (then the outcome with the revocation)."""
    from langgraph_warden.checkpointers.direct_sqlite import direct_sqlite

    effects = SideEffects(tmp_path / "effects.jsonl")
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True, policy=rego) as warden:
        graph = _scoped_tool_graph(warden, effects)
        cfg = warden.start_run("t-one-tx", owner=OWNER, intent="read", risk_tier="low")
        direct = direct_sqlite(warden.saver.engine)
        warden.ledger.flush()
        commits, seq0 = direct.commits, warden.ledger.events("t-one-tx")[-1].seq
        started_at: list[int] = []

        real_started = warden.guard.outcomes._started

        def observed(plan, lease, before=None, rows=None):
            real_started(plan, lease, before, rows)
            started_at.append(direct.commits - commits)  # durable when it returns

        warden.guard.outcomes._started = observed
        if mode == "async":
            await graph.ainvoke(_call_message("f1"), cfg)
        else:
            graph.invoke(_call_message("f1"), cfg)
        warden.ledger.flush()
        assert effects.count("fetch_invoice") == 1
        assert started_at == [1]  # decision, lease and start: the call's first commit
        assert direct.commits - commits == 2  # then tool.completed with the revocation
        new = [e for e in warden.ledger.events("t-one-tx") if e.seq > seq0]
        assert [e.kind for e in new][:3] == [EventKind.POLICY_DECIDED, EventKind.CREDENTIAL_ISSUED, EventKind.TOOL_STARTED]
        assert {e.kind for e in new[3:]} == {EventKind.TOOL_COMPLETED, EventKind.CREDENTIAL_REVOKED}
        issued, started = new[1].payload, new[2].payload
        assert started["lease_id"] == issued["lease_id"] and issued["tool_call_id"] == "f1"
        assert warden.lease_store.outstanding("t-one-tx") == []
        assert warden.audit("t-one-tx").verified


def test_a_lease_row_that_cannot_be_written_undoes_the_start(tmp_path, rego):
    """The lease row commits with credential.issued and tool.started or not at all: when it fails, the
    tool does not run, nothing of the attempt is in the history, and the credential is withdrawn."""
    effects = SideEffects(tmp_path / "effects.jsonl")
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True, policy=rego) as warden:
        graph = _scoped_tool_graph(warden, effects)
        cfg = warden.start_run("t-undo", owner=OWNER, intent="read", risk_tier="low")
        withdrawn: list[tuple[str, str]] = []
        local = warden.broker.providers["local"]
        real_revoke = local.revoke
        local.revoke = lambda lease, reason="step_ended": withdrawn.append((lease.lease_id, reason)) or real_revoke(lease, reason)

        def disk_full(tx, lease):
            raise RuntimeError("disk full")

        store = warden.lease_store
        store.insert_in = disk_full  # type: ignore[method-assign]
        with pytest.raises(Exception, match="disk full"):
            graph.invoke(_call_message("f1"), cfg)
        assert effects.count("fetch_invoice") == 0
        kinds = [e.kind for e in warden.ledger.events("t-undo")]
        for kind in (EventKind.CREDENTIAL_ISSUED, EventKind.TOOL_STARTED):
            assert kind not in kinds, kinds
        assert [reason for _, reason in withdrawn] == ["issue_aborted"]
        assert store.outstanding("t-undo") == []

        del store.insert_in  # the store's own again: the call runs, once
        graph.invoke(_call_message("f1"), cfg)
        assert effects.count("fetch_invoice") == 1
        assert warden.audit("t-undo").verified


async def test_a_step_cancelled_while_its_lease_and_start_commit_records_that_the_tool_never_ran(tmp_path, rego):
    """The async hook: cancelled while the issue (which records tool.started with the lease) runs in
    its thread. The issue still commits; then the attempt is recorded failed and the lease revoked, so
    the call is not left in doubt, and running it again is a normal new attempt."""
    import asyncio
    import threading

    effects = SideEffects(tmp_path / "effects.jsonl")
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True, policy=rego) as warden:
        graph = _scoped_tool_graph(warden, effects)
        cfg = warden.start_run("t-cancel", owner=OWNER, intent="read", risk_tier="low")
        outcomes = warden.guard.outcomes
        entered, release = threading.Event(), threading.Event()
        real_started = outcomes._started

        def held(plan, lease, before=None, rows=None):
            entered.set()
            release.wait(10)
            real_started(plan, lease, before, rows)

        outcomes._started = held
        task = asyncio.create_task(graph.ainvoke(_call_message("f1"), cfg))
        assert await asyncio.to_thread(entered.wait, 10)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        del outcomes._started

        def settled() -> bool:  # the revoking thread records tool.failed, then credential.revoked
            return bool(payloads(warden, "t-cancel", EventKind.CREDENTIAL_REVOKED))

        for _ in range(200):
            if settled():
                break
            await asyncio.sleep(0.05)
        kinds = [e.kind for e in warden.ledger.events("t-cancel")]
        assert kinds[-3:] == [EventKind.TOOL_STARTED, EventKind.TOOL_FAILED, EventKind.CREDENTIAL_REVOKED], kinds
        (failed,) = payloads(warden, "t-cancel", EventKind.TOOL_FAILED)
        assert failed["error_type"] == "CancelledError" and failed["attempt"] == 1
        assert payloads(warden, "t-cancel", EventKind.CREDENTIAL_REVOKED)[0]["reason"] == "step_cancelled"
        assert effects.count("fetch_invoice") == 0 and warden.lease_store.outstanding("t-cancel") == []

        await graph.ainvoke(_call_message("f1"), cfg)  # the same call again: attempt 2, runs once
        assert effects.count("fetch_invoice") == 1
        started = payloads(warden, "t-cancel", EventKind.TOOL_STARTED)
        assert [p["attempt"] for p in started] == [1, 2]
        assert EventKind.TOOL_ABORTED not in [e.kind for e in warden.ledger.events("t-cancel")]  # never in doubt
        assert warden.audit("t-cancel").verified
