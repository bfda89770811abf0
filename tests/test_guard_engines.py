"""The guard on real graphs, on all three policy engines, sync and async, ToolNode and create_agent.

One model turn (a scripted chat model: the only fake, the LLM boundary) asks for
three calls at once: one the default policy allows, one it denies (an undeclared
tool) and one it flags for approval (external sharing). The same scenario runs on

* the embedded Rego engine with the shipped ``default.rego``,
* an OPA server (an OPA-v1-REST-compatible server on 127.0.0.1 that serves
  ``default.rego``) through ``OpaServerEngine``,
* ``CedarEngine`` with the shipped ``default.cedar``,

through ``ToolNode(wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap)``
and through ``create_agent(..., middleware=[warden.middleware()])``, with
``invoke`` and ``ainvoke``. A real WardenSaver on a SQLite file records
everything (one PostgreSQL smoke case). Also: the OPA server dies in the middle
of a run -> the next call is denied ``policy_unavailable`` and its tool never runs.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

from langgraph_warden.events import EventKind
from langgraph_warden.guards import approval as approvals
from langgraph_warden.guards.cedar import CedarEngine
from langgraph_warden.guards.credentials import current_credential
from langgraph_warden.guards.opa import OpaServerEngine
from langgraph_warden.guards.policy import DEFAULT_CEDAR_POLICY, DEFAULT_REGO_POLICY, PolicyEngine
from langgraph_warden.guards.rego import RegoEngine
from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.warden import Warden

from .conftest import pg_schema_url, requires_pg, sqlite_url
from .support.agents import ScriptedChatModel, SideEffects, call, turn
from .support.fake_opa import FakeOpaServer

OWNER = "alice@example.com"
APPROVER = "bob@example.com"


# --------------------------------------------------------------------------- engines


class KillableOpa:
    """The fake OPA server, plus "kill": stop listening *and* drop the keep-alive connections.

    ``FakeOpaServer.stop()`` only stops accepting; a client with a kept-alive
    connection would still be answered by its handler thread, which is not what
    a dead OPA looks like.
    """

    def __init__(self, rego: RegoEngine) -> None:
        def factory(query: str) -> RegoEngine:
            return rego if query == rego.query else RegoEngine(DEFAULT_REGO_POLICY, query=query)

        self.server = FakeOpaServer(factory)
        self.connections: list[socket.socket] = []
        httpd = self.server._httpd
        original = httpd.process_request

        def process_request(request: socket.socket, client_address: Any) -> None:
            self.connections.append(request)
            original(request, client_address)

        httpd.process_request = process_request  # type: ignore[method-assign]
        self.server.start()
        self.alive = True

    @property
    def url(self) -> str:
        return self.server.url

    def kill(self) -> None:
        if not self.alive:
            return
        self.alive = False
        self.server.stop()
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture(scope="module")
def rego() -> RegoEngine:
    return RegoEngine(DEFAULT_REGO_POLICY)


@pytest.fixture(scope="module")
def cedar() -> CedarEngine:
    return CedarEngine(DEFAULT_CEDAR_POLICY)


@pytest.fixture(scope="module")
def opa_server(rego: RegoEngine) -> Iterator[KillableOpa]:
    srv = KillableOpa(rego)
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def opa(opa_server: KillableOpa) -> Iterator[OpaServerEngine]:
    eng = OpaServerEngine(opa_server.url, deadline_seconds=5.0)
    yield eng
    eng.close()


@pytest.fixture
def engine(request, rego, cedar, opa) -> PolicyEngine:
    return {"rego": rego, "cedar": cedar, "opa": opa}[request.param]


# --------------------------------------------------------------------------- graphs


def make_tools(effects: SideEffects, on_lookup=None):
    @tool
    def lookup_kb(query: str) -> str:
        """Search the internal knowledge base."""
        cred = current_credential()  # the guard issued a per-step credential for kb:read
        effects.record("lookup_kb", query=query, lease=cred.lease_id, scopes=list(cred.scopes))
        if on_lookup is not None:
            on_lookup(query)
        return f"3 articles about {query}"

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an e-mail outside the company."""
        effects.record("send_email", to=to)
        return f"sent to {to}"

    @tool
    def wipe_disk(path: str) -> str:
        """Not declared to the warden: must never run."""
        effects.record("wipe_disk", path=path)
        return "wiped"

    return [lookup_kb, send_email, wipe_disk]


