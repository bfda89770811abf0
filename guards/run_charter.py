"""The charter of a run started through LangGraph Agent Server, read from the run itself.

Why: on Agent Server nobody calls ``warden.start_run`` — a client creates a run over HTTP, and the
server builds the run's config from the assistant's configuration, the run's own
``config``/``context`` and its ``metadata``, and (with custom auth, ``langgraph_sdk.Auth``) the
authenticated user. The guard records the charter it reads here as the thread's signed
``run.started`` event at the first guarded call, exactly as if ``start_run`` had been called.

Where each field comes from (first found wins):

=============  ==========================================================================
``owner``      the authenticated user (``configurable.langgraph_auth_user_id``) when the
               server has custom auth — then a claimed owner is ignored, never trusted;
               otherwise ``owner`` in the run's ``metadata``, then in its ``context`` /
               ``configurable`` (the assistant's or the run's configuration)
``intent``     ``intent`` in the ``context`` / ``configurable``, then in ``metadata``
``risk_tier``  ``risk_tier`` in the ``context`` / ``configurable``, then in ``metadata``;
               default ``"medium"``
=============  ==========================================================================

``configurable.warden_charter`` (a full charter dict, as in-process) is also read, below the
plain keys. A run with no owner gets no charter, and the guard refuses its calls in enforcing mode
(``no_owner``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph_warden.charter import RunCharter

__all__ = ["authenticated_user", "charter_from_run", "NO_OWNER_HINT"]

#: The configurable key LangGraph Agent Server puts the authenticated user's identity under.
AUTH_USER_ID_KEY = "langgraph_auth_user_id"
_CHARTER_KEY = "warden_charter"

#: What a refused call without owner tells the client to do.
NO_OWNER_HINT = (
    "On LangGraph Agent Server the owner is the authenticated user (configure custom auth in "
    "langgraph.json) or, without auth, metadata={'owner': ...} on the run; intent and risk_tier go in "
    "the assistant's or the run's config/context."
)


def authenticated_user(config: Mapping[str, Any] | None) -> str | None:
    """The identity Agent Server authenticated for this run's request, or ``None`` without custom auth.

    Without custom auth the server records an unauthenticated user whose identity is ``""``; that
    is nobody, so ``None``.
    """
    configurable = (config or {}).get("configurable") or {}
    identity = configurable.get(AUTH_USER_ID_KEY)
    if isinstance(identity, str) and identity.strip():
        return identity
    return None


def _first(key: str, *sources: Mapping[str, Any] | None) -> Any:
    for source in sources:
        if isinstance(source, Mapping):
            value = source.get(key)
            if value is not None and value != "":
                return value
    return None


def charter_from_run(config: Mapping[str, Any] | None, *, require_auth: bool = False) -> RunCharter | None:
    """The run's charter from its config (see the module docstring); ``None`` if it names no owner.

    ``require_auth``: the server has custom auth, so only an authenticated user can own a run; a run
    that carries none (e.g. one the server started on its own) gets no charter rather than the owner
    its metadata claims.

    An owner or intent that is given but malformed raises ``ConfigurationError`` (from
    :class:`RunCharter`), naming the field: the run fails with that message, nothing runs.
    """
    config = config or {}
    configurable = config.get("configurable") or {}
    metadata = config.get("metadata") or {}
    doc = configurable.get(_CHARTER_KEY)
    doc = doc if isinstance(doc, Mapping) else {}
    owner = authenticated_user(config)
    if owner is None and not require_auth:
        owner = _first("owner", metadata, configurable, doc)
    if owner is None:
        return None
    intent = _first("intent", configurable, metadata, doc)
    risk_tier = _first("risk_tier", configurable, metadata, doc) or "medium"
    return RunCharter.from_dict({
        **doc,
        "owner": owner,
        "intent": intent if intent is not None else "",
        "risk_tier": risk_tier,
    })
