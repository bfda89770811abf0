"""The event model: one record per thing that happened, hash-chained per thread.

An event's identity is the SHA-256 of its canonical *body* (every field but the
hash itself, ``prev_hash`` included), so changing, inserting, deleting or
reordering any event breaks the chain from that point on. The body is stored
verbatim, which lets a verifier hash exactly what the writer hashed.

Signatures are not per event: each committing transaction signs the chain head
it leaves (:class:`SignedHead`). Every earlier event is pinned by the hashes.

Parts of the package that record events (the checkpointer, the guards, the
credential broker, approvals) depend only on the :class:`EventSink` protocol
defined here, never on the database-backed ledger that implements it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

from . import canonical
from .redaction import scrub_canonical  # the storage boundary: live secrets masked before the hash

_loads: Callable[[bytes | str], Any]
try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency
    from json import loads as _loads

__all__ = [
    "EVENT_SCHEMA_VERSION",
    "GENESIS_HASH",
    "EventKind",
    "Event",
    "EventDraft",
    "SignedHead",
    "EventSink",
    "DeferringEventSink",
    "EventSummary",
    "SummarisingEventSink",
    "CallClaims",
    "GuardSink",
    "Watermark",
    "event_hash",
    "head_signing_bytes",
]

EVENT_SCHEMA_VERSION = 1

#: ``prev_hash`` of the first event of every thread.
GENESIS_HASH = "sha256:" + "0" * 64


class EventKind:
    """Event kinds recorded by the package (strings, so new kinds need no migration)."""

    RUN_STARTED = "run.started"
    CHECKPOINT_SAVED = "checkpoint.saved"
    WRITES_SAVED = "writes.saved"
    THREAD_DELETED = "thread.deleted"
    THREAD_COPIED = "thread.copied"
    CHECKPOINTS_PRUNED = "checkpoints.pruned"
    RUNS_DELETED = "runs.deleted"
    KEY_REGISTERED = "key.registered"
    POLICY_DECIDED = "policy.decided"
    TOOL_STARTED = "tool.started"
    TOOL_COMPLETED = "tool.completed"
    TOOL_FAILED = "tool.failed"
    TOOL_DENIED = "tool.denied"
    TOOL_REPLAYED = "tool.replayed"
    TOOL_ABORTED = "tool.aborted"
    #: The tool itself called interrupt(): the attempt paused on purpose and will run again.
    TOOL_SUSPENDED = "tool.suspended"
    #: A later call (new tool-call id, same tool and arguments) was recognised as a retry of this
    #: one after its model message was lost: it is answered from this call's record.
    TOOL_SUPERSEDED = "tool.superseded"
    CREDENTIAL_ISSUED = "credential.issued"
    CREDENTIAL_REVOKED = "credential.revoked"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_GRANTED = "approval.granted"
    APPROVAL_REJECTED = "approval.rejected"
    APPROVAL_EDITED = "approval.edited"
    APPROVAL_EXPIRED = "approval.expired"
    APPROVAL_REFUSED = "approval.refused"


def _payload(doc: Mapping[str, Any], body: bytes) -> Any:
    """The payload of a parsed body, revived only when the bytes hold a tag besides ``ts``."""
    return canonical.revive(doc["payload"]) if body.count(b'"$') > 1 else doc["payload"]


class EventSummary(NamedTuple):
    """What a reader folding a thread's history needs of an event, at a fraction of an :class:`Event`'s cost.

    Decoding a stored event into an :class:`Event` costs ~2.6 µs, four fifths of it outside the
    JSON parse; a guard that folds a long history after a restart reads hundreds at once. No
    hash and no verification: like :meth:`EventSink.events`, this is for deciding, not proving.
    """

    seq: int
    kind: str
    #: canonical UTC text, as in the event body: ``"2026-11-29T06:40:00.123456Z"``
    ts: str
    payload: Mapping[str, Any]
    #: the event's chain hash (``sha256:...``): a later read of its row is checked against it
    hash: str = ""

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], body: bytes, hash_: str) -> EventSummary:
        """A summary from a body already parsed (and verified) by the caller."""
        return cls(doc["seq"], doc["kind"], doc["ts"]["$datetime"], _payload(doc, body), hash_)

    @classmethod
    def from_bodies(cls, rows: Sequence[tuple[int, str, bytes]]) -> list[EventSummary]:
        """Summaries of stored (seq, kind, body) rows, parsed as ONE JSON array (one native call).

        A body holding exactly one ``$`` (its ``ts`` tag) has a payload with no tags and no
        escaped keys: it is used as parsed. Any other (a ``bytes`` result, a datetime, a key
        starting with ``$``, or just a ``$`` inside a string) is revived, which is exact in every
        case. A one-byte count is several times cheaper than counting ``"$``; when the joined
        bodies hold one per event, no row is counted on its own.
        """
        if not rows:
            return []
        bodies = [b if type(b) is bytes else bytes(b) for _, _, b in rows]
        joined = b"[" + b",".join(bodies) + b"]"
        docs = _loads(joined)
        if joined.count(b"$") == len(bodies):
            return [cls(seq, kind, doc["ts"]["$datetime"], doc["payload"]) for (seq, kind, _), doc in zip(rows, docs, strict=True)]
        revive = canonical.revive
        return [
            cls(seq, kind, doc["ts"]["$datetime"], doc["payload"] if body.count(b"$") == 1 else revive(doc["payload"]))
            for (seq, kind, _), body, doc in zip(rows, bodies, docs, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class EventDraft:
    """What a writer asks the ledger to append; the ledger assigns seq, time and hashes."""

    kind: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    checkpoint_ns: str = ""
    #: What the event is about (checkpoint id, tool call id, lease id), indexed for lookups.
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One committed event. ``body`` is the exact canonical bytes that were hashed."""

    thread_id: str
    checkpoint_ns: str
    seq: int
    ts: datetime
    kind: str
    actor: str
    payload: Mapping[str, Any]
    prev_hash: str
    hash: str
    version: int = EVENT_SCHEMA_VERSION

    def body(self) -> dict[str, Any]:
        """The hashed document (everything except ``hash``)."""
        return {
            "v": self.version,
            "thread_id": self.thread_id,
            "checkpoint_ns": self.checkpoint_ns,
            "seq": self.seq,
            "ts": self.ts,
            "kind": self.kind,
            "actor": self.actor,
            "payload": dict(self.payload),
            "prev_hash": self.prev_hash,
        }

    @classmethod
    def create(
        cls,
        *,
        thread_id: str,
        checkpoint_ns: str,
        seq: int,
        kind: str,
        actor: str,
        payload: Mapping[str, Any],
        prev_hash: str,
        ts: datetime | None = None,
    ) -> tuple[Event, bytes]:
        """Build an event and return it with its canonical body bytes.

        On every commit, so the body is built, encoded and hashed once and the
        event constructed once; the body is exactly what :meth:`body` returns.
        """
        when = ts or datetime.now(UTC)
        body = canonical.encode(
            {
                "v": EVENT_SCHEMA_VERSION,
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "seq": seq,
                "ts": when,
                "kind": kind,
                "actor": actor,
                "payload": payload if type(payload) is dict else dict(payload),
                "prev_hash": prev_hash,
            }
        )
        clean = scrub_canonical(body)  # the storage boundary: what is hashed and stored holds no live secret
        if clean is not body:  # the event carries what is stored
            body, payload = clean, _payload(_loads(clean), clean)
        return (
            cls(
                thread_id=thread_id,
                checkpoint_ns=checkpoint_ns,
                seq=seq,
                ts=when,
                kind=kind,
                actor=actor,
                payload=payload,
                prev_hash=prev_hash,
                hash=event_hash(body),
            ),
            body,
        )

    @classmethod
    def from_body(cls, body: bytes, hash_: str) -> Event:
        """Rebuild an event from stored canonical bytes (no verification here).

        Fast path: the only tagged value most bodies hold is ``ts``; the payload is
        walked for tags only when the bytes contain another ``"$``.
        """
        doc = _loads(body)
        ts = doc["ts"]
        if isinstance(ts, dict) and len(ts) == 1 and "$datetime" in ts:
            ts = datetime.fromisoformat(ts["$datetime"].replace("Z", "+00:00"))
        payload = _payload(doc, body)
        return cls(
            thread_id=doc["thread_id"],
            checkpoint_ns=doc["checkpoint_ns"],
            seq=doc["seq"],
            ts=ts,
            kind=doc["kind"],
            actor=doc["actor"],
            payload=payload,
            prev_hash=doc["prev_hash"],
            hash=hash_,
            version=doc["v"],
        )

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], body: bytes, hash_: str) -> Event:
        """An event from a body already parsed (and verified) by the caller."""
        ts = doc["ts"]
        if isinstance(ts, dict) and len(ts) == 1 and "$datetime" in ts:
            ts = datetime.fromisoformat(ts["$datetime"].replace("Z", "+00:00"))
        return cls(
            thread_id=doc["thread_id"],
            checkpoint_ns=doc["checkpoint_ns"],
            seq=doc["seq"],
            ts=ts,
            kind=doc["kind"],
            actor=doc["actor"],
            payload=_payload(doc, body),
            prev_hash=doc["prev_hash"],
            hash=hash_,
            version=doc["v"],
        )

    def summary(self) -> EventSummary:
        """The fields a history fold reads (see :class:`EventSummary`)."""
        return EventSummary(self.seq, self.kind, canonical.datetime_text(self.ts), self.payload, self.hash)

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict (for export, display and SIEM ingestion)."""
        return {
            "v": self.version,
            "thread_id": self.thread_id,
            "checkpoint_ns": self.checkpoint_ns,
            "seq": self.seq,
            "ts": self.ts.isoformat(),
            "kind": self.kind,
            "actor": self.actor,
            "payload": dict(self.payload),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def event_hash(body: bytes) -> str:
    """The chain hash of an event: ``sha256:<hex>`` over its canonical body."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class SignedHead:
    """A signature over a thread's chain head: pins every event up to ``seq``.

    Exported by ``warden audit head`` and kept elsewhere, it also detects a
    truncated tail or rewritten history later.
    """

    thread_id: str
    seq: int
    hash: str
    key_id: str
    signature: str  # base64url, Ed25519 over head_signing_bytes(...)
    key_store: str = ""  # kind of store that held the key ("keyring", "ephemeral", ...)

    def to_dict(self) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "seq": self.seq,
            "hash": self.hash,
            "key_id": self.key_id,
            "signature": self.signature,
            "key_store": self.key_store,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> SignedHead:
        return cls(
            thread_id=str(doc["thread_id"]),
            seq=int(doc["seq"]),
            hash=str(doc["hash"]),
            key_id=str(doc["key_id"]),
            signature=str(doc["signature"]),
            key_store=str(doc.get("key_store", "")),
        )


