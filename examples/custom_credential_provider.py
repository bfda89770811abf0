"""Write a custom credential provider and plug it in with ``Warden.open(..., providers=[...])``.

What it shows
-------------
``HmacTokenProvider`` implements the ``CredentialProvider`` protocol
(``name``, ``jit``, ``acquire``, ``revoke``, ``revoke_run``) for an internal
billing service that accepts short-lived HMAC-SHA256-signed tokens:

* ``acquire(request)`` mints a token bound to the lease id, thread, audience
  (the tool), scopes and expiry of *this one step* and returns a ``Lease``
  whose value is a ``SecretValue`` (never printed, never recorded);
* ``revoke(lease)`` puts the token id on the service's revocation list (the
  guard calls it when the step ends — also when the tool fails or the run is
  interrupted); ``revoke_run(thread)`` revokes everything a run still holds
  (crash recovery: ``warden.revoke_run(thread)``).

The tool reads its credential with ``current_credential()`` — the model never
sees it, the tool's signature does not change. After the step, the same token
is refused by the service; the audit trail records ``credential.issued`` /
``credential.revoked`` with a token digest, never the token.

Which provider serves which tool is configuration: ``Warden``'s built-in
``LocalTokenProvider`` ("local") stays the default, and
``Warden.open(..., providers=[HmacTokenProvider(...)], routes={"billing_report": "hmac"})``
sends this one tool to the custom provider (``default_provider="hmac"`` would
send every tool there).

Run it (from the repository root)::

    python examples/custom_credential_provider.py                      # SQLite file in a temp dir
    python examples/custom_credential_provider.py --db sqlite:///x.db  # or any database URL / path

Exit code 0 when the tool got a valid token, every token was refused after
revocation, no token appears in the database, and verification passed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition

from langgraph_warden import ToolSpec, Warden, current_credential
from langgraph_warden.guards.credentials import CredentialRequest, Lease, SecretValue
from langgraph_warden.testing import ScriptedChatModel

THREAD = "billing-report-1"


# --------------------------------------------------------------------------- the internal service
class BillingService:
    """The resource server: verifies HMAC tokens and keeps the revocation list."""

    def __init__(self) -> None:
        self.key = secrets.token_bytes(32)  # shared with the provider, e.g. from a vault
        self.revoked: set[str] = set()
        self._lock = threading.Lock()

    def sign(self, claims: dict) -> str:
        body = base64.urlsafe_b64encode(json.dumps(claims, sort_keys=True).encode()).decode().rstrip("=")
        mac = hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{mac}"

    def revoke(self, jti: str) -> None:
        with self._lock:
            self.revoked.add(jti)

    def check(self, token: str, audience: str, scope: str) -> dict:
        body, _, mac = token.partition(".")
        if not hmac.compare_digest(mac, hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()):
            raise PermissionError("bad signature")
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if claims["exp"] <= time.time():
            raise PermissionError("expired")
        if claims["aud"] != audience or scope not in claims["scopes"]:
            raise PermissionError("wrong audience or scope")
        with self._lock:
            if claims["jti"] in self.revoked:
                raise PermissionError("revoked")
        return claims

    def monthly_total(self, token: str, month: str) -> str:
        claims = self.check(token, "billing_report", "billing:read")
        return f"{month}: 12,345.67 EUR billed (token {claims['jti'][:8]}, thread {claims['thread']})"


# --------------------------------------------------------------------------- the provider
class HmacTokenProvider:
    """A ``CredentialProvider``: one short-lived HMAC token per guarded step."""

    name = "hmac"
    jit = True  # revocable per-step tokens

    def __init__(self, service: BillingService) -> None:
        self.service = service
        self._by_thread: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def acquire(self, request: CredentialRequest) -> Lease:
        claims = {
            "jti": request.lease_id,
            "thread": request.thread_id,
            "aud": request.audience,
            "scopes": list(request.scopes),
            "exp": int(request.expires_at.timestamp()),
        }
        token = self.service.sign(claims)
        with self._lock:
            self._by_thread.setdefault(request.thread_id, set()).add(request.lease_id)
        return Lease(
            lease_id=request.lease_id, provider=self.name, jit=True, scopes=request.scopes,
            audience=request.audience, thread_id=request.thread_id, tool_call_id=request.tool_call_id,
            issued_at=request.issued_at, expires_at=request.expires_at,
            token_digest="sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16],
            jti=request.lease_id, secret=SecretValue(token),
        )

    def revoke(self, lease: Lease, reason: str = "step_ended") -> bool:
        self.service.revoke(lease.lease_id)
        with self._lock:
            self._by_thread.get(lease.thread_id, set()).discard(lease.lease_id)
        return True

    def revoke_run(self, thread_id: str) -> list[str]:
        with self._lock:
            ids = sorted(self._by_thread.pop(thread_id, set()))
        for jti in ids:
            self.service.revoke(jti)
        return ids


# --------------------------------------------------------------------------- the agent
SCRIPT = [
    AIMessage(content="", tool_calls=[
        {"name": "billing_report", "args": {"month": "2025-05"}, "id": "c_may", "type": "tool_call"},
        {"name": "billing_report", "args": {"month": "2025-06"}, "id": "c_june", "type": "tool_call"},
    ]),
    AIMessage(content="Reports fetched."),
]


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def build(warden: Warden, service: BillingService, seen_tokens: list[str]):
    @tool
    def billing_report(month: str) -> str:
        """Fetch the billing total of a month."""
        lease = current_credential()          # this step's lease, from the guard
        token = lease.reveal()
        seen_tokens.append(token)             # kept only to show the replay being refused
        return service.monthly_total(token, month)

    model = ScriptedChatModel(script=SCRIPT)

    def agent(state: State) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    b = StateGraph(State)
    b.add_node("agent", agent)
    b.add_node("tools", ToolNode([billing_report], wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap))
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition)
    b.add_edge("tools", "agent")
    return b.compile(checkpointer=warden.checkpointer)


def db_url(db: str | None) -> str:
    if db is None:
        return f"sqlite:///{Path(tempfile.mkdtemp(prefix='warden-example-')) / 'warden.db'}"
    return db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


def refused(service: BillingService, token: str) -> str:
    try:
        service.monthly_total(token, "2025-05")
    except PermissionError as exc:
        return f"refused ({exc})"
    return "ACCEPTED"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="database URL or SQLite path (default: a new SQLite file in a temp dir)")
    url = db_url(ap.parse_args(argv).db)
    print(f"database: {url}")

    service = BillingService()
    provider = HmacTokenProvider(service)
    tokens: list[str] = []
    with Warden.open(url, ephemeral_keys=True, providers=[provider],
                     routes={"billing_report": "hmac"}) as warden:  # other tools keep the built-in "local"
        warden.tools.register(ToolSpec("billing_report", scopes=("billing:read",), idempotent=True))
        graph = build(warden, service, tokens)

        print("1. run: each billing_report step gets its own HMAC token via current_credential()")
        cfg = warden.start_run(THREAD, owner="alice@example.com", intent="monthly billing report")
        out = graph.invoke({"messages": [HumanMessage("billing for May and June")]}, cfg)
        results = [m for m in out["messages"] if isinstance(m, ToolMessage)]
        for m in results:
            print(f"   [{m.status}] {m.content}")
        for e in warden.ledger.events(THREAD, kinds=["credential.issued", "credential.revoked"]):
            p = e.payload
            print(f"   {e.kind:18} lease {p['lease_id'][:8]} provider={p['provider']} scopes={p['scopes']} "
                  f"digest={p.get('token_digest')} {p.get('reason', '')}")

        print("2. replay the step's tokens after the steps ended")
        replays = [refused(service, t) for t in tokens]
        for r in replays:
            print(f"   {r}")

        print("3. revoke_run: a lease a crashed step left behind")
        stray = warden.broker.issue("crashed-run", "c_stray", "billing_report", ["billing:read"])
        before = refused(service, stray.reveal())
        revoked = warden.revoke_run("crashed-run")
        after = refused(service, stray.reveal())
        print(f"   before: {before}; warden.revoke_run -> {[r[:8] for r in revoked]}; after: {after}")

        summary = warden.audit(THREAD).summary
        report = warden.verify()
        print(f"4. audit: {summary.credentials_issued} issued / {summary.credentials_revoked} revoked · "
              f"verify: {'OK' if report.ok else 'FAILED'} ({report.events} events)")

    leaked = False
    if url.startswith("sqlite:///"):
        raw = Path(url[len("sqlite:///"):]).read_bytes()
        leaked = any(t.split(".")[1].encode() in raw for t in tokens)
        print(f"5. token MACs found in the database file: {'YES' if leaked else 'none'}")

    ok = (
        len(results) == 2 and all(m.status != "error" and "EUR" in str(m.content) for m in results)
        and all(r == "refused (revoked)" for r in replays)
        and before == "ACCEPTED" and after == "refused (revoked)" and revoked
        and summary.credentials_issued == summary.credentials_revoked == 2
        and not leaked and report.ok
    )
    print("RESULT: custom provider issued, the tool used, the guard revoked" if ok else "RESULT: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
