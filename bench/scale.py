"""Does a call cost the same however long the thread is? Guard, restart and checkpoint reads by depth.

Run from the repository root::

    python bench/scale.py            # 10, 100, 1,000 and 10,000 prior calls; 10 and 10,000 checkpoints
    python bench/scale.py --quick    # 10 and 100 of each, a few calls: a fast check (~10 s)
    python bench/scale.py --depths 10 1000

DESIGN.md: "a long-lived thread's thousandth tool call costs what its tenth did". Everything
below runs on SQLite files (WAL, synchronous=FULL) through public APIs: ``Warden.open``,
``warden.guard``, ``warden.checkpointer``, ``warden.ledger.append``, ``EventDraft``,
``ToolSpec`` and ``ToolNode(..., wrap_tool_call=warden.guard)``.

**Guard overhead by depth**, per engine (the default Rego policy embedded, and the default
Cedar policy), each on its own database. A call is one ``graph.invoke`` of ``START ->
ToolNode([echo]) -> END`` compiled with ``checkpointer=warden.checkpointer``, with one tool
call (``echo``: public, no scopes, so no credential); guarded with ``wrap_tool_call=
warden.guard``, unguarded without, on the same saver and thread. Guard overhead = guarded
minus unguarded, per pair (their order alternating), median over pairs. Each thread holds D
prior calls: D - 1 seeded with ``warden.ledger.append`` in batches of 200 calls, as guarded
calls leave them (``policy.decided``, ``tool.started``, ``tool.completed`` with the ~400-byte
result of ``bench/guard.py``), spread over 7 tools, after one ``run.started``; then one real
guarded call, which makes the guard's view current (a run in progress) and writes the
thread's first checkpoints. Seeding writes no checkpoint events between the calls, which a
real thread has: a real thread of D calls holds more events than this one. Pairs on one
thread are at most D/100 (so depth drifts by <= 1%); a thread per pair at small depths.
The default policies cap calls (20 per tool, 100 per run); the bench raises both caps to
10^9 through their documented configuration (Rego ``data.warden_config.limits``, Cedar
``limits=``), so every call is allowed (checked: a denied call stops the run).

**First call after a restart** at the same depths: a new ``Warden.open`` on the same
database (same keys and engine, as a restarted process would have them: nothing in it has
verified the thread, its guard has no view), then one guarded call, timed alone; its graph
is compiled before the clock starts. It is compared with a warm guarded call at the same
depth. The same with an unguarded call (diagnostic: what resuming the checkpoint costs
without the guard). Restarts use threads of their own, seeded the same way.

**Checkpoint reads by depth**: a thread of N checkpoints written with the saver's ``put`` in a
loop (the 15 KB state of ``bench/checkpointer.py`` stored once, a counter per checkpoint, as a
graph's ``new_versions`` would have it). ``get_tuple`` of the latest checkpoint on the saver
that wrote it; resume: the same ``get_tuple`` as the first call of a new ``Warden.open``;
``list(limit=10)`` on the saver that wrote it.

Depths are measured interleaved (pair by pair, rotating their order) so the machine's drift
hits all of them alike. Ratios (depth max / depth min; restart / warm) are computed per round
and reported as the median of the rounds with their range. The guard overhead is a difference
of two calls ~3x its size, so its ratio resolves ~15%, not 5%: the guarded-call row beside it
is the steadier view of the same question. Targets: at the largest depth the
guard overhead <= 1.25x its value at the smallest, per engine; the first call after a restart
<= 2x a warm call at every depth; get_tuple, resume and list(limit=10) at the largest
checkpoint depth <= 1.25x at the smallest.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (bench/peers.py: the tool graph; bench/checkpointer.py and bench/guard.py as it loads them)

cp, gb = peers.cp, peers.gb

from langgraph_warden.charter import RunCharter  # noqa: E402
from langgraph_warden.events import EventDraft, EventKind  # noqa: E402
from langgraph_warden.guards.cedar import CedarEngine  # noqa: E402
from langgraph_warden.guards.policy import DEFAULT_CEDAR_POLICY, DEFAULT_REGO_POLICY  # noqa: E402
from langgraph_warden.guards.rego import RegoEngine  # noqa: E402
from langgraph_warden.guards.tools import ToolSpec  # noqa: E402
from langgraph_warden.identity import EphemeralWorkloadKeyStore  # noqa: E402
from langgraph_warden.keys import EphemeralKeyStore  # noqa: E402
from langgraph_warden.warden import Warden  # noqa: E402

#: The default policies' call caps, raised so a thread of 10,000 calls is not rate limited.
NO_CAPS = {"per_tool": 10**9, "per_run": 10**9}
SEED_BATCH = 200  # prior calls per ledger.append
SEED_TOOLS = [f"tool_{i}" for i in range(7)]
CHARTER = RunCharter(owner="alice@example.com", intent="benchmark", risk_tier="low")


def engines() -> dict[str, Callable[[], Any]]:
    return {
        "rego": lambda: RegoEngine(DEFAULT_REGO_POLICY, data={"warden_config": {"limits": NO_CAPS}}),
        "cedar": lambda: CedarEngine(DEFAULT_CEDAR_POLICY, limits=NO_CAPS),
    }


# ---------------------------------------------------------------------- seeding
def prior_call_drafts(start: int, count: int) -> list[EventDraft]:
    """``count`` completed calls as the guard records them (shapes of bench/guard.py's seed)."""
    drafts = []
    for i in range(start, start + count):
        tcid, tool = f"h{i}", SEED_TOOLS[i % len(SEED_TOOLS)]
        base = {"tool_call_id": tcid, "tool": tool, "args_digest": "sha256:" + "0" * 64}
        decision = {"allow": True, "require_approval": False, "reasons": [], "scopes": [], "ttl_seconds": 60,
                    "obligations": {}, "engine": "seed", "policy_revision": "seed", "decision_id": None,
                    "input_digest": "seed"}
        drafts += [
            EventDraft(kind=EventKind.POLICY_DECIDED, payload={**base, "decision": decision, "enforced": True}, subject=tcid),
            EventDraft(kind=EventKind.TOOL_STARTED, payload={**base, "attempt": 1}, subject=tcid),
            EventDraft(kind=EventKind.TOOL_COMPLETED, payload=gb.completed_payload(base, tcid, tool), subject=tcid),
        ]
    return drafts


def seed_calls(warden: Warden, thread: str, calls: int) -> None:
    # As the process that writes a real thread does, the seeding process has verified it (a new thread:
    # nothing to read), so its appends carry the chain snapshots a real thread holds.
    warden.ledger.verified_position(thread)
    warden.ledger.append(thread, [EventDraft(kind=EventKind.RUN_STARTED, payload={
        "charter": CHARTER.to_dict(), "workload_id": warden.ledger.workload_id, "source": "api"})])
    for start in range(0, calls, SEED_BATCH):
        warden.ledger.append(thread, prior_call_drafts(start, min(SEED_BATCH, calls - start)))


def seed_checkpoints(saver: Any, thread: str, n: int) -> None:
    """``n`` checkpoints with ``put``: the 15 KB payload stored once, then only the counter changes."""
    from langgraph.checkpoint.base import empty_checkpoint

    ckpt: dict[str, Any] = empty_checkpoint()
    version = saver.get_next_version(None, None)
    ckpt["channel_versions"] = {"payload": version, "counter": version}
    config: dict[str, Any] = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    saver.ledger.verified_position(thread)  # as a real writer has: its puts carry chain snapshots
    for i in range(n):
        new_v = saver.get_next_version(ckpt["channel_versions"]["counter"], None)
        ckpt = {**ckpt, "id": cp._uuid6(), "channel_values": {"payload": cp.PAYLOAD, "counter": i},
                "channel_versions": {**ckpt["channel_versions"], "counter": new_v}}
        new_versions = {"counter": new_v} if i else dict(ckpt["channel_versions"])
        config = saver.put(config, ckpt, {"source": "loop", "step": i, "parents": {}}, new_versions)


# ---------------------------------------------------------------------- measuring
@dataclass
class Samples:
    """Per (row, depth): samples per round."""

    by_round: dict[tuple[str, int], list[list[float]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, key: tuple[str, int], rnd: int, value: float) -> None:
        rounds = self.by_round[key]
        while len(rounds) <= rnd:
            rounds.append([])
        rounds[rnd].append(value)

    def median(self, key: tuple[str, int]) -> float:
        return statistics.median(v for r in self.by_round[key] for v in r)

    def ratio(self, num: tuple[str, int], den: tuple[str, int]) -> tuple[float, float, float]:
        """Median over rounds of (num's median / den's median) in that round, and the range."""
        ratios = [statistics.median(a) / statistics.median(b)
                  for a, b in zip(self.by_round[num], self.by_round[den]) if a and b]
        return statistics.median(ratios), min(ratios), max(ratios)


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def rotated(items: list[int], k: int) -> list[int]:
    k %= len(items)
    return items[k:] + items[:k]


@dataclass
class EngineBench:
    """One engine's database: a Warden, its graphs, and the seeded threads per depth."""

    name: str
    url: str
    keys: tuple[EphemeralKeyStore, EphemeralWorkloadKeyStore]
    engine: Any
    warden: Warden | None = None
    warm_threads: dict[int, list[str]] = field(default_factory=dict)
    restart_threads: dict[int, list[str]] = field(default_factory=dict)

    def open(self) -> Warden:
        """A Warden on the database, as a (re)started process opens it: same keys, engine and tools."""
        w = Warden.open(self.url, key_store=self.keys[0], workload_key_store=self.keys[1], policy=self.engine)
        w.tools.register(ToolSpec("echo", sensitivity="public"))
        return w

    def graphs(self, w: Warden) -> tuple[Any, Any]:
        return peers.tool_graph(w.guard, w.checkpointer), peers.tool_graph(None, w.checkpointer)


def call(graph: Any, warden: Warden, thread: str) -> float:
    """One timed tool call; the guard's queued record commits afterwards, untimed."""
    try:
        dt = timed(lambda: gb.one_call(graph, thread))
    except AssertionError as exc:
        raise RuntimeError(f"a benchmark call was not executed ({exc}); the numbers would be meaningless") from None
    warden.ledger.flush()
    return dt


def pairs_per_thread(depth: int) -> int:
    return max(1, min(10, depth // 100))


def bench_engine(eb: EngineBench, depths: list[int], args: argparse.Namespace, out: Samples) -> None:
    eb.warden = w = eb.open()
    guarded, plain = eb.graphs(w)
    pairs = args.rounds * args.pairs
    for d in depths:
        n_warm = math.ceil(pairs / pairs_per_thread(d))
        print(f"  {eb.name}: seeding {n_warm} + {args.restart_threads} threads of {d:,} prior calls ...", flush=True)
        names = [f"{eb.name}-{d}-{i}-{uuid.uuid4().hex[:6]}" for i in range(n_warm + args.restart_threads)]
        for t in names:
            seed_calls(w, t, d - 1)
            call(guarded, w, t)  # the d-th call: the guard's view is current, the thread has a checkpoint
        eb.warm_threads[d], eb.restart_threads[d] = names[:n_warm], names[n_warm:]

    for rnd in range(args.rounds):
        for p in range(args.pairs):
            j = rnd * args.pairs + p
            for d in rotated(depths, j):
                thread = eb.warm_threads[d][j // pairs_per_thread(d)]
                first, second = ("guarded", "unguarded") if j % 2 == 0 else ("unguarded", "guarded")
                times = {}
                for side in (first, second):
                    times[side] = call(guarded if side == "guarded" else plain, w, thread)
                out.add((f"{eb.name}/guarded", d), rnd, times["guarded"])
                out.add((f"{eb.name}/unguarded", d), rnd, times["unguarded"])
                out.add((f"{eb.name}/overhead", d), rnd, times["guarded"] - times["unguarded"])
        for k in range(args.restarts):
            for d in rotated(depths, rnd + k):
                thread = eb.restart_threads[d][(rnd * args.restarts + k) % len(eb.restart_threads[d])]
                for side in ("guarded", "unguarded"):
                    fresh = eb.open()  # a restarted process: nothing verified, no view
                    try:
                        g, u = eb.graphs(fresh)
                        out.add((f"{eb.name}/restart-{side}", d), rnd, call(g if side == "guarded" else u, fresh, thread))
                    finally:
                        fresh.close()
        print(f"  {eb.name}: round {rnd + 1}/{args.rounds}: overhead p50 " + ", ".join(
            f"{d:,}: {statistics.median(out.by_round[(f'{eb.name}/overhead', d)][rnd]) * 1000:.2f}" for d in depths)
            + " ms; restart " + ", ".join(
            f"{d:,}: {statistics.median(out.by_round[(f'{eb.name}/restart-guarded', d)][rnd]) * 1000:.1f}" for d in depths)
            + " ms", flush=True)
    w.close()


def bench_checkpoints(url: str, keys: tuple[Any, Any], depths: list[int], args: argparse.Namespace, out: Samples) -> None:
    def open_() -> Warden:
        return Warden.open(url, key_store=keys[0], workload_key_store=keys[1])

    with open_() as w:
        saver = w.checkpointer
        threads = {}
        for d in depths:
            print(f"  checkpoints: seeding a thread of {d:,} ...", flush=True)
            threads[d] = f"ckpt-{d}-{uuid.uuid4().hex[:6]}"
            seed_checkpoints(saver, threads[d], d)

        def cfg(d: int) -> dict[str, Any]:
            return {"configurable": {"thread_id": threads[d], "checkpoint_ns": ""}}

        def get(s: Any, d: int) -> None:
            tup = s.get_tuple(cfg(d))
            assert tup is not None and tup.checkpoint["channel_values"]["counter"] == d - 1

        def lst(d: int) -> None:
            assert sum(1 for _ in saver.list(cfg(d), limit=10)) == min(10, d)

        for rnd in range(args.rounds):
            for k in range(args.reads):
                for d in rotated(depths, rnd + k):
                    out.add(("get_tuple", d), rnd, timed(lambda: get(saver, d)))
                    out.add(("list10", d), rnd, timed(lambda: lst(d)))
            for k in range(args.restarts):
                for d in rotated(depths, rnd + k):
                    with open_() as fresh:
                        out.add(("resume", d), rnd, timed(lambda: get(fresh.checkpointer, d)))
            print(f"  checkpoints: round {rnd + 1}/{args.rounds}: resume " + ", ".join(
                f"{d:,}: {statistics.median(out.by_round[('resume', d)][rnd]) * 1000:.2f}" for d in depths) + " ms", flush=True)


# ---------------------------------------------------------------------- report
def render(out: Samples, depths: list[int], ckpt_depths: list[int], engine_names: list[str]) -> tuple[str, list[str]]:
    lo, hi = depths[0], depths[-1]
    clo, chi = ckpt_depths[0], ckpt_depths[-1]
    head = "| measurement (ms, p50) | " + " | ".join(f"{d:,}" for d in depths) + f" | {hi:,} / {lo:,} (rounds) |"
    lines = [head, "|---|" + "---:|" * (len(depths) + 1)]
    targets: list[str] = []

    def fmt(v: float) -> str:
        return f"{v * 1000:,.2f}" if v < 10 else f"{v * 1000:,.0f}"

    def row(label: str, key: str, ds: list[int], ratio: bool = True) -> tuple[float, float, float] | None:
        cells = [fmt(out.median((key, d))) if d in ds else "—" for d in depths]
        r = out.ratio((key, ds[-1]), (key, ds[0])) if ratio and len(ds) > 1 else None
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {f'{r[0]:.2f}x ({r[1]:.2f}–{r[2]:.2f}x)' if r else ''} |")
        return r

    for e in engine_names:
        r = row(f"{e}: guard overhead, warm (guarded − unguarded)", f"{e}/overhead", depths)
        assert r is not None
        targets.append(target(f"{e}: guard overhead at {hi:,} prior calls / at {lo:,}", r, 1.25))
        row(f"{e}: guarded call, warm", f"{e}/guarded", depths)
        row(f"{e}: unguarded call, warm", f"{e}/unguarded", depths)
        row(f"{e}: first call after a restart, guarded", f"{e}/restart-guarded", depths)
        row(f"{e}: first call after a restart, unguarded (diagnostic)", f"{e}/restart-unguarded", depths)
        ratios = {d: out.ratio((f"{e}/restart-guarded", d), (f"{e}/guarded", d)) for d in depths}
        lines.append(f"| {e}: first call after a restart ÷ warm guarded call | " + " | ".join(
            f"{ratios[d][0]:.2f}x ({ratios[d][1]:.2f}–{ratios[d][2]:.2f}x)" for d in depths) + " | |")
        worst = max(depths, key=lambda d: ratios[d][0])
        targets.append(target(f"{e}: first call after a restart / warm call, worst depth ({worst:,})", ratios[worst], 2.0))
    for key, label in (("get_tuple", "get_tuple (latest), warm saver"), ("resume", "resume: get_tuple, first call of a new Warden"),
                       ("list10", "list(limit=10), warm saver")):
        r = row(f"{label} (depth = checkpoints)", key, ckpt_depths)
        assert r is not None
        targets.append(target(f"{label} at {chi:,} checkpoints / at {clo:,}", r, 1.25))
    return "\n".join(lines), targets


def target(what: str, r: tuple[float, float, float], bound: float) -> str:
    return f"target: {what} <= {bound:.2f}x -> {r[0]:.2f}x (rounds {r[1]:.2f}–{r[2]:.2f}x): {'MET' if r[0] <= bound else 'NOT MET'}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="depths 10 and 100, few calls: a fast check")
    ap.add_argument("--depths", type=int, nargs="+", help="prior calls per thread (default 10 100 1000 10000; --quick 10 100)")
    ap.add_argument("--checkpoints", type=int, nargs="+", help="checkpoints per thread (default: the smallest and largest depth)")
    ap.add_argument("--engines", nargs="+", choices=["rego", "cedar"], default=["rego", "cedar"])
    ap.add_argument("--rounds", type=int, help="rounds (default 5; --quick 2)")
    ap.add_argument("--pairs", type=int, help="guarded/unguarded pairs per depth and round (default 12; --quick 2)")
    ap.add_argument("--restarts", type=int, help="restarts per depth and round (default 2; --quick 1)")
    ap.add_argument("--reads", type=int, help="get_tuple and list calls per depth and round (default 40; --quick 10)")
    ap.add_argument("--db-dir", type=Path, default=None, help="where the SQLite files go (default: a temporary directory)")
    args = ap.parse_args(argv)
    depths = sorted(set(args.depths or ([10, 100] if args.quick else [10, 100, 1000, 10000])))
    ckpt_depths = sorted(set(args.checkpoints or [depths[0], depths[-1]]))
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.pairs = args.pairs or (2 if args.quick else 12)
    args.restarts = args.restarts or (1 if args.quick else 2)
    args.reads = args.reads or (10 if args.quick else 40)
    args.restart_threads = min(2, args.rounds * args.restarts)

    tmp = Path(tempfile.mkdtemp(prefix="warden-scale-", dir=args.db_dir))
    started = time.time()
    speed_before, fsync_before = gb.machine_speed(), gb.fsync_p50(tmp / "fsync-probe")
    out = Samples()
    try:
        keys = (EphemeralKeyStore(), EphemeralWorkloadKeyStore())
        for name in args.engines:
            eb = EngineBench(name, f"sqlite:///{tmp / f'{name}.db'}", keys, engines()[name]())
            bench_engine(eb, depths, args, out)
        bench_checkpoints(f"sqlite:///{tmp / 'checkpoints.db'}", keys, ckpt_depths, args, out)
        speed_after, fsync_after = gb.machine_speed(), gb.fsync_p50(tmp / "fsync-probe")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    table, targets = render(out, depths, ckpt_depths, args.engines)
    command = "python bench/scale.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    print()
    print(f"`{command}` — {time.strftime('%Y-%m-%d %H:%M')}, {time.time() - started:.0f} s, "
          f"{platform.python_implementation()} {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs")
    print(f"machine: sum(range(100000)) {speed_before:.2f} ms before, {speed_after:.2f} ms after; "
          f"fdatasync of a 16 KiB overwrite p50 {fsync_before:.0f} us before, {fsync_after:.0f} us after")
    print(f"{args.rounds} rounds; per depth and round: {args.pairs} guarded/unguarded pairs, {args.restarts} restart(s) "
          f"(guarded and unguarded), {args.reads} get_tuple and list calls; columns: prior calls on the thread "
          f"(checkpoints for the last three rows)\n")
    print(table)
    print()
    for line in targets:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
