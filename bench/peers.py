"""WardenSaver and the guard against their peers, each pair alternating in one run.

Run from the repository root (the peers come with ``pip install -e '.[bench]'``)::

    python bench/peers.py                    # full run: (a), (b) on SQLite + PostgreSQL, (c)
    python bench/peers.py --quick            # one short round of each
    python bench/peers.py --only c           # or: a, b (several: --only a --only c)
    python bench/peers.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test

This machine is shared and its speed drifts by up to 2x within a session, so only ratios
against a peer measured in the same run, the two sides alternating, mean anything; each
ratio is the median of the rounds' ratios, with their range. Effects under ~5% are noise.

**(a) Signed WardenSaver vs langgraph-ledger** (``TracingCheckpointSaver`` around
``SqliteSaver``), the same job (a tamper-evident record of every checkpoint) done less
strictly. Graph steps/s on the 10-node graph with ~15 KB of state of
``bench/checkpointer.py``, whose ``interleaved_graph_rounds`` runs the rounds. Per ``put``
the peer commits the row through ``SqliteSaver`` (one fsync'd transaction, WAL,
synchronous=FULL), reads the checkpoint back, serialises it three times to hash it, and
appends a hash-chained, unsigned JSON line to a per-thread file (open, write, close: no
fsync, not in the database's transaction); per ``put_writes``, the rows and one more JSON
line of digests. WardenSaver commits rows, a hash-chained event and an Ed25519-signed chain
head in one fsync'd transaction (group commit: a step's writes and checkpoint usually
share it). Target >= 1.0x.

**(b) Signed WardenSaver vs plain SqliteSaver and PostgresSaver**, the same graph, and
again with the saver's ledger appends stubbed out (``warden_saver(ledger=False)`` of
``bench/checkpointer.py``: rows still written, no event, head or signature; a diagnostic
of what the signed history costs, not a mode the package offers). Target >= 0.8x.

**(c) One guarded tool call vs one DBOS durable step**, per call, on SQLite files in the
same directory, both in WAL mode with synchronous=FULL (SQLite's default, which DBOS
keeps; DBOS leaves the journal mode alone, so the bench sets WAL on its file before
launch, as WardenSaver does on its own; ``--dbos-journal default`` keeps DBOS's rollback
journal instead, which fsyncs more per commit). Both sides run the same side effect, a
function that counts its executions, checked to run exactly once per call.

* warden: ``graph.invoke`` of ``START -> ToolNode(tools, wrap_tool_call=warden.guard) ->
  END`` (no checkpointer: the guard's records are what make the call exactly-once, the
  graph's checkpoints are (a)/(b)'s subject) with one tool call, on a ``Warden.open``
  with its defaults: the embedded Rego default policy, signed records, the cross-process
  call claim, and a just-in-time credential when the tool declares scopes. Per call:
  the claim (an ``fcntl`` lock, no I/O), the policy decision on the guard's current
  view of the thread (no ledger read), one fsync'd commit of ``policy.decided`` +
  ``tool.started`` with a signed head before the side effect, then ``tool.completed``
  (the result) queued and committed, signed, right after the call returns: two
  transactions, two fsyncs. Timed until that second commit is durable
  (``ledger.flush()``): the "durable" column; "returned" stops at the return. With
  scopes ("guarded+credential"), a credential too: minted (ES256), its lease row and
  ``credential.issued`` committed in the same transaction as ``policy.decided`` and
  ``tool.started`` (lease store on the ledger's database), its
  revocation-list row and ``credential.revoked`` after the call, with ``tool.completed``
  when it is still queued: two transactions, two fsyncs (before 2026-12-03: four).
* DBOS: a ``@DBOS.workflow()`` calling one ``@DBOS.step()`` that runs the side effect,
  called directly (``DBOS.launch()``, SQLite system database). Per call, DBOS 3.4
  runs four transactions (read from its source, counted below): insert the workflow's
  status and inputs; read whether the step already ran (no write); record the step's
  output (with an ownership check); record the workflow's outcome and output. Three
  write: three fsyncs. It returns only after the last one: "returned" = "durable".
  DBOS signs and chains nothing, checks no policy and issues no credential.
* For reference, the same ToolNode call without the guard (no record at all): what
  LangGraph itself costs, included in the warden side's time.

History: every call is made on a thread with 80-89 earlier guarded calls (seeded as
``bench/guard.py`` seeds them: ``policy.decided``, ``tool.started``, ``tool.completed``
with a ~400-byte result; then one real guarded call, so the guard's view is current, as in
a running agent), 10 measured calls per thread, a fresh thread per round; DBOS's system
database holds the same number of earlier calls (80 one-step workflows run through DBOS per
warden thread) before timing. The sides alternate call by call, in rotating order; each
round's ratio is warden's median / DBOS's median, and the ratio reported is the median
over rounds (range in brackets). Target: the guarded call <= 1.0x DBOS's time ("durable"),
in two readings, both printed. The issue's own measure is *the guard's overhead*: guarded
minus unguarded ToolNode call (its first section calls this "the whole guard overhead", and
its "2.8 ms against 2.2 ms" compares that with a DBOS step), per round (medians) divided by
DBOS's median. The stricter reading divides the *whole* guarded ToolNode call, LangGraph's
own per-call cost included, by a DBOS step called outside LangGraph.
After the timed rounds, ``strace`` (when installed) counts the fsync/fdatasync calls of one
more round of each side (WAL checkpoints included: SQLite's, every ~1,000 pages, add a
fraction); DBOS's commits are counted on its engine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (bench/ is no package): its helpers are reused, not copied."""
    key = f"_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # before exec: its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[key]


