"""The lease of the step running in this context, for the tool to read: :func:`current_credential`.

Context variables follow the code: they are visible in the same thread, in ``await``-ed coroutines
and in tasks or threads started with a copied context, so one accessor serves sync and async tools.
"""

from __future__ import annotations

import contextvars

from .errors import NoCredentialError
from .model import Lease

__all__ = ["current_credential", "CURRENT_LEASE"]

#: Set by :meth:`CredentialBroker.lease` for exactly the guarded block.
CURRENT_LEASE: contextvars.ContextVar[Lease | None] = contextvars.ContextVar("warden_current_credential", default=None)


def current_credential() -> Lease:
    """The lease of the guarded step running in this context.

    Raises :class:`NoCredentialError` outside :meth:`CredentialBroker.lease`.
    """
    lease = CURRENT_LEASE.get()
    if lease is None:
        raise NoCredentialError(
            "current_credential() was called outside a guarded tool step; run the tool through the warden "
            "guard (ToolNode(tools, wrap_tool_call=warden.guard)) or inside `with broker.lease(...)`"
        )
    return lease
