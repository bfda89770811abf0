"""WardenSaver against langgraph's own savers, each on its own database, in one run.

Run from the repository root::

    python bench/checkpointer.py                       # full run (SQLite + PostgreSQL)
    python bench/checkpointer.py --quick               # fewer iterations
    python bench/checkpointer.py --only sqlite         # or: --only postgres
    python bench/checkpointer.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    python bench/checkpointer.py --diagnose-ledger     # + the graph without the signed history

Pairs (sync API for both sides, each on a fresh database):

* ``WardenSaver`` on a SQLite file  vs  ``SqliteSaver`` on a SQLite file.
  Both use WAL and ``synchronous=FULL``: SqliteSaver's ``setup()`` sets
  ``journal_mode=WAL`` and leaves ``synchronous`` at SQLite's compiled default
  (FULL, printed at start-up); WardenSaver sets WAL + FULL explicitly. So both
  fsync every commit, and no call returns before its data is fsynced
  (WardenSaver may carry several concurrent calls in one commit: group commit).
* ``WardenSaver`` on PostgreSQL  vs  ``PostgresSaver`` (``from_conn_string`` +
  ``setup()``), each in its own fresh schema (dropped at the end). Skipped
  with a message when PostgreSQL is unreachable.

Metrics (µs per call, p50 over all calls):

* ``put``          — 1,000 checkpoints on one thread (~15 KB state: a fixed
  15 KB payload + a counter; ``new_versions`` names only the channels that
  changed, as a graph does, so PostgresSaver re-stores only the counter blob)
* ``put_writes``   — one call per checkpoint, 2 writes each
* ``get_tuple``    — latest checkpoint of the thread (what a resume loads)
* ``get_tuple_id`` — a random checkpoint by id among the 1,000
* ``list``         — list the whole thread (1,000 checkpoints), per call
* ``graph``        — a 10-node linear graph (state: 15 KB payload + counter)
  invoked N times on fresh threads, default durability; steps/second (higher
  is better)

``--diagnose-ledger`` adds a graph row per database for the same saver with its event
appends stubbed out (rows still written, no event, chain head or signature): a diagnostic
of what the signed history costs, not a mode the package offers.

Ratio column: for times ``peer / warden``, for steps/second
``warden / peer`` — in both cases **> 1 means WardenSaver is faster**.
WardenSaver verifies what it reads (``get_tuple``/``list``) against its
signed event history and appends a hash-chained, Ed25519-signed event in the
same transaction as every write; the peers do neither.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

PG_URL_DEFAULT = os.environ.get("WARDEN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PAYLOAD = ("lorem ipsum dolor sit amet " * 600)[:15_000]  # ~15 KB of state
NODES = 10


# ---------------------------------------------------------------------- the 10-node graph
class BenchState(TypedDict):
    payload: str
    counter: int


def build_bench_graph():
    """A 10-node linear graph; every node bumps the counter (the payload stays ~15 KB)."""
    from langgraph.graph import END, START, StateGraph

    def step(state: BenchState) -> dict[str, Any]:
        return {"counter": state["counter"] + 1}

    builder = StateGraph(BenchState)
    names = [f"n{i}" for i in range(NODES)]
    for name in names:
        builder.add_node(name, step)
    builder.add_edge(START, names[0])
    for a, b in zip(names, names[1:]):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    return builder


def _invoke(graph: Any, thread_id: str) -> None:
    out = graph.invoke({"payload": PAYLOAD, "counter": 0}, {"configurable": {"thread_id": thread_id}})
    assert out["counter"] == NODES


@dataclass(frozen=True)
class GraphPair:
    """Interleaved graph rounds: median steps/s of each side, median round ratio and its range."""

    warden: float
    peer: float
    ratio: float
    low: float
    high: float

    def ratio_text(self) -> str:
        return f"{self.ratio:.2f}× (rounds {self.low:.2f}–{self.high:.2f}×)"


def interleaved_graph_rounds(
    label: str,
    open_warden: Callable[[], contextlib.AbstractContextManager[Any]],
    open_peer: Callable[[], contextlib.AbstractContextManager[Any]],
    invocations: int,
    rounds: int,
    warmup: int = 2,
) -> GraphPair:
    """Graph steps/s of both savers, invocations interleaved, over ``rounds`` rounds.

    Each round opens both savers on fresh databases and alternates them *per
    invocation* (warden, peer, peer, warden, ...), timing each invocation. This
    machine is shared: load changes within a second, so running one saver for a
    second and then the other (the earlier method) let a burst land on one side
    and moved single rounds from 0.75x to 1.02x. Interleaved, both sides see the
    same load to within one invocation (~20 ms); rounds then agree within a few %.
    The median of the rounds' ratios ignores a round a burst still skewed.
    """
    w_rates: list[float] = []
    p_rates: list[float] = []
    ratios: list[float] = []
    for r in range(rounds):
        with contextlib.ExitStack() as stack:
            graphs = {
                "warden": build_bench_graph().compile(checkpointer=stack.enter_context(open_warden())),
                "peer": build_bench_graph().compile(checkpointer=stack.enter_context(open_peer())),
            }
            prefix = uuid.uuid4().hex[:8]
            for i in range(warmup):
                for graph in graphs.values():
                    _invoke(graph, f"w-{prefix}-{i}")
            gc.collect()
            seconds = {"warden": 0.0, "peer": 0.0}
            for i in range(invocations):
                for side in ("warden", "peer") if (i + r) % 2 == 0 else ("peer", "warden"):
                    t0 = time.perf_counter()
                    _invoke(graphs[side], f"g-{prefix}-{i}")
                    seconds[side] += time.perf_counter() - t0
        w_rates.append(invocations * NODES / seconds["warden"])
        p_rates.append(invocations * NODES / seconds["peer"])
        ratios.append(w_rates[-1] / p_rates[-1])
        print(
            f"  {label}: graph round {r + 1}/{rounds}: warden {w_rates[-1]:.0f}, peer {p_rates[-1]:.0f} steps/s "
            f"(ratio {ratios[-1]:.2f})",
            flush=True,
        )
    return GraphPair(statistics.median(w_rates), statistics.median(p_rates), statistics.median(ratios),
                     min(ratios), max(ratios))


# ---------------------------------------------------------------------- micro benchmarks
def _p50_us(samples_ns: list[int]) -> float:
    return statistics.median(samples_ns) / 1000.0


def _timed(fn: Callable[[], Any]) -> int:
    t = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t


def micro(saver: Any, n: int, list_reps: int, get_reps: int) -> dict[str, float]:
    """put / put_writes / get_tuple / list on one thread of ``n`` checkpoints; p50 µs."""
    from langgraph.checkpoint.base import empty_checkpoint

    thread_id = f"micro-{uuid.uuid4().hex[:8]}"
    ckpt: dict[str, Any] = empty_checkpoint()
    version = saver.get_next_version(None, None)
    ckpt["channel_values"] = {"payload": PAYLOAD, "counter": 0}
    ckpt["channel_versions"] = {"payload": version, "counter": version}
    config: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    ids: list[str] = []
    puts: list[int] = []
    put_writes: list[int] = []
    gc.collect()
    for i in range(n):
        ckpt = dict(ckpt)
        ckpt["id"] = str(uuid.uuid6()) if hasattr(uuid, "uuid6") else _uuid6()
        new_v = saver.get_next_version(ckpt["channel_versions"]["counter"], None)
        ckpt["channel_versions"] = {**ckpt["channel_versions"], "counter": new_v}
        ckpt["channel_values"] = {"payload": PAYLOAD, "counter": i}
        new_versions = {"counter": new_v} if i else dict(ckpt["channel_versions"])
        metadata = {"source": "loop", "step": i, "parents": {}}
        t = time.perf_counter_ns()
        config = saver.put(config, ckpt, metadata, new_versions)
        puts.append(time.perf_counter_ns() - t)
        ids.append(ckpt["id"])
        writes = [("counter", i + 1), ("last_node", f"n{i % NODES}")]
        task_id = str(uuid.uuid4())
        t = time.perf_counter_ns()
        saver.put_writes(config, writes, task_id, "")
        put_writes.append(time.perf_counter_ns() - t)

    latest_cfg = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    rng = random.Random(7)
    get_latest = [_timed(lambda: saver.get_tuple(latest_cfg)) for _ in range(get_reps)]
    get_by_id = []
    for _ in range(get_reps):
        cfg = {"configurable": {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": rng.choice(ids)}}
        get_by_id.append(_timed(lambda: saver.get_tuple(cfg)))
    tup = saver.get_tuple(latest_cfg)
    assert tup is not None and tup.checkpoint["channel_values"]["counter"] == n - 1
    assert len(tup.pending_writes) == 2
    lists = []
    for _ in range(list_reps):
        t = time.perf_counter_ns()
        count = sum(1 for _ in saver.list(latest_cfg))
        lists.append(time.perf_counter_ns() - t)
        assert count == n, count
    return {
        "put": _p50_us(puts),
        "put_writes": _p50_us(put_writes),
        "get_tuple": _p50_us(get_latest),
        "get_tuple_id": _p50_us(get_by_id),
        "list": _p50_us(lists),
    }


def _uuid6() -> str:  # Python < 3.14: langgraph's own time-ordered uuid
    from langgraph.checkpoint.base.id import uuid6

    return str(uuid6())


# ---------------------------------------------------------------------- savers
@contextlib.contextmanager
def warden_saver(url: str, *, ledger: bool = True) -> Iterator[Any]:
    """WardenSaver on ``url``; ``ledger=False`` is the ``--diagnose-ledger`` experiment (see below)."""
    from langgraph_warden.checkpointers import WardenSaver
    from langgraph_warden.keys import EphemeralKeyStore

    with WardenSaver.from_url(url, key_store=EphemeralKeyStore()) as saver:
        if not ledger:
            _stub_ledger_appends(saver)
        yield saver


def _stub_ledger_appends(saver: Any) -> None:
    """DIAGNOSTIC ONLY, not a mode of the package: the same saver with its event appends stubbed out.

    Rows are still written exactly as before (SQLite: same transaction and group commit;
    PostgreSQL: one autocommit INSERT per row set), but no event, chain head or signature
    is. The difference to the real saver is what the signed history costs.
    """
    ledger = saver.ledger
    ledger.append_in = lambda conn, thread_id, drafts: []

    def rows_only(thread_id: str, drafts: Any, inserts: Any = ()) -> list[Any]:
        with ledger.direct_postgres.connection() as pg:
            for table, cols, values in inserts:
                marks = ", ".join(["%s"] * len(cols))
                pg.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", list(values))
        return []

    if saver.engine.dialect.name == "postgresql":
        ledger.try_append_one_statement = rows_only


@contextlib.contextmanager
def sqlite_peer(path: Path) -> Iterator[Any]:
    from langgraph.checkpoint.sqlite import SqliteSaver

    with SqliteSaver.from_conn_string(str(path)) as saver:
        saver.setup()
        yield saver


@contextlib.contextmanager
def postgres_peer(url: str) -> Iterator[Any]:
    from langgraph.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string(_libpq(url)) as saver:
        saver.setup()
        yield saver


def _libpq(url: str) -> str:
    """postgresql+psycopg://... -> postgresql://... (psycopg's own URL form)."""
    return "postgresql://" + url.split("://", 1)[1]