cp = load_bench("checkpointer")  # the graph, the savers and the interleaved rounds
gb = load_bench("guard")  # history seeding, one ToolNode call, the machine's speed

#: Measured calls per thread in (c): the thread holds 80 + k earlier calls at its k-th; the
#: default policy's limits (20 per tool, 100 per run) are not reached.
CALLS_PER_THREAD = 10
PRIOR_CALLS = 80


@dataclass(frozen=True)
class Target:
    what: str
    ratio: float
    bound: float
    at_least: bool  # True: ratio >= bound is met; False: ratio <= bound is met

    def line(self) -> str:
        met = self.ratio >= self.bound if self.at_least else self.ratio <= self.bound
        return f"target: {self.what} {'>=' if self.at_least else '<='} {self.bound:.2f}x -> {self.ratio:.2f}x: {'MET' if met else 'NOT MET'}"


# ---------------------------------------------------------------------- (a) and (b): graph steps/s
@contextlib.contextmanager
def ledger_peer(db: Path, trace_root: Path) -> Iterator[Any]:
    """langgraph-ledger's TracingCheckpointSaver around a SqliteSaver on ``db``, traces under ``trace_root``."""
    from langgraph_ledger import TracingCheckpointSaver

    with cp.sqlite_peer(db) as inner:
        yield TracingCheckpointSaver(inner, trace_root=trace_root)


def fresh_paths(tmp: Path) -> Callable[[str], Path]:
    counter = iter(range(1_000_000))
    return lambda stem: tmp / f"{stem}-{next(counter)}"


def part_a(tmp: Path, args: argparse.Namespace) -> list[tuple[str, str, Any, Target]]:
    path = fresh_paths(tmp)
    pair = cp.interleaved_graph_rounds(
        "(a) vs langgraph-ledger",
        lambda: cp.warden_saver(f"sqlite:///{path('a-warden')}.db"),
        lambda: ledger_peer(Path(f"{path('a-peer')}.db"), path("a-traces")),
        args.invocations, args.rounds,
    )
    return [("(a) SQLite", "TracingCheckpointSaver(SqliteSaver)", pair,
             Target("(a) signed saver vs langgraph-ledger, steps/s", pair.ratio, 1.0, True))]


