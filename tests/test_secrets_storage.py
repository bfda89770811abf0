"""No secret reaches storage, by any path: the storage boundary masks every live secret.

Issue 17, part 3. LangGraph stores ``repr(exc)`` of a failed task as its
``__error__`` write; a tool's credential can sit anywhere in it — in a
case-insensitive header mapping six levels deep, behind a custom ``__repr__``,
in an exception attribute — or in what the tool returns, encoded (JSON, URL,
base64). Every secret the process hands out is registered
(:mod:`langgraph_warden.redaction`); the saver masks it in checkpoint, metadata
and write blobs, and ``Event.create`` in event bodies, before they are digested,
at the same length so msgpack and canonical JSON still decode.

What is shown here:

* the scrubber: every encoding, same length, msgpack still decodes with the
  serde, canonical JSON still parses and hashes, escapes and syntax respected,
  the fast path returns the input object itself, lifetimes and pruning;
* a hypothesis property over arbitrary hiding places (pure, then through real
  LangGraph graphs on real SQLite files and the real PostgreSQL);
* end to end with the in-memory redaction switched OFF: the storage boundary
  alone keeps every table (and the SQLite file, -wal and -shm) clean, while a
  canary placed next to each secret proves the hiding place did reach storage;
* the registration points in the credential providers, the log filter, and the
  in-memory exception redaction (best effort, any depth).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, quote_plus

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from langgraph_warden import canonical, redaction
from langgraph_warden.events import Event, event_hash
from langgraph_warden.guards import credentials
from langgraph_warden.guards.credentials import (
    CredentialRequest,
    KeyringSecretProvider,
    Lease,
    SecretValue,
    current_credential,
)
from langgraph_warden.guards.policy import DEFAULT_REGO_POLICY
from langgraph_warden.guards.rego import RegoEngine
from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.redaction import Patterns, SecretRegistry, mask
from langgraph_warden.warden import Warden

from .support.agents import ScriptedChatModel, call, turn
from .support.secret_scan import DetailError, Headers, LoudError, Opaque, forms, leaks, sqlite_file_bytes, table_bytes

OWNER = "alice@example.com"
SERVICE = "warden-upstream-storage"
serde = JsonPlusSerializer()


def odd_secret() -> str:
    """A keyring secret whose every encoding differs from its raw text."""
    return 'sk-"odd"\\key/ü+ %' + secrets.token_urlsafe(12)


def token_like() -> str:
    return "eyJhbGciOiJFUzI1NiJ9." + secrets.token_urlsafe(48) + "." + secrets.token_urlsafe(64)


@pytest.fixture(autouse=True)
def _forget_test_secrets() -> Iterator[None]:
    """Secrets this test registered in the process-wide registry are forgotten after it."""
    before = set(redaction.registry._deadlines)
    yield
    for s in set(redaction.registry._deadlines) - before:
        redaction.forget(s)


@pytest.fixture(scope="module")
def rego() -> RegoEngine:
    return RegoEngine(DEFAULT_REGO_POLICY)


def assert_clean(data: bytes | str, *secret_values: str) -> None:
    data = data.encode() if isinstance(data, str) else data
    found = [(i, name) for i, s in enumerate(secret_values) for name, form in forms(s).items() if form in data]
    assert found == [], f"secret forms left: {found}"


# --------------------------------------------------------------------------- the scrubber


def test_mask_is_same_length_ascii_and_neutral():
    for n in range(0, 64):
        m = mask(n)
        assert len(m) == len(m.encode()) == n
        assert not set(m) & set('"\\\x00\n') and m.isascii()
        assert m.startswith("[REDACTED]") if n >= 10 else set(m) <= {"*"}


@pytest.mark.parametrize("make", [odd_secret, token_like, lambda: "plain-" + secrets.token_hex(8)], ids=["odd", "jwt", "plain"])
def test_every_encoding_is_found_and_masked(make):
    secret = make()
    p = Patterns.compile([secret])
    for name, form in forms(secret).items():
        if name == "jwt-signature":
            continue  # a JWT is masked whole; its signature alone is not a registered form
        text = b"<<" + form + b">>"
        assert p.contains(text), name
        out = p.scrub_bytes(text)
        assert len(out) == len(text) and out.startswith(b"<<") and out.endswith(b">>"), name
        assert_clean(out, secret)


def test_escaped_any_number_of_times():
    """A secret with quotes, backslashes and non-ASCII is found however many times it was escaped
    (a repr of a repr inside a JSON event body, a URL-encoded JSON string, ...)."""
    secret = odd_secret()
    p = Patterns.compile([secret])
    layers: list[Callable[[str], str]] = [
        lambda t: json.dumps(t)[1:-1], lambda t: json.dumps(t, ensure_ascii=False)[1:-1],
        lambda t: repr(t)[1:-1], lambda t: repr(t + "'\"")[1:-4], lambda t: quote_plus(t), lambda t: ascii(t)[1:-1],
    ]
    rnd = __import__("random").Random(17)
    for _ in range(300):
        text = secret
        for layer in rnd.sample(layers, rnd.randint(1, 4)):
            text = layer(text)
        data = ("x" + text + "y").encode()
        out = p.scrub_bytes(data)
        assert out is not data and len(out) == len(data), text
        assert out.startswith(b"x") and out.endswith(b"y") and b"[REDACTED]" in out


def test_msgpack_blobs_keep_their_length_and_decode():
    secret, canary = odd_secret(), "canary-" + secrets.token_hex(4)
    p = Patterns.compile([secret])
    f = {k: v.decode() for k, v in forms(secret).items()}
    exc = RuntimeError("refused", Headers({"Authorization": "Bearer " + secret, "X-Canary": canary}))
    values: list[Any] = [
        f"{f['raw']} {canary}",
        {"deep": [{"a": ({"b": [f["json"], f["url-plus"], canary]},)}]},
        [f["base64"], "Basic " + base64.b64encode(b"user:" + secret.encode()).decode(), canary],
        repr(exc),
        ToolMessage(content=f"{f['repr']} {canary}", tool_call_id="c1", artifact={"k": f["json-utf8"]}),
        secret.encode() + canary.encode(),
        {"nested": {"bytes": b"x" + secret.encode() + b"y", "canary": canary}},
    ]
    for value in values:
        type_, blob = serde.dumps_typed(value)
        clean = p.scrub_bytes(blob)
        assert clean is not blob and len(clean) == len(blob), value
        assert_clean(clean, secret)
        back = serde.loads_typed((type_, clean))  # still decodes with the serde
        assert canary in repr(back) and "*" in repr(back)
        assert type(back) is type(value)


def _event(payload: dict) -> tuple[Event, bytes]:
    return Event.create(
        thread_id="t", checkpoint_ns="", seq=1, kind="tool.failed", actor="spiffe://x/y", payload=payload,
        prev_hash="sha256:" + "0" * 64,
    )


def test_event_bodies_are_masked_before_hashing_and_still_decode():
    secret, canary = odd_secret(), "canary-" + secrets.token_hex(4)
    redaction.register(secret)
    type_, data = serde.dumps_typed(ToolMessage(content=f"{secret} {canary}", tool_call_id="c1"))
    payload = {
        "error": f"lookup failed: {Headers({'X-Api-Key': secret})!r} {canary}",
        "url": "https://api.example/x?key=" + quote_plus(secret),
        "result": {"type": type_, "data": data},  # bytes: written as {"$bytes": base64}
        secret: "as a key",
        "$tagged": [repr(secret)],
    }
    ev, body = _event(payload)
    assert_clean(body, secret)
    assert canary.encode() in body
    assert ev.hash == event_hash(body)  # hashed what is stored
    back = Event.from_body(body, ev.hash)
    assert back.payload == ev.payload  # the event carries what is stored
    assert canonical.decode(body)["payload"] == dict(ev.payload)
    msg = serde.loads_typed((type_, ev.payload["result"]["data"]))
    assert canary in msg.content and secret not in msg.content
    assert len(ev.payload["result"]["data"]) == len(data)


def test_json_masking_respects_escapes_and_syntax():
    cases = [
        # (secret, payload): a match starting or ending inside an escape, JSON syntax that looks
        # like a secret, a secret that is a number
        ("nabcdefgh123", {"s": "x\nabcdefgh123"}),
        ("001fabcdefgh", {"s": "x\x1fabcdefgh"}),
        ("abcdefgh\\", {"s": "abcdefgh\n"}),
        ("abcdefgh\\", {"s": "q abcdefgh\\ q"}),
        ('12345678","k', {"a": "12345678", "k": 1}),
        ("123456789012", {"n": 123456789012, "s": "123456789012"}),
    ]
    for secret, payload in cases:
        body = canonical.encode(payload)
        out = Patterns.compile([secret]).scrub_canonical(body)
        orjson.loads(out)  # still JSON
        canonical.decode(out)
        if secret == '12345678","k':
            assert out is body  # syntax, not content: left alone
        elif secret != "123456789012":
            assert len(out) == len(body)
        if secret in ("abcdefgh\\", "123456789012", "nabcdefgh123"[1:]):
            assert secret.encode() not in out


def test_fast_path_returns_the_input_object():
    empty = SecretRegistry()
    blob, body, text = b"x" * 15000, canonical.encode({"a": "b" * 100}), "hello " * 100
    assert empty.scrub_bytes(blob) is blob and empty.scrub_blob("msgpack", blob) is blob
    assert empty.scrub_canonical(body) is body and empty.scrub_text(text) is text
    assert empty.patterns() is None
    live = SecretRegistry()
    for _ in range(5):
        live.register(token_like())
    assert live.scrub_bytes(blob) is blob and live.scrub_canonical(body) is body and live.scrub_text(text) is text


def test_registry_lifetimes_pruning_and_refusals(caplog):
    now = [1000.0]
    reg = SecretRegistry(margin_seconds=60, clock=lambda: now[0])
    token, key = token_like(), odd_secret()
    assert reg.register(token, expires_at=1100.0) and reg.register(key)
    assert reg.register(token, expires_at=1050.0)  # an earlier expiry does not shorten it
    now[0] = 1159.0
    assert reg.contains(token.encode()) and len(reg) == 2
    now[0] = 1161.0  # expiry + margin passed: pruned on the next use
    assert not reg.contains(token.encode()) and token not in reg
    now[0] = 1e12  # the keyring secret lives as long as the process
    assert reg.contains(key.encode()) and len(reg) == 1
    with caplog.at_level(logging.WARNING, logger="langgraph_warden.redaction"):
        assert not reg.register("short7!")
    assert "short7!" not in caplog.text and "shorter than" in caplog.text
    assert reg.forget(key) and len(reg) == 0 and reg.patterns() is None


def test_registry_is_thread_safe():
    reg = SecretRegistry()
    values = [token_like() for _ in range(40)]
    errors: list[BaseException] = []

    def writer(chunk):
        for v in chunk:
            reg.register(v, expires_at=None)

    def reader():
        try:
            for _ in range(200):
                reg.scrub_bytes(b"y" * 2000 + values[0].encode())
        except BaseException as exc:  # pragma: no cover - the failure being tested for
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(values[i::4],)) for i in range(4)] + [
        threading.Thread(target=reader) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(reg) == 40
    assert all(reg.contains(v.encode()) for v in values)


# --------------------------------------------------------------------------- property: pure

_CHARS = st.characters(blacklist_categories=("Cs",), min_codepoint=0x20)
_hiding = st.lists(st.sampled_from(["dict", "list", "tuple", "headers", "opaque", "namespace", "exception"]), min_size=5, max_size=9)
_LEAVES: dict[str, Callable[[str], str]] = {
    "bearer": lambda s: "Bearer " + s,
    "json": lambda s: json.dumps({"token": s}),
    "json-utf8": lambda s: json.dumps({"token": s}, ensure_ascii=False),
    "url": lambda s: "https://api.example/v1?key=" + quote_plus(s),
    "url-path": lambda s: "https://api.example/" + quote(s, safe=""),
    "basic": lambda s: "Basic " + base64.b64encode(b"svc:" + s.encode()).decode(),
    "base64url": lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
}


def hide(secret: str, canary: str, leaf: str, wrappers: list[str]) -> Any:
    value: Any = {"v": _LEAVES[leaf](secret), "c": canary}
    for w in wrappers:
        value = {
            "dict": lambda x: {"k": x},
            "list": lambda x: [1, x],
            "tuple": lambda x: (x, None),
            "headers": lambda x: Headers({"X-Debug": x}),
            "opaque": Opaque,
            "namespace": lambda x: SimpleNamespace(inner=x),
            "exception": lambda x: RuntimeError("nested", x),
        }[w](value)
    return value


def deliver(value: Any, how: str) -> BaseException | str:
    if how == "args":
        return RuntimeError("upstream call failed", value)
    if how == "attribute":
        return DetailError("upstream refused", value)
    if how == "repr":
        return LoudError(value)
    if how == "message":
        return ValueError(f"could not parse {value!r}")
    return f"result: {value!r}"  # returned, not raised


@settings(max_examples=150, deadline=None)
@given(
    secret=st.text(_CHARS, min_size=8, max_size=40),
    leaf=st.sampled_from(sorted(_LEAVES)),
    wrappers=_hiding,
    how=st.sampled_from(["args", "attribute", "repr", "message", "return"]),
)
def test_property_whatever_holds_it_the_stored_bytes_are_clean(secret, leaf, wrappers, how):
    canary = "canary-" + uuid.uuid4().hex[:8]
    out = deliver(hide(secret, canary, leaf, wrappers), how)
    # what LangGraph (repr) and the guard (str) store, in msgpack and in canonical JSON
    texts = [repr(out), str(out)] if isinstance(out, BaseException) else [out]
    assert any(canary in t for t in texts)
    p = Patterns.compile([secret])
    for text in texts:
        type_, blob = serde.dumps_typed({"error": text, "nested": [[[[[[text]]]]]]})
        clean = p.scrub_bytes(blob)
        assert len(clean) == len(blob)
        assert_clean(clean, secret)
        back = serde.loads_typed((type_, clean))
        body = canonical.encode({"error": text, "blob": blob})
        cb = p.scrub_canonical(body)
        assert_clean(cb, secret)
        doc = canonical.decode(cb)
        assert serde.loads_typed((type_, doc["blob"])) == back
        if canary in text:  # what is not the secret survives
            assert canary in back["error"] and canary in doc["error"]


# --------------------------------------------------------------------------- end to end


class Lab:
    """A warden with two credential routes and a tool per route that does what a case says."""

    def __init__(self, warden: Warden) -> None:
        self.warden = warden
        self.cases: dict[str, Callable[[str], Any]] = {}
        self.seen: dict[str, str] = {}

        def run_case(case: str) -> str:
            secret = current_credential().reveal()
            self.seen[case] = secret
            out = self.cases[case](secret)
            if isinstance(out, BaseException):
                raise out
            return out

        @tool
        def use_token(case: str) -> str:
            """Calls the billing API with the per-step token."""
            return run_case(case)

        @tool
        def use_key(case: str) -> str:
            """Calls the CRM with the upstream API key."""
            return run_case(case)

        self.tools = [use_token, use_key]
        warden.tools.register(ToolSpec("use_token", scopes=("invoices:read",)))
        warden.tools.register(ToolSpec("use_key", scopes=("crm:read",)))
        warden.broker.route("use_key", "keyring")

    def run(self, tool_name: str, case: str, build: Callable[[str], Any]) -> tuple[BaseException | None, dict]:
        self.cases[case] = build
        model = ScriptedChatModel(script=[turn(call(tool_name, {"case": case}, "c-" + case)), turn(text="done")])

        def agent(state: MessagesState) -> dict:
            return {"messages": [model.invoke(state["messages"])]}

        b = StateGraph(MessagesState)
        b.add_node("agent", agent)
        b.add_node("tools", ToolNode(self.tools, wrap_tool_call=self.warden.guard, awrap_tool_call=self.warden.guard.awrap))
        b.add_edge(START, "agent")
        b.add_conditional_edges("agent", tools_condition)
        b.add_edge("tools", "agent")
        graph = b.compile(checkpointer=self.warden.checkpointer)
        cfg = self.warden.start_run(case, owner=OWNER, intent="storage scan", risk_tier="low")
        try:
            graph.invoke({"messages": [HumanMessage("go")]}, cfg)
        except Exception as exc:  # noqa: BLE001 - the raising cases
            return exc, cfg
        return None, cfg

    def haystacks(self) -> dict[str, bytes]:
        engine = self.warden.saver.engine
        return {**table_bytes(engine), **sqlite_file_bytes(engine)}

    def reload_everything(self) -> str:
        """Every stored checkpoint, metadata and write decoded with the serde (and verified on read)."""
        parts = []
        for tup in self.warden.saver.list(None):
            parts.append(repr(tup.checkpoint) + repr(tup.metadata) + repr(tup.pending_writes))
        assert parts
        return "\n".join(parts)


@pytest.fixture
def lab_factory(db_url, rego, memory_keyring):
    key = odd_secret()
    memory_keyring.set_password(SERVICE, "crm-key", key)
    provider = KeyringSecretProvider(SERVICE, {"use_key": "crm-key"})
    with Warden.open(db_url, ephemeral_keys=True, policy=rego, providers=[provider]) as warden:
        yield Lab(warden), key


def _mapping_6_deep(secret: str, canary: str) -> BaseException:
    inner = Headers({"Authorization": "Bearer " + secret, "X-Canary": canary})
    return RuntimeError("billing call failed", {"l1": [Headers({"L2": ({"l3": Headers({"l4": [{"l5": inner}]})},)})]})


CASES: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    # name: (tool, build(secret, canary) -> exception to raise or text to return)
    "mapping-6-deep": ("use_token", _mapping_6_deep),
    "custom-repr": ("use_key", lambda s, c: LoudError(Opaque({"auth": s, "canary": c}))),
    "exception-attribute": ("use_token", lambda s, c: DetailError("refused", SimpleNamespace(h=Headers({"X-Key": s}), c=c))),
    "keyring-in-mapping": ("use_key", lambda s, c: RuntimeError("crm down", Headers({"X-Api-Key": s, "X-Canary": c}))),
    "encoded-result": ("use_token", lambda s, c: f"{c} " + json.dumps({
        "basic": "Basic " + base64.b64encode(b"svc:" + s.encode()).decode(), "q": quote_plus(s), "b64": base64.b64encode(s.encode()).decode()})),
    "keyring-encoded-result": ("use_key", lambda s, c: f"{c} " + json.dumps({"k": s}) + " " + quote(s, safe="")),
}


def test_storage_boundary_alone_keeps_every_table_clean(lab_factory, monkeypatch):
    """With the in-memory redaction switched off, only the saver and Event.create stand between
    the tools and the database: every hiding place reaches storage (its canary is found there),
    no encoding of any secret does."""
    lab, key = lab_factory
    monkeypatch.setattr(credentials.broker, "redact_leaving", lambda exc, lease: None)
    canaries, raised = {}, {}
    for name, (tool_name, build) in CASES.items():
        canary = "canary-" + secrets.token_hex(6)
        canaries[name] = canary
        exc, _cfg = lab.run(tool_name, name, lambda s, b=build, c=canary: b(s, c))
        raised[name] = exc
    assert {n for n, e in raised.items() if e is not None} == set(CASES) - {"encoded-result", "keyring-encoded-result"}
    assert lab.seen["custom-repr"] == key and lab.seen["mapping-6-deep"].count(".") == 2
    # Without the in-memory redaction the caller's exception still carries the secret: storage did not.
    assert lab.seen["mapping-6-deep"] in repr(raised["mapping-6-deep"])

    hay = lab.haystacks()
    tables = b"".join(v for k, v in hay.items() if k.startswith("table "))
    for name, canary in canaries.items():
        assert canary.encode() in tables, f"case {name} never reached storage: the scan would prove nothing"
    assert leaks(hay, lab.seen) == []
    reloaded = lab.reload_everything()
    assert_clean(reloaded, *lab.seen.values())
    assert "[REDACTED]" in reloaded and canaries["mapping-6-deep"] in reloaded
    assert lab.warden.verify().ok


@pytest.mark.parametrize("defences", ["storage-boundary-only", "all"])
def test_property_end_to_end_real_graphs(lab_factory, monkeypatch, defences):
    """Random hiding places, raised or returned by tools in real graphs: the database rows and
    files hold no encoding of any secret handed out, and every blob still decodes. With the
    in-memory redaction on (``all``), what the caller gets is clean too; off, the storage
    boundary alone must keep the database clean."""
    lab, key = lab_factory
    in_memory = defences == "all"
    if not in_memory:
        monkeypatch.setattr(credentials.broker, "redact_leaving", lambda exc, lease: None)
    counter = iter(range(10_000))

    # No shrinking: every example runs a graph; a failure is reported as drawn.
    @settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.too_slow])
    @given(
        tool_name=st.sampled_from(["use_token", "use_key"]),
        leaf=st.sampled_from(sorted(_LEAVES)),
        wrappers=_hiding,
        how=st.sampled_from(["args", "attribute", "repr", "message", "return"]),
    )
    def check(tool_name, leaf, wrappers, how):
        case = f"h{next(counter)}"
        canary = "canary-" + secrets.token_hex(6)
        exc, cfg = lab.run(tool_name, case, lambda s: deliver(hide(s, canary, leaf, wrappers), how))
        secret = lab.seen[case]
        if exc is not None and in_memory:
            assert_clean(f"{exc!s}\n{exc!r}\n" + "".join(traceback.format_exception(exc)), secret)
        hay = lab.haystacks()
        assert leaks(hay, lab.seen) == []
        assert canary.encode() in b"".join(v for k, v in hay.items() if k.startswith("table "))
        assert_clean(repr(lab.warden.checkpointer.get_tuple(cfg)), secret)

    check()
    assert lab.warden.verify().ok


# --------------------------------------------------------------------------- registration, logs, memory


def test_every_path_that_hands_out_a_secret_registers_it(db_url, rego, memory_keyring):
    key = odd_secret()
    memory_keyring.set_password(SERVICE, "crm-key", key)
    provider = KeyringSecretProvider(SERVICE, {"crm": "crm-key"})
    with Warden.open(db_url, ephemeral_keys=True, policy=rego, providers=[provider]) as warden:
        lease = warden.broker.issue("t-reg", "c1", "fetch", ["invoices:read"])
        token = lease.secret.reveal()  # not via Lease.reveal: the provider registered it at minting
        assert token in redaction.registry
        assert redaction.registry._deadlines[token] >= lease.expires_at.timestamp() + redaction.DEFAULT_MARGIN_SECONDS
        keyed = warden.broker.issue("t-reg", "c2", "crm", ["crm:read"], provider="keyring")
        assert key in redaction.registry and redaction.registry._deadlines[key] == float("inf")
        assert keyed.secret.reveal() == key

        class Custom:  # a provider that registers nothing itself: the broker does
            name, jit = "custom", True

            def acquire(self, request: CredentialRequest) -> Lease:
                return Lease(request.lease_id, self.name, True, request.scopes, request.audience, request.thread_id,
                             request.tool_call_id, request.issued_at, request.expires_at, None,
                             jti=request.lease_id, secret=SecretValue("custom-" + secrets.token_hex(16)))

            def revoke(self, lease, reason="step_ended"):
                return True

            def revoke_run(self, thread_id):
                return []

        warden.broker.providers["custom"] = Custom()
        custom = warden.broker.issue("t-reg", "c3", "fetch", ["invoices:read"], provider="custom")
        assert custom.secret.reveal() in redaction.registry

    # A lease built by hand (no provider, no broker) registers its value when revealed.
    hand = "hand-" + secrets.token_hex(16)
    lease = Lease("l", "p", False, (), "a", "t", None, custom.issued_at, custom.expires_at, None, secret=SecretValue(hand))
    assert hand not in redaction.registry
    assert lease.reveal() == hand and hand in redaction.registry


def test_log_records_of_the_package_are_scrubbed(caplog):
    secret = odd_secret()
    redaction.register(secret)
    child = logging.getLogger(f"langgraph_warden.late.child{uuid.uuid4().hex[:6]}")  # created after the import
    other = logging.getLogger("somebody.else")
    caplog.set_level(logging.DEBUG)
    try:
        raise RuntimeError("auth failed", Headers({"Authorization": "Bearer " + secret}))
    except RuntimeError:
        child.exception("call with %s failed (%r)", quote_plus(secret), {"k": secret})
    child.warning("plain message with %s", json.dumps(secret))
    other.info("not ours: %s", "untouched")
    rec = [r for r in caplog.records if r.name == child.name]
    assert len(rec) == 2
    text = caplog.text + "".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in rec)
    assert_clean(text, secret)
    assert "[REDACTED]" in rec[0].getMessage() and "Traceback" in (rec[0].exc_text or "")
    assert [r.getMessage() for r in caplog.records if r.name == "somebody.else"] == ["not ours: untouched"]


def test_in_memory_redaction_reaches_any_depth_without_mutating_the_callers_objects():
    secret, canary = token_like(), "canary-" + secrets.token_hex(4)
    redaction.register(secret)
    shared = Headers({"Authorization": "Bearer " + secret, "X-Canary": canary})  # a client's, used again later
    client = SimpleNamespace(headers=shared)
    group = ExceptionGroup("many", [
        _mapping_6_deep(secret, canary),
        LoudError(Opaque({"auth": secret})),
        DetailError("refused", client),
    ])
    try:
        try:
            raise KeyError(f"lookup with {quote_plus(secret)}")
        except KeyError as cause:
            raise group from cause
    except ExceptionGroup as exc:
        assert credentials.redact_exception(exc) is True
        text = "".join(traceback.format_exception(exc)) + repr(exc) + "".join(repr(e) + str(e) for e in exc.exceptions)
        assert_clean(text, secret)
        assert canary in text and "[REDACTED]" in text
        loud = exc.exceptions[1]
        assert isinstance(loud, LoudError) and type(loud).__name__ == "LoudError"
    assert shared["authorization"] == "Bearer " + secret and client.headers is shared  # not mutated


def test_registering_a_secret_touches_only_the_groups_of_its_own_forms():
    """Registration must not get dearer with every credential handed out: the thousandth live
    token of an issuer (they share a window, their header) once cost ~16 ms because every group
    was rebuilt. A new secret's forms are added to their groups; every other group is kept as is
    (the same object), and every registered secret is still found and masked."""
    reg = SecretRegistry()
    header = base64.urlsafe_b64encode(b'{"alg":"ES256","typ":"at+jwt","kid":"k1"}').decode().rstrip("=")

    def token() -> str:
        body = base64.urlsafe_b64encode(json.dumps({"jti": uuid.uuid4().hex}).encode()).decode().rstrip("=")
        return f"{header}.{body}.{secrets.token_urlsafe(48)}"

    other = "sk-" + secrets.token_hex(24)  # a secret of another shape: groups of its own
    reg.register(other)
    tokens = [token() for _ in range(40)]
    for t in tokens:
        reg.register(t)
    before = reg.patterns()
    new = token()
    reg.register(new)
    after = reg.patterns()
    assert before is not None and after is not None
    for view in ("blob", "json", "text"):
        old_groups, new_groups = getattr(before, view), getattr(after, view)
        changed = [k for k in new_groups if new_groups[k] is not old_groups.get(k)]
        kept = [k for k in old_groups if new_groups.get(k) is old_groups[k]]
        assert 0 < len(changed) <= len(redaction.plan(new)[0]), view
        assert kept and len(kept) + len(changed) >= len(old_groups), view  # the rest untouched
    for t in (*tokens, new, other):
        assert after.contains(t) and after.contains(t.encode())
        assert after.scrub_bytes(b"x " + t.encode() + b" y") == b"x " + mask(len(t)).encode() + b" y"
