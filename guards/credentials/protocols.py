"""The seams of the broker: what a provider and a lease store must offer, declared as protocols."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeGuard, runtime_checkable

from langgraph_warden.events import EventDraft, EventSink

from .model import CredentialRequest, Lease, LeaseRecord, RevokeReason

__all__ = ["CredentialProvider", "LeaseStore", "AtomicLeaseStore", "InlineLeaseStore", "LeaseEvents", "records_atomically"]


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


@runtime_checkable
class InlineLeaseStore(AtomicLeaseStore, Protocol):
    """An :class:`AtomicLeaseStore` whose lease row can join a transaction of its ledger.

    Why: the guard then commits a call's lease, its ``credential.issued`` and the call's
    ``tool.started`` (with the policy decision) in one transaction, one fsync, instead of one
    for the decision, one for the lease and one for the start.
    """

    def writes_with(self, sink: EventSink) -> bool:
        """Whether :meth:`insert_in` can run in ``sink``'s transactions (the sink is this store's ledger)."""
        ...

    def insert_in(self, tx: Any, lease: Lease) -> None:
        """Insert the lease row in the caller's transaction of that ledger."""
        ...


def records_atomically(store: LeaseStore) -> TypeGuard[AtomicLeaseStore]:
    """True if ``store`` commits lease rows and their events together (see :class:`AtomicLeaseStore`)."""
    return isinstance(store, AtomicLeaseStore) and bool(store.records_atomically)