def declare(warden: Warden) -> None:
    warden.tools.register(ToolSpec("lookup_kb", sensitivity="public", scopes=("kb:read",), idempotent=True))
    warden.tools.register(ToolSpec("send_email", external=True))


def toolnode_graph(warden: Warden, tools, script):
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


def agent_graph(warden: Warden, tools, script):
    return create_agent(
        ScriptedChatModel(script=script), tools, middleware=[warden.middleware()], checkpointer=warden.checkpointer
    )


BUILDERS = {"toolnode": toolnode_graph, "create_agent": agent_graph}

SCRIPT = [
    turn(
        call("lookup_kb", {"query": "refund policy"}, "c-allow"),
        call("wipe_disk", {"path": "/"}, "c-deny"),
        call("send_email", {"to": "partner@example.net", "body": "our roadmap"}, "c-approve"),
    ),
    turn(text="done"),
]


async def run(graph, inputs, config, mode: str):
    return await graph.ainvoke(inputs, config) if mode == "async" else graph.invoke(inputs, config)


async def settle(warden: Warden, thread: str, want: dict[str, str], timeout: float = 10.0) -> None:
    """Wait until each call has its final event.

    Async ``ToolNode`` runs the calls of one turn with ``asyncio.gather`` (no
    ``return_exceptions``): when one call raises ``GraphInterrupt`` (approval), the
    graph returns the interrupt while its siblings are still running as orphaned
    tasks; their side effects and events land *after* ``ainvoke`` returned. Sync
    ToolNode and create_agent (one task per call) wait for every sibling.
    """
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        got = {e.payload["tool_call_id"]: e.kind for e in warden.ledger.events(thread, kinds=list(set(want.values())))}
        if all(got.get(cid) == kind for cid, kind in want.items()):
            return
        assert time.monotonic() < deadline, f"calls did not settle: {got}"
        await asyncio.sleep(0.02)


def tool_messages(result) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}


def decided(warden: Warden, thread: str) -> dict[str, dict]:
    return {e.payload["tool_call_id"]: e.payload for e in warden.ledger.events(thread, kinds=[EventKind.POLICY_DECIDED])}


def check_decision_record(payload: dict, engine: PolicyEngine) -> None:
    d = payload["decision"]
    assert d["engine"] == engine.name
    assert d["policy_revision"] == engine.revision and d["policy_revision"]
    assert d["input_digest"].startswith("sha256:") and len(d["input_digest"]) == len("sha256:") + 64
    if isinstance(engine, OpaServerEngine):
        assert isinstance(d["decision_id"], str) and len(d["decision_id"]) >= 32  # OPA's decision id, when it gives one
    else:
        assert d["decision_id"] is None  # embedded engines have none
    assert payload["enforced"] is True and payload["args_digest"].startswith("sha256:")


# --------------------------------------------------------------------------- the matrix


