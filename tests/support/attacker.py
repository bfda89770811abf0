"""What a writer to the database WITHOUT the signing keys can do: plain SQL on the warden tables.

Tests use these to edit, delete, re-chain, re-sign (with a key of the attacker's own, registered
in ``warden_keys``) and cut back histories anywhere in a thread, then check that nothing the
attacker changed influences a decision, a resume or an audit verdict.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text

from langgraph_warden import canonical
from langgraph_warden.events import event_hash, head_signing_bytes
from langgraph_warden.keys import EphemeralKeyStore, SigningKey, b64u


def rows(engine: Engine, thread: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT seq, kind, body, hash, key_id, signature FROM warden_events WHERE thread_id = :t ORDER BY seq"),
            {"t": thread},
        ).all()
    return [{"seq": int(r.seq), "kind": r.kind, "doc": json.loads(bytes(r.body)), "hash": r.hash, "signed": bool(r.signature)}
            for r in found]


def seq_of(engine: Engine, thread: str, kind: str, *, last: bool = False, where: Callable[[dict], bool] | None = None) -> int:
    found = [r["seq"] for r in rows(engine, thread) if r["kind"] == kind and (where is None or where(r["doc"]["payload"]))]
    assert found, f"no {kind} event in {thread}"
    return found[-1] if last else found[0]


def _encode(doc: dict[str, Any]) -> bytes:
    return canonical.encode(canonical.revive(doc))


def attacker_key(engine: Engine) -> SigningKey:
    """A key of the attacker's own, registered in warden_keys as if it were the workload's."""
    key = EphemeralKeyStore().signing_key()
    with engine.begin() as conn:
        ts = conn.execute(text("SELECT created_at FROM warden_keys LIMIT 1")).scalar()
        workload = conn.execute(text("SELECT workload_id FROM warden_keys LIMIT 1")).scalar()
        conn.execute(
            text("INSERT INTO warden_keys (key_id, algorithm, public_key, workload_id, store_kind, created_at) "
                 "VALUES (:k, 'Ed25519', :p, :w, 'ephemeral', :c)"),
            {"k": key.key_id, "p": key.public_key, "w": workload, "c": ts},
        )
    return key


def edit(
    engine: Engine,
    thread: str,
    seq: int,
    mutate: Callable[[dict[str, Any]], None],
    *,
    rehash: str = "stale",
    sign_with: SigningKey | None = None,
) -> None:
    """Change the payload of the event at ``seq``.

    ``rehash``: ``"stale"`` keeps the stored hash; ``"recompute"`` fixes that row's hash only;
    ``"rechain"`` also rewrites every later event's ``prev_hash`` and hash, and the chain head
    (``sign_with``: re-sign the new head with that key; otherwise the old signature stays).
    """
    history = rows(engine, thread)
    with engine.begin() as conn:
        prev = None
        for r in history:
            if r["seq"] < seq:
                prev = r["hash"]
                continue
            doc = r["doc"]
            if r["seq"] == seq:
                mutate(doc["payload"])
            elif rehash != "rechain":
                break
            if rehash == "rechain" and prev is not None:
                doc["prev_hash"] = prev
            body = _encode(doc)
            new_hash = r["hash"] if rehash == "stale" else event_hash(body)
            conn.execute(text("UPDATE warden_events SET body = :b, hash = :h WHERE thread_id = :t AND seq = :s"),
                         {"b": body, "h": new_hash, "t": thread, "s": r["seq"]})
            if rehash == "rechain" and sign_with is not None:  # its own signatures would not verify: drop them
                conn.execute(text("UPDATE warden_events SET key_id = NULL, key_store = NULL, signature = NULL "
                                  "WHERE thread_id = :t AND seq = :s"), {"t": thread, "s": r["seq"]})
            prev = new_hash
        last = history[-1]
        if rehash == "rechain":
            conn.execute(text("UPDATE warden_heads SET hash = :h WHERE thread_id = :t"), {"h": prev, "t": thread})
            if sign_with is not None:
                sig = b64u(sign_with.sign(head_signing_bytes(thread, last["seq"], prev, sign_with.key_id, sign_with.store_kind)))
                conn.execute(
                    text("UPDATE warden_events SET key_id = :k, key_store = :ks, signature = :sig WHERE thread_id = :t AND seq = :s"),
                    {"k": sign_with.key_id, "ks": sign_with.store_kind, "sig": sig, "t": thread, "s": last["seq"]},
                )


def delete_events(engine: Engine, thread: str, seqs: list[int]) -> None:
    with engine.begin() as conn:
        for s in seqs:
            conn.execute(text("DELETE FROM warden_events WHERE thread_id = :t AND seq = :s"), {"t": thread, "s": s})


def cut_back(engine: Engine, thread: str, seq: int) -> None:
    """Delete every event after ``seq`` (a signed head) and every checkpoint and write saved after it:
    what remains is a valid, signed, shorter history."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM warden_events WHERE thread_id = :t AND seq > :s"), {"t": thread, "s": seq})
        head = conn.execute(text("SELECT hash FROM warden_events WHERE thread_id = :t AND seq = :s"), {"t": thread, "s": seq}).scalar()
        conn.execute(text("UPDATE warden_heads SET seq = :s, hash = :h WHERE thread_id = :t"), {"s": seq, "h": head, "t": thread})
    # Checkpoints and writes the remaining history does not record go too (else a verifier sees unrecorded rows).
    left = rows(engine, thread)
    recorded = {r["doc"]["payload"]["checkpoint_id"] for r in left if r["kind"] == "checkpoint.saved"}
    writes = {(r["doc"]["payload"]["checkpoint_id"], r["doc"]["payload"]["task_id"], int(w["idx"]))
              for r in left if r["kind"] == "writes.saved" for w in r["doc"]["payload"]["rows"]}
    with engine.begin() as conn:
        for (cid,) in conn.execute(text("SELECT checkpoint_id FROM warden_checkpoints WHERE thread_id = :t"), {"t": thread}).all():
            if cid not in recorded:
                conn.execute(text("DELETE FROM warden_checkpoints WHERE thread_id = :t AND checkpoint_id = :c"), {"t": thread, "c": cid})
        for cid, task, idx in conn.execute(
                text("SELECT checkpoint_id, task_id, idx FROM warden_writes WHERE thread_id = :t"), {"t": thread}).all():
            if (cid, task, int(idx)) not in writes:
                conn.execute(text("DELETE FROM warden_writes WHERE thread_id = :t AND checkpoint_id = :c AND task_id = :k "
                                  "AND idx = :i"), {"t": thread, "c": cid, "k": task, "i": idx})


def delete_newest_checkpoint(engine: Engine, thread: str) -> str:
    with engine.begin() as conn:
        cid = conn.execute(
            text("SELECT checkpoint_id FROM warden_checkpoints WHERE thread_id = :t ORDER BY checkpoint_id DESC LIMIT 1"),
            {"t": thread},
        ).scalar()
        conn.execute(text("DELETE FROM warden_checkpoints WHERE thread_id = :t AND checkpoint_id = :c"), {"t": thread, "c": cid})
        conn.execute(text("DELETE FROM warden_writes WHERE thread_id = :t AND checkpoint_id = :c"), {"t": thread, "c": cid})
    return cid
