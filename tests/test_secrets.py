"""Secret scanner: after real runs with both credential providers, no token or secret is stored anywhere.

Runs through the Warden facade use per-step tokens (LocalTokenProvider) and an
upstream API key from the keyring (KeyringSecretProvider), sync and async,
through ToolNode and create_agent, including tools that *return* their
credential in the result and tools that *raise* with it in the exception
message. Afterwards the token values and the API key must appear nowhere in:

* the database: every row of every table (text and bytes), and on SQLite the raw
  bytes of the database file, its ``-wal`` and ``-shm``;
* the checkpoints and pending writes, decoded with the saver's own serde;
* the graph state and state history;
* the event payloads (every thread);
* the captured logs (DEBUG, with formatted tracebacks);
* the error messages that reached the caller (str, repr, formatted traceback).

A canary passed as a plain tool argument must be found by the same scanners,
so a scanner that looks in the wrong place fails the test instead of passing it.
"""

from __future__ import annotations

import glob
import logging
import secrets
import traceback
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from sqlalchemy import MetaData, inspect, select

from langgraph_warden import canonical
from langgraph_warden.events import EventKind
from langgraph_warden.guards.credentials import KeyringSecretProvider, current_credential
from langgraph_warden.guards.policy import DEFAULT_REGO_POLICY
from langgraph_warden.guards.rego import RegoEngine
from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.warden import Warden

from .support.agents import ScriptedChatModel, call, turn
from .support.resource_service import ResourceService
from .support.resource_service import call as http_get

OWNER = "alice@example.com"
SERVICE = "warden-upstream"





@pytest.fixture(scope="module")
def rego() -> RegoEngine:
    return RegoEngine(DEFAULT_REGO_POLICY)


# --------------------------------------------------------------------------- the runs


class Runs:
    """Tools and graphs that handle credentials carelessly, on purpose."""

    def __init__(self, warden: Warden, svc: ResourceService, canary: str) -> None:
        self.warden = warden
        self.tokens: list[str] = []
        self.errors: list[BaseException] = []
        self.states: list[Any] = []
        self.canary = canary
        seen = self.tokens

        def token() -> str:
            value = current_credential().reveal()
            seen.append(value)
            return value

        def key() -> str:
            return current_credential().reveal()

        @tool
        def fetch_invoice(invoice_id: str) -> str:
            """Fetch an invoice (uses its per-step token against the billing API)."""
            status, _ = http_get(svc.url, token())
            return f"invoice {invoice_id}: HTTP {status}"

        @tool
        def token_leaky(note: str) -> str:
            """Returns its token in the result."""
            return f"debug: my bearer token is {token()} ({note})"

        @tool
        def token_boom(note: str) -> str:
            """Raises with its token in the message."""
            raise RuntimeError(f"billing API refused Authorization: Bearer {token()} ({note})")

        @tool
        def crm_lookup(customer: str) -> str:
            """Uses the upstream API key properly."""
            return f"customer {customer}: gold (key length {len(key())})"

        @tool
        def crm_leaky(customer: str) -> str:
            """Returns the upstream API key in the result."""
            return f"customer {customer}; used api key {key()}"

        @tool
        def crm_boom(customer: str) -> str:
            """Raises with the upstream API key in the message (and in a chained cause)."""
            try:
                raise ConnectionError(f"crm unreachable with key={key()}")
            except ConnectionError as exc:
                raise ValueError(f"lookup of {customer} failed; api_key={key()!r}") from exc

        self.tools = [fetch_invoice, token_leaky, token_boom, crm_lookup, crm_leaky, crm_boom]
        for name in ("fetch_invoice", "token_leaky", "token_boom"):
            warden.tools.register(ToolSpec(name, scopes=("invoices:read",)))
        for name in ("crm_lookup", "crm_leaky", "crm_boom"):
            warden.tools.register(ToolSpec(name, scopes=("crm:read",)))
            warden.broker.route(name, "keyring")

    def toolnode(self, script):
        model = ScriptedChatModel(script=script)

        def agent(state: MessagesState) -> dict:
            return {"messages": [model.invoke(state["messages"])]}

        b = StateGraph(MessagesState)
        b.add_node("agent", agent)
        b.add_node("tools", ToolNode(self.tools, wrap_tool_call=self.warden.guard, awrap_tool_call=self.warden.guard.awrap))
        b.add_edge(START, "agent")
        b.add_conditional_edges("agent", tools_condition)
        b.add_edge("tools", "agent")
        return b.compile(checkpointer=self.warden.checkpointer)

    def agent(self, script):
        return create_agent(ScriptedChatModel(script=script), self.tools, middleware=[self.warden.middleware()],
                            checkpointer=self.warden.checkpointer)

    async def run(self, thread: str, graph, mode: str, *, raises: bool = False) -> None:
        cfg = self.warden.start_run(thread, owner=OWNER, intent="secret scan", risk_tier="low")
        inputs = {"messages": [HumanMessage(f"go {self.canary}")]}
        try:
            if mode == "async":
                await graph.ainvoke(inputs, cfg)
            else:
                graph.invoke(inputs, cfg)
            assert not raises, f"{thread} was expected to raise"
        except Exception as exc:
            assert raises, f"{thread} raised unexpectedly: {type(exc).__name__}"
            self.errors.append(exc)
        self.states.append(graph.get_state(cfg))
        self.states.extend(graph.get_state_history(cfg))