def part_b(tmp: Path, args: argparse.Namespace, notes: list[str]) -> list[tuple[str, str, Any, Target | None]]:
    path = fresh_paths(tmp)
    rows: list[tuple[str, str, Any, Target | None]] = []
    pair = cp.interleaved_graph_rounds(
        "(b) vs SqliteSaver", lambda: cp.warden_saver(f"sqlite:///{path('b-warden')}.db"),
        lambda: cp.sqlite_peer(Path(f"{path('b-peer')}.db")), args.invocations, args.rounds)
    rows.append(("(b) SQLite", "SqliteSaver", pair, Target("(b) signed saver vs SqliteSaver, steps/s", pair.ratio, 0.8, True)))
    diag = cp.interleaved_graph_rounds(
        "(b) ledger stubbed vs SqliteSaver", lambda: cp.warden_saver(f"sqlite:///{path('b-unsigned')}.db", ledger=False),
        lambda: cp.sqlite_peer(Path(f"{path('b-peer')}.db")), args.invocations, args.rounds)
    rows.append(("(b) SQLite, ledger appends stubbed (diagnostic)", "SqliteSaver", diag, None))

    reason = cp.pg_reachable(args.pg_url)
    if reason is not None:
        notes.append(f"(b) PostgreSQL skipped: {args.pg_url} unreachable ({reason})")
        return rows

    def pg(prefix: str, opener: Callable[[str], contextlib.AbstractContextManager[Any]]):
        @contextlib.contextmanager
        def open_() -> Iterator[Any]:
            with cp.pg_schema(args.pg_url, prefix) as url, opener(url) as saver:
                yield saver
        return open_

    pair = cp.interleaved_graph_rounds("(b) vs PostgresSaver", pg("bench_w", cp.warden_saver), pg("bench_p", cp.postgres_peer),
                                       args.invocations, args.rounds)
    rows.append(("(b) PostgreSQL", "PostgresSaver", pair,
                 Target("(b) signed saver vs PostgresSaver, steps/s", pair.ratio, 0.8, True)))
    diag = cp.interleaved_graph_rounds(
        "(b) ledger stubbed vs PostgresSaver", pg("bench_w", lambda url: cp.warden_saver(url, ledger=False)),
        pg("bench_p", cp.postgres_peer), args.invocations, args.rounds)
    rows.append(("(b) PostgreSQL, ledger appends stubbed (diagnostic)", "PostgresSaver", diag, None))
    return rows


# ---------------------------------------------------------------------- (c): one guarded call vs one DBOS step
#: The side effect both sides perform: one count per execution (checked: exactly once per call).
EXECUTIONS: Counter[str] = Counter()


def side_effect(text: str) -> str:
    EXECUTIONS[text] += 1
    return text


def _echo_tool(body: Callable[[str], str] = side_effect) -> Any:
    from langchain_core.tools import tool

    @tool
    def echo(text: str) -> str:
        """Return the text."""
        return body(text)

    return echo


def tool_graph(wrap: Any | None, checkpointer: Any | None = None, body: Callable[[str], str] = side_effect) -> Any:
    """``START -> ToolNode([echo]) -> END``, guarded when ``wrap`` is given (here without a checkpointer).

    ``body`` is what the tool runs: the counted side effect, or a DBOS workflow around it.
    """
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode

    echo = _echo_tool(body)
    builder = StateGraph(MessagesState)
    builder.add_node("tools", ToolNode([echo], wrap_tool_call=wrap) if wrap is not None else ToolNode([echo]))
    builder.add_edge(START, "tools")
    builder.add_edge("tools", END)
    return builder.compile(checkpointer=checkpointer)


@contextlib.contextmanager
def dbos_workflow(db: Path, journal: str) -> Iterator[tuple[Callable[[str], str], Any]]:
    """A launched DBOS on a SQLite system database: (a one-step workflow, DBOS's engine); destroyed at the end."""
    from dbos import DBOS

    if journal == "wal":  # persistent in the file: every DBOS connection then uses WAL
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    dbos = DBOS(config={"name": "warden-bench-peer", "system_database_url": f"sqlite:///{db}", "log_level": "WARNING"})

    @DBOS.step()
    def echo_step(text: str) -> str:
        return side_effect(text)

    @DBOS.workflow()
    def echo_workflow(text: str) -> str:
        return echo_step(text)

    DBOS.launch()
    try:
        # DBOS's engine (a private attribute) only to count its commits; None if it moved.
        yield echo_workflow, getattr(getattr(dbos, "_sys_db", None), "engine", None)
    finally:
        DBOS.destroy(destroy_registry=True)


@dataclass
class Side:
    label: str
    call: Callable[[int], None]  # the timed part (argument: the call's index)
    settle: Callable[[], None] | None = None  # timed too, for "durable": waits for queued commits
    returned: list[float] = field(default_factory=list)
    durable: list[float] = field(default_factory=list)
    rounds: list[list[float]] = field(default_factory=list)  # durable times per round


def time_call(side: Side, i: int) -> tuple[float, float]:
    before = EXECUTIONS["hi"]
    t0 = time.perf_counter()
    side.call(i)
    t1 = time.perf_counter()
    if side.settle is not None:
        side.settle()
    t2 = time.perf_counter()
    assert EXECUTIONS["hi"] == before + 1, f"{side.label}: the side effect ran {EXECUTIONS['hi'] - before} times"
    return t1 - t0, t2 - t0


