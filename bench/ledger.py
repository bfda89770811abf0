"""Cost of the signed event history: graph throughput, and offline verification speed.

Run from the repository root::

    python bench/ledger.py            # 100 threads x 1,000 events = 100,000 events
    python bench/ledger.py --quick    # 10 threads x 1,000 events, fewer graph runs

(a) **Signed saver vs plain SqliteSaver** on the same 10-node linear graph as
    ``bench/checkpointer.py`` (15 KB payload + counter, default durability),
    both on SQLite files in WAL mode with synchronous=FULL. Steps/second and
    the ratio warden / SqliteSaver (target ≥ 0.8×).

(b) **Offline verification** of a SQLite database holding 100,000 events
    written through the real ledger: per thread, 10 rounds of
    ``put`` + ``put_writes`` of a 15 KB checkpoint (real rows, so
    ``check_rows`` has something to compare) followed by a transaction of
    tool-call events (``policy.decided``, ``credential.issued``,
    ``tool.started``, ``tool.completed``, ``credential.revoked``) appended with
    ``ledger.append_in`` in batches of 5 — one signed chain head per batch, as
    one guarded tool call would leave. Then ``saver.ledger.verify(check_rows=True)``
    is timed in the default mode (every hash; each thread's last head per key
    signature-checked) and with ``signatures="all"`` (every signed head), pinned
    to one CPU core (target: 100,000 events in < 3 s).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

_spec = importlib.util.spec_from_file_location("_bench_checkpointer", Path(__file__).with_name("checkpointer.py"))
assert _spec and _spec.loader
cpbench = importlib.util.module_from_spec(_spec)
sys.modules["_bench_checkpointer"] = cpbench
_spec.loader.exec_module(cpbench)


# ---------------------------------------------------------------------- (a) graph throughput
def graph_pair(tmp: Path, invocations: int, rounds: int) -> Any:
    """Signed WardenSaver vs SqliteSaver, interleaved rounds (a ``GraphPair`` of bench/checkpointer.py)."""
    counter = iter(range(1_000_000))

    def warden():
        return cpbench.warden_saver(f"sqlite:///{tmp / f'g-warden-{next(counter)}.db'}")

    def peer():
        return cpbench.sqlite_peer(tmp / f"g-peer-{next(counter)}.db")

    return cpbench.interleaved_graph_rounds("SQLite", warden, peer, invocations, rounds)


# ---------------------------------------------------------------------- (b) build 100k events
def _digest(*parts: Any) -> str:
    return "sha256:" + hashlib.sha256(repr(parts).encode()).hexdigest()


def _tool_call_drafts(thread_id: str, n: int) -> list[Any]:
    """The five events one guarded tool call leaves (shapes as the guard and broker record them)."""
    from langgraph_warden.events import EventDraft, EventKind

    call = f"call_{uuid.uuid4().hex[:24]}"
    lease = f"lease_{uuid.uuid4().hex[:16]}"
    tool = ("lookup_customer", "issue_refund", "send_email", "read_invoice")[n % 4]
    return [
        EventDraft(
            kind=EventKind.POLICY_DECIDED,
            subject=call,
            payload={
                "tool_call_id": call,
                "tool": tool,
                "allow": True,
                "require_approval": False,
                "reasons": ["within_intent", "sensitivity_ok"],
                "scopes": [f"{tool}:invoke"],
                "ttl_seconds": 120,
                "engine": "rego",
                "policy_digest": _digest("policy"),
                "input_digest": _digest(thread_id, n, "input"),
            },
        ),
        EventDraft(
            kind=EventKind.CREDENTIAL_ISSUED,
            subject=call,
            payload={
                "lease_id": lease,
                "tool_call_id": call,
                "audience": tool,
                "scopes": [f"{tool}:invoke"],
                "expires_at": "2030-01-01T00:02:00Z",
                "token_digest": _digest(lease, "token"),
                "jit": True,
            },
        ),
        EventDraft(
            kind=EventKind.TOOL_STARTED,
            subject=call,
            payload={"tool_call_id": call, "tool": tool, "args": {"order_id": f"O-{n}", "amount": n % 97}, "lease_id": lease},
        ),
        EventDraft(
            kind=EventKind.TOOL_COMPLETED,
            subject=call,
            payload={
                "tool_call_id": call,
                "tool": tool,
                "result_digest": _digest(call, "result"),
                "result": f"ok: {tool} processed order O-{n} for customer C-{n % 1000}",
            },
        ),
        EventDraft(kind=EventKind.CREDENTIAL_REVOKED, subject=call, payload={"lease_id": lease, "tool_call_id": call}),
    ]


def build_history(url: str, threads: int, events_per_thread: int) -> dict[str, int]:
    """Write ``threads`` x ``events_per_thread`` events through the real saver and ledger."""
    from langgraph.checkpoint.base import empty_checkpoint

    from langgraph_warden.checkpointers.engine import WRITE

    rounds = 10
    tool_events = events_per_thread - rounds * 2  # each round: 1 put + 1 put_writes event
    assert tool_events >= 0 and tool_events % 5 == 0, "events per thread must leave a multiple of 5 for tool calls"
    per_round = [tool_events // 5 // rounds + (1 if i < (tool_events // 5) % rounds else 0) for i in range(rounds)]
    stats = {"transactions": 0, "signed_heads": 0}
    with cpbench.warden_saver(url) as saver:
        write_engine = saver.engine.execution_options(**WRITE)
        for t in range(threads):
            thread_id = f"thread-{t:04d}"
            config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
            ck: dict[str, Any] = empty_checkpoint()
            v = saver.get_next_version(None, None)
            ck["channel_versions"] = {"payload": v, "counter": v}
            n = 0
            for r in range(rounds):
                ck = dict(ck)
                ck["id"] = cpbench._uuid6()
                ck["channel_values"] = {"payload": cpbench.PAYLOAD, "counter": r}
                config = saver.put(config, ck, {"source": "loop", "step": r, "parents": {}}, {"counter": v})
                saver.put_writes(config, [("counter", r + 1)], str(uuid.uuid4()), "")
                stats["transactions"] += 2
                stats["signed_heads"] += 2
                with write_engine.begin() as conn:
                    for _ in range(per_round[r]):
                        saver.ledger.append_in(conn, thread_id, _tool_call_drafts(thread_id, n))
                        n += 1
                        stats["signed_heads"] += 1
                stats["transactions"] += 1
            if (t + 1) % max(1, threads // 10) == 0:
                print(f"  built {t + 1}/{threads} threads", flush=True)
    return stats


# ---------------------------------------------------------------------- (b) verify
def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity on this OS)"


def time_verify(url: str, signatures: str, repeats: int) -> tuple[float, Any]:
    from langgraph_warden.checkpointers import WardenSaver
    from langgraph_warden.keys import EphemeralKeyStore

    best = float("inf")
    report = None
    # setup=False: a read-only verifier that registers no key of its own.
    with WardenSaver.from_url(url, key_store=EphemeralKeyStore(), setup=False) as saver:
        for _ in range(repeats):
            gc.collect()
            t0 = time.perf_counter()
            report = saver.ledger.verify(check_rows=True, signatures=signatures)  # type: ignore[arg-type]
            best = min(best, time.perf_counter() - t0)
    return best, report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Signed saver overhead and offline verification speed")
    ap.add_argument("--quick", action="store_true", help="10 threads and fewer graph runs")
    ap.add_argument("--threads", type=int, help="threads in the verification database (default 100; --quick 10)")
    ap.add_argument("--events", type=int, default=1000, help="events per thread (default 1000)")
    ap.add_argument("--invocations", type=int, help="graph invocations per round (default 40; --quick 10)")
    ap.add_argument("--rounds", type=int, help="interleaved graph rounds, median kept (default 7; --quick 1)")
    ap.add_argument("--db", type=Path, help="keep the verification database at this path")
    ap.add_argument("--skip-graph", action="store_true", help="only the verification part")
    args = ap.parse_args(argv)
    threads = args.threads or (10 if args.quick else 100)
    invocations = args.invocations or (10 if args.quick else 40)
    rounds = args.rounds or (1 if args.quick else 7)
    repeats = 1 if args.quick else 2
    command = "python bench/" + Path(__file__).name + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))

    tmp_dir = tempfile.TemporaryDirectory(prefix="warden-ledger-bench-")
    tmp = Path(tmp_dir.name)
    try:
        rows: list[str] = []
        if not args.skip_graph:
            print("(a) 10-node graph: signed WardenSaver vs SqliteSaver", flush=True)
            g = graph_pair(tmp, invocations, rounds)
            rows.append(
                f"| 10-node graph, 15 KB state, SQLite ({rounds} interleaved rounds, medians) | {g.warden:,.0f} "
                f"steps/s | {g.peer:,.0f} steps/s (SqliteSaver) | **{g.ratio_text()}** | ≥ 0.8× "
                f"| {'met' if g.ratio >= 0.8 else 'NOT met'} |"
            )
        db = args.db or tmp / "verify.db"
        if args.db:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{db.resolve()}"
        total = threads * args.events
        print(f"(b) building {total:,} events ({threads} threads x {args.events}) in {db} ...", flush=True)
        t0 = time.perf_counter()
        stats = build_history(url, threads, args.events)
        build_s = time.perf_counter() - t0
        print(f"  built in {build_s:.1f} s ({stats['signed_heads']:,} signed heads, {stats['transactions']:,} transactions)")
        pinned = pin_one_core()
        print(f"  verifying ({pinned}) ...", flush=True)
        results = {}
        for mode in ("heads", "all"):
            secs, report = time_verify(url, mode, repeats)
            assert report is not None
            if not report.ok or report.events != total:
                print(f"  verify ({mode}) did not pass: events={report.events} findings={report.findings[:5]}")
                return 1
            checked = sum(r.signatures_checked for r in report.threads.values())
            results[mode] = (secs, checked)
            print(f"  signatures={mode!r}: {secs:.2f} s, {total / secs:,.0f} events/s, {checked:,} signatures checked")
        for mode, label in (("heads", "default mode"), ("all", 'signatures="all"')):
            secs, checked = results[mode]
            per_100k = secs * 100_000 / total
            rows.append(
                f"| verify {total:,} events (check_rows, {label}, {checked:,} signatures) | {secs:.2f} s "
                f"| {total / secs:,.0f} events/s | — | "
                + (f"100k in < 3 s (here {per_100k:.2f} s/100k) | {'met' if per_100k < 3 else 'NOT met'} |" if mode == "heads" else "— | — |")
            )
        print()
        print(
            f"`{command}` — {platform.python_implementation()} {platform.python_version()}, "
            f"SQLite {sqlite3.sqlite_version}, verification {pinned}"
        )
        print()
        print("| measurement | langgraph-warden | reference / rate | ratio | target | |")
        print("|---|---:|---:|---:|---|---|")
        for row in rows:
            print(row)
        print()
        print(
            f"Verification DB: {threads} threads × {args.events:,} events = {total:,} events, "
            f"{stats['signed_heads']:,} signed heads (10 put + 10 put_writes with real 15 KB rows per thread, "
            "the rest tool-call events in batches of 5, one signed head per batch); build took "
            f"{build_s:.0f} s. Default mode hashes every event and checks each thread's last head per key; "
            'signatures="all" checks every signed head.'
        )
    finally:
        tmp_dir.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
