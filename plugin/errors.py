"""Typed errors. Each says what was wrong and how to fix it.

One hierarchy so callers can ``except WardenError`` and security tooling can
tell an integrity failure (someone changed history) from a configuration
mistake (someone mistyped a URL).
"""

from __future__ import annotations

__all__ = [
    "WardenError",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "SchemaVersionError",
    "CorruptRowError",
    "IntegrityError",
    "KeyStoreError",
    "LedgerAppendError",
]


class WardenError(Exception):
    """Base class of every error raised by langgraph-warden."""


class ConfigurationError(WardenError, ValueError):
    """Bad input or configuration: the message names the field and a fix."""


class DatabaseUnavailableError(WardenError, ConnectionError):
    """The database could not be reached; the message names the host."""


class SchemaVersionError(WardenError):
    """The database schema is newer (or otherwise unknown) to this package."""


class CorruptRowError(WardenError):
    """A stored row cannot be decoded; names the table and key."""


class IntegrityError(WardenError):
    """Stored state or history does not match the signed event chain.

    Attributes name exactly what failed so an operator can find the row.
    """

    def __init__(
        self,
        message: str,
        *,
        thread_id: str | None = None,
        checkpoint_ns: str | None = None,
        checkpoint_id: str | None = None,
        seq: int | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.thread_id = thread_id
        self.checkpoint_ns = checkpoint_ns
        self.checkpoint_id = checkpoint_id
        self.seq = seq
        self.reason = reason


class KeyStoreError(WardenError):
    """A signing or identity key could not be loaded; says how to configure one."""


class LedgerAppendError(WardenError):
    """The event ledger could not record an event: the step stops before its side effect."""