def head_signing_bytes(thread_id: str, seq: int, hash_: str, key_id: str, key_store: str) -> bytes:
    """Domain-separated bytes an Ed25519 head signature covers."""
    return canonical.encode(
        {
            "domain": "langgraph-warden/chain-head/v1",
            "thread_id": thread_id,
            "seq": seq,
            "hash": hash_,
            "key_id": key_id,
            "key_store": key_store,
        }
    )


@dataclass(frozen=True, slots=True)
class Watermark:
    """How far a writer has read one thread: every event of ``kinds`` up to ``seq``.

    An append that carries it (``Ledger.append(..., seen=...)``) commits only if the
    thread has no later event of those kinds, checked in the appending transaction:
    a decision made on a cached view of the history is recorded only if that view was
    still the whole history when the record committed.
    """

    seq: int
    kinds: tuple[str, ...]
    #: Only events about this subject count (a tool call id): a claim on one call, not the thread.
    subject: str | None = None


@runtime_checkable
class EventSink(Protocol):
    """Where guards, brokers and approvals record events.

    Implemented by the checkpointer's ledger (same database, own transaction
    per call, chain head signed on commit). Appending is durable when the call
    returns: a caller may rely on it before running a side effect.

    ``seen``: append only if the thread has no event of ``seen.kinds`` after ``seen.seq``
    (else write nothing and raise :class:`~langgraph_warden.errors.UnseenEventsError`). Callers
    pass it only to a sink whose ``supports_watermarks`` attribute is true.
    """

    def append(self, thread_id: str, drafts: Sequence[EventDraft], *, seen: Watermark | None = None) -> list[Event]: ...

    async def aappend(self, thread_id: str, drafts: Sequence[EventDraft]) -> list[Event]: ...

    def events(
        self,
        thread_id: str,
        *,
        kinds: Sequence[str] | None = None,
        after_seq: int = 0,
        subject: str | None = None,
    ) -> list[Event]: ...

    async def aevents(
        self,
        thread_id: str,
        *,
        kinds: Sequence[str] | None = None,
        after_seq: int = 0,
        subject: str | None = None,
    ) -> list[Event]: ...


