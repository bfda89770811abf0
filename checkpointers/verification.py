"""Checkpoints verified against the signed chain: the resume check, the checks of listed rows, and
the full offline verification the CLI's ``warden audit verify`` reports.

Why one module: the saver (a row it loads), the ledger (a checkpoint named by id, a whole
thread) and the audit CLI (every thread) must apply the same rules, with the same refusal
reasons. The chain itself — links, hashes, head signatures — is checked by
:mod:`langgraph_warden.chain`; this module compares the stored rows with what the verified
events record (:mod:`.rows`, :mod:`.trust`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from langgraph_warden.chain import (
    ChainPosition,
    ChainReport,
    ChainRow,
    Finding,
    PublicKeyInfo,
    SignatureMode,
    verify_against_head,
    verify_chain,
)
from langgraph_warden.errors import IntegrityError
from langgraph_warden.events import Event, EventKind, SignedHead

from . import event_reads
from . import statements as sql
from .event_reads import TO_THE_HEAD, EventReads, checkpoint_subject
from .rawsql import CpRow, DirectTx, Raw, WrRow
from .rows import check_rows_against_events, expected_rows, row_checkpoint_digest, row_write_digest
from .trust import RowDigestCache, replay_snapshots

__all__ = [
    "LedgerVerification", "VerificationReport", "check_writes", "verify_loaded", "verify_latest", "verify_listed",
]

#: (digest of the checkpoint row, {(task_id, idx): digest of the write row})
Digests = tuple[str | None, dict[tuple[str, int], str]]


@dataclass(slots=True)
class VerificationReport:
    """Result of verifying one or more threads: structured, for code and the CLI."""

    threads: dict[str, ChainReport] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def events(self) -> int:
        return sum(r.events for r in self.threads.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "threads": len(self.threads),
            "events": self.events,
            "findings": [
                {"thread_id": f.thread_id, "seq": f.seq, "reason": f.reason, "detail": f.detail} for f in self.findings
            ],
        }


def check_writes(
    fail: Callable[..., IntegrityError], expected: Mapping[tuple[str, int], str], found: Mapping[tuple[str, int], str]
) -> None:
    """Refuse pending writes that differ from the ones the chain recorded (``fail`` builds the error)."""
    if expected != found:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        changed = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise fail(
            "writes_changed",
            f"pending writes differ from the recorded ones (missing={missing}, unrecorded={extra}, changed={changed})",
        )


def _recorded_state(docs: Iterable[Mapping[str, Any]], ns: str, cid: str) -> tuple[str | None, int | None, dict[tuple[str, int], str]]:
    """What verified events say of checkpoint ``cid`` of ``ns``: the digest its newest
    ``checkpoint.saved`` recorded (``None`` once a later event removed it), the seq of that event
    and the write digests recorded for it."""
    saved_digest: str | None = None
    saved_seq: int | None = None
    expected: dict[tuple[str, int], str] = {}
    for doc in docs:
        kind, p = doc["kind"], doc["payload"]
        if kind == EventKind.CHECKPOINT_SAVED and doc["checkpoint_ns"] == ns and p.get("checkpoint_id") == cid:
            saved_digest, saved_seq = p.get("digest"), doc["seq"]
        elif kind == EventKind.WRITES_SAVED and doc["checkpoint_ns"] == ns and p.get("checkpoint_id") == cid:
            for w in p.get("rows", ()):
                expected[(p["task_id"], int(w["idx"]))] = w["digest"]
        elif kind == EventKind.THREAD_DELETED or (
            kind in (EventKind.CHECKPOINTS_PRUNED, EventKind.RUNS_DELETED)
            and [ns, cid] in [list(x) for x in p.get("checkpoints", ())]
        ):
            saved_digest, saved_seq, expected = None, doc["seq"], {}
    return saved_digest, saved_seq, expected


class LedgerVerification(EventReads):
    """The ledger's checks of checkpoints against its chain, and its full verification."""

    # -------------------------------------------------------------- what the chain records
    def latest_checkpoint_in(
        self, conn: Connection | DirectTx, thread_id: str, ns: str
    ) -> tuple[str | None, str | None, dict[tuple[str, int], str]]:
        """(id, digest, write digests) of the newest checkpoint of ``ns`` the verified chain records.

        Reads the events the thread gained since this process last verified it (usually none:
        its own commits extend the verified position), in the caller's snapshot.
        """
        known = self._trust.latest(thread_id, ns)
        if known is not None and known[4]:  # the newest one was removed: fold the chain again
            self._trust.drop(thread_id)
            known = None
        if known is None:
            self._verified_rows(conn, thread_id, TO_THE_HEAD)
        else:
            statement, params = sql.select_events("1", thread_id, None, known[0].seq)
            if Raw(conn).one(statement + " LIMIT 1", params) is not None:
                self._verified_rows(conn, thread_id, TO_THE_HEAD)
        latest = self._trust.latest(thread_id, ns)
        assert latest is not None
        return latest[1], latest[2], latest[3]

    def recorded_checkpoints_in(
        self, conn: Connection | DirectTx, thread_id: str, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, dict[tuple[str, int], str]]]:
        """Recorded (digest, write digests) of those of ``keys`` (ns, checkpoint id) among the newest
        checkpoints of the thread, from the verified fold (read up to the head first, in the
        caller's snapshot). Older ones are missing from the result: the caller checks them against
        the whole chain."""
        self._verified_rows(conn, thread_id, TO_THE_HEAD)
        return self._trust.recorded(thread_id, keys)

    def trusted_latest(self, thread_id: str, ns: str) -> tuple[ChainPosition, str | None, str | None, dict[tuple[str, int], str], bool] | None:
        """What this process knows of ``ns``'s newest checkpoint without reading (see TrustCache.latest)."""
        return self._trust.latest(thread_id, ns)

    # ------------------------------------------------------------------------ resume check
    def verify_checkpoint_in(
        self,
        conn: Connection | DirectTx,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        checkpoint_digest: str,
        write_digests: dict[tuple[str, int], str],
    ) -> None:
        """Refuse a checkpoint (and its pending writes) that the verified chain does not vouch for.

        For a checkpoint named by id (history, time travel): the chain must be verified from
        genesis (once per process) and from the checkpoint's first event to the head; the newest
        ``checkpoint.saved`` for it must carry this row's digest, no later event may have removed
        it, and the pending writes must equal those its ``writes.saved`` events recorded.
        """

        def fail(reason: str, detail: str, seq: int | None = None) -> IntegrityError:
            return IntegrityError(
                f"integrity check failed for thread {thread_id!r} checkpoint {checkpoint_id!r}"
                f"{' ns ' + repr(checkpoint_ns) if checkpoint_ns else ''}: {reason}: {detail}. "
                "The run was stopped before any node ran; run `warden audit verify` for the full report.",
                thread_id=thread_id, checkpoint_ns=checkpoint_ns, checkpoint_id=checkpoint_id, seq=seq, reason=reason,
            )

        self._verified_rows(conn, thread_id, TO_THE_HEAD)  # the whole chain, once per process
        subject = checkpoint_subject(checkpoint_ns, checkpoint_id)
        first = Raw(conn).one(sql.EV_FIRST_ABOUT, (thread_id, subject))
        if first is None or first[0] is None:
            raise fail("checkpoint_unrecorded", "no checkpoint.saved event records this checkpoint (row inserted?)")
        _rows, docs = self._verified_rows(conn, thread_id, int(first[0]) - 1)
        saved_digest, saved_seq, expected = _recorded_state(docs, checkpoint_ns, checkpoint_id)
        if saved_digest is None:
            raise fail(
                "checkpoint_unrecorded" if saved_seq is None else "checkpoint_removed",
                "no checkpoint.saved event records this checkpoint (row inserted?)" if saved_seq is None
                else "the history records that this checkpoint was deleted (row re-inserted?)",
                saved_seq,
            )
        if saved_digest != checkpoint_digest:
            raise fail(
                "checkpoint_changed",
                "the stored checkpoint row does not match the digest recorded when it was saved",
                saved_seq,
            )
        check_writes(fail, expected, write_digests)

    # ------------------------------------------------------------------------- full verify
    def verify_thread_in(
        self,
        conn: Connection,
        thread_id: str,
        keys: dict[str, PublicKeyInfo],
        *,
        signatures: SignatureMode = "heads",
        against: SignedHead | None = None,
        check_rows: bool = True,
    ) -> ChainReport:
        return self._verify_thread_rows(
            conn, thread_id, keys, signatures=signatures, against=against, check_rows=check_rows
        )[1]

    def _verify_thread_rows(
        self,
        conn: Connection,
        thread_id: str,
        keys: dict[str, PublicKeyInfo],
        *,
        signatures: SignatureMode = "heads",
        against: SignedHead | None = None,
        check_rows: bool = True,
    ) -> tuple[list[ChainRow], ChainReport]:
        rows = event_reads.chain_rows(Raw(conn), sql.EV_ALL, (thread_id,))
        report = verify_chain(
            thread_id, rows, keys, signatures=signatures, trusted_key_ids=self.trusted_ids()
        )
        if report.ok:
            for seq, detail in replay_snapshots(report.bodies[s] for s in sorted(report.bodies)):
                report.fail(seq, "snapshot_mismatch", detail)
        if against is None and self.head_store is not None:
            against = self.head_store.load(thread_id)
        if against is not None:
            report.findings.extend(verify_against_head(report, against, {r.seq: r for r in rows}, keys))
        if check_rows:
            report.findings.extend(check_rows_against_events(conn, thread_id, report))
        return rows, report

    def history(self, thread_id: str, *, signatures: SignatureMode = "heads") -> tuple[list[Event], ChainReport]:
        """Every stored event of a thread and the verification of that same read, for audits.

        Unlike :meth:`events`, a history that fails verification is returned (a reviewer needs
        to see it), with the findings in the report: an audit verdict comes from the rows it
        shows, never from a second read. Rows whose body cannot be parsed are left out (the
        report names them).
        """
        self.flush()
        with self._engine.connect() as conn:
            rows, report = self._verify_thread_rows(conn, thread_id, self.public_keys(conn), signatures=signatures)
        events: list[Event] = []
        for r in rows:
            try:
                events.append(Event.from_body(r.body if type(r.body) is bytes else bytes(r.body), r.hash))
            except Exception:  # noqa: BLE001 - reported as event_corrupt by the verifier
                continue
        return events, report

    def verify(
        self,
        *,
        thread_id: str | None = None,
        signatures: SignatureMode = "heads",
        against: Iterable[SignedHead] = (),
        check_rows: bool = True,
    ) -> VerificationReport:
        """Verify every thread (or one) offline: chain, signatures, rows, and saved heads."""
        result = VerificationReport()
        saved = {h.thread_id: h for h in against}
        self.flush()
        with self._engine.connect() as conn:
            keys = self.public_keys(conn)
            threads = [thread_id] if thread_id is not None else self.thread_ids(conn)
            if thread_id is None:
                for tid in saved:
                    if tid not in threads:
                        threads.append(tid)
            for tid in threads:
                report = self.verify_thread_in(
                    conn, tid, keys, signatures=signatures, against=saved.get(tid), check_rows=check_rows
                )
                if report.events == 0 and tid in saved:
                    report.fail(None, "truncated", "a saved head exists for this thread but it has no events")
                result.threads[tid] = report
                result.findings.extend(report.findings)
        return result