async def scenario(db_url: str, engine: PolicyEngine, hook: str, mode: str, tmp_path) -> None:
    effects = SideEffects(tmp_path / "effects.jsonl")
    with Warden.open(db_url, ephemeral_keys=True, policy=engine) as warden:
        declare(warden)
        graph = BUILDERS[hook](warden, make_tools(effects), SCRIPT)
        thread = f"t-{engine.name}-{hook}-{mode}"
        cfg = warden.start_run(thread, owner=OWNER, intent="answer a customer", risk_tier="medium")

        first = await run(graph, {"messages": [HumanMessage("help the customer")]}, cfg, mode)
        if mode == "async" and hook == "toolnode":
            # Known LangGraph behaviour (see settle()): async ToolNode gathers the calls of one turn
            # and re-raises the first GraphInterrupt at once; the sibling calls go on running detached.
            await settle(warden, thread, {"c-allow": EventKind.TOOL_COMPLETED, "c-deny": EventKind.TOOL_DENIED})

        # allowed: ran once, with its own credential; denied: never ran; approval: paused, not run.
        (intr,) = first["__interrupt__"]
        req = intr.value
        assert req["tool"] == "send_email" and req["tool_call_id"] == "c-approve"
        assert req["reasons"] == ["external_sharing"] and req["owner"] == OWNER
        assert effects.count("lookup_kb") == 1 and effects.count("wipe_disk") == 0 and effects.count("send_email") == 0
        records = decided(warden, thread)
        assert set(records) == {"c-allow", "c-deny", "c-approve"}
        allow, deny, approve = records["c-allow"]["decision"], records["c-deny"]["decision"], records["c-approve"]["decision"]
        assert (allow["allow"], allow["require_approval"], allow["scopes"]) == (True, False, ["kb:read"])
        assert (deny["allow"], deny["reasons"]) == (False, ["unknown_tool"])
        assert (approve["allow"], approve["require_approval"], approve["reasons"]) == (True, True, ["external_sharing"])
        for payload in records.values():
            check_decision_record(payload, engine)
        assert [e.payload["tool_call_id"] for e in warden.ledger.events(thread, kinds=[EventKind.TOOL_DENIED])] == ["c-deny"]

        out = await run(graph, Command(resume={intr.id: approvals.approve(req, APPROVER)}), cfg, mode)

        msgs = tool_messages(out)
        assert msgs["c-allow"].content == "3 articles about refund policy"
        assert msgs["c-deny"].status == "error" and "unknown_tool" in msgs["c-deny"].content
        assert "not run" in msgs["c-deny"].content and engine.name in msgs["c-deny"].content
        assert msgs["c-approve"].content == "sent to partner@example.net"
        assert out["messages"][-1].content == "done"
        # exactly once, whatever re-executed on resume
        assert effects.count("lookup_kb") == 1 and effects.count("send_email") == 1 and effects.count("wipe_disk") == 0
        lookup = [e for e in effects.entries() if e["tool"] == "lookup_kb"][0]
        assert lookup["scopes"] == ["kb:read"]
        # the approval re-used the recorded decision: still one decision per call
        assert set(decided(warden, thread)) == {"c-allow", "c-deny", "c-approve"}
        assert len(warden.ledger.events(thread, kinds=[EventKind.POLICY_DECIDED])) == 3
        issued = warden.ledger.events(thread, kinds=[EventKind.CREDENTIAL_ISSUED])
        revoked = warden.ledger.events(thread, kinds=[EventKind.CREDENTIAL_REVOKED])
        assert [e.payload["lease_id"] for e in issued] == [e.payload["lease_id"] for e in revoked] == [lookup["lease"]]
        assert warden.lease_store.outstanding(thread) == []

        trail = warden.audit(thread)
        assert trail.verified
        assert trail.action("c-allow").status == "authorised+completed"
        assert trail.action("c-deny").status == "denied"
        assert trail.action("c-approve").status == "authorised+completed"
        assert trail.action("c-approve").approver == APPROVER
        assert trail.summary.ran_without_authorisation == [] and trail.summary.side_effects_executed_twice == []


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("hook", ["toolnode", "create_agent"])
@pytest.mark.parametrize("engine", ["rego", "cedar", "opa"], indirect=True)
async def test_allowed_denied_and_approval_on_every_engine(engine, hook, mode, tmp_path):
    await scenario(sqlite_url(tmp_path), engine, hook, mode, tmp_path)


@requires_pg
@pytest.mark.postgres
@pytest.mark.parametrize("engine", ["opa"], indirect=True)
async def test_postgres_smoke(engine, tmp_path):
    await scenario(pg_schema_url("ge"), engine, "toolnode", "async", tmp_path)


