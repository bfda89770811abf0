"""What this process has verified of each thread's chain, and what the verified events say.

Why: nothing read from the database may influence a decision, a resume or an audit verdict
unless it belongs to a chain verified from genesis to a head signed by a trusted key. Walking
the whole chain on every read would make each call cost what the thread's history costs, so a
process verifies a thread once, when it first touches it, and keeps the position it verified
(:class:`~langgraph_warden.chain.ChainPosition`). Later reads are checked against that position
(the hashes pin everything before it) and extend it; this process's own committed appends extend
it without a read.

Beside the position, a :class:`ThreadTrust` folds what resume needs from the verified events:
the newest recorded checkpoint of each namespace with its digest, and the digests of the writes
recorded for it. ``get_tuple`` returns exactly that checkpoint or refuses, so a deleted newest
checkpoint row is a refusal, not a silent step back.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from langgraph_warden.chain import ChainPosition
from langgraph_warden.event_payloads import CheckpointSaved, CheckpointsRemoved, WritesSaved
from langgraph_warden.events import GENESIS_HASH, EventKind

__all__ = ["ThreadTrust", "TrustCache", "RowDigestCache"]

_CP_SAVED = EventKind.CHECKPOINT_SAVED
_WR_SAVED = EventKind.WRITES_SAVED
_REMOVALS = (EventKind.CHECKPOINTS_PRUNED, EventKind.RUNS_DELETED)
#: How many of the newest checkpoints of a namespace keep their recorded digests in the fold.
RECENT = 64
#: A signed summary of the fold up to the event before it (see the ledger's first touch).
CHAIN_SNAPSHOT = "chain.snapshot"
#: Its subject: the events table's (thread, subject) index finds the newest one.
CHAIN_SNAPSHOT_SUBJECT = "$chain.snapshot"
#: How many events apart chain snapshots are taken (a first touch reads at most about this many).
SNAPSHOT_EVERY = 128
#: Kinds that change what the latest checkpoint is (everything else is skipped by the fold).
FOLDED_KINDS = frozenset({_CP_SAVED, _WR_SAVED, EventKind.THREAD_DELETED, *_REMOVALS, CHAIN_SNAPSHOT})


@dataclass(slots=True)
class ThreadTrust:
    """One thread as far as this process verified it: position and the resume-relevant fold.

    ``latest``: namespace -> id of the newest live checkpoint the verified chain records.
    ``digests`` / ``writes``: the recorded digests of the newest ``RECENT`` checkpoints of each
    namespace (and writes of newer ids recorded before their checkpoint, as LangGraph's
    background saves allow).
    ``unsure``: namespaces whose newest checkpoint was removed by a prune or run deletion; the
    one before it is found by folding the whole chain again (rare operations).
    """

    seq: int = 0
    hash: str = GENESIS_HASH
    latest: dict[str, str] = field(default_factory=dict)
    digests: dict[tuple[str, str], str] = field(default_factory=dict)
    writes: dict[tuple[str, str], dict[tuple[str, int], str]] = field(default_factory=dict)
    unsure: set[str] = field(default_factory=set)
    #: seq of the newest ``chain.snapshot`` folded (0: none): the next one is due SNAPSHOT_EVERY later
    snap_seq: int = 0

    @property
    def position(self) -> ChainPosition:
        return ChainPosition(self.seq, self.hash)

    def copy(self) -> ThreadTrust:
        return ThreadTrust(
            self.seq, self.hash, dict(self.latest), dict(self.digests),
            {k: dict(v) for k, v in self.writes.items()}, set(self.unsure), self.snap_seq,
        )

    def canonical(self) -> dict[str, Any]:
        """The fold as a ``chain.snapshot`` records it: exactly the newest ``RECENT`` checkpoints of
        each namespace and their writes (and writes of newer ids), sorted — the same document
        whether it comes from this incremental fold or from a replay of the whole chain."""
        assert not self.unsure, "a fold that lost its newest checkpoint is refolded before a snapshot"
        return _canonical(self.latest, self.digests, self.writes)

    @classmethod
    def from_canonical(cls, doc: Mapping[str, Any], seq: int, hash_: str) -> ThreadTrust:
        """The fold a ``chain.snapshot`` (the event at ``seq``) records, positioned at that event."""
        trust = cls(seq, hash_, snap_seq=seq)
        trust.latest = dict(doc["latest"])
        trust.digests = {(ns, cid): d for ns, cid, d in doc["digests"]}
        for ns, cid, task, idx, d in doc["writes"]:
            trust.writes.setdefault((ns, cid), {})[(task, int(idx))] = d
        return trust

    def snapshot_due(self) -> bool:
        return not self.unsure and self.seq - self.snap_seq >= SNAPSHOT_EVERY

    def fold(self, kind: str, ns: str, payload: Mapping[str, Any]) -> None:
        """Take one verified event in (in chain order)."""
        if kind == _CP_SAVED:
            saved = cast(CheckpointSaved, payload)
            cid = saved["checkpoint_id"]
            self.digests[(ns, cid)] = saved["digest"]
            if cid >= self.latest.get(ns, ""):
                self.latest[ns] = cid
                self.unsure.discard(ns)
            self._trim(ns)
        elif kind == _WR_SAVED:
            writes = cast(WritesSaved, payload)
            cid = writes["checkpoint_id"]
            if (ns, cid) in self.digests or cid >= self.latest.get(ns, ""):
                recorded = self.writes.setdefault((ns, cid), {})
                task = writes["task_id"]
                for row in writes.get("rows", ()):
                    recorded[(task, int(row["idx"]))] = row["digest"]
        elif kind == EventKind.THREAD_DELETED:
            self.latest.clear()
            self.digests.clear()
            self.writes.clear()
            self.unsure.clear()
        elif kind in _REMOVALS:
            removed = cast(CheckpointsRemoved, payload)
            if removed.get("all_writes"):
                self.writes.clear()
            for removed_ns, cid in removed.get("checkpoints", ()):
                self.digests.pop((removed_ns, cid), None)
                self.writes.pop((removed_ns, cid), None)
                if self.latest.get(removed_ns) == cid:
                    del self.latest[removed_ns]
                    self.unsure.add(removed_ns)

    def _trim(self, ns: str) -> None:
        """Keep the recorded digests of the newest ``RECENT`` checkpoints of ``ns`` (a list of the
        latest few, or a resume, needs no read of the history; older ones are checked against it)."""
        ids = [k[1] for k in self.digests if k[0] == ns]
        if len(ids) <= RECENT + 16:  # trimmed in batches: the scan is amortised
            return
        keep_from = sorted(ids)[-RECENT]
        for key in [k for k in self.digests if k[0] == ns and k[1] < keep_from]:
            del self.digests[key]
        for key in [k for k in self.writes if k[0] == ns and k[1] < keep_from]:
            del self.writes[key]

    def recorded(self, ns: str, cid: str) -> tuple[str, dict[tuple[str, int], str]] | None:
        """The recorded digest and write digests of a recent checkpoint, if this fold holds them."""
        digest = self.digests.get((ns, cid))
        return (digest, dict(self.writes.get((ns, cid), {}))) if digest is not None else None

    def fold_docs(self, docs: Iterable[Mapping[str, Any]]) -> None:
        """Take in parsed event bodies (verified, in chain order); the position moves to the last."""
        for doc in docs:
            kind = doc["kind"]
            if kind in FOLDED_KINDS:
                if kind == CHAIN_SNAPSHOT:
                    self.snap_seq = int(doc["seq"])
                else:
                    self.fold(kind, doc["checkpoint_ns"], _payload(doc))

    def expected_writes(self, ns: str, cid: str) -> dict[tuple[str, int], str]:
        return self.writes.get((ns, cid), {})


def _payload(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    # Checkpoint and write events carry plain JSON (ids, digests): no tagged values to revive.
    return doc["payload"]


def _canonical(
    latest: Mapping[str, str], digests: Mapping[tuple[str, str], str], writes: Mapping[tuple[str, str], Mapping[tuple[str, int], str]]
) -> dict[str, Any]:
    kept: dict[tuple[str, str], str] = {}
    for ns in latest:
        for cid in sorted(c for n, c in digests if n == ns)[-RECENT:]:
            kept[(ns, cid)] = digests[(ns, cid)]
    return {
        "latest": dict(sorted(latest.items())),
        "digests": [[ns, cid, d] for (ns, cid), d in sorted(kept.items())],
        "writes": [
            [ns, cid, task, idx, d]
            for (ns, cid), rec in sorted(writes.items())
            if (ns, cid) in kept or cid >= latest.get(ns, "")
            for (task, idx), d in sorted(rec.items())
        ],
    }


def replay_snapshots(docs: Iterable[Mapping[str, Any]]) -> list[tuple[int, str]]:
    """Recompute every ``chain.snapshot`` of a whole chain (from genesis) from the events before it:
    ``(seq, detail)`` for each one that records something else (a buggy or forged snapshot)."""
    live: dict[str, dict[str, str]] = {}
    writes: dict[tuple[str, str], dict[tuple[str, int], str]] = {}
    wrong: list[tuple[int, str]] = []
    for doc in docs:
        kind = doc["kind"]
        if kind == CHAIN_SNAPSHOT:
            latest = {ns: max(cps) for ns, cps in live.items() if cps}
            digests = {(ns, cid): d for ns, cps in live.items() for cid, d in cps.items()}
            expected = _canonical(latest, digests, writes)
            if doc["payload"].get("trust") != expected or doc["payload"].get("covers") != doc["seq"] - 1:
                wrong.append((int(doc["seq"]), "the snapshot does not record what the events before it say"))
        elif kind in FOLDED_KINDS:
            _live_fold(live, writes, kind, doc["checkpoint_ns"], doc["payload"])
    return wrong


def _live_fold(
    live: dict[str, dict[str, str]], writes: dict[tuple[str, str], dict[tuple[str, int], str]],
    kind: str, ns: str, p: Mapping[str, Any],
) -> None:
    """Every live checkpoint and recorded write: the exact fold a verifier replays."""
    if kind == _CP_SAVED:
        live.setdefault(ns, {})[p["checkpoint_id"]] = p["digest"]
    elif kind == _WR_SAVED:
        recorded = writes.setdefault((ns, p["checkpoint_id"]), {})
        for row in p.get("rows", ()):
            recorded[(p["task_id"], int(row["idx"]))] = row["digest"]
    elif kind == EventKind.THREAD_DELETED:
        live.clear()
        writes.clear()
    elif kind in _REMOVALS:
        if p.get("all_writes"):
            writes.clear()
        for removed_ns, cid in p.get("checkpoints", ()):
            live.get(removed_ns, {}).pop(cid, None)
            writes.pop((removed_ns, cid), None)


def full_fold(docs: Iterable[Mapping[str, Any]]) -> ThreadTrust:
    """Fold a whole verified chain (from genesis), resolving removed checkpoints exactly.

    Unlike the incremental fold, this knows every live checkpoint while it folds, so a prune
    or run deletion that removed the newest one falls back to the newest one left.
    """
    live: dict[str, dict[str, str]] = {}  # ns -> {checkpoint id: digest}
    writes: dict[tuple[str, str], dict[tuple[str, int], str]] = {}
    snap_seq = 0
    for doc in docs:
        kind = doc["kind"]
        if kind not in FOLDED_KINDS:
            continue
        if kind == CHAIN_SNAPSHOT:
            snap_seq = int(doc["seq"])
            continue
        p, ns = doc["payload"], doc["checkpoint_ns"]
        if kind == _CP_SAVED:
            live.setdefault(ns, {})[p["checkpoint_id"]] = p["digest"]
        elif kind == _WR_SAVED:
            recorded = writes.setdefault((ns, p["checkpoint_id"]), {})
            for row in p.get("rows", ()):
                recorded[(p["task_id"], int(row["idx"]))] = row["digest"]
        elif kind == EventKind.THREAD_DELETED:
            live.clear()
            writes.clear()
        else:
            if p.get("all_writes"):
                writes.clear()
            for removed_ns, cid in p.get("checkpoints", ()):
                live.get(removed_ns, {}).pop(cid, None)
                writes.pop((removed_ns, cid), None)
    trust = ThreadTrust(snap_seq=snap_seq)
    for ns, cps in live.items():
        if cps:
            recent = sorted(cps)[-RECENT:]
            trust.latest[ns] = recent[-1]
            for cid in recent:
                trust.digests[(ns, cid)] = cps[cid]
    for (ns, cid), recorded in writes.items():
        if (ns, cid) in trust.digests or cid >= trust.latest.get(ns, ""):
            trust.writes[(ns, cid)] = recorded
    return trust


class TrustCache:
    """A bounded, thread-safe map thread id -> :class:`ThreadTrust` (least recently used dropped).

    A dropped thread is verified from genesis again when next touched: correct, only slower.
    Readers get copies (:meth:`snapshot`) or plain values (:meth:`latest`); the stored object
    changes only under the lock (:meth:`put`, :meth:`advance`).
    """

    #: Earlier verified positions remembered per thread (see :meth:`was_verified`).
    _PAST = 64

    def __init__(self, size: int = 4096) -> None:
        self._data: OrderedDict[str, ThreadTrust] = OrderedDict()
        self._past: dict[str, OrderedDict[int, str]] = {}
        self._lock = threading.Lock()
        self._size = size

    def _moved(self, thread_id: str, old: ThreadTrust | None) -> None:
        """Remember the position a thread leaves (caller holds the lock)."""
        if old is None or old.seq == 0:
            return
        past = self._past.setdefault(thread_id, OrderedDict())
        past[old.seq] = old.hash
        while len(past) > self._PAST:
            past.popitem(last=False)

    def was_verified(self, thread_id: str, position: ChainPosition) -> bool:
        """Whether ``position`` is one this thread was verified at, recently.

        Why: a read transaction whose snapshot was taken before this process committed (and so
        verified) newer events sees the history end at an earlier position. That is a stale
        snapshot, not a truncation, when the history it sees ends exactly at a position verified
        before; its rows are then pinned by that position.
        """
        with self._lock:
            t = self._data.get(thread_id)
            if t is not None and t.position == position:
                return True
            past = self._past.get(thread_id)
            return past is not None and past.get(position.seq) == position.hash

    def position(self, thread_id: str) -> ChainPosition | None:
        with self._lock:
            found = self._data.get(thread_id)
            return found.position if found is not None else None

    def snapshot(self, thread_id: str) -> ThreadTrust | None:
        """A copy of the thread's trust, safe to extend outside the lock (then :meth:`put` it)."""
        with self._lock:
            found = self._data.get(thread_id)
            if found is None:
                return None
            self._data.move_to_end(thread_id)
            return found.copy()

    def snapshot_if_due(self, thread_id: str, head: ChainPosition, appending: int) -> ThreadTrust | None:
        """:meth:`snapshot`, but only when a chain snapshot is due on an append of ``appending``
        events onto ``head`` (the thread verified exactly up to it, ``SNAPSHOT_EVERY`` reached).

        Why not ``snapshot`` and look: that copies the thread's fold on every append, and a
        snapshot is due on one in ``SNAPSHOT_EVERY``."""
        with self._lock:
            found = self._data.get(thread_id)
            if found is None or found.position != head or head.seq + appending - found.snap_seq < SNAPSHOT_EVERY:
                return None
            self._data.move_to_end(thread_id)
            return found.copy()

    def recorded(self, thread_id: str, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, dict[tuple[str, int], str]]]:
        """Recorded digests of those (ns, checkpoint id) this process's fold still holds."""
        with self._lock:
            t = self._data.get(thread_id)
            if t is None:
                return {}
            return {k: found for k in keys if (found := t.recorded(*k)) is not None}

    def latest(self, thread_id: str, ns: str) -> tuple[ChainPosition, str | None, str | None, dict[tuple[str, int], str], bool] | None:
        """(position, newest checkpoint id, its digest, its recorded writes, unsure) of one namespace."""
        with self._lock:
            t = self._data.get(thread_id)
            if t is None:
                return None
            self._data.move_to_end(thread_id)
            cid = t.latest.get(ns)
            digest = t.digests.get((ns, cid)) if cid is not None else None
            writes = dict(t.writes.get((ns, cid), {})) if cid is not None else {}
            return t.position, cid, digest, writes, ns in t.unsure

    def put(self, thread_id: str, trust: ThreadTrust) -> None:
        """Store ``trust`` unless the thread is already verified further: a slower reader never
        moves a thread back."""
        with self._lock:
            current = self._data.get(thread_id)
            if current is not None and current.seq > trust.seq:
                return
            if current is not None and current.position != trust.position:
                self._moved(thread_id, current)
            self._data[thread_id] = trust
            self._data.move_to_end(thread_id)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def advance(self, thread_id: str, start: ChainPosition, end: ChainPosition, docs: Iterable[Mapping[str, Any]]) -> bool:
        """This process committed the events ``docs`` from ``start`` to ``end``: extend the thread's
        verified position if it was exactly ``start`` (else the next read verifies them)."""
        with self._lock:
            current = self._data.get(thread_id)
            if current is None or current.position != start:
                return False
            self._moved(thread_id, current)
            current.fold_docs(docs)
            assert end.hash is not None, "an end position names its hash"
            current.seq, current.hash = end.seq, end.hash
            return True

    def drop(self, thread_id: str) -> None:
        with self._lock:
            self._data.pop(thread_id, None)
            self._past.pop(thread_id, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._past.clear()


class RowDigestCache:
    """Digests of checkpoint and write rows this process wrote or verified (least recently used dropped).

    Why: a row that still has exactly such a digest needs no chain walk to be trusted; the saver
    reads most checkpoints right after writing them. Key: (thread, namespace, checkpoint id);
    value: [checkpoint digest or ``None``, {(task_id, idx): write digest}].
    """

    def __init__(self, size: int = 4096) -> None:
        self._data: OrderedDict[tuple[str, str, str], list[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def remember(self, key: tuple[str, str, str], cp_digest: str | None = None, writes: dict | None = None) -> None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                entry = self._data[key] = [None, {}]
                if len(self._data) > self._size:
                    self._data.popitem(last=False)
            else:
                self._data.move_to_end(key)
            if cp_digest is not None:
                entry[0] = cp_digest
            if writes:
                entry[1].update(writes)

    def forget_thread(self, thread_id: str) -> None:
        with self._lock:
            for key in [k for k in self._data if k[0] == thread_id]:
                del self._data[key]

    def is_trusted(self, key: tuple[str, str, str], cp_digest: str, writes: dict) -> bool:
        with self._lock:
            entry = self._data.get(key)
            return entry is not None and entry[0] == cp_digest and entry[1] == writes