ALL_SAFE = [
    call("fetch_invoice", {"invoice_id": "42"}, "s1"),
    call("token_leaky", {"note": "n"}, "s2"),
    call("crm_lookup", {"customer": "c-1"}, "s3"),
    call("crm_leaky", {"customer": "c-1"}, "s4"),
]


async def do_runs(runs: Runs) -> None:
    canary_call = call("crm_lookup", {"customer": runs.canary}, "s0")
    await runs.run("t-sync", runs.toolnode([turn(canary_call, *ALL_SAFE), turn(text="done")]), "sync")
    await runs.run("t-async", runs.toolnode([turn(*ALL_SAFE), turn(text="done")]), "async")
    await runs.run("t-agent", runs.agent([turn(*ALL_SAFE), turn(text="done")]), "async")
    # Raising tools run with invoke(), not ainvoke(): ToolGuard.awrap records tool.failed with a blocking
    # ledger append on the event-loop thread, which on SQLite can deadlock (30 s busy timeout, then
    # LedgerAppendError replaces the tool's exception) against LangGraph's background async checkpoint
    # write. Reported as a guard bug; the redaction path under test is the same sync or async.
    await runs.run("t-boom-token", runs.toolnode([turn(call("token_boom", {"note": "x"}, "b1")), turn(text="?")]), "sync", raises=True)
    await runs.run("t-boom-key", runs.toolnode([turn(call("crm_boom", {"customer": "c-2"}, "b2")), turn(text="?")]), "sync", raises=True)
    await runs.run("t-boom-agent", runs.agent([turn(call("crm_boom", {"customer": "c-3"}, "b3")), turn(text="?")]), "sync", raises=True)
    await runs.run("t-boom-agent-token", runs.agent([turn(call("token_boom", {"note": "y"}, "b4")), turn(text="?")]), "sync", raises=True)
    # a lease left behind by a dead step, then recovered: the recovery path must not leak either
    runs.tokens.append(runs.warden.broker.issue("t-crash", "c1", "fetch_invoice", ["invoices:read"]).reveal())
    runs.warden.start_run("t-crash", owner=OWNER, intent="secret scan", risk_tier="low")
    runs.warden.recover("t-crash")


# --------------------------------------------------------------------------- the scanners


def _as_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")


def database_rows(warden: Warden) -> dict[str, bytes]:
    """Every column of every row of every table, as bytes, per table."""
    engine = warden.saver.engine
    meta = MetaData()
    names = inspect(engine).get_table_names()
    meta.reflect(engine, only=names)
    out: dict[str, bytes] = {}
    with engine.connect() as conn:
        for name in names:
            rows = conn.execute(select(meta.tables[name])).all()
            out[name] = b"\x00".join(_as_bytes(v) for row in rows for v in row)
    assert {"warden_checkpoints", "warden_writes", "warden_events", "warden_leases", "warden_keys"} <= set(out)
    return out


def sqlite_files(warden: Warden) -> bytes:
    path = warden.saver.engine.url.database
    files = sorted(glob.glob(path + "*"))
    assert path in files and any(f.endswith("-wal") for f in files), files
    return b"".join(Path(f).read_bytes() for f in files)


def decoded_checkpoints(warden: Warden) -> bytes:
    """Checkpoints, metadata and pending writes, decoded with the saver's serde."""
    from langgraph_warden.checkpointers.schema import checkpoints, writes

    serde = warden.saver.serde
    parts: list[str] = []
    with warden.saver.engine.connect() as conn:
        for r in conn.execute(select(checkpoints)):
            parts.append(repr(serde.loads_typed((r.type, bytes(r.checkpoint)))))
            parts.append(repr(serde.loads_typed((r.metadata_type, bytes(r.metadata)))))
        for w in conn.execute(select(writes)):
            if w.type is not None:
                parts.append(repr(serde.loads_typed((w.type, bytes(w.blob)))))
    assert parts
    for tup in warden.saver.list(None):
        parts.append(repr(tup.checkpoint) + repr(tup.metadata) + repr(tup.pending_writes))
    return "\n".join(parts).encode()