def test_opa_requests_carry_the_documented_input(opa_server, opa, tmp_path):
    """What reaches the OPA server is the versioned policy input, with strict builtin errors."""
    import json

    before = len(opa_server.server.requests)
    effects = SideEffects(tmp_path / "e.jsonl")
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True, policy=opa) as warden:
        declare(warden)
        graph = toolnode_graph(warden, make_tools(effects), [turn(call("lookup_kb", {"query": "x"}, "c1")), turn(text="ok")])
        cfg = warden.start_run("t-opa-input", owner=OWNER, intent="search", risk_tier="low")
        graph.invoke({"messages": [HumanMessage("x")]}, cfg)
        (req,) = opa_server.server.requests[before:]
        assert req["path"] == "/v1/data/warden/decision" and req["query"]["strict-builtin-errors"] == ["true"]
        doc = json.loads(req["body"])["input"]
        assert doc["version"] == opa.input_version == 2 and doc["tool"]["name"] == "lookup_kb"
        assert doc["run"]["owner"] == OWNER and doc["history"]["window"] >= 0
        assert doc["run"]["thread_id"] == "t-opa-input" and doc["args"] == {"query": "x"}
        payload = decided(warden, "t-opa-input")["c1"]
        from langgraph_warden import canonical

        assert payload["decision"]["input_digest"] == canonical.digest(doc)


# --------------------------------------------------------------------------- fail closed


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("hook", ["toolnode", "create_agent"])
async def test_opa_down_mid_run_fails_closed_through_the_graph(rego, hook, mode, tmp_path):
    srv = KillableOpa(rego)
    engine = OpaServerEngine(srv.url, deadline_seconds=5.0, failure_threshold=1, reset_seconds=60)
    effects = SideEffects(tmp_path / "effects.jsonl")
    script = [
        turn(call("lookup_kb", {"query": "first"}, "c1")),
        turn(call("lookup_kb", {"query": "second"}, "c2")),
        turn(call("lookup_kb", {"query": "third"}, "c3")),
        turn(text="gave up"),
    ]

    def on_lookup(query: str) -> None:
        if query == "first":
            srv.kill()  # OPA dies while the first step is running

    try:
        with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True, policy=engine) as warden:
            declare(warden)
            graph = BUILDERS[hook](warden, make_tools(effects, on_lookup), script)
            thread = f"t-down-{hook}-{mode}"
            cfg = warden.start_run(thread, owner=OWNER, intent="search", risk_tier="low")
            out = await run(graph, {"messages": [HumanMessage("x")]}, cfg, mode)

            msgs = tool_messages(out)
            assert msgs["c1"].content == "3 articles about first"
            for cid in ("c2", "c3"):
                assert msgs[cid].status == "error" and "policy_unavailable" in msgs[cid].content
                assert "not run" in msgs[cid].content
            assert [e["query"] for e in effects.entries()] == ["first"]  # the later tools never ran
            records = decided(warden, thread)
            assert records["c1"]["decision"]["allow"] is True
            # the first failure is the transport error; the breaker then answers without the network
            assert records["c2"]["decision"]["reasons"] == ["policy_unavailable", "opa_connection_error"]
            assert records["c3"]["decision"]["reasons"] == ["policy_unavailable", "circuit_open"]
            for cid in ("c2", "c3"):
                d = records[cid]["decision"]
                assert d["allow"] is False and d["scopes"] == [] and d["decision_id"] is None
                assert d["engine"] == "opa" and d["policy_revision"] == engine.revision
                assert d["input_digest"].startswith("sha256:")
            # no credential was issued for a call that was not decided
            issued = warden.ledger.events(thread, kinds=[EventKind.CREDENTIAL_ISSUED])
            assert [e.payload["tool_call_id"] for e in issued] == ["c1"]
            started = warden.ledger.events(thread, kinds=[EventKind.TOOL_STARTED])
            assert [e.payload["tool_call_id"] for e in started] == ["c1"]
            trail = warden.audit(thread)
            assert trail.verified and trail.action("c2").status == "denied"
    finally:
        srv.kill()
        engine.close()
