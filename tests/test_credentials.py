"""Just-in-time credentials: broker, local RFC 9068 tokens, keyring secrets, lease store, scanner."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import pickle
import secrets
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import GraphInterrupt
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from sqlalchemy import create_engine, func, select

from langgraph_warden import canonical
from langgraph_warden.checkpointers.leases import SqlLeaseStore
from langgraph_warden.checkpointers.schema import leases as leases_table
from langgraph_warden.checkpointers.schema import metadata
from langgraph_warden.errors import ConfigurationError, KeyStoreError
from langgraph_warden.events import EventKind
from langgraph_warden.guards.credentials import (
    CredentialBroker,
    CredentialProvider,
    CredentialRejected,
    KeyringSecretProvider,
    Lease,
    LeaseStore,
    LocalTokenProvider,
    NoCredentialError,
    ScopeNotGrantedError,
    SecretNotFoundError,
    SecretValue,
    TtlTooLongError,
    UnknownProviderError,
    current_credential,
)
from langgraph_warden.identity import EphemeralWorkloadKeyStore, LocalIdentityProvider
from langgraph_warden.keys import b64u, b64u_decode

from tests.support.resource_service import ResourceService, call

AGENT = "spiffe://example.org/agents/billing"
ISSUER = "https://warden.test"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ListSink:
    """TEST-ONLY EventSink: keeps drafts in a list. Production uses the checkpointer's ledger."""

    def __init__(self) -> None:
        self.drafts: list[tuple[str, object]] = []
        self.fail_next = False

    def append(self, thread_id, drafts):
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("ledger down")
        self.drafts.extend((thread_id, d) for d in drafts)
        return []

    async def aappend(self, thread_id, drafts):
        return self.append(thread_id, drafts)

    def kinds(self) -> list[str]:
        return [d.kind for _, d in self.drafts]

    def payloads(self, kind: str) -> list[dict]:
        return [dict(d.payload) for _, d in self.drafts if d.kind == kind]





class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.db_path = tmp_path / "warden.db"
        self.engine = create_engine(f"sqlite:///{self.db_path}")
        metadata.create_all(self.engine)
        self.clock = Clock()
        self.store = SqlLeaseStore(self.engine, clock=self.clock)
        self.identity = LocalIdentityProvider(AGENT, EphemeralWorkloadKeyStore(), clock=self.clock)
        self.local = LocalTokenProvider(self.identity, ISSUER, self.store, clock=self.clock)
        self.keyring_provider = KeyringSecretProvider("warden-upstream", {"billing-api": "billing-key"})
        self.sink = ListSink()
        self.broker = CredentialBroker(
            [self.local, self.keyring_provider], self.sink, max_ttl_seconds=300, lease_store=self.store,
            clock=self.clock,
        )

    def lease_rows(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(leases_table)).scalar_one()

    def db_bytes(self) -> bytes:
        self.engine.dispose()
        return b"".join(p.read_bytes() for p in self.db_path.parent.glob(self.db_path.name + "*"))


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.engine.dispose()


GRANTED = ["invoices:read", "invoices:list"]


# --------------------------------------------------------------------------- protocols and values


def test_providers_and_store_satisfy_protocols(env):
    assert isinstance(env.local, CredentialProvider)
    assert isinstance(env.keyring_provider, CredentialProvider)
    assert isinstance(env.store, LeaseStore)


def test_lease_never_shows_its_secret(env):
    lease = env.broker.issue("t1", "call_1", "billing-api", GRANTED)
    token = lease.reveal()
    for text in (repr(lease), str(lease), f"{lease}", json.dumps(lease.to_record()), repr(lease.secret),
                 str(lease.secret), f"{lease.secret}"):
        assert token not in text
    assert str(lease.secret) == "***"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(lease)
    with pytest.raises(TypeError):
        pickle.dumps(lease.secret)
    with pytest.raises(TypeError):
        copy.deepcopy(lease)
    # Equality ignores the secret: two leases differing only in value compare equal.
    from dataclasses import replace

    assert replace(lease, secret=SecretValue("other")) == lease