def pg_reachable(url: str) -> str | None:
    """None when reachable, else the reason."""
    try:
        import psycopg

        with psycopg.connect(_libpq(url), connect_timeout=3) as conn:
            conn.execute("select 1")
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "skip with a message"
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


@contextlib.contextmanager
def pg_schema(url: str, prefix: str) -> Iterator[str]:
    """A fresh schema; yields a URL whose search_path points at it; dropped at the end."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(_libpq(url), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


# ---------------------------------------------------------------------- runner
@dataclass
class Result:
    db: str
    warden: dict[str, float] = field(default_factory=dict)
    peer: dict[str, float] = field(default_factory=dict)
    peer_name: str = ""
    #: the interleaved graph rounds (see interleaved_graph_rounds)
    graph: GraphPair | None = None
    #: --diagnose-ledger: the same with the ledger's appends stubbed out
    diagnostic: GraphPair | None = None


METRICS = [
    ("put", "µs/op"),
    ("put_writes", "µs/op"),
    ("get_tuple", "µs/op"),
    ("get_tuple_id", "µs/op"),
    ("list", "µs/op"),
    ("graph", "steps/s"),
]
LABELS = {
    "put": "put",
    "put_writes": "put_writes (2 writes)",
    "get_tuple": "get_tuple (latest)",
    "get_tuple_id": "get_tuple (by id, random)",
    "list": "list (whole thread)",
    "graph": "10-node graph, 15 KB state",
}


def bench_pair(
    db: str,
    peer_name: str,
    open_warden: Callable[[], contextlib.AbstractContextManager[Any]],
    open_peer: Callable[[], contextlib.AbstractContextManager[Any]],
    args: argparse.Namespace,
    open_warden_unsigned: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> Result:
    res = Result(db=db, peer_name=peer_name)
    for side, opener in (("warden", open_warden), ("peer", open_peer)):
        print(f"  {db}: {'WardenSaver' if side == 'warden' else peer_name} micro ({args.n} checkpoints) ...", flush=True)
        with opener() as saver:
            getattr(res, side).update(micro(saver, args.n, args.list_reps, args.get_reps))
    res.graph = interleaved_graph_rounds(db, open_warden, open_peer, args.invocations, args.rounds)
    res.warden["graph"], res.peer["graph"] = res.graph.warden, res.graph.peer
    if args.diagnose_ledger and open_warden_unsigned is not None:
        res.diagnostic = interleaved_graph_rounds(
            f"{db} (ledger appends stubbed)", open_warden_unsigned, open_peer, args.invocations, args.rounds
        )
    return res


def render(results: list[Result], command: str, notes: list[str]) -> str:
    lines = [
        f"`{command}` — {platform.python_implementation()} {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs",
        "",
        "| database | metric | WardenSaver | peer | peer | ratio (>1 = warden faster) |",
        "|---|---|---:|---:|---|---:|",
    ]
    for res in results:
        for key, unit in METRICS:
            w, p = res.warden[key], res.peer[key]
            if key == "graph" and res.graph is not None:
                ratio = res.graph.ratio_text()
            else:
                ratio = f"{(w / p) if unit == 'steps/s' else (p / w):.2f}×"

            def fmt(v: float, unit: str = unit) -> str:
                return f"{v:,.0f} {unit}" if unit == "steps/s" or v >= 100 else f"{v:,.1f} {unit}"

            lines.append(f"| {res.db} | {LABELS[key]} | {fmt(w)} | {fmt(p)} | {res.peer_name} | **{ratio}** |")
        if res.diagnostic is not None:
            d = res.diagnostic
            lines.append(
                f"| {res.db} | {LABELS['graph']} — diagnostic: ledger appends stubbed out | {d.warden:,.0f} steps/s "
                f"| {d.peer:,.0f} steps/s | {res.peer_name} | {d.ratio_text()} |"
            )
    lines.append("")
    lines.append(
        "Times are p50 per call; ratio = peer time / warden time for calls. Graph: both savers open in each "
        "round, invocations interleaved; median steps/s of each side over the rounds, ratio = median of the "
        "rounds' warden/peer ratios (range in brackets)."
    )
    lines.extend(notes)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="WardenSaver vs SqliteSaver / PostgresSaver")
    ap.add_argument("--quick", action="store_true", help="fewer checkpoints and invocations (~1 min)")
    ap.add_argument("--only", choices=["sqlite", "postgres"], help="run only one pair")
    ap.add_argument("--pg-url", default=PG_URL_DEFAULT, help=f"PostgreSQL URL (default {PG_URL_DEFAULT})")
    ap.add_argument("--n", type=int, help="checkpoints for the micro benchmarks (default 1000; --quick 200)")
    ap.add_argument("--invocations", type=int, help="graph invocations per round (default 40; --quick 10)")
    ap.add_argument("--rounds", type=int, help="interleaved graph rounds, median kept (default 7; --quick 1)")
    ap.add_argument(
        "--diagnose-ledger",
        action="store_true",
        help="also run the graph with the saver's event appends stubbed out (diagnostic: what the signed history costs)",
    )
    args = ap.parse_args(argv)
    args.n = args.n or (200 if args.quick else 1000)
    args.invocations = args.invocations or (10 if args.quick else 40)
    args.rounds = args.rounds or (1 if args.quick else 7)
    args.list_reps = 5 if args.quick else 15
    args.get_reps = 100 if args.quick else 300
    command = "python bench/" + Path(__file__).name + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))

    with sqlite3.connect(":memory:") as c:
        default_sync = c.execute("PRAGMA synchronous").fetchone()[0]
    notes = [
        f"SQLite: both savers in WAL mode; SqliteSaver keeps SQLite's default synchronous={default_sync} "
        "(2 = FULL), WardenSaver sets synchronous=FULL, so both fsync every commit (WardenSaver group-commits "
        "concurrent calls; none returns before the fsync that covers it).",
        f"{args.n:,} checkpoints for put/put_writes/get_tuple/list; graph: {args.invocations} invocations × "
        f"{NODES} steps per invocation, {args.rounds} round(s) on fresh databases, the two savers' invocations interleaved.",
    ]
    results: list[Result] = []
    tmp = tempfile.TemporaryDirectory(prefix="warden-bench-")
    try:
        if args.only in (None, "sqlite"):
            print("SQLite pair", flush=True)
            counter = iter(range(1_000_000))

            def w_sqlite() -> contextlib.AbstractContextManager[Any]:
                return warden_saver(f"sqlite:///{Path(tmp.name) / f'warden-{next(counter)}.db'}")

            def p_sqlite() -> contextlib.AbstractContextManager[Any]:
                return sqlite_peer(Path(tmp.name) / f"peer-{next(counter)}.db")

            def w_sqlite_unsigned() -> contextlib.AbstractContextManager[Any]:
                return warden_saver(f"sqlite:///{Path(tmp.name) / f'warden-{next(counter)}.db'}", ledger=False)

            results.append(bench_pair("SQLite", "SqliteSaver", w_sqlite, p_sqlite, args, w_sqlite_unsigned))
        if args.only in (None, "postgres"):
            reason = pg_reachable(args.pg_url)
            if reason is not None:
                msg = f"PostgreSQL pair skipped: {args.pg_url} unreachable ({reason})"
                print(msg, flush=True)
                notes.append(msg)
                if args.only == "postgres":
                    print(render(results, command, notes) if results else msg)
                    return 0
            else:
                print("PostgreSQL pair", flush=True)

                @contextlib.contextmanager
                def w_pg() -> Iterator[Any]:
                    with pg_schema(args.pg_url, "bench_w") as url, warden_saver(url) as saver:
                        yield saver

                @contextlib.contextmanager
                def p_pg() -> Iterator[Any]:
                    with pg_schema(args.pg_url, "bench_p") as url, postgres_peer(url) as saver:
                        yield saver

                @contextlib.contextmanager
                def w_pg_unsigned() -> Iterator[Any]:
                    with pg_schema(args.pg_url, "bench_w") as url, warden_saver(url, ledger=False) as saver:
                        yield saver

                results.append(bench_pair("PostgreSQL", "PostgresSaver", w_pg, p_pg, args, w_pg_unsigned))
                notes.append(
                    "PostgreSQL: PostgresSaver.from_conn_string (one autocommit connection) + setup(); "
                    "WardenSaver.from_url (hot path on its own autocommit psycopg connections, one statement per commit); "
                    "fresh schema per saver, dropped after."
                )
    finally:
        tmp.cleanup()
    print()
    print(render(results, command, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
