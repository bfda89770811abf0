"""Just-in-time credentials: one lease per allowed tool call, revoked when the step ends.

Why: a tool that holds a long-lived secret can be replayed, leaked into a
checkpoint or misused by a later step. Here an allowed call gets a credential
scoped to that one step — the policy decision's scopes, the tool as audience,
the thread and the tool call id — that is revoked in ``finally``, also when the
tool raises, the run is interrupted (``GraphInterrupt``) or the task is
cancelled. Long-lived secrets stay in the OS keyring.

How a tool gets its credential (no signature change visible to the model)
-------------------------------------------------------------------------
The guard wraps the tool's execution in :meth:`CredentialBroker.lease`; the
lease is published in a :mod:`contextvars` variable for exactly that block, and
the tool reads it with :func:`current_credential`::

    @tool
    def fetch_invoice(invoice_id: str) -> str:
        '''Fetch an invoice.'''                      # the model sees only invoice_id
        cred = current_credential()                  # Lease of *this* step
        r = httpx.get(url, headers={"Authorization": f"Bearer {cred.reveal()}"})
        ...

    with broker.lease(thread_id, tool_call_id, "fetch_invoice", granted, ...):
        result = execute(request)                    # inside: current_credential() works

Context variables follow the code: they are visible in the same thread, in
``await``-ed coroutines and in tasks or threads started with a copied context
(``asyncio.create_task``, ``asyncio.to_thread``, LangGraph's executor), so the
same accessor works for sync and async tools. Outside a guarded step it raises
:class:`NoCredentialError` instead of returning ``None``, so a misconfigured
tool fails loudly instead of calling out unauthenticated.

What is never recorded
----------------------
The token or secret lives only in :class:`SecretValue` (``repr``/``str`` are
``***``, pickling is refused). Events (``credential.issued`` /
``credential.revoked``) carry the lease id, provider, jit flag, scopes,
audience, tool call id, expiry and, for per-step tokens, a short SHA-256 prefix
of the token — never the token or secret. Errors never quote them either.

Every value handed out is registered with :mod:`langgraph_warden.redaction`
where it is minted or revealed (the providers, :meth:`CredentialBroker.issue`
for any provider, :meth:`Lease.reveal`): a per-step token until its expiry plus
a margin, a keyring secret for the life of the process. The saver and the
ledger mask every registered secret, in its common encodings, in every blob
before it is digested and written — whatever path (a tool's exception, its
``repr``, a header mapping deep in its args) carried it there. An exception
leaving a step is also redacted in place (best effort, any depth).

TTL rule
--------
The policy decision's TTL (``decision_ttl_seconds``) is *capped* at
``max_ttl_seconds`` (the policy may be generous; the broker enforces the
ceiling and records ``ttl_capped``). A TTL the caller asks for explicitly
(``ttl_seconds``) above the maximum is a mistake and raises
:class:`TtlTooLongError` — nothing is issued.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeGuard, runtime_checkable

from langgraph_warden import redaction
from langgraph_warden.errors import ConfigurationError, KeyStoreError, WardenError
from langgraph_warden.events import EventDraft, EventKind, EventSink
from langgraph_warden.identity import JwtSigner, decode_verified, usable_keyring_backend

__all__ = [
    "SecretValue",
    "Lease",
    "LeaseRecord",
    "CredentialRequest",
    "CredentialProvider",
    "LeaseStore",
    "AtomicLeaseStore",
    "LeaseEvents",
    "records_atomically",
    "CredentialBroker",
    "LocalTokenProvider",
    "KeyringSecretProvider",
    "current_credential",
    "revoke_outstanding",
    "redact_exception",
    "CredentialError",
    "ScopeNotGrantedError",
    "TtlTooLongError",
    "UnknownProviderError",
    "SecretNotFoundError",
    "CredentialRejected",
    "NoCredentialError",
    "RevokeReason",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- errors


class CredentialError(WardenError):
    """Base of the credential broker's errors."""


class ScopeNotGrantedError(CredentialError, PermissionError):
    """Scopes were requested that the policy decision did not grant."""

    def __init__(self, missing: Sequence[str], granted: Sequence[str], tool_name: str) -> None:
        super().__init__(
            f"scopes_requested {sorted(missing)} were not granted by the policy for tool {tool_name!r} "
            f"(granted: {sorted(granted)}); a policy grants only the scopes its decision lists (an allow-all "
            "policy that lists none grants none): have it grant them (in Rego, \"scopes\": input.tool.scopes), "
            "or request a subset of the granted scopes"
        )
        self.missing = tuple(sorted(missing))
        self.granted = tuple(sorted(granted))


class TtlTooLongError(CredentialError, ConfigurationError):
    """An explicitly requested TTL is above the broker's maximum."""

    def __init__(self, requested: int, maximum: int) -> None:
        super().__init__(
            f"ttl_seconds={requested} is above max_ttl_seconds={maximum}; request at most {maximum}s "
            "(per-step credentials are meant to be short) or raise the broker's max_ttl_seconds"
        )
        self.requested = requested
        self.maximum = maximum