# --------------------------------------------------------------------------- local tokens


def test_local_token_shape_rfc9068(env):
    import jwt

    lease = env.broker.issue("t1", "call_1", "billing-api", GRANTED, ["invoices:read"], ttl_seconds=30)
    header = jwt.get_unverified_header(lease.reveal())
    claims = jwt.decode(lease.reveal(), options={"verify_signature": False})
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256" and header["kid"] == env.identity.kid
    assert claims == {
        "iss": ISSUER, "sub": AGENT, "client_id": AGENT, "aud": "billing-api", "scope": "invoices:read",
        "iat": int(env.clock.now), "exp": int(env.clock.now) + 30, "jti": lease.lease_id,
        "thread_id": "t1", "tool_call_id": "call_1",
    }
    assert lease.jit and lease.jti == lease.lease_id and lease.token_digest.startswith("sha256:")
    assert env.local.verify(lease.reveal(), "billing-api", "invoices:read")["jti"] == lease.lease_id


def test_verify_rejections(env):
    lease = env.broker.issue("t1", "call_1", "billing-api", GRANTED, ["invoices:read"], ttl_seconds=60)
    token = lease.reveal()

    def reason(tok, aud="billing-api", scope="invoices:read"):
        with pytest.raises(CredentialRejected) as info:
            env.local.verify(tok, aud, scope)
        assert token not in str(info.value)
        return info.value.reason

    assert reason(token, aud="payments-api") == "wrong_audience"
    assert reason(token, scope="invoices:write") == "insufficient_scope"
    assert reason(token, scope="invoices:read invoices:list") == "insufficient_scope"
    # An SVID (typ JWT) is not an access token.
    assert reason(env.identity.mint_svid("billing-api")) == "wrong_typ"
    # Tampered payload: widen the scope.
    h, p, s = token.split(".")
    claims = json.loads(b64u_decode(p))
    claims["scope"] = "invoices:read invoices:write"
    assert reason(".".join([h, b64u(json.dumps(claims).encode()), s])) == "bad_signature"
    assert reason("garbage") == "malformed"
    # A correctly signed token whose lease was never recorded: fail closed.
    stray = env.identity.sign_jwt({**claims, "jti": "never-recorded", "scope": "invoices:read"}, typ="at+jwt")
    assert reason(stray) == "revoked"
    # Wrong issuer.
    other = LocalTokenProvider(env.identity, "https://evil.test", env.store, clock=env.clock)
    with pytest.raises(CredentialRejected) as info:
        other.verify(token, "billing-api", "invoices:read")
    assert info.value.reason == "wrong_issuer"
    # Expiry, by the injected clock.
    assert env.local.verify(token, "billing-api", "invoices:read")
    env.clock.now += 60
    assert reason(token) == "expired"


def test_revoked_token_is_rejected_and_rotation_is_picked_up(env):
    lease = env.broker.issue("t1", "call_1", "billing-api", GRANTED)
    env.identity.key_store.rotate()
    fresh = env.broker.issue("t1", "call_2", "billing-api", GRANTED)
    assert env.local.verify(fresh.reveal(), "billing-api", "invoices:read")  # new kid: JWK set refreshed
    assert env.local.verify(lease.reveal(), "billing-api", "invoices:read")  # old kid still published
    env.broker.revoke(lease)
    with pytest.raises(CredentialRejected) as info:
        env.local.verify(lease.reveal(), "billing-api", "invoices:read")
    assert info.value.reason == "revoked"


# --------------------------------------------------------------------------- broker


