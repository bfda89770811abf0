"""Ending leases that a step did not end: crash recovery, and revocation with its event in one transaction."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from langgraph_warden.events import EventDraft, EventKind, EventSink

from .model import Lease, RevokeReason, iso_utc
from .protocols import AtomicLeaseStore, CredentialProvider, LeaseStore, records_atomically

__all__ = ["revoke_outstanding", "revoke_recorded", "revoked_draft"]

log = logging.getLogger(__name__)


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
            claimed, _revoked = revoke_recorded(atomic, event_sink, lease, reason, prov, clock, recovered=True)
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
        event_sink.append(thread_id, [revoked_draft(lease, stored_reason, revoked, clock, recovered=True)])
        done.append(lease.lease_id)
    return done


def revoked_draft(
    lease: Lease, stored_reason: str, revoked: bool, clock: Callable[[], float], *, recovered: bool = False
) -> EventDraft:
    payload = {
        **lease.to_record(),
        "reason": stored_reason,
        "revoked": revoked,
        "revoked_at": iso_utc(datetime.fromtimestamp(int(clock()), UTC)),
    }
    if recovered:
        payload["recovered"] = True
    return EventDraft(EventKind.CREDENTIAL_REVOKED, payload)


def revoke_recorded(
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
        draft = revoked_draft(lease, reason, True, clock, recovered=recovered)
        claimed = lease_store.mark_revoked(lease.lease_id, reason, record=(event_sink, lease.thread_id, [draft]))
        # A provider whose revocation is this list entry would only write it again (a write
        # transaction per call that changes nothing): told only when it keeps a list of its own.
        if prov is not None and not (getattr(prov, "revoked_by_list", False) and getattr(prov, "lease_store", None) is lease_store):
            try:
                prov.revoke(lease, reason)
            except Exception as exc:  # the revocation list entry already invalidates the token
                log.error("provider %s could not revoke lease %s: %s", lease.provider, lease.lease_id, type(exc).__name__)
        return claimed, True
    revoked = bool(prov.revoke(lease, reason)) if prov is not None else False
    stored_reason = reason if revoked else RevokeReason.NOT_REVOCABLE
    draft = revoked_draft(lease, stored_reason, revoked, clock, recovered=recovered)
    claimed = lease_store.mark_revoked(lease.lease_id, stored_reason, record=(event_sink, lease.thread_id, [draft]))
    return claimed, revoked
