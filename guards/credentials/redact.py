"""Redaction of the values the broker hands out, on the one implementation in :mod:`langgraph_warden.redaction`.

Every value handed out is registered where it is minted or revealed (a per-step token until its
expiry plus the registry's margin, a keyring secret for the life of the process), so the saver and
the ledger mask it in every blob before it is digested and written. An exception leaving a step is
also redacted in place, and the guard scrubs a step's record with :func:`lease_secrets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from langgraph_warden import redaction

if TYPE_CHECKING:
    from .model import Lease

__all__ = ["register_handed_out", "lease_secrets", "redact_exception", "redact_leaving"]


def register_handed_out(value: str, lease: Lease) -> None:
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


def lease_secrets(lease: Lease | None) -> list[str]:
    """The value a lease carries, as the ``extra`` secrets of a scrub (none for a value-less lease).

    The one way the broker and the guard name a step's secret to :mod:`langgraph_warden.redaction`
    (it was registered when the lease was issued; reading it here registers nothing again).
    """
    if lease is None or not lease.secret:
        return []
    return [lease.secret.reveal()]


def redact_leaving(exc: BaseException, lease: Lease) -> None:
    """Redact an exception leaving a guarded step: its lease's value and every live registered secret."""
    redact_exception(exc, lease_secrets(lease))