def test_lease_context_issues_publishes_and_revokes(env):
    with pytest.raises(NoCredentialError, match="outside a guarded tool step"):
        current_credential()
    with env.broker.lease("t1", "call_1", "billing-api", GRANTED, ["invoices:read"]) as lease:
        assert current_credential() is lease
        assert env.local.verify(lease.reveal(), "billing-api", "invoices:read")
    with pytest.raises(NoCredentialError):
        current_credential()
    with pytest.raises(CredentialRejected, match="revoked"):
        env.local.verify(lease.reveal(), "billing-api", "invoices:read")
    assert env.sink.kinds() == [EventKind.CREDENTIAL_ISSUED, EventKind.CREDENTIAL_REVOKED]
    issued, = env.sink.payloads(EventKind.CREDENTIAL_ISSUED)
    assert issued["lease_id"] == lease.lease_id and issued["provider"] == "local" and issued["jit"] is True
    assert issued["scopes"] == ["invoices:read"] and issued["audience"] == "billing-api"
    assert issued["tool_call_id"] == "call_1" and issued["token_digest"] == lease.token_digest
    assert issued["ttl_seconds"] == 60 and issued["expires_at"].endswith("Z")
    revoked, = env.sink.payloads(EventKind.CREDENTIAL_REVOKED)
    assert revoked["reason"] == "step_ended" and revoked["revoked"] is True
    row = env.store.get(lease.lease_id)
    assert row.revoke_reason == "step_ended" and row.revoked_at.tzinfo is not None


@pytest.mark.parametrize(
    ("exc", "reason"),
    [(ValueError("tool blew up"), "step_failed"), (GraphInterrupt(()), "step_interrupted")],
)
def test_revoked_in_finally_when_the_step_raises(env, exc, reason):
    with pytest.raises(type(exc)):
        with env.broker.lease("t1", "call_1", "billing-api", GRANTED) as lease:
            raise exc
    assert env.sink.payloads(EventKind.CREDENTIAL_REVOKED)[0]["reason"] == reason
    assert env.store.is_revoked(lease.jti)
    assert env.store.outstanding("t1") == []


async def test_async_lease_context_and_cancellation(env):
    async with env.broker.alease("t1", "call_1", "billing-api", GRANTED) as lease:
        assert current_credential() is lease
        assert await asyncio.to_thread(current_credential) is lease  # context follows to_thread

        async def inner():
            return current_credential()

        assert await asyncio.create_task(inner()) is lease
    assert env.store.is_revoked(lease.jti)

    started = asyncio.Event()
    holder: list[Lease] = []

    async def step():
        async with env.broker.alease("t1", "call_2", "billing-api", GRANTED) as lz:
            holder.append(lz)
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(step())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert env.store.is_revoked(holder[0].jti)
    assert env.sink.payloads(EventKind.CREDENTIAL_REVOKED)[-1]["reason"] == "step_cancelled"


def test_ttl_rules(env):
    # Decision TTL above the maximum is capped (and recorded); explicit TTL above it is an error.
    lease = env.broker.issue("t1", "c1", "billing-api", GRANTED, decision_ttl_seconds=3600)
    assert (lease.expires_at - lease.issued_at).total_seconds() == 300
    assert env.sink.payloads(EventKind.CREDENTIAL_ISSUED)[0]["ttl_capped"] is True
    lease = env.broker.issue("t1", "c2", "billing-api", GRANTED, decision_ttl_seconds=20)
    assert (lease.expires_at - lease.issued_at).total_seconds() == 20


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"scopes_requested": ["invoices:write"]}, ScopeNotGrantedError, "scopes_requested ['invoices:write']"),
        ({"ttl_seconds": 301}, TtlTooLongError, "ttl_seconds=301 is above max_ttl_seconds=300"),
        ({"ttl_seconds": 0}, ConfigurationError, "ttl_seconds=0"),
        ({"provider": "vault"}, UnknownProviderError, "provider='vault' is not registered"),
        ({"scopes_requested": ["bad scope\\"]}, ConfigurationError, "scopes_requested contains"),
        ({"provider": "keyring", "audience": "unmapped-api", "tool": "other"}, SecretNotFoundError, "no keyring entry is mapped"),
        ({"provider": "keyring"}, SecretNotFoundError, "keyring set warden-upstream billing-key"),
    ],
)
def test_bad_input_is_typed_and_issues_nothing(env, memory_keyring, kwargs, error, needle):
    tool_name = kwargs.pop("tool", "billing-api")
    with pytest.raises(error) as info:
        env.broker.issue("t1", "call_1", tool_name, GRANTED, **kwargs)
    assert needle in str(info.value)
    assert env.lease_rows() == 0 and env.sink.drafts == []


