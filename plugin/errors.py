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
    "DatabaseNotFoundError",
    "NotAWardenDatabaseError",
    "UnknownThreadError",
    "CorruptRowError",
    "IntegrityError",
    "KeyStoreError",
    "LedgerAppendError",
    "UnseenEventsError",
    "CallInProgressError",
]


class WardenError(Exception):
    """Base class of every error raised by langgraph-warden."""


class ConfigurationError(WardenError, ValueError):
    """Bad input or configuration: the message names the field and a fix."""


class DatabaseUnavailableError(WardenError, ConnectionError):
    """The database could not be reached; the message names the host."""


class SchemaVersionError(WardenError):
    """The database schema is newer (or otherwise unknown) to this package."""


class DatabaseNotFoundError(WardenError):
    """A command that only reads was pointed at a database that does not exist; nothing was created."""


class NotAWardenDatabaseError(WardenError):
    """The database exists but holds no langgraph-warden schema (empty, foreign or corrupt); it was not touched."""


class UnknownThreadError(WardenError, LookupError):
    """No history is recorded for this thread id; ``suggestions`` are the closest known ids."""

    def __init__(self, message: str, *, thread_id: str, suggestions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.thread_id = thread_id
        self.suggestions = suggestions


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


class UnseenEventsError(WardenError):
    """An append carrying a :class:`~langgraph_warden.events.Watermark` found later events of its kinds.

    Nothing was written. The writer's view of the thread is out of date (another process,
    or another call of this one, recorded something since it last read): read again, then
    decide again. The guard does this itself; seeing it elsewhere means a caller passed
    ``seen=`` without handling it. ``found``: the first unseen events, as (seq, kind, subject);
    ``complete``: whether that is all of them.
    """

    def __init__(
        self, thread_id: str, seen_seq: int, found: list[tuple[int, str, str | None]], *, complete: bool = True
    ) -> None:
        seq, kind, _ = found[0]
        super().__init__(
            f"thread {thread_id!r} has a {kind!r} event at seq {seq}, after seq {seen_seq} the writer had read up to; "
            "nothing was appended: read the thread again and retry"
        )
        self.thread_id, self.seen_seq, self.found, self.complete = thread_id, seen_seq, found, complete


class CallInProgressError(WardenError):
    """Another live process is executing this tool call and did not finish within the wait.

    Nothing was run or recorded here. The other worker records the outcome when its tool
    returns; resume the run later and the outcome is replayed, not executed again.
    """
