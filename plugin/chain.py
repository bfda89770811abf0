"""Offline verification of one thread's hash chain. Pure: no database, no secrets.

The database layer feeds rows in; this module says what is wrong with them.
Kept in the core so the ledger, ``warden audit verify`` and any third-party
verifier share one definition of "valid".

What is checked, per event: the stored hash is SHA-256 of the stored body; the
body's thread, seq and kind match the row; seq is gap-free from the start; the
body's ``prev_hash`` is the previous event's hash. The last event (the chain
head) must carry a signature by a registered key. Signatures are Ed25519 and
cost ~170 µs each to verify, so by default ("heads" mode) the verifier checks
the signature of the final head plus the last signature made by each key —
every earlier event is pinned to those by the hashes. ``signatures="all"``
checks every signed head.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple

from .events import GENESIS_HASH, SignedHead, head_signing_bytes
from .keys import b64u_decode, verify_signature

_loads: Callable[[bytes | str], Any]
try:  # 3-4x faster parsing of event bodies; the result is identical
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson is a dependency
    _loads = json.loads

__all__ = [
    "ChainRow",
    "ChainPosition",
    "verify_extension",
    "PublicKeyInfo",
    "Finding",
    "ChainReport",
    "verify_chain",
    "verify_against_head",
    "SignatureMode",
]

SignatureMode = Literal["heads", "all"]


class ChainRow(NamedTuple):
    """One stored event row as read from the database (a tuple: verification builds one per event)."""

    thread_id: str
    seq: int
    kind: str
    body: bytes
    hash: str
    key_id: str | None = None
    key_store: str | None = None
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class PublicKeyInfo:
    key_id: str
    public_key: bytes
    workload_id: str
    store_kind: str
    created_at: datetime | None = None
    retired_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """One verification failure: where and what."""

    thread_id: str
    seq: int | None
    reason: str
    detail: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "thread"
        return f"{self.thread_id} {where}: {self.reason}: {self.detail}"


@dataclass(slots=True)
class ChainReport:
    thread_id: str
    events: int = 0
    first_seq: int | None = None
    head_seq: int | None = None
    head_hash: str | None = None
    signatures_checked: int = 0
    findings: list[Finding] = field(default_factory=list)
    #: Decoded bodies of the events that verified (seq -> body dict), for digest checks.
    bodies: dict[int, dict[str, Any]] = field(default_factory=dict)
    head: SignedHead | None = None

    @property
    def ok(self) -> bool:
        return not self.findings

    def fail(self, seq: int | None, reason: str, detail: str) -> None:
        self.findings.append(Finding(self.thread_id, seq, reason, detail))


def _check_signature(
    report: ChainReport,
    row: ChainRow,
    keys: Mapping[str, PublicKeyInfo],
    trusted_key_ids: frozenset[str] | None,
    verify_bytes: bool,
) -> None:
    key = keys.get(row.key_id or "")
    if key is None:
        report.fail(row.seq, "unknown_key", f"head signed by key {row.key_id!r}, which is not registered")
        return
    if trusted_key_ids is not None and key.key_id not in trusted_key_ids:
        report.fail(row.seq, "untrusted_key", f"head signed by key {key.key_id!r}, which is not in the trusted set")
        return
    if row.key_store and row.key_store != key.store_kind:
        report.fail(
            row.seq,
            "key_store_mismatch",
            f"signature claims a {row.key_store!r} key but {key.key_id!r} is registered as {key.store_kind!r}",
        )
        return
    if not verify_bytes:
        return
    report.signatures_checked += 1
    try:
        sig = b64u_decode(row.signature or "")
    except ValueError:
        sig = b""
    data = head_signing_bytes(row.thread_id, row.seq, row.hash, key.key_id, row.key_store or "")
    if not verify_signature(key.public_key, sig, data):
        report.fail(row.seq, "bad_signature", f"signature by {key.key_id!r} does not verify")


# long: one pass over every row with locals only, the loop "100,000 events in under 3 s" measures
def verify_chain(
    thread_id: str,
    rows: Iterable[ChainRow],
    keys: Mapping[str, PublicKeyInfo],
    *,
    start_seq: int = 1,
    start_prev_hash: str | None = GENESIS_HASH,
    signatures: SignatureMode = "heads",
    trusted_key_ids: Iterable[str] | None = None,
    keep_bodies: bool = True,
) -> ChainReport:
    """Verify rows (ordered by seq) of one thread.

    ``start_seq``/``start_prev_hash`` allow verifying a suffix of the chain (the
    resume path checks from a checkpoint's event to the head); pass
    ``start_prev_hash=None`` to accept whatever the first row links to.
    """
    report = ChainReport(thread_id=thread_id)
    trusted = frozenset(trusted_key_ids) if trusted_key_ids is not None else None
    expected_seq = start_seq
    prev_hash = start_prev_hash
    last: ChainRow | None = None
    last_signed_by_key: dict[str, ChainRow] = {}
    sha256 = hashlib.sha256
    loads = _loads
    bodies = report.bodies
    fail = report.fail
    events = 0
    # One pass, locals only: this loop is what "100,000 events in under 3 s" measures.
    for row in rows:
        events += 1
        seq, body = row.seq, row.body
        if type(seq) is not int or type(body) is not bytes:  # a row edited with other types
            coerced = _coerced(row)
            if coerced is None:
                fail(None, "event_corrupt", f"row after seq {expected_seq - 1} has seq {row.seq!r} and a "
                     f"{type(row.body).__name__} body, which no writer stores")
                continue
            seq, body = coerced
        if seq != expected_seq:
            kind = "event_deleted" if seq > expected_seq else "event_inserted"
            fail(seq, kind, f"expected seq {expected_seq}, found {seq} (gap or duplicate)")
            expected_seq = seq
        if "sha256:" + sha256(body).hexdigest() != row.hash:
            fail(seq, "event_changed", "stored hash is not the SHA-256 of the stored event body")
        try:
            doc = loads(body)
        except (ValueError, UnicodeDecodeError, TypeError):
            fail(seq, "event_corrupt", "event body is not valid canonical JSON")
            doc = None
        if type(doc) is dict:
            get = doc.get
            if get("seq") != seq or get("thread_id") != thread_id:
                fail(
                    seq,
                    "event_moved",
                    f"body says thread {get('thread_id')!r} seq {get('seq')!r}; row is {thread_id!r} seq {seq}",
                )
            if get("kind") != row.kind:
                fail(seq, "event_changed", f"row kind {row.kind!r} differs from body kind {get('kind')!r}")
            if prev_hash is not None and get("prev_hash") != prev_hash:
                fail(
                    seq,
                    "chain_broken",
                    "prev_hash does not match the previous event's hash (event inserted, deleted, changed or reordered)",
                )
            if keep_bodies:
                bodies[seq] = doc
        elif doc is not None:
            fail(seq, "event_corrupt", "event body is not a JSON object")
        prev_hash = row.hash
        expected_seq += 1
        if row.signature:
            if signatures == "all":
                _check_signature(report, row, keys, trusted, True)
            else:
                # Cheap checks on every signed head; the signature bytes are checked
                # for the last head of each key below.
                _check_signature(report, row, keys, trusted, False)
                last_signed_by_key[row.key_id or ""] = row
        if last is None:
            report.first_seq = seq
        last = row
    report.events = events
    if last is not None:
        _close_at_head(report, last, last_signed_by_key.values() if signatures != "all" else (), keys, trusted)
    return report


def _close_at_head(
    report: ChainReport, last: ChainRow, heads_to_check: Iterable[ChainRow], keys: Mapping[str, PublicKeyInfo],
    trusted: frozenset[str] | None,
) -> None:
    """Record the chain's head (it must be signed) and check the signature bytes of ``heads_to_check``."""
    report.head_seq = last.seq
    report.head_hash = last.hash
    if not last.signature:
        report.fail(last.seq, "unsigned_head", "the chain head carries no signature (events appended outside the ledger?)")
        return
    report.head = SignedHead(
        thread_id=report.thread_id,
        seq=last.seq,
        hash=last.hash,
        key_id=last.key_id or "",
        signature=last.signature,
        key_store=last.key_store or "",
    )
    for row in heads_to_check:
        _check_signature(report, row, keys, trusted, True)


def _coerced(row: ChainRow) -> tuple[int, bytes] | None:
    """(seq, body) of a row edited with other types than the writers store, or None if unreadable (rare path)."""
    try:
        return int(row.seq), (row.body.encode() if isinstance(row.body, str) else bytes(row.body))
    except (TypeError, ValueError):
        return None


class ChainPosition(NamedTuple):
    """A point of one thread's chain: the event at ``seq`` has hash ``hash`` (seq 0: before genesis).

    ``hash=None`` (only as a ``start``): the position's hash is not known to the reader.
    """

    seq: int
    hash: str | None


GENESIS = ChainPosition(0, GENESIS_HASH)


def verify_extension(
    thread_id: str,
    rows: Sequence[ChainRow],
    keys: Mapping[str, PublicKeyInfo],
    *,
    start: ChainPosition | None,
    pinned: ChainPosition | None = None,
    trusted_key_ids: Iterable[str] | None = None,
) -> tuple[list[dict[str, Any]], Finding | None]:
    """Check that ``rows`` continue a chain from ``start`` and are vouched for; their parsed bodies.

    Why a second verifier beside :func:`verify_chain`: a process that already verified a thread
    up to some position (``pinned``) only needs to check what it reads against that, not walk the
    whole history again. The rows are vouched for when every one links to the one before
    (``start``: the position just before ``rows[0]``; ``None`` accepts whatever the first row links
    to, and rows must then start at ``rows[0].seq``) and either

    * the chain passes through ``pinned`` (a position verified earlier) and ends there — the
      hashes pin every earlier row to it, no signature needed; or
    * the last row is a head signed by a registered (and, with ``trusted_key_ids``, trusted) key.

    Rows that stop short of ``pinned``, or carry another hash at its seq, are a truncated or
    rewritten history. Returns the first finding instead of raising: callers turn it into the
    error of their context. Pure: no database, no secrets.
    """
    docs, finding, last_seq = _linked_docs(thread_id, rows, start, pinned)
    if finding is not None:
        return docs, finding
    if pinned is not None and last_seq < pinned.seq:
        return docs, Finding(
            thread_id, last_seq if rows else None, "truncated",
            f"the history ends at seq {last_seq} but this process verified or wrote it up to seq {pinned.seq} "
            "(events deleted from its end)",
        )
    if not rows or (pinned is not None and last_seq == pinned.seq):
        return docs, None
    last = rows[-1]
    if not last.signature:
        return docs, Finding(thread_id, last_seq, "unsigned_head", "the chain head carries no signature (events appended outside the ledger?)")
    report = ChainReport(thread_id=thread_id)
    trusted = frozenset(trusted_key_ids) if trusted_key_ids is not None else None
    _check_signature(report, last._replace(seq=last_seq), keys, trusted, True)
    return docs, (report.findings[0] if report.findings else None)


def _linked_docs(
    thread_id: str, rows: Sequence[ChainRow], start: ChainPosition | None, pinned: ChainPosition | None
) -> tuple[list[dict[str, Any]], Finding | None, int]:
    """The parsed bodies of ``rows`` while each links to the one before (and agrees with ``pinned``);
    the first finding (then the seq is 0); the last seq read."""
    docs: list[dict[str, Any]] = []
    expected = start.seq + 1 if start is not None else (rows[0].seq if rows else 1)
    prev = start.hash if start is not None else None
    sha256 = hashlib.sha256
    loads = _loads
    for row in rows:
        seq, body = row.seq, row.body
        if type(seq) is not int or type(body) is not bytes:
            coerced = _coerced(row)
            if coerced is None:
                return docs, Finding(thread_id, None, "event_corrupt", f"row after seq {expected - 1} has an unreadable seq or body"), 0
            seq, body = coerced
        if seq != expected:
            reason = "event_deleted" if seq > expected else "event_inserted"
            return docs, Finding(thread_id, seq, reason, f"expected seq {expected}, found {seq} (gap or duplicate)"), 0
        if "sha256:" + sha256(body).hexdigest() != row.hash:
            return docs, Finding(thread_id, seq, "event_changed", "stored hash is not the SHA-256 of the stored event body"), 0
        try:
            doc = loads(body)
        except (ValueError, UnicodeDecodeError, TypeError):
            doc = None
        if type(doc) is not dict:
            return docs, Finding(thread_id, seq, "event_corrupt", "event body is not a canonical JSON object"), 0
        if doc.get("seq") != seq or doc.get("thread_id") != thread_id:
            return docs, Finding(thread_id, seq, "event_moved", f"body says thread {doc.get('thread_id')!r} seq {doc.get('seq')!r}"), 0
        if doc.get("kind") != row.kind:
            return docs, Finding(thread_id, seq, "event_changed", f"row kind {row.kind!r} differs from body kind {doc.get('kind')!r}"), 0
        if prev is not None and doc.get("prev_hash") != prev:
            return docs, Finding(
                thread_id, seq, "chain_broken",
                "prev_hash does not match the previous event's hash (event inserted, deleted, changed or reordered)",
            ), 0
        if pinned is not None and seq == pinned.seq and row.hash != pinned.hash:
            return docs, Finding(
                thread_id, seq, "rewritten",
                f"the event at seq {seq} is not the one this process verified or wrote earlier (history rewritten)",
            ), 0
        docs.append(doc)
        prev = row.hash
        expected = seq + 1
    return docs, None, expected - 1


def verify_against_head(
    report: ChainReport, saved: SignedHead, rows_by_seq: Mapping[int, ChainRow], keys: Mapping[str, PublicKeyInfo]
) -> list[Finding]:
    """Compare a chain with a signed head saved earlier (kept outside the database).

    Detects a truncated tail (the saved head's seq no longer exists) and a
    rewritten history (the event at that seq has a different hash).
    """
    findings: list[Finding] = []
    key = keys.get(saved.key_id)
    data = head_signing_bytes(saved.thread_id, saved.seq, saved.hash, saved.key_id, saved.key_store)
    try:
        sig = b64u_decode(saved.signature)
    except ValueError:
        sig = b""
    if key is None or not verify_signature(key.public_key, sig, data):
        findings.append(Finding(saved.thread_id, saved.seq, "saved_head_invalid", "the saved head's signature does not verify"))
        return findings
    row = rows_by_seq.get(saved.seq)
    if report.head_seq is None or report.head_seq < saved.seq or row is None:
        findings.append(
            Finding(
                saved.thread_id,
                saved.seq,
                "truncated",
                f"saved head is at seq {saved.seq} but the chain now ends at {report.head_seq}",
            )
        )
    elif row.hash != saved.hash:
        findings.append(
            Finding(saved.thread_id, saved.seq, "rewritten", "the event at the saved head's seq has a different hash")
        )
    return findings


def rows_from(records: Sequence[Mapping[str, Any]]) -> list[ChainRow]:
    """Build ChainRows from mapping rows (helper for database layers)."""
    return [
        ChainRow(
            thread_id=r["thread_id"],
            seq=int(r["seq"]),
            kind=r["kind"],
            body=bytes(r["body"]),
            hash=r["hash"],
            key_id=r.get("key_id"),
            key_store=r.get("key_store"),
            signature=r.get("signature"),
        )
        for r in records
    ]