@runtime_checkable
class DeferringEventSink(EventSink, Protocol):
    """An :class:`EventSink` that can also append without waiting for the commit.

    ``append_soon`` returns before the events are durable; the sink commits them in
    order before anything appended or read after them in this process. Callers use
    it only for records whose loss in a crash leaves a state they already handle.
    """

    def append_soon(
        self,
        thread_id: str,
        drafts: Sequence[EventDraft],
        *,
        seen: Watermark | None = None,
        on_commit: Callable[[list[Event] | None, bool], None] | None = None,
    ) -> None: ...

    def flush(self) -> None:
        """Commit what ``append_soon`` queued; return when it is durable."""


@runtime_checkable
class SummarisingEventSink(EventSink, Protocol):
    """An :class:`EventSink` that can read :class:`EventSummary` rows instead of full events."""

    def summaries(
        self, thread_id: str, *, kinds: Sequence[str] | None = None, after_seq: int = 0
    ) -> list[EventSummary]: ...


class CallClaims(Protocol):
    """Process-liveness locks on tool calls: one live attempt per call across processes.

    Declared here (beside the sinks that hand them out) so that the guard names them without
    importing the checkpointer that implements them (``checkpointers/claims.py``)."""

    def acquire(self, thread_id: str, tool_call_id: str, timeout: float) -> bool:
        """Hold the call's lock; wait up to ``timeout`` seconds while another process holds it."""
        ...

    def release(self, thread_id: str, tool_call_id: str) -> None:
        """Release a lock taken by :meth:`acquire` (from any thread of this process)."""
        ...