def test_keyring_without_backend_is_a_key_store_error(env):
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        with pytest.raises(KeyStoreError, match="no usable backend"):
            env.broker.issue("t1", "call_1", "billing-api", GRANTED, provider="keyring")
    finally:
        keyring.set_keyring(previous)
    assert env.lease_rows() == 0 and env.sink.drafts == []


def test_keyring_secret_lease_is_non_jit(env, memory_keyring):
    memory_keyring.set_password("warden-upstream", "billing-key", "sk-upstream-123")
    with env.broker.lease("t1", "call_1", "billing-api", GRANTED, provider="keyring") as lease:
        assert current_credential().reveal() == "sk-upstream-123"
        assert lease.jit is False and lease.token_digest is None and lease.jti is None
    revoked, = env.sink.payloads(EventKind.CREDENTIAL_REVOKED)
    assert revoked["jit"] is False and revoked["revoked"] is False
    assert revoked["reason"] == "not_revocable_step_ended"
    assert env.store.get(lease.lease_id).revoke_reason == "not_revocable_step_ended"


def test_issue_withdrawn_when_the_event_cannot_be_recorded(env):
    env.sink.fail_next = True
    with pytest.raises(RuntimeError, match="ledger down"):
        env.broker.issue("t1", "call_1", "billing-api", GRANTED)
    assert env.store.outstanding("t1") == []
    assert env.lease_rows() == 1  # recorded, then revoked as issue_aborted


def test_revoke_run_after_a_crash(env, memory_keyring):
    memory_keyring.set_password("warden-upstream", "billing-key", "sk-upstream-123")
    a = env.broker.issue("t-crash", "c1", "billing-api", GRANTED)
    b = env.broker.issue("t-crash", "c2", "billing-api", GRANTED, provider="keyring")
    other = env.broker.issue("t-other", "c3", "billing-api", GRANTED)
    env.clock.now += 1
    # "Crash": a fresh broker in a new process, same database.
    sink = ListSink()
    broker2 = CredentialBroker([env.local, env.keyring_provider], sink, lease_store=env.store, clock=env.clock)
    assert sorted(broker2.revoke_run("t-crash")) == sorted([a.lease_id, b.lease_id])
    assert sorted(p["lease_id"] for p in sink.payloads(EventKind.CREDENTIAL_REVOKED)) == sorted([a.lease_id, b.lease_id])
    assert {p["reason"] for p in sink.payloads(EventKind.CREDENTIAL_REVOKED)} == {
        "run_revoked", "not_revocable_step_ended"}
    with pytest.raises(CredentialRejected, match="revoked"):
        env.local.verify(a.reveal(), "billing-api", "invoices:read")
    assert env.local.verify(other.reveal(), "billing-api", "invoices:read")
    assert broker2.revoke_run("t-crash") == []
    assert env.local.revoke_run("t-other") == [other.lease_id]


def test_lease_store_round_trip(env):
    lease = env.broker.issue("t1", "call_1", "billing-api", GRANTED)
    rec, = env.store.outstanding("t1")
    rebuilt = Lease.from_record(rec)
    from dataclasses import replace

    # The table holds neither the value nor the digest; everything else round-trips.
    assert rebuilt == replace(lease, token_digest=None) and not rebuilt.secret
    assert rec.scopes == tuple(GRANTED) and rec.issued_at == lease.issued_at
    assert env.store.mark_revoked(lease.lease_id, "step_ended") is True
    assert env.store.mark_revoked(lease.lease_id, "step_ended") is False
    assert env.store.is_revoked(lease.jti) and env.store.is_revoked("unknown-jti")
    with pytest.raises(ConfigurationError, match="already recorded"):
        env.store.record_issued(lease)


# --------------------------------------------------------------------------- end to end