class UnknownProviderError(CredentialError, ConfigurationError):
    """No provider with that name is registered with the broker."""

    def __init__(self, provider: str, known: Iterable[str]) -> None:
        super().__init__(
            f"provider={provider!r} is not registered with the credential broker (known: {sorted(known)}); "
            "register it in CredentialBroker(providers=...) or fix the name"
        )
        self.provider = provider


class SecretNotFoundError(CredentialError, LookupError):
    """The keyring holds no secret for the tool/audience."""


class CredentialRejected(CredentialError):
    """A resource server refused a credential; ``reason`` is a stable code.

    Codes: malformed, wrong_alg, wrong_typ, unknown_key, bad_signature,
    wrong_issuer, missing_claim, expired, wrong_audience, insufficient_scope,
    revoked.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"credential rejected ({reason})" + (f": {detail}" if detail else ""))
        self.reason = reason


class NoCredentialError(CredentialError, LookupError):
    """``current_credential()`` was called outside a guarded step."""


class RevokeReason:
    """Why a lease ended (stored in ``warden_leases.revoke_reason`` and events)."""

    STEP_ENDED = "step_ended"
    STEP_FAILED = "step_failed"
    STEP_INTERRUPTED = "step_interrupted"
    STEP_CANCELLED = "step_cancelled"
    RUN_REVOKED = "run_revoked"
    #: the call's attempt was cut off (a crashed process) and the guard recorded it aborted
    CALL_ABORTED = "call_aborted"
    ISSUE_ABORTED = "issue_aborted"
    NOT_REVOCABLE = "not_revocable_step_ended"


# --------------------------------------------------------------------------- values


class SecretValue:
    """A token or secret that refuses to be printed, compared or serialised.

    ``repr``/``str``/``format`` give ``***``; pickling raises, so it cannot be
    written into a checkpoint by accident. Use :meth:`reveal` at the call site.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretValue('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("SecretValue is immutable")

    def __reduce__(self):
        raise TypeError("SecretValue cannot be pickled or serialised: keep credentials out of graph state")

    def __copy__(self) -> SecretValue:
        return self

    def __deepcopy__(self, memo: Any) -> SecretValue:
        return self


_EMPTY_SECRET = SecretValue("")


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def short_digest(token: str) -> str:
    """``sha256:`` + 16 hex chars: enough to correlate a token, not to store it."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


@runtime_checkable
class LeaseRecord(Protocol):
    """What a :class:`LeaseStore` returns for a stored lease (no secret, no digest); read-only."""

    @property
    def lease_id(self) -> str: ...
    @property
    def jti(self) -> str | None: ...
    @property
    def thread_id(self) -> str: ...
    @property
    def tool_call_id(self) -> str | None: ...
    @property
    def provider(self) -> str: ...
    @property
    def audience(self) -> str: ...
    @property
    def scopes(self) -> tuple[str, ...]: ...
    @property
    def issued_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def revoked_at(self) -> datetime | None: ...
    @property
    def revoke_reason(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Lease:
    """One credential for one step. The value is in ``secret`` (never in repr/eq/records).

    ``jit`` is False for secrets that cannot be revoked (keyring API keys):
    their "revocation" only records that the step ended. ``token_digest`` is
    None for those: a digest of a long-lived secret would be an offline
    guessing oracle in the audit log.
    """

    lease_id: str
    provider: str
    jit: bool
    scopes: tuple[str, ...]
    audience: str
    thread_id: str
    tool_call_id: str | None
    issued_at: datetime
    expires_at: datetime
    token_digest: str | None
    jti: str | None = None
    secret: SecretValue = field(default=_EMPTY_SECRET, repr=False, compare=False)

    def reveal(self) -> str:
        """The token or secret, for the call that needs it. Do not store or log it."""
        if not self.secret:
            raise NoCredentialError(
                f"lease {self.lease_id} carries no value (it was loaded from the lease store, which never "
                "holds secrets)"
            )
        value = self.secret.reveal()
        _register(value, self)
        return value

    def authorization_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.reveal()}"}

    def to_record(self) -> dict[str, Any]:
        """JSON-ready, secret-free description (event payloads, logs, CLI output)."""
        return {
            "lease_id": self.lease_id,
            "provider": self.provider,
            "jit": self.jit,
            "scopes": list(self.scopes),
            "audience": self.audience,
            "tool_call_id": self.tool_call_id,
            "expires_at": _iso(self.expires_at),
            "token_digest": self.token_digest,
        }

    def __reduce__(self):
        raise TypeError(
            "Lease cannot be pickled or serialised (it carries a credential); store lease.to_record() instead"
        )

    @classmethod
    def from_record(cls, rec: LeaseRecord) -> Lease:
        """A value-less lease rebuilt from the store (for revoke-run after a crash).

        The table has no ``jit`` column: a lease with a ``jti`` is a revocable
        per-step token, one without is a non-revocable secret.
        """
        return cls(
            lease_id=rec.lease_id,
            provider=rec.provider,
            jit=rec.jti is not None,
            scopes=tuple(rec.scopes),
            audience=rec.audience,
            thread_id=rec.thread_id,
            tool_call_id=rec.tool_call_id,
            issued_at=rec.issued_at,
            expires_at=rec.expires_at,
            token_digest=None,
            jti=rec.jti,
        )


@dataclass(frozen=True, slots=True)
class CredentialRequest:
    """What the broker asks a provider for, after validating it against the decision."""

    lease_id: str
    thread_id: str
    tool_call_id: str | None
    tool_name: str
    audience: str
    scopes: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime

    @property
    def ttl_seconds(self) -> int:
        return int((self.expires_at - self.issued_at).total_seconds())


# --------------------------------------------------------------------------- protocols


@runtime_checkable
class CredentialProvider(Protocol):
    """Issues and ends credentials of one kind."""

    name: str
    jit: bool

    def acquire(self, request: CredentialRequest) -> Lease:
        """Create the credential. Must not persist it; the broker records the lease."""
        ...

    def revoke(self, lease: Lease, reason: str = RevokeReason.STEP_ENDED) -> bool:
        """End the lease; True if the credential is now invalid, False if it cannot be revoked."""
        ...

    def revoke_run(self, thread_id: str) -> list[str]:
        """Revoke every outstanding lease of this provider for a run; returns the lease ids."""
        ...


@runtime_checkable
class LeaseStore(Protocol):
    """The durable lease list and revocation list (``warden_leases``).

    Each call is its own transaction and durable on return, so a revocation is
    effective before :meth:`CredentialBroker.lease` exits. A store that can also
    commit the lease's events with its row is an :class:`AtomicLeaseStore`.
    """

    def record_issued(self, lease: Lease) -> None: ...

    def mark_revoked(self, lease_id: str, reason: str) -> bool:
        """Put the lease on the revocation list; False if it already was (or is unknown)."""
        ...

    def is_revoked(self, jti: str) -> bool:
        """True if the lease with this ``jti`` is revoked **or was never recorded** (fail closed)."""
        ...

    def outstanding(self, thread_id: str) -> Sequence[LeaseRecord]:
        """Leases of the run that were never revoked (expired ones included)."""
        ...


#: (event sink, thread id, drafts): the events that describe a lease-list change.
LeaseEvents = tuple[EventSink, str, Sequence[EventDraft]]


@runtime_checkable
class AtomicLeaseStore(LeaseStore, Protocol):
    """A :class:`LeaseStore` that commits a lease-list change and its events in one transaction.

    With ``records_atomically`` true, :meth:`record_issued` and :meth:`mark_revoked` accept
    ``record=(event_sink, thread_id, drafts)`` and commit those events with the row (the SQL
    store does, when the sink is its database's ledger); the broker then never leaves a lease
    row without its event or the reverse.
    """

    records_atomically: bool

    def record_issued(self, lease: Lease, *, record: LeaseEvents | None = None) -> None: ...

    def mark_revoked(self, lease_id: str, reason: str, *, record: LeaseEvents | None = None) -> bool: ...


def records_atomically(store: LeaseStore) -> TypeGuard[AtomicLeaseStore]:
    """True if ``store`` commits lease rows and their events together (see :class:`AtomicLeaseStore`)."""
    return isinstance(store, AtomicLeaseStore) and bool(store.records_atomically)


# --------------------------------------------------------------------------- context accessor

_CURRENT: contextvars.ContextVar[Lease | None] = contextvars.ContextVar("warden_current_credential", default=None)


def current_credential() -> Lease:
    """The lease of the guarded step running in this context.

    Raises :class:`NoCredentialError` outside :meth:`CredentialBroker.lease`.
    """
    lease = _CURRENT.get()
    if lease is None:
        raise NoCredentialError(
            "current_credential() was called outside a guarded tool step; run the tool through the warden "
            "guard (ToolNode(tools, wrap_tool_call=warden.guard)) or inside `with broker.lease(...)`"
        )
    return lease


# --------------------------------------------------------------------------- broker

_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")  # RFC 6749 §3.3 scope-token


def _check_scopes(field_name: str, scopes: Iterable[str] | str | None) -> tuple[str, ...]:
    if scopes is None:
        return ()
    if isinstance(scopes, str):
        scopes = scopes.split()
    out: list[str] = []
    for s in scopes:
        if not isinstance(s, str) or not _SCOPE_TOKEN.fullmatch(s):
            raise ConfigurationError(
                f"{field_name} contains {s!r}; a scope is a non-empty token of printable ASCII without "
                "spaces, quotes or backslashes (RFC 6749 §3.3)"
            )
        if s not in out:
            out.append(s)
    return tuple(out)


def _check_ttl(field_name: str, ttl: Any) -> int | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise ConfigurationError(f"{field_name}={ttl!r}; pass a positive whole number of seconds")
    return ttl


def _reason_for(exc: BaseException) -> str:
    import asyncio

    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
        return RevokeReason.STEP_CANCELLED
    from langgraph.errors import GraphBubbleUp

    if isinstance(exc, GraphBubbleUp):
        return RevokeReason.STEP_INTERRUPTED
    return RevokeReason.STEP_FAILED


class CredentialBroker:
    """Validates a request against the policy decision, issues a lease, records and revokes it.

    Called by the guard *after* the policy allowed the call and after any
    approval. Every lease is recorded in ``lease_store`` and as a
    ``credential.issued`` event before it is returned, so a crash leaves a
    trace that :meth:`revoke_run` can clean up.
    """

    def __init__(
        self,
        providers: Mapping[str, CredentialProvider] | Sequence[CredentialProvider],
        event_sink: EventSink,
        max_ttl_seconds: int = 300,
        lease_store: LeaseStore | None = None,
        *,
        default_provider: str | None = None,
        default_ttl_seconds: int = 60,
        clock: Callable[[], float] = time.time,
    ) -> None:
        items = list(providers.values()) if isinstance(providers, Mapping) else list(providers)
        if not items:
            raise ConfigurationError("providers is empty; register at least one CredentialProvider")
        self.providers: dict[str, CredentialProvider] = {}
        for p in items:
            if not isinstance(p, CredentialProvider):
                raise ConfigurationError(f"providers contains {type(p).__name__}, which is not a CredentialProvider")
            if p.name in self.providers:
                raise ConfigurationError(f"providers has two providers named {p.name!r}; names must be unique")
            self.providers[p.name] = p
        if lease_store is None:
            raise ConfigurationError(
                "lease_store is required: leases must be recorded durably so a crashed run can be cleaned "
                "up; pass SqlLeaseStore(engine)"
            )
        max_ttl = _check_ttl("max_ttl_seconds", max_ttl_seconds)
        if max_ttl is None:
            raise ConfigurationError("max_ttl_seconds=None; pass a positive whole number of seconds")
        self.max_ttl_seconds: int = max_ttl
        self.default_ttl_seconds = min(_check_ttl("default_ttl_seconds", default_ttl_seconds) or 60, max_ttl_seconds)
        self.default_provider = default_provider or items[0].name
        if self.default_provider not in self.providers:
            raise UnknownProviderError(self.default_provider, self.providers)
        self.event_sink = event_sink
        self.lease_store = lease_store
        self.clock = clock
        self._lock = threading.Lock()
        #: tool name (or audience) -> provider name, for calls that name no provider (the guard never does).
        self.routes: dict[str, str] = {}

    @property
    def lease_store(self) -> LeaseStore:
        return self._lease_store

    @lease_store.setter
    def lease_store(self, store: LeaseStore) -> None:
        self._lease_store = store
        # Decided once: a protocol isinstance check costs ~30 µs, and issue and revoke run per tool call.
        self._atomic_store: AtomicLeaseStore | None = store if records_atomically(store) else None

    def route(self, tool_or_audience: str, provider: str) -> None:
        """Send credentials for this tool (or audience) to ``provider`` instead of the default one.

        The guard asks the broker without naming a provider; this is how a tool that
        needs an upstream keyring secret gets it: ``broker.route("call_crm", "keyring")``.
        An unknown provider name is accepted here and refused at issue time
        (:class:`UnknownProviderError`, nothing issued), so a typo fails closed.
        """
        if not isinstance(tool_or_audience, str) or not tool_or_audience:
            raise ConfigurationError("route: tool_or_audience is empty; pass a tool name or an audience")
        if not isinstance(provider, str) or not provider:
            raise ConfigurationError("route: provider is empty; pass the name of a registered provider")
        self.routes[tool_or_audience] = provider

    # -- issue -------------------------------------------------------------------

    def issue(
        self,
        thread_id: str,
        tool_call_id: str | None,
        tool_name: str,
        scopes_granted_by_policy: Iterable[str] | str,
        scopes_requested: Iterable[str] | str | None = None,
        ttl_seconds: int | None = None,
        *,
        provider: str | None = None,
        audience: str | None = None,
        decision_ttl_seconds: int | None = None,
    ) -> Lease:
        """Issue a lease; on any error nothing is issued, recorded or emitted.

        ``scopes_requested`` defaults to everything granted. ``audience``
        defaults to the tool name. TTL: explicit ``ttl_seconds`` (error above
        the maximum), else ``decision_ttl_seconds`` capped at the maximum, else
        ``default_ttl_seconds``.
        """
        if not isinstance(thread_id, str) or not thread_id:
            raise ConfigurationError("thread_id is empty; pass the run's thread id")
        if not isinstance(tool_name, str) or not tool_name:
            raise ConfigurationError("tool_name is empty; pass the name of the tool being called")
        granted = _check_scopes("scopes_granted_by_policy", scopes_granted_by_policy)
        requested = granted if scopes_requested is None else _check_scopes("scopes_requested", scopes_requested)
        missing = [s for s in requested if s not in granted]
        if missing:
            raise ScopeNotGrantedError(missing, granted, tool_name)
        explicit = _check_ttl("ttl_seconds", ttl_seconds)
        decided = _check_ttl("decision_ttl_seconds", decision_ttl_seconds)
        capped = False
        if explicit is not None:
            if explicit > self.max_ttl_seconds:
                raise TtlTooLongError(explicit, self.max_ttl_seconds)
            ttl = explicit
        elif decided is not None:
            ttl = min(decided, self.max_ttl_seconds)
            capped = decided > self.max_ttl_seconds
        else:
            ttl = self.default_ttl_seconds
        aud = audience if audience is not None else tool_name
        if not isinstance(aud, str) or not aud:
            raise ConfigurationError("audience is empty; pass the service the credential is for (default: tool name)")
        name = provider or self.routes.get(tool_name) or self.routes.get(aud) or self.default_provider
        prov = self.providers.get(name)
        if prov is None:
            raise UnknownProviderError(name, self.providers)

        now = int(self.clock())
        issued_at = datetime.fromtimestamp(now, UTC)
        request = CredentialRequest(
            lease_id=uuid.uuid4().hex,
            thread_id=thread_id,
            tool_call_id=tool_call_id,
            tool_name=tool_name,
            audience=aud,
            scopes=requested,
            issued_at=issued_at,
            expires_at=datetime.fromtimestamp(now + ttl, UTC),
        )
        lease = prov.acquire(request)  # SecretNotFoundError etc. propagate: nothing recorded yet
        if lease.secret:  # any provider's value, before anything can carry it anywhere
            _register(lease.secret.reveal(), lease)
        payload = {**lease.to_record(), "tool_name": tool_name, "ttl_seconds": ttl, "ttl_capped": capped}
        drafts = [EventDraft(EventKind.CREDENTIAL_ISSUED, payload)]
        atomic = self._atomic_store
        if atomic is not None:
            # Lease row and credential.issued commit together: neither can exist without the other.
            try:
                atomic.record_issued(lease, record=(self.event_sink, thread_id, drafts))
            except BaseException:
                with contextlib.suppress(Exception):
                    prov.revoke(lease, RevokeReason.ISSUE_ABORTED)  # unrecorded: a jti token is rejected anyway
                raise
            return lease
        self.lease_store.record_issued(lease)
        try:
            self.event_sink.append(thread_id, drafts)
        except BaseException:
            # The step must not run with an unrecorded credential: withdraw it.
            self._end(prov, lease, RevokeReason.ISSUE_ABORTED)
            raise
        return lease

    # -- revoke ------------------------------------------------------------------

    def _end(self, prov: CredentialProvider | None, lease: Lease, reason: str) -> tuple[bool, str]:
        # Without its provider (e.g. revoke-run in a process that lacks it), the store entry is
        # still what invalidates a jti-verified token.
        revoked = prov.revoke(lease, reason) if prov is not None else lease.jit
        stored_reason = reason if (revoked or lease.jit) else RevokeReason.NOT_REVOCABLE
        self.lease_store.mark_revoked(lease.lease_id, stored_reason)
        return revoked, stored_reason

    def revoke(self, lease: Lease, reason: str = RevokeReason.STEP_ENDED) -> bool:
        """End a lease, put it on the revocation list and record ``credential.revoked``.

        With a store that records atomically, the revocation-list entry and the event
        commit together, and only the call that revoked the lease records it.
        """
        prov = self.providers.get(lease.provider)
        atomic = self._atomic_store
        if atomic is None:
            revoked, stored_reason = self._end(prov, lease, reason)
            self.event_sink.append(lease.thread_id, [self._revoked_event(lease, stored_reason, revoked)])
            return revoked
        _claimed, revoked = _revoke_recorded(atomic, self.event_sink, lease, reason, prov, self.clock)
        return revoked

    def _revoked_event(self, lease: Lease, stored_reason: str, revoked: bool) -> EventDraft:
        return _revoked_draft(lease, stored_reason, revoked, self.clock)

    def revoke_run(self, thread_id: str) -> list[str]:
        """Revoke every outstanding lease of a run (crash recovery); returns the lease ids."""
        return revoke_outstanding(self.lease_store, self.event_sink, thread_id, providers=self.providers, clock=self.clock)

    def revoke_call(self, thread_id: str, tool_call_id: str) -> list[str]:
        """Revoke the outstanding leases of one tool call whose attempt was cut off; returns the lease ids.

        The guard calls this when it records an in-doubt attempt ``tool.aborted``: the process
        that held the credential is gone, so it is revoked at once rather than left to expire.
        """
        return revoke_outstanding(
            self.lease_store, self.event_sink, thread_id, providers=self.providers, clock=self.clock,
            reason=RevokeReason.CALL_ABORTED, tool_call_id=tool_call_id,
        )

    # -- the step scope ----------------------------------------------------------

    @contextmanager
    def lease(self, thread_id: str, tool_call_id: str | None, tool_name: str, *args: Any, **kwargs: Any) -> Iterator[Lease]:
        """``with broker.lease(...) as lease:`` — issue, publish to :func:`current_credential`, revoke in finally.

        Takes the arguments of :meth:`issue`.
        """
        lease = self.issue(thread_id, tool_call_id, tool_name, *args, **kwargs)
        token = _CURRENT.set(lease)
        reason = RevokeReason.STEP_ENDED
        try:
            yield lease
        except BaseException as exc:
            reason = _reason_for(exc)
            _redact_leaving(exc, lease)
            raise
        finally:
            _CURRENT.reset(token)
            self._revoke_in_finally(lease, reason)

    @asynccontextmanager
    async def alease(
        self, thread_id: str, tool_call_id: str | None, tool_name: str, *args: Any, **kwargs: Any
    ) -> AsyncIterator[Lease]:
        """Async form of :meth:`lease` for async tools.

        Issue and revoke are blocking database transactions; they run in a worker
        thread, never on the event loop: on SQLite a blocking ``BEGIN IMMEDIATE``
        on the loop thread deadlocks (until the 30 s busy timeout) against an
        async-engine transaction that needs the loop to reach its commit, e.g.
        a concurrent task's ``aput_writes``. Both are shielded, so a cancellation
        cannot skip them: a cancelled issue is revoked as soon as it lands, and a
        revocation keeps running in its thread even if the ``finally`` is cancelled
        again (``asyncio.run`` waits for the default executor before closing).
        """
        import asyncio

        issuing = asyncio.ensure_future(
            asyncio.to_thread(self.issue, thread_id, tool_call_id, tool_name, *args, **kwargs)
        )
        try:
            lease = await asyncio.shield(issuing)
        except asyncio.CancelledError:
            issuing.add_done_callback(self._revoke_orphan)
            raise
        token = _CURRENT.set(lease)
        reason = RevokeReason.STEP_ENDED
        try:
            yield lease
        except BaseException as exc:
            reason = _reason_for(exc)
            _redact_leaving(exc, lease)
            raise
        finally:
            _CURRENT.reset(token)
            await asyncio.shield(asyncio.ensure_future(asyncio.to_thread(self._revoke_in_finally, lease, reason)))

    def _revoke_orphan(self, fut: Any) -> None:
        """Done-callback of an issue whose step was cancelled while it ran: end the lease (off the loop)."""
        if fut.cancelled() or fut.exception() is not None:
            return
        threading.Thread(
            target=self._revoke_in_finally, args=(fut.result(), RevokeReason.STEP_CANCELLED),
            name="warden-revoke-orphan", daemon=False,
        ).start()

    def _revoke_in_finally(self, lease: Lease, reason: str) -> None:
        try:
            self.revoke(lease, reason)
        except Exception as exc:
            # Never mask the step's own exception; without one, the failure is the error.
            log.error(
                "credential lease %s (provider %s) could not be revoked: %s", lease.lease_id, lease.provider,
                type(exc).__name__,
            )
            if reason == RevokeReason.STEP_ENDED:
                raise


# --------------------------------------------------------------------------- redaction and recovery

def _register(value: str, lease: Lease) -> None:
    """Scrub a handed-out value from storage and logs: a per-step token until its expiry plus the
    registry's margin, a non-revocable (keyring) secret for the life of the process."""
    redaction.register(value, expires_at=lease.expires_at.timestamp() if lease.jit else None)


def redact_exception(exc: BaseException, secrets: Sequence[str] = ()) -> bool:
    """Remove ``secrets`` and every live registered secret from an exception, in place.

    Why in place: the exception leaves the step and goes on to the caller, to
    LangGraph (which saves ``repr(exc)`` as the task's ``__error__`` write) and to
    logs. Its args, notes and attributes are scrubbed to any depth — inside any
    ``Mapping``/``Sequence``, objects with a ``__dict__`` (copied, never mutated),
    the cause/context chain and exception groups; an object whose own ``repr``
    shows a secret is replaced by its scrubbed text (see
    :func:`langgraph_warden.redaction.redact_exception`). Best effort: the storage
    boundary (the saver and the ledger) is what guarantees nothing is written.
    Returns True if anything was changed.
    """
    return redaction.redact_exception(exc, [s for s in secrets if s])


def _redact_leaving(exc: BaseException, lease: Lease) -> None:
    redact_exception(exc, [lease.secret.reveal()] if lease.secret else [])


def revoke_outstanding(
    lease_store: LeaseStore,
    event_sink: EventSink,
    thread_id: str,
    *,
    providers: Mapping[str, CredentialProvider] | None = None,
    clock: Callable[[], float] = time.time,
    reason: str = RevokeReason.RUN_REVOKED,
    tool_call_id: str | None = None,
) -> list[str]:
    """Revoke every outstanding lease of a run (or of one of its tool calls) and record ``credential.revoked`` for each.

    Crash recovery: works in a process that never saw the leases (no values,
    only the store's rows) and without the providers (a lease with a ``jti`` is
    invalidated by the revocation list alone). The store row is claimed first
    (``mark_revoked`` is a conditional update), so two processes recovering the
    same run record each lease once. Returns the lease ids this call revoked.
    """
    atomic = lease_store if records_atomically(lease_store) else None
    done: list[str] = []
    for rec in lease_store.outstanding(thread_id):
        if tool_call_id is not None and rec.tool_call_id != tool_call_id:
            continue
        lease = Lease.from_record(rec)
        prov = (providers or {}).get(lease.provider)
        if atomic is not None:
            claimed, _revoked = _revoke_recorded(atomic, event_sink, lease, reason, prov, clock, recovered=True)
            if claimed:
                done.append(lease.lease_id)
            continue  # not claimed: another process got there first and recorded it
        stored_reason = reason if lease.jit else RevokeReason.NOT_REVOCABLE
        if not lease_store.mark_revoked(lease.lease_id, stored_reason):
            continue  # another process got there first
        revoked = lease.jit
        if prov is not None:
            try:
                revoked = bool(prov.revoke(lease, reason)) or lease.jit
            except Exception as exc:  # the revocation list entry already invalidates a jti token
                log.error("provider %s could not revoke lease %s: %s", lease.provider, lease.lease_id, type(exc).__name__)
        event_sink.append(thread_id, [_revoked_draft(lease, stored_reason, revoked, clock, recovered=True)])
        done.append(lease.lease_id)
    return done


def _revoked_draft(
    lease: Lease, stored_reason: str, revoked: bool, clock: Callable[[], float], *, recovered: bool = False
) -> EventDraft:
    payload = {
        **lease.to_record(),
        "reason": stored_reason,
        "revoked": revoked,
        "revoked_at": _iso(datetime.fromtimestamp(int(clock()), UTC)),
    }
    if recovered:
        payload["recovered"] = True
    return EventDraft(EventKind.CREDENTIAL_REVOKED, payload)


def _revoke_recorded(
    lease_store: AtomicLeaseStore,
    event_sink: EventSink,
    lease: Lease,
    reason: str,
    prov: CredentialProvider | None,
    clock: Callable[[], float],
    *,
    recovered: bool = False,
) -> tuple[bool, bool]:
    """Revoke with the list entry and ``credential.revoked`` in one transaction; (claimed, revoked).

    A JIT lease is invalid once it is on the revocation list, so the list entry and
    its event are committed first and the provider is told after (its own list update
    is then a no-op). A non-JIT credential is only as revoked as its provider says,
    so the provider is asked first and the answer is recorded.
    """
    if lease.jit:
        draft = _revoked_draft(lease, reason, True, clock, recovered=recovered)
        claimed = lease_store.mark_revoked(lease.lease_id, reason, record=(event_sink, lease.thread_id, [draft]))
        if prov is not None:
            try:
                prov.revoke(lease, reason)
            except Exception as exc:  # the revocation list entry already invalidates the token
                log.error("provider %s could not revoke lease %s: %s", lease.provider, lease.lease_id, type(exc).__name__)
        return claimed, True
    revoked = bool(prov.revoke(lease, reason)) if prov is not None else False
    stored_reason = reason if revoked else RevokeReason.NOT_REVOCABLE
    draft = _revoked_draft(lease, stored_reason, revoked, clock, recovered=recovered)
    claimed = lease_store.mark_revoked(lease.lease_id, stored_reason, record=(event_sink, lease.thread_id, [draft]))
    return claimed, revoked


# --------------------------------------------------------------------------- providers


class LocalTokenProvider:
    """Mints per-step RFC 9068 access tokens signed with the workload key; verifies them.

    The revocation list is the shared :class:`LeaseStore` (same database as
    the history), so any resource server process with the JWK set and the
    store can reject a revoked token. A token whose lease was never recorded
    is rejected too (fail closed).
    """

    jit = True
    TYP = "at+jwt"

    def __init__(
        self,
        identity: JwtSigner,
        issuer: str,
        lease_store: LeaseStore,
        *,
        name: str = "local",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(issuer, str) or not issuer:
            raise ConfigurationError("issuer is empty; pass the broker's issuer URI, e.g. 'https://warden.local'")
        self.identity = identity
        self.issuer = issuer
        self.lease_store = lease_store
        self.name = name
        self.clock = clock
        self._jwks: Mapping[str, Any] = identity.jwks()

    def acquire(self, request: CredentialRequest) -> Lease:
        sub = str(self.identity.spiffe_id)
        claims = {
            "iss": self.issuer,
            "sub": sub,
            "client_id": sub,
            "aud": request.audience,
            "scope": " ".join(request.scopes),
            "iat": int(request.issued_at.timestamp()),
            "exp": int(request.expires_at.timestamp()),
            "jti": request.lease_id,
            "thread_id": request.thread_id,
            "tool_call_id": request.tool_call_id,
        }
        token = self.identity.sign_jwt(claims, typ=self.TYP)
        redaction.register(token, expires_at=request.expires_at.timestamp())
        return Lease(
            lease_id=request.lease_id,
            provider=self.name,
            jit=True,
            scopes=request.scopes,
            audience=request.audience,
            thread_id=request.thread_id,
            tool_call_id=request.tool_call_id,
            issued_at=request.issued_at,
            expires_at=request.expires_at,
            token_digest=short_digest(token),
            jti=request.lease_id,
            secret=SecretValue(token),
        )

    def revoke(self, lease: Lease, reason: str = RevokeReason.STEP_ENDED) -> bool:
        self.lease_store.mark_revoked(lease.lease_id, reason)
        return True

    def revoke_run(self, thread_id: str) -> list[str]:
        done = []
        for rec in self.lease_store.outstanding(thread_id):
            if rec.provider == self.name and self.lease_store.mark_revoked(rec.lease_id, RevokeReason.RUN_REVOKED):
                done.append(rec.lease_id)
        return done

    def verify(self, token: str, audience: str, scope: Iterable[str] | str | None = None) -> dict[str, Any]:
        """Resource-side check; returns the claims or raises :class:`CredentialRejected`.

        Order: format/alg/typ/key/signature, issuer, expiry, audience, scope,
        then the revocation list (the only database read, done last).
        """
        try:
            _, claims = decode_verified(token, self._jwks, typs=(self.TYP, "application/at+jwt"), error=CredentialRejected)
        except CredentialRejected as exc:
            if exc.reason != "unknown_key":
                raise
            self._jwks = self.identity.jwks()  # the key may have rotated since we cached the set
            _, claims = decode_verified(token, self._jwks, typs=(self.TYP, "application/at+jwt"), error=CredentialRejected)
        for name in ("iss", "sub", "aud", "exp", "iat", "jti", "client_id"):
            if claims.get(name) in (None, ""):
                raise CredentialRejected("missing_claim", f"claim {name!r} is required (RFC 9068)")
        if claims["iss"] != self.issuer:
            raise CredentialRejected("wrong_issuer", f"iss is {claims['iss']!r}, expected {self.issuer!r}")
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise CredentialRejected("malformed", "exp is not a number")
        if self.clock() >= exp:
            raise CredentialRejected("expired", "the token's exp is in the past")
        aud = claims["aud"]
        auds = [aud] if isinstance(aud, str) else list(aud) if isinstance(aud, list) else []
        if audience not in auds:
            raise CredentialRejected("wrong_audience", f"the token is for {auds}, not {audience!r}")
        needed = _check_scopes("scope", scope)
        held = set(str(claims.get("scope", "")).split())
        lacking = [s for s in needed if s not in held]
        if lacking:
            raise CredentialRejected("insufficient_scope", f"the token lacks scopes {lacking}")
        if self.lease_store.is_revoked(str(claims["jti"])):
            raise CredentialRejected("revoked", f"lease {claims['jti']} is on the revocation list")
        return claims

    def __repr__(self) -> str:
        return f"LocalTokenProvider(name={self.name!r}, issuer={self.issuer!r})"


class KeyringSecretProvider:
    """Hands a tool an upstream secret (API key) from the OS keyring, for the step only.

    ``mapping`` maps an audience or tool name to the keyring *username* under
    ``service``. The secret cannot be revoked (it is long-lived upstream), so
    leases are ``jit=False`` and their end is recorded as
    ``not_revocable_step_ended``; the value is dropped from the context when
    the step ends.
    """

    jit = False

    def __init__(self, service: str, mapping: Mapping[str, str], *, name: str = "keyring") -> None:
        if not isinstance(service, str) or not service:
            raise ConfigurationError("service is empty; pass the keyring service that holds the upstream secrets")
        self.service = service
        self.mapping = dict(mapping)
        self.name = name

    def acquire(self, request: CredentialRequest) -> Lease:
        username = self.mapping.get(request.audience) or self.mapping.get(request.tool_name)
        if username is None:
            raise SecretNotFoundError(
                f"no keyring entry is mapped for audience {request.audience!r} / tool {request.tool_name!r}; "
                f"add it to KeyringSecretProvider(mapping=...) (keyring service {self.service!r})"
            )
        backend = usable_keyring_backend(
            "Configure a keyring backend: on Linux install and unlock a Secret Service (gnome-keyring or "
            "KeePassXC) or set PYTHON_KEYRING_BACKEND to a backend you trust; then store the secret with "
            f"`keyring set {self.service} {username}`."
        )
        try:
            value = backend.get_password(self.service, username)
        except Exception as exc:
            raise KeyStoreError(
                f"keyring could not read service={self.service!r} username={username!r} ({type(exc).__name__})"
            ) from None
        if not value:
            raise SecretNotFoundError(
                f"the keyring has no secret for service={self.service!r} username={username!r}; store it with "
                f"`keyring set {self.service} {username}`"
            )
        redaction.register(value)  # long-lived upstream: scrubbed for the life of the process
        return Lease(
            lease_id=request.lease_id,
            provider=self.name,
            jit=False,
            scopes=request.scopes,
            audience=request.audience,
            thread_id=request.thread_id,
            tool_call_id=request.tool_call_id,
            issued_at=request.issued_at,
            expires_at=request.expires_at,
            token_digest=None,
            jti=None,
            secret=SecretValue(value),
        )

    def revoke(self, lease: Lease, reason: str = RevokeReason.STEP_ENDED) -> bool:
        return False  # long-lived upstream secret: nothing to invalidate

    def revoke_run(self, thread_id: str) -> list[str]:
        return []  # holds no per-run state; the broker records the end of its leases

    def __repr__(self) -> str:
        return f"KeyringSecretProvider(name={self.name!r}, service={self.service!r})"