_SYNC_CALL = re.compile(r"\b(fsync|fdatasync)\(")


@contextlib.contextmanager
def strace_fsyncs(out: Path) -> Iterator[Callable[[], int]]:
    """Count this process's fsync/fdatasync calls (all threads) while the block runs; needs strace."""
    proc = subprocess.Popen(
        ["strace", "-f", "-e", "trace=fsync,fdatasync", "-o", str(out), "-p", str(os.getpid())],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "strace: Process N attached" once it traces us
    if "attached" not in line:
        proc.kill()
        raise RuntimeError(f"strace did not attach: {line.strip()}")
    time.sleep(0.2)  # the other threads' attach lines follow at once
    count = {"n": -1}
    try:
        yield lambda: count["n"]
    finally:
        proc.terminate()
        proc.wait(10)
        text = out.read_text() if out.exists() else ""
        count["n"] = sum(1 for ln in text.splitlines() if _SYNC_CALL.search(ln))  # "<... resumed>" lines don't match


def part_c(tmp: Path, args: argparse.Namespace, notes: list[str]) -> tuple[str, list[Target]]:
    from langgraph_warden.charter import RunCharter
    from langgraph_warden.guards.tools import ToolSpec
    from langgraph_warden.warden import Warden

    charter = RunCharter(owner="alice@example.com", intent="benchmark", risk_tier="low")
    threads = args.calls // CALLS_PER_THREAD + 1  # the first round is warm-up
    with contextlib.ExitStack() as stack:
        wardens: dict[str, Any] = {}
        for label, scopes in (("guarded", ()), ("guarded+credential", ("echo:invoke",))):
            w = stack.enter_context(Warden.open(f"sqlite:///{tmp / f'c-{label}.db'}", ephemeral_keys=True))
            w.tools.register(ToolSpec("echo", sensitivity="public", scopes=scopes))
            wardens[label] = w
        workflow, dbos_engine = stack.enter_context(dbos_workflow(tmp / "c-dbos.db", args.dbos_journal))

        graphs = {label: tool_graph(w.guard) for label, w in wardens.items()}
        plain = tool_graph(None)
        print(f"  (c) seeding {threads} threads x {PRIOR_CALLS} earlier calls per side ...", flush=True)

        def prepare(label: str) -> str:
            """A thread of PRIOR_CALLS earlier calls whose last went through this guard (its view is current)."""
            w, thread = wardens[label], f"c-{label}-{uuid.uuid4().hex[:10]}"
            gb.seed(w, thread, PRIOR_CALLS - 1, charter)
            gb.one_call(graphs[label], thread)
            w.ledger.flush()
            return thread

        names = {label: [prepare(label) for _ in range(threads)] for label in wardens}
        for _ in range(threads * PRIOR_CALLS):
            workflow("hi")

        def warden_side(label: str) -> Side:
            w, g, ths = wardens[label], graphs[label], names[label]
            return Side(label, lambda i: gb.one_call(g, ths[i // CALLS_PER_THREAD]), w.ledger.flush)

        def dbos_call(_: int) -> None:
            assert workflow("hi") == "hi"

        # The like-for-like peer: the same ToolNode call, its tool made durable by a DBOS step (what a
        # LangGraph user would otherwise write), so both sides pay LangGraph's own per-call cost.
        dbos_in_graph = tool_graph(None, body=workflow)
        sides = [warden_side("guarded"), warden_side("guarded+credential"), Side("dbos", dbos_call),
                 Side("unguarded", lambda i: gb.one_call(plain, f"plain-{i}")),
                 Side("dbos in ToolNode", lambda i: gb.one_call(dbos_in_graph, f"dbos-{i}"))]
        total = threads * CALLS_PER_THREAD
        for i in range(total):
            r, order = i // CALLS_PER_THREAD, sides[i % len(sides):] + sides[: i % len(sides)]
            for side in order:
                ret, dur = time_call(side, i)
                if r == 0:
                    continue  # warm-up round
                if len(side.rounds) < r:
                    side.rounds.append([])
                side.returned.append(ret)
                side.durable.append(dur)
                side.rounds[-1].append(dur)
            if r > 0 and i % CALLS_PER_THREAD == CALLS_PER_THREAD - 1:
                print(f"  (c) round {r}/{threads - 1}: " + ", ".join(
                    f"{s.label} {statistics.median(s.rounds[-1]) * 1000:.2f}" for s in sides) + " ms (durable p50)", flush=True)

        # What each side does per call, counted after the timed rounds: one more round, on fresh threads.
        counts: dict[str, str] = {}
        commits = {"n": 0}
        if dbos_engine is not None:
            import sqlalchemy as sa

            sa.event.listen(dbos_engine, "commit", lambda conn: commits.__setitem__("n", commits["n"] + 1))
            for _ in range(CALLS_PER_THREAD):
                workflow("hi")
            counts["dbos"] = f"{commits['n'] / CALLS_PER_THREAD:g} transactions"
        if shutil.which("strace") and args.fsyncs:
            for label, ths in names.items():
                ths.append(prepare(label))
            for side in sides:
                with strace_fsyncs(tmp / f"strace-{side.label}.txt") as result:
                    for _ in range(CALLS_PER_THREAD):
                        side.call(total)  # the threads just prepared
                        if side.settle is not None:
                            side.settle()
                counts[side.label] = ", ".join(
                    x for x in (counts.get(side.label), f"{result() / CALLS_PER_THREAD:g} fsyncs") if x)
        elif args.fsyncs:
            notes.append("(c) fsyncs not counted: strace is not installed")

    def ms(values: list[float], q: float = 50) -> str:
        if q == 50:
            return f"{statistics.median(values) * 1000:.2f}"
        return f"{statistics.quantiles(values, n=100, method='inclusive')[int(q) - 1] * 1000:.2f}"

    dbos, dbos_in_graph_side = sides[2], sides[4]
    lines = [
        f"(c) one tool call, {len(dbos.durable)} measured calls per side ({len(dbos.rounds)} rounds of {CALLS_PER_THREAD}), "
        f"{PRIOR_CALLS}-{PRIOR_CALLS + CALLS_PER_THREAD - 1} earlier calls on the thread; ms per call",
        "",
        "| side | returned p50 | durable p50 | durable p95 | vs DBOS (durable; rounds) | vs DBOS in ToolNode (durable; rounds) | per call (counted) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    targets: list[Target] = []
    unguarded = sides[3]

    def overhead_ratios(side: Side) -> list[float]:
        """Per round: (this side − the unguarded ToolNode call) / DBOS, medians of the round."""
        return [(statistics.median(a) - statistics.median(u)) / statistics.median(b)
                for a, u, b in zip(side.rounds, unguarded.rounds, dbos.rounds)]

    for side in sides:
        ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(side.rounds, dbos.rounds)]
        ratio = statistics.median(ratios)
        vs = "—" if side is dbos else f"{ratio:.2f}x ({min(ratios):.2f}–{max(ratios):.2f}x)"
        like_ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(side.rounds, dbos_in_graph_side.rounds)]
        vs_like = ("—" if side is dbos_in_graph_side else
                   f"{statistics.median(like_ratios):.2f}x ({min(like_ratios):.2f}–{max(like_ratios):.2f}x)")
        lines.append(f"| {side.label} | {ms(side.returned)} | {ms(side.durable)} | {ms(side.durable, 95)} | {vs} | "
                     f"{vs_like} | {counts.get(side.label, '')} |")
        if side.label == "guarded":
            # The issue's own measure: what guarding adds to a ToolNode call (guarded minus unguarded,
            # "the whole guard overhead" of its first section) against what one DBOS step costs.
            added = overhead_ratios(side)
            targets.append(Target("(c) the guard's overhead on a ToolNode call (durable, guarded - unguarded) vs one DBOS step",
                                  statistics.median(added), 1.0, False))
            targets.append(Target("(c) a whole guarded ToolNode call (durable) vs one DBOS step called directly", ratio, 1.0, False))
            like = statistics.median(
                [statistics.median(a) / statistics.median(b) for a, b in zip(side.rounds, dbos_in_graph_side.rounds)])
            targets.append(Target("(c) a guarded ToolNode call (durable) vs the same ToolNode call with a DBOS step",
                                  like, 1.0, False))
        elif side.label == "guarded+credential":
            targets.append(Target("(c) the guard's overhead with a just-in-time credential (durable) vs one DBOS step",
                                  statistics.median(overhead_ratios(side)), 1.0, False))
            targets.append(Target("(c) a whole guarded call with a just-in-time credential (durable) vs one DBOS step", ratio, 1.0, False))
    added = overhead_ratios(sides[0])
    lines.append("")
    lines.append(f"guard overhead (guarded - unguarded, durable, round medians) vs DBOS: {statistics.median(added):.2f}x "
                 f"({min(added):.2f}–{max(added):.2f}x); with a credential: {statistics.median(overhead_ratios(sides[1])):.2f}x.")
    returned = statistics.median(sides[0].returned) / statistics.median(dbos.returned)
    lines.append("")
    lines.append(f"guarded vs DBOS as the caller sees it (returned, medians of all calls): {returned:.2f}x. "
                 f"DBOS journal: {args.dbos_journal}.")
    return "\n".join(lines), targets


# ---------------------------------------------------------------------- runner
def graph_table(rows: list[tuple[str, str, Any, Target | None]]) -> str:
    out = ["| pair | peer | WardenSaver steps/s | peer steps/s | ratio (rounds; > 1 = warden faster) |", "|---|---|---:|---:|---:|"]
    for label, peer, pair, _ in rows:
        out.append(f"| {label} | {peer} | {pair.warden:,.0f} | {pair.peer:,.0f} | **{pair.ratio_text()}** |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one short round of each part")
    ap.add_argument("--only", action="append", choices=["a", "b", "c"], help="run only these parts (repeatable)")
    ap.add_argument("--pg-url", default=cp.PG_URL_DEFAULT, help=f"PostgreSQL URL for (b) (default {cp.PG_URL_DEFAULT})")
    ap.add_argument("--invocations", type=int, help="(a)/(b) graph invocations per round (default 40; --quick 10)")
    ap.add_argument("--rounds", type=int, help="(a)/(b) interleaved rounds (default 7; --quick 1)")
    ap.add_argument("--calls", type=int, help=f"(c) measured calls per side (default 200; --quick 30), in rounds of {CALLS_PER_THREAD}")
    ap.add_argument("--dbos-journal", choices=["wal", "default"], default="wal",
                    help="(c) DBOS's SQLite journal: WAL like WardenSaver (default) or DBOS's own default (rollback journal)")
    ap.add_argument("--no-fsyncs", dest="fsyncs", action="store_false", help="(c) skip counting fsyncs with strace")
    ap.add_argument("--db-dir", type=Path, default=None, help="where the SQLite files go (default: a temporary directory)")
    args = ap.parse_args(argv)
    args.invocations = args.invocations or (10 if args.quick else 40)
    args.rounds = args.rounds or (1 if args.quick else 7)
    args.calls = max(CALLS_PER_THREAD, args.calls or (30 if args.quick else 200))
    parts = set(args.only or ["a", "b", "c"])

    tmp = Path(tempfile.mkdtemp(prefix="warden-peers-", dir=args.db_dir))
    speed_before, fsync_before = gb.machine_speed(), gb.fsync_p50(tmp / "fsync-probe")
    notes: list[str] = []
    graph_rows: list[tuple[str, str, Any, Target | None]] = []
    c_text, targets = "", []
    try:
        if "a" in parts:
            print("(a) signed saver vs langgraph-ledger", flush=True)
            graph_rows += part_a(tmp, args)
        if "b" in parts:
            print("(b) signed saver vs SqliteSaver / PostgresSaver", flush=True)
            graph_rows += part_b(tmp, args, notes)
        if "c" in parts:
            print("(c) one guarded call vs one DBOS step", flush=True)
            c_text, targets = part_c(tmp, args, notes)
        speed_after, fsync_after = gb.machine_speed(), gb.fsync_p50(tmp / "fsync-probe")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    command = "python bench/peers.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    print()
    print(f"`{command}` — {time.strftime('%Y-%m-%d %H:%M')}, {platform.python_implementation()} {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs")
    print(f"machine: sum(range(100000)) {speed_before:.2f} ms before, {speed_after:.2f} ms after; "
          f"fdatasync of a 16 KiB overwrite p50 {fsync_before:.0f} us before, {fsync_after:.0f} us after")
    if graph_rows:
        print(f"\n(a)/(b) 10-node graph, ~15 KB state: {args.rounds} round(s) of {args.invocations} invocations per side, "
              "interleaved; SQLite files in WAL mode with synchronous=FULL\n")
        print(graph_table(graph_rows))
    if c_text:
        print()
        print(c_text)
    for note in notes:
        print(note)
    print()
    for _, _, _, target in graph_rows:
        if target is not None:
            print(target.line())
    for target in targets:
        print(target.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
