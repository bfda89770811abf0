"""langgraph-warden: durable, governed execution for LangGraph agents.

The public API is importable from here — ``from langgraph_warden import Warden, ToolSpec, approve`` —
and loaded lazily: ``import langgraph_warden`` imports none of LangGraph, LangChain, SQLAlchemy or
the policy engines until a name that needs them is used, so a CLI, a hook or a type check that only
touches the package stays cheap. Each name still lives in (and can be imported from) its module,
listed in ``_EXPORTS``. Test doubles live in :mod:`langgraph_warden.testing`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module (relative to this package) that defines it.
_EXPORTS: dict[str, str] = {
    # facade and checkpointer
    "Warden": ".warden",
    "WardenSaver": ".checkpointers",
    "VerificationReport": ".checkpointers",
    # tools, guard, approvals, credentials
    "ToolSpec": ".guards.tools",
    "ToolRegistry": ".guards.tools",
    "WardenMiddleware": ".guards.middleware",
    "approve": ".guards.approval",
    "reject": ".guards.approval",
    "edit": ".guards.approval",
    "ApprovalRequest": ".guards.approval",
    "ApprovalDecision": ".guards.approval",
    "current_credential": ".guards.credentials",
    "CredentialProvider": ".guards.credentials",
    "LocalTokenProvider": ".guards.credentials",
    "KeyringSecretProvider": ".guards.credentials",
    "RunCharter": ".charter",
    "AuditTrail": ".audit",
    # policy engines
    "PolicyEngine": ".guards.policy",
    "PolicyDecision": ".guards.policy",
    "DEFAULT_REGO_POLICY": ".guards.policy",
    "DEFAULT_CEDAR_POLICY": ".guards.policy",
    "RegoEngine": ".guards.rego",
    "CedarEngine": ".guards.cedar",
    "OpaServerEngine": ".guards.opa",
    # key stores and head stores (trust anchors outside the database)
    "KeyStore": ".keys",
    "EphemeralKeyStore": ".keys",
    "KeyringKeyStore": ".keys",
    "FileKeyStore": ".keyfiles",
    "WorkloadKeyStore": ".identity",
    "EphemeralWorkloadKeyStore": ".identity",
    "KeyringWorkloadKeyStore": ".identity",
    "FileWorkloadKeyStore": ".keyfiles",
    "HeadStore": ".anchors",
    "FileHeadStore": ".anchors",
    "KeyringHeadStore": ".anchors",
    # errors
    "WardenError": ".errors",
    "ConfigurationError": ".errors",
    "DatabaseUnavailableError": ".errors",
    "SchemaVersionError": ".errors",
    "DatabaseNotFoundError": ".errors",
    "NotAWardenDatabaseError": ".errors",
    "UnknownThreadError": ".errors",
    "CorruptRowError": ".errors",
    "IntegrityError": ".errors",
    "KeyStoreError": ".errors",
    "LedgerAppendError": ".errors",
    "UnseenEventsError": ".errors",
    "CallInProgressError": ".errors",
    "InvalidApprovalError": ".guards.approval",
    "PolicyLoadError": ".guards.policy",
    "CredentialError": ".guards.credentials",
    "CredentialRejected": ".guards.credentials",
    "NoCredentialError": ".guards.credentials",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use, then cache the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads these on demand
    from .anchors import FileHeadStore, HeadStore, KeyringHeadStore
    from .audit import AuditTrail
    from .charter import RunCharter
    from .checkpointers import VerificationReport, WardenSaver
    from .errors import (
        CallInProgressError,
        ConfigurationError,
        CorruptRowError,
        DatabaseNotFoundError,
        DatabaseUnavailableError,
        IntegrityError,
        KeyStoreError,
        LedgerAppendError,
        NotAWardenDatabaseError,
        SchemaVersionError,
        UnknownThreadError,
        UnseenEventsError,
        WardenError,
    )
    from .guards.approval import ApprovalDecision, ApprovalRequest, InvalidApprovalError, approve, edit, reject
    from .guards.cedar import CedarEngine
    from .guards.credentials import (
        CredentialError,
        CredentialProvider,
        CredentialRejected,
        KeyringSecretProvider,
        LocalTokenProvider,
        NoCredentialError,
        current_credential,
    )
    from .guards.middleware import WardenMiddleware
    from .guards.opa import OpaServerEngine
    from .guards.policy import DEFAULT_CEDAR_POLICY, DEFAULT_REGO_POLICY, PolicyDecision, PolicyEngine, PolicyLoadError
    from .guards.rego import RegoEngine
    from .guards.tools import ToolRegistry, ToolSpec
    from .identity import EphemeralWorkloadKeyStore, KeyringWorkloadKeyStore, WorkloadKeyStore
    from .keyfiles import FileKeyStore, FileWorkloadKeyStore
    from .keys import EphemeralKeyStore, KeyringKeyStore, KeyStore
    from .warden import Warden
