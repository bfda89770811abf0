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

Modules (one job each)
----------------------
:mod:`.errors` the errors; :mod:`.model` the secret, the lease, the request and the scope and
revocation vocabulary; :mod:`.protocols` the provider and lease-store seams; :mod:`.context` the
accessor; :mod:`.broker` issue and revoke; :mod:`.recovery` crash recovery and revocation recorded
with its event; :mod:`.redact` registration and redaction of handed-out values (on
:mod:`langgraph_warden.redaction`); :mod:`.providers` the local token and keyring providers.
"""

from __future__ import annotations

from .broker import CredentialBroker
from .context import current_credential
from .errors import (
    CredentialError,
    CredentialRejected,
    NoCredentialError,
    ScopeNotGrantedError,
    SecretNotFoundError,
    TtlTooLongError,
    UnknownProviderError,
)
from .model import CredentialRequest, Lease, LeaseRecord, RevokeReason, SecretValue, short_digest
from .protocols import (
    AtomicLeaseStore,
    CredentialProvider,
    InlineLeaseStore,
    LeaseEvents,
    LeaseStore,
    records_atomically,
)
from .providers import KeyringSecretProvider, LocalTokenProvider
from .recovery import revoke_outstanding
from .redact import lease_secrets, redact_exception

__all__ = [
    "SecretValue",
    "Lease",
    "LeaseRecord",
    "CredentialRequest",
    "CredentialProvider",
    "LeaseStore",
    "AtomicLeaseStore",
    "InlineLeaseStore",
    "LeaseEvents",
    "records_atomically",
    "CredentialBroker",
    "LocalTokenProvider",
    "KeyringSecretProvider",
    "current_credential",
    "revoke_outstanding",
    "redact_exception",
    "lease_secrets",
    "short_digest",
    "CredentialError",
    "ScopeNotGrantedError",
    "TtlTooLongError",
    "UnknownProviderError",
    "SecretNotFoundError",
    "CredentialRejected",
    "NoCredentialError",
    "RevokeReason",
]