def test_graph_tool_uses_its_credential_against_a_resource_service(env):
    seen_tokens: list[str] = []

    with ResourceService(env.local, "billing-api", "invoices:read") as svc:

        @tool
        def fetch_invoice(invoice_id: str) -> str:
            """Fetch an invoice by id."""
            cred = current_credential()
            seen_tokens.append(cred.reveal())
            status, body = call(svc.url, cred.reveal())
            return json.dumps({"status": status, "invoice": invoice_id, **body})

        assert set(fetch_invoice.tool_call_schema.model_json_schema()["properties"]) == {"invoice_id"}

        def guard(request, execute):
            thread_id = request.runtime.config["configurable"]["thread_id"]
            call_ = request.tool_call
            with env.broker.lease(thread_id, call_["id"], call_["name"], ["invoices:read"],
                                  audience="billing-api"):
                return execute(request)

        builder = StateGraph(MessagesState)
        builder.add_node("tools", ToolNode([fetch_invoice], wrap_tool_call=guard))
        builder.add_edge(START, "tools")
        builder.add_edge("tools", END)
        graph = builder.compile(checkpointer=InMemorySaver())
        ai = AIMessage(content="", tool_calls=[{"name": "fetch_invoice", "args": {"invoice_id": "42"}, "id": "call_1"}])
        out = graph.invoke({"messages": [ai]}, {"configurable": {"thread_id": "t-graph"}})
        result = json.loads(out["messages"][-1].content)
        assert result["status"] == 200 and result["sub"] == AGENT and result["tool_call_id"] == "call_1"

        token, = seen_tokens
        assert call(svc.url, token) == (401, {"error": "invalid_token", "reason": "revoked"})
        env.clock.now += 3600
        assert call(svc.url, token)[1]["reason"] == "expired"
        assert call(svc.url, None)[0] == 401


def test_secret_scanner(env, memory_keyring, caplog):
    """After runs with both providers (one tool raising), secrets appear nowhere we record."""
    caplog.set_level(logging.DEBUG)
    upstream = "sk-live-" + secrets.token_urlsafe(24)
    memory_keyring.set_password("warden-upstream", "billing-key", upstream)
    tokens: list[str] = []
    errors: list[str] = []
    with ResourceService(env.local, "billing-api", "invoices:read") as svc:
        with env.broker.lease("t-scan", "c1", "billing-api", GRANTED) as lease:
            tokens.append(lease.reveal())
            assert call(svc.url, current_credential().reveal())[0] == 200
        for provider in ("local", "keyring"):
            try:
                with env.broker.lease("t-scan", f"c-{provider}", "billing-api", GRANTED, provider=provider) as lz:
                    if lz.jit:
                        tokens.append(lz.reveal())
                    raise RuntimeError(f"tool failed while holding {lz!r} / {lz.secret}")
            except RuntimeError as exc:
                errors.append(f"{exc!s} {exc!r}")
        try:
            env.broker.issue("t-scan", "c9", "billing-api", GRANTED, ["admin"])
        except ScopeNotGrantedError as exc:
            errors.append(str(exc))
        for tok in tokens:
            call(svc.url, tok)  # rejected now: the rejection path must not leak either
    crash = env.broker.issue("t-scan", "c10", "billing-api", GRANTED)
    tokens.append(crash.reveal())
    env.broker.revoke_run("t-scan")

    secrets_ = [upstream, *tokens]
    assert len(tokens) == 3
    haystacks = {
        "events": b"".join(canonical.encode(dict(d.payload)) for _, d in env.sink.drafts),
        "event reprs": repr(env.sink.drafts).encode(),
        "logs": "\n".join(r.getMessage() + repr(r.args) for r in caplog.records).encode() + caplog.text.encode(),
        "errors": "\n".join(errors).encode(),
        "database": env.db_bytes(),
    }
    assert len(env.sink.payloads(EventKind.CREDENTIAL_ISSUED)) == 4
    for where, data in haystacks.items():
        for s in secrets_:
            assert s.encode() not in data, f"a secret leaked into {where}"
            # and not its signature part either (the most unique piece of a JWT)
            assert s.rsplit(".", 1)[-1].encode() not in data, f"part of a secret leaked into {where}"