@runtime_checkable
class GuardSink(DeferringEventSink, SummarisingEventSink, Protocol):
    """Everything the tool guard asks of its sink: the checkpointer's ledger implements all of it.

    A plain :class:`EventSink` gets these with their neutral behaviour from
    ``guards/guard_sink.py`` (no watermarks, no claims, no snapshots, appends committed at
    once), so the guard calls methods instead of probing for them.
    """

    #: Whether ``append(..., seen=...)`` is checked (else the guard reads before it decides).
    supports_watermarks: bool
    #: Cross-process locks on tool calls, or ``None``: this process only.
    claims: CallClaims | None
    #: Whether it shares the checkpointer's database and can tell when a checkpoint is committed
    #: (LangGraph's ``"async"`` durability saves it in the background): the guard then waits for a
    #: call's checkpoint before its side effect.
    waits_for_checkpoints: bool

    def newest_snapshot(self, thread_id: str, kind: str, subject: str) -> tuple[int, Mapping[str, Any]] | None:
        """The newest verified event of ``kind`` about ``subject``: ``(seq, payload)``."""
        ...

    def append_with_rows(
        self, thread_id: str, drafts: Sequence[EventDraft], rows: Callable[[Any], None], *, seen: Watermark | None = None
    ) -> list[Event]:
        """``append``, with ``rows(tx)`` committed in the same transaction (rows of the sink's own
        database, e.g. a credential lease). Asked only of a sink a lease store said it writes with."""
        ...

    def event_at(self, thread_id: str, seq: int, expected_hash: str) -> Event:
        """The event at ``seq``, refused unless its hash is ``expected_hash`` (what a verified read saw)."""
        ...

    def trusted_latest(self, thread_id: str, ns: str) -> tuple[Any, ...] | None:
        """What this process knows of ``ns``'s newest checkpoint without reading; item 1 is its id."""
        ...

    def checkpoint_durable(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> bool: ...

    def checkpoint_recorded(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> bool: ...

    def wait_for_checkpoint(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str, timeout: float) -> bool | None:
        """Whether the checkpoint was committed within ``timeout``; ``None``: this sink cannot tell."""
        ...
