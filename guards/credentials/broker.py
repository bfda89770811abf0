"""The broker: validates a request against the policy decision, issues a lease, records and revokes it."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

from langgraph_warden.errors import ConfigurationError
from langgraph_warden.events import EventDraft, EventKind, EventSink

from .context import CURRENT_LEASE
from .errors import ScopeNotGrantedError, TtlTooLongError, UnknownProviderError
from .model import CredentialRequest, Lease, RevokeReason, check_scopes
from .protocols import AtomicLeaseStore, CredentialProvider, InlineLeaseStore, LeaseStore, records_atomically
from .recovery import revoke_outstanding, revoke_recorded, revoked_draft
from .redact import redact_leaving, register_handed_out

__all__ = ["CredentialBroker", "RecordWith"]

log = logging.getLogger(__name__)

#: ``record_with(lease, drafts, rows)`` of :meth:`CredentialBroker.issue`: commit ``drafts`` and ``rows(tx)``
#: (the lease row) in one transaction of the ledger, with whatever else the caller records there.
RecordWith = Callable[[Lease, list[EventDraft], Callable[[Any], None]], None]


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
        self._inline_store: InlineLeaseStore | None = (
            store if self._atomic_store is not None and isinstance(store, InlineLeaseStore) else None
        )

    def records_with(self, sink: EventSink) -> bool:
        """Whether :meth:`issue` can hand the lease's recording to a caller appending to ``sink``
        (``record_with=``): the lease store writes its rows in ``sink``'s transactions."""
        return self._inline_store is not None and self._inline_store.writes_with(sink)

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
        record_with: RecordWith | None = None,
    ) -> Lease:
        """Issue a lease; on any error nothing is issued, recorded or emitted.

        ``scopes_requested`` defaults to everything granted. ``audience``
        defaults to the tool name. TTL: explicit ``ttl_seconds`` (error above
        the maximum), else ``decision_ttl_seconds`` capped at the maximum, else
        ``default_ttl_seconds``.

        ``record_with(lease, drafts, rows)`` (where :meth:`records_with` allows it): the caller commits
        ``drafts`` (``credential.issued``) and ``rows(tx)`` (the lease row) with its own events in one
        transaction; if it raises, the credential is withdrawn, with nothing about it recorded.
        """
        requested = self._requested_scopes(thread_id, tool_name, scopes_granted_by_policy, scopes_requested)
        ttl, capped = self._ttl(ttl_seconds, decision_ttl_seconds)
        aud = audience if audience is not None else tool_name
        if not isinstance(aud, str) or not aud:
            raise ConfigurationError("audience is empty; pass the service the credential is for (default: tool name)")
        if record_with is not None and self._inline_store is None:
            raise ConfigurationError("record_with= needs a lease store on the ledger's database (SqlLeaseStore); "
                                     "check broker.records_with(sink) first")
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
            register_handed_out(lease.secret.reveal(), lease)
        payload = {**lease.to_record(), "tool_name": tool_name, "ttl_seconds": ttl, "ttl_capped": capped}
        drafts = [EventDraft(EventKind.CREDENTIAL_ISSUED, payload)]
        if record_with is None:
            self._record_issued(prov, lease, thread_id, drafts)
        else:
            self._recorded_by_caller(prov, lease, drafts, record_with)
        return lease

    def _recorded_by_caller(self, prov: CredentialProvider, lease: Lease, drafts: list[EventDraft], record_with: RecordWith) -> None:
        """``record_with`` of :meth:`issue`: the caller commits the lease row and ``drafts`` with its own
        events; if it fails, the credential is withdrawn (nothing about it was recorded)."""
        inline = self._inline_store
        assert inline is not None, "checked in issue, before anything was minted"
        try:
            record_with(lease, drafts, lambda tx: inline.insert_in(tx, lease))
        except BaseException:
            with contextlib.suppress(Exception):
                prov.revoke(lease, RevokeReason.ISSUE_ABORTED)  # unrecorded: a jti token is rejected anyway
            raise

    @staticmethod
    def _requested_scopes(
        thread_id: str, tool_name: str, granted_by_policy: Iterable[str] | str, requested: Iterable[str] | str | None
    ) -> tuple[str, ...]:
        """The scopes to issue: ``requested`` (default: all granted), each granted by the policy."""
        if not isinstance(thread_id, str) or not thread_id:
            raise ConfigurationError("thread_id is empty; pass the run's thread id")
        if not isinstance(tool_name, str) or not tool_name:
            raise ConfigurationError("tool_name is empty; pass the name of the tool being called")
        granted = check_scopes("scopes_granted_by_policy", granted_by_policy)
        wanted = granted if requested is None else check_scopes("scopes_requested", requested)
        missing = [s for s in wanted if s not in granted]
        if missing:
            raise ScopeNotGrantedError(missing, granted, tool_name)
        return wanted

    def _ttl(self, ttl_seconds: int | None, decision_ttl_seconds: int | None) -> tuple[int, bool]:
        """(ttl, capped): explicit ``ttl_seconds`` (error above the maximum), else the decision's TTL capped
        at the maximum, else the default."""
        explicit = _check_ttl("ttl_seconds", ttl_seconds)
        decided = _check_ttl("decision_ttl_seconds", decision_ttl_seconds)
        if explicit is not None:
            if explicit > self.max_ttl_seconds:
                raise TtlTooLongError(explicit, self.max_ttl_seconds)
            return explicit, False
        if decided is not None:
            return min(decided, self.max_ttl_seconds), decided > self.max_ttl_seconds
        return self.default_ttl_seconds, False

    def _record_issued(self, prov: CredentialProvider, lease: Lease, thread_id: str, drafts: list[EventDraft]) -> None:
        """Record the lease and its ``credential.issued`` event; if either fails the credential is withdrawn."""
        atomic = self._atomic_store
        if atomic is not None:
            # Lease row and credential.issued commit together: neither can exist without the other.
            try:
                atomic.record_issued(lease, record=(self.event_sink, thread_id, drafts))
            except BaseException:
                with contextlib.suppress(Exception):
                    prov.revoke(lease, RevokeReason.ISSUE_ABORTED)  # unrecorded: a jti token is rejected anyway
                raise
            return
        self.lease_store.record_issued(lease)
        try:
            self.event_sink.append(thread_id, drafts)
        except BaseException:
            # The step must not run with an unrecorded credential: withdraw it.
            self._end(prov, lease, RevokeReason.ISSUE_ABORTED)
            raise

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
        _claimed, revoked = revoke_recorded(atomic, self.event_sink, lease, reason, prov, self.clock)
        return revoked

    def _revoked_event(self, lease: Lease, stored_reason: str, revoked: bool) -> EventDraft:
        return revoked_draft(lease, stored_reason, revoked, self.clock)

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
        token = CURRENT_LEASE.set(lease)
        reason = RevokeReason.STEP_ENDED
        try:
            yield lease
        except BaseException as exc:
            reason = _reason_for(exc)
            redact_leaving(exc, lease)
            raise
        finally:
            CURRENT_LEASE.reset(token)
            self._revoke_in_finally(lease, reason)

    @asynccontextmanager
    async def alease(
        self, thread_id: str, tool_call_id: str | None, tool_name: str, *args: Any,
        on_cancelled_issue: Callable[[Lease], None] | None = None, **kwargs: Any,
    ) -> AsyncIterator[Lease]:
        """Async form of :meth:`lease` for async tools.

        ``on_cancelled_issue(lease)``: run (in the revoking thread, before the revocation) when the
        step was cancelled while its lease was being issued and the issue then succeeded: e.g. the
        guard, whose ``record_with`` recorded ``tool.started`` with the lease, says the tool never ran.

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
            issuing.add_done_callback(partial(self._revoke_orphan, before=on_cancelled_issue))
            raise
        token = CURRENT_LEASE.set(lease)
        reason = RevokeReason.STEP_ENDED
        try:
            yield lease
        except BaseException as exc:
            reason = _reason_for(exc)
            redact_leaving(exc, lease)
            raise
        finally:
            CURRENT_LEASE.reset(token)
            await asyncio.shield(asyncio.ensure_future(asyncio.to_thread(self._revoke_in_finally, lease, reason)))

    def _revoke_orphan(self, fut: Any, before: Callable[[Lease], None] | None = None) -> None:
        """Done-callback of an issue whose step was cancelled while it ran: end the lease (off the loop)."""
        if fut.cancelled() or fut.exception() is not None:
            return
        threading.Thread(
            target=self._end_orphan, args=(fut.result(), before), name="warden-revoke-orphan", daemon=False,
        ).start()

    def _end_orphan(self, lease: Lease, before: Callable[[Lease], None] | None) -> None:
        if before is not None:
            try:
                before(lease)
            except Exception as exc:  # the revocation must still happen
                log.error("lease %s: recording its cancelled step failed: %s", lease.lease_id, type(exc).__name__)
        self._revoke_in_finally(lease, RevokeReason.STEP_CANCELLED)

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