# ----------------------------------------------------------------- rows the saver loads
def _write_digests(writes: Iterable[WrRow]) -> dict[tuple[str, int], str]:
    return {(w.task_id, int(w.idx)): row_write_digest(w) for w in writes}


def verify_loaded(
    ledger: LedgerVerification, cache: RowDigestCache, conn: Connection | DirectTx, r: CpRow, writes: list[WrRow]
) -> None:
    """Refuse a checkpoint row named by id (and its writes) that the chain does not vouch for."""
    key = (r.thread_id, r.checkpoint_ns, r.checkpoint_id)
    cp_digest = row_checkpoint_digest(r)
    write_digests = _write_digests(writes)
    if cache.is_trusted(key, cp_digest, write_digests):
        return  # exactly what this process wrote or already verified against the signed chain
    ledger.verify_checkpoint_in(conn, r.thread_id, r.checkpoint_ns, r.checkpoint_id, cp_digest, write_digests)
    cache.remember(key, cp_digest, write_digests)


def verify_latest(
    ledger: LedgerVerification, cache: RowDigestCache, conn: Connection | DirectTx, thread_id: str, ns: str
) -> tuple[CpRow, list[WrRow]] | None:
    """The checkpoint the verified chain names as the newest of ``ns`` with its writes — or a refusal.

    Not "the newest row": a deleted newest row would make a run silently resume from the
    one before it (a pending approval vanishing with it), and an inserted row would be
    resumed from. The chain is read from where this process last verified it.
    """
    raw = Raw(conn)
    cid, digest, recorded_writes = ledger.latest_checkpoint_in(conn, thread_id, ns)

    def refuse(reason: str, detail: str, checkpoint_id: str | None = cid) -> IntegrityError:
        return IntegrityError(
            f"integrity check failed for thread {thread_id!r}{' ns ' + repr(ns) if ns else ''}"
            f"{' checkpoint ' + repr(checkpoint_id) if checkpoint_id else ''}: {reason}: {detail}. "
            "The run was stopped before any node ran; run `warden audit verify` for the full report.",
            thread_id=thread_id, checkpoint_ns=ns, checkpoint_id=checkpoint_id, reason=reason,
        )

    found = raw.one(sql.CP_LATEST, (thread_id, ns))
    if found is not None and (cid is None or found[2] > cid) and not raw.sqlite:
        # PostgreSQL reads each statement in its own snapshot: a checkpoint committed since the
        # events were read is newer than what they name. Read the chain again, once.
        cid, digest, recorded_writes = ledger.latest_checkpoint_in(conn, thread_id, ns)
    if found is not None and (cid is None or found[2] > cid):
        raise refuse("checkpoint_unrecorded", "the database holds a newer checkpoint than the signed history records "
                     "(row inserted?)", found[2])
    if cid is None:
        return None
    if found is None or found[2] != cid:
        raise refuse("checkpoint_missing", f"the newest checkpoint the signed history records ({cid}) is not in the "
                     "database (row deleted?)")
    r = CpRow(*found)
    writes = [WrRow(*w) for w in raw.all(sql.WRITES_OF_CHECKPOINT, (thread_id, ns, cid))]
    if row_checkpoint_digest(r) != digest:
        raise refuse("checkpoint_changed", "the stored checkpoint row does not match the digest recorded when it was saved")
    write_digests = _write_digests(writes)
    check_writes(lambda reason, detail: refuse(reason, detail), recorded_writes, write_digests)
    cache.remember((thread_id, ns, cid), digest, write_digests)
    return r, writes