def event_payloads(warden: Warden) -> bytes:
    with warden.saver.engine.connect() as conn:
        threads = warden.ledger.thread_ids(conn)
    out = []
    for t in threads:
        for e in warden.ledger.events(t):
            out.append(canonical.encode(dict(e.payload)))
            out.append(repr(e).encode())
    return b"\n".join(out)


def error_text(errors: list[BaseException]) -> bytes:
    return "\n".join(
        f"{e!s}\n{e!r}\n" + "".join(traceback.format_exception(e)) for e in errors
    ).encode()


def fragments(secret: str) -> list[bytes]:
    """The secret, and for a JWT also its signature (its most unique part)."""
    out = [secret.encode()]
    if secret.count(".") == 2:
        out.append(secret.rsplit(".", 1)[-1].encode())
    return out


# --------------------------------------------------------------------------- the test


async def test_no_secret_or_token_is_stored_logged_or_raised(db_url, rego, memory_keyring, caplog):
    caplog.set_level(logging.DEBUG)
    api_key = "sk-live-" + secrets.token_urlsafe(24)
    canary = "canary-" + secrets.token_hex(8)
    memory_keyring.set_password(SERVICE, "crm-key", api_key)
    provider = KeyringSecretProvider(SERVICE, {n: "crm-key" for n in ("crm_lookup", "crm_leaky", "crm_boom")})

    with Warden.open(db_url, ephemeral_keys=True, policy=rego, providers=[provider]) as warden:
        local = warden.broker.providers["local"]
        with ResourceService(local, audience="fetch_invoice", scope="invoices:read") as svc:
            runs = Runs(warden, svc, canary)
            await do_runs(runs)
            for tok in runs.tokens:  # replaying them afterwards: the rejection path must not leak either
                assert http_get(svc.url, tok)[0] == 401
            assert svc.seen[:3] == [(200, "ok")] * 3

        # The runs did what we think they did.
        assert len(runs.tokens) >= 6 and len(set(runs.tokens)) == len(runs.tokens)
        assert len(runs.errors) == 4
        issued = [e.payload for t in ("t-sync", "t-async", "t-agent") for e in warden.ledger.events(t, kinds=[EventKind.CREDENTIAL_ISSUED])]
        assert {p["provider"] for p in issued} == {"local", "keyring"}
        assert warden.lease_store.outstanding("t-crash") == []
        failed = [e.payload for t in ("t-boom-token", "t-boom-key") for e in warden.ledger.events(t, kinds=[EventKind.TOOL_FAILED])]
        assert len(failed) == 2 and all("[REDACTED]" in p["error"] for p in failed)
        leaky = {m.tool_call_id: m.content for m in runs.states[0].values["messages"] if isinstance(m, ToolMessage)}
        assert "[REDACTED]" in leaky["s2"] and "[REDACTED]" in leaky["s4"]
        assert "[REDACTED]" in str(runs.errors[0]) and "[REDACTED]" in str(runs.errors[1].__cause__)

        haystacks: dict[str, bytes] = {f"table {name}": data for name, data in database_rows(warden).items()}
        if warden.saver.engine.dialect.name == "sqlite":
            haystacks["sqlite files (db, -wal, -shm)"] = sqlite_files(warden)
        haystacks["decoded checkpoints and writes"] = decoded_checkpoints(warden)
        haystacks["graph state and history"] = "\n".join(repr(s) for s in runs.states).encode()
        haystacks["event payloads"] = event_payloads(warden)
        haystacks["logs"] = (
            caplog.text + "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
        ).encode()
        haystacks["errors"] = error_text(runs.errors)

        # Positive control: the scanners do see what the graph stored.
        for where in ("table warden_checkpoints", "decoded checkpoints and writes", "graph state and history"):
            assert canary.encode() in haystacks[where], f"the scanner of {where} is blind"
        if "sqlite files (db, -wal, -shm)" in haystacks:
            assert canary.encode() in haystacks["sqlite files (db, -wal, -shm)"]

        leaks = [
            (where, "api key" if s == api_key else f"token #{runs.tokens.index(s)}")
            for where, data in haystacks.items()
            for s in [api_key, *runs.tokens]
            for frag in fragments(s)
            if frag in data
        ]
        assert leaks == [], f"secrets leaked: {leaks}"