def _expected_of_thread(
    ledger: LedgerVerification, conn: Connection, thread_id: str, keys: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str, str], Digests]:
    """What the chain records of listed checkpoints ``keys`` of one thread: the newest ones from the
    verified fold (no walk of the history), any older one from one pass over the whole chain."""
    recorded = ledger.recorded_checkpoints_in(conn, thread_id, [k[1:] for k in keys])
    older = [k for k in keys if k[1:] not in recorded]
    expected: dict[tuple[str, str, str], Digests] = {k: recorded[k[1:]] for k in keys if k[1:] in recorded}
    if older:
        report = ledger.verify_thread_in(conn, thread_id, ledger.public_keys(conn), check_rows=False)
        if report.findings:
            f = report.findings[0]
            raise IntegrityError(
                f"integrity check failed for thread {thread_id!r}: {f.reason}: {f.detail}",
                thread_id=thread_id, seq=f.seq, reason=f.reason,
            )
        exp_cp, exp_wr = expected_rows(report)
        for k in older:
            ns, cid = k[1], k[2]
            expected[k] = (exp_cp.get((ns, cid)), {
                (task, idx): d for (w_ns, w_cid, task, idx), d in exp_wr.items() if (w_ns, w_cid) == (ns, cid)})
    return expected


def verify_listed(
    ledger: LedgerVerification, cache: RowDigestCache, conn: Connection,
    rows: list[CpRow], by_cp: dict[tuple[str, str, str], list[WrRow]],
) -> None:
    """Refuse listed checkpoint rows (and their writes) that differ from what the chain records."""
    digests = {
        (r.thread_id, r.checkpoint_ns, r.checkpoint_id): (
            row_checkpoint_digest(r), _write_digests(by_cp[(r.thread_id, r.checkpoint_ns, r.checkpoint_id)])
        )
        for r in rows
    }
    untrusted: dict[str, list[tuple[str, str, str]]] = {}
    for key, (cp, wr) in digests.items():
        if not cache.is_trusted(key, cp, wr):
            untrusted.setdefault(key[0], []).append(key)
    for thread_id, keys in sorted(untrusted.items()):
        expected = _expected_of_thread(ledger, conn, thread_id, keys)
        for key in keys:
            want_cp, want_wr = expected[key]
            got_cp, got_wr = digests[key]
            if want_cp != got_cp:
                raise IntegrityError(
                    f"integrity check failed for thread {thread_id!r} checkpoint {key[2]!r}: "
                    f"{'checkpoint_changed' if want_cp else 'checkpoint_unrecorded'}: the row does not match its recorded digest",
                    thread_id=thread_id, checkpoint_ns=key[1], checkpoint_id=key[2],
                    reason="checkpoint_changed" if want_cp else "checkpoint_unrecorded",
                )
            if want_wr != got_wr:
                bad = sorted(set(want_wr.items()) ^ set(got_wr.items()))
                raise IntegrityError(
                    f"integrity check failed for thread {thread_id!r} checkpoint {key[2]!r}: "
                    f"writes_changed: write (task, idx) {bad[0][0]} does not match its record",
                    thread_id=thread_id, checkpoint_ns=key[1], checkpoint_id=key[2], reason="writes_changed",
                )
            cache.remember(key, got_cp, got_wr)
