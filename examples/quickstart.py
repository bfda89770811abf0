"""Quickstart: a LangGraph pipeline that crashes mid-run and resumes in another process.

Run from the repository root::

    python examples/quickstart.py                  # SQLite file in the temp dir
    python examples/quickstart.py --db ./orders.db # or a path / a database URL

What happens:

1. The parent process creates a fresh SQLite file and starts **process 1**
   (``--phase run``). Process 1 runs a 5-node order pipeline
   (validate -> price -> charge -> ship -> notify) checkpointed with
   ``WardenSaver``. In node 3 (``charge_payment``) it kills itself with
   SIGKILL: no clean-up, no flush, exactly like an OOM kill or a pulled plug.
2. The parent starts **process 2** (``--phase resume``), which opens the same
   file and calls ``graph.invoke(None, config)``: LangGraph loads the last
   checkpoint (verified against the signed event history before any node
   runs) and continues with node 3. Nodes 1 and 2 do not run again.
3. The parent reads the final state back from the file, verifies the whole
   signed event history offline (``saver.ledger.verify()``) and prints the
   signed chain head.

Keys: every process uses ``EphemeralKeyStore()`` — an in-memory Ed25519 key
that dies with the process, for demos and tests only (in production the key
lives in the OS keyring: ``KeyringKeyStore``). Each writer registers its public
key in the database, so the history written by process 1 and process 2 is
signed by two different keys and still verifies as one chain; the parent only
reads (``setup=False``) and registers nothing.

Exit code 0 only if the resumed run completed and the history verified.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, TypedDict

NODES = ["validate_order", "price_order", "charge_payment", "ship_order", "notify_customer"]
CRASH_NODE = "charge_payment"  # node 3
DEFAULT_DB = Path(tempfile.gettempdir()) / "warden-quickstart" / "quickstart.db"

ORDER = {
    "order_id": "O-1042",
    "customer": "ada@example.com",
    "items": [
        {"sku": "KB-01", "name": "mechanical keyboard", "qty": 1, "unit_price_cents": 8900},
        {"sku": "MS-07", "name": "wireless mouse", "qty": 2, "unit_price_cents": 2450},
    ],
}


# --------------------------------------------------------------------------- the graph
class OrderState(TypedDict, total=False):
    order_id: str
    customer: str
    items: list[dict[str, Any]]
    subtotal_cents: int
    tax_cents: int
    total_cents: int
    payment_id: str
    tracking_number: str
    notified: bool
    #: (node, phase, pid) for every node that completed — reducer appends.
    trail: Annotated[list[list[Any]], operator.add]


def _side_log(path: str, phase: str, node: str, event: str) -> None:
    """Append one line per node start/finish to a file outside the database (what really ran)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"node": node, "event": event, "phase": phase, "pid": os.getpid()}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def build_graph(side_log: str, phase: str):
    from langgraph.graph import END, START, StateGraph

    def traced(name: str, fn):
        def node(state: OrderState) -> dict[str, Any]:
            _side_log(side_log, phase, name, "start")
            update = fn(state)
            _side_log(side_log, phase, name, "done")
            return {**update, "trail": [[name, phase, os.getpid()]]}

        node.__name__ = name
        return node

    def validate_order(state: OrderState) -> dict[str, Any]:
        if not state.get("items"):
            raise ValueError("an order needs at least one item")
        for item in state["items"]:
            if item["qty"] <= 0:
                raise ValueError(f"bad quantity for {item['sku']}")
        return {}

    def price_order(state: OrderState) -> dict[str, Any]:
        subtotal = sum(i["qty"] * i["unit_price_cents"] for i in state["items"])
        tax = round(subtotal * 0.2)
        return {"subtotal_cents": subtotal, "tax_cents": tax, "total_cents": subtotal + tax}

    def charge_payment(state: OrderState) -> dict[str, Any]:
        if phase == "run":
            # The crash: SIGKILL ourselves mid-node. Nothing after this line runs in process 1,
            # and this node's result is never written — so process 2 runs it again.
            sys.stdout.flush()
            if hasattr(signal, "SIGKILL"):
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(137)  # platforms without SIGKILL
        return {"payment_id": f"pay_{state['order_id']}_{state['total_cents']}"}

    def ship_order(state: OrderState) -> dict[str, Any]:
        return {"tracking_number": f"TRK-{state['order_id'][2:]}-7731"}

    def notify_customer(state: OrderState) -> dict[str, Any]:
        return {"notified": True}

    fns = [validate_order, price_order, charge_payment, ship_order, notify_customer]
    builder = StateGraph(OrderState)
    for name, fn in zip(NODES, fns):
        builder.add_node(name, traced(name, fn))
    builder.add_edge(START, NODES[0])
    for a, b in zip(NODES, NODES[1:]):
        builder.add_edge(a, b)
    builder.add_edge(NODES[-1], END)
    return builder


# --------------------------------------------------------------------------- child processes
def child(phase: str, url: str, thread_id: str, side_log: str) -> int:
    from langgraph_warden import EphemeralKeyStore, WardenSaver

    config = {"configurable": {"thread_id": thread_id}}
    # A fresh in-memory signing key for this process; from_url() registers its public key.
    with WardenSaver.from_url(url, key_store=EphemeralKeyStore()) as saver:
        graph = build_graph(side_log, phase).compile(checkpointer=saver)
        if phase == "run":
            # durability="sync": each step's checkpoint is committed before the next step
            # starts, so the crash loses at most the step in flight.
            graph.invoke(dict(ORDER, trail=[]), config, durability="sync")
            print("process 1 was supposed to crash in charge_payment", file=sys.stderr)
            return 3
        if phase == "resume":
            before = graph.get_state(config)  # verified against the signed chain
            result = graph.invoke(None, config, durability="sync")
            print(
                json.dumps(
                    {
                        "resumed_at": list(before.next),
                        "key_id": saver.ledger.signing_key().key_id,
                        "done": bool(result.get("notified")),
                    }
                ),
                flush=True,
            )
            return 0
    raise SystemExit(f"unknown phase {phase!r}")


# --------------------------------------------------------------------------- parent
def _db_url(db: str) -> str:
    return db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


def _fresh_sqlite(url: str) -> None:
    if not url.startswith("sqlite"):
        return
    path = Path(url.split(":///", 1)[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _spawn(phase: str, url: str, thread_id: str, side_log: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--db", url, "--thread", thread_id,
         "--side-log", side_log],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _money(cents: int | None) -> str:
    return "-" if cents is None else f"{cents / 100:,.2f} EUR"


def parent(db: str) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)  # long lines (hashes, urls) stay whole
    t0 = time.monotonic()
    url = _db_url(db)
    _fresh_sqlite(url)
    thread_id = f"order-{ORDER['order_id']}-{uuid.uuid4().hex[:6]}"
    side_log = str(Path(tempfile.mkdtemp(prefix="warden-qs-")) / "nodes.jsonl")
    shown = url if len(url) < 90 else url[:87] + "..."

    console.rule("[bold]langgraph-warden quickstart: crash mid-run, resume from the file")
    console.print(f"database : {shown}")
    console.print(f"thread   : {thread_id}")
    console.print(f"pipeline : {' -> '.join(NODES)}")
    console.print("keys     : EphemeralKeyStore() in every process: in-memory, per process, demo only")
    console.print("           (production: KeyringKeyStore, the OS keyring)\n")

    # ---- process 1: run until node 3 kills the process
    console.print(f"[bold]process 1[/] (--phase run) starts the order; node 3 ({CRASH_NODE}) sends itself SIGKILL ...")
    p1 = _spawn("run", url, thread_id, side_log)
    # Import the library while process 1 works (the imports take a moment).
    from langgraph_warden import EphemeralKeyStore, WardenSaver
    from langgraph_warden.checkpointers import schema
    from sqlalchemy import select

    out1, err1 = p1.communicate(timeout=120)
    killed = p1.returncode in (-getattr(signal, "SIGKILL", 9), 137)
    if not killed:
        console.print(f"[red]process 1 exited with {p1.returncode} instead of being killed[/]\n{out1}{err1}")
        return 1
    console.print(f"  process 1 (pid {p1.pid}) died: exit status {p1.returncode} (killed by SIGKILL)\n")

    # ---- process 2: resume the same thread from the file
    console.print("[bold]process 2[/] (--phase resume) opens the same file and calls graph.invoke(None, config) ...")
    p2 = _spawn("resume", url, thread_id, side_log)
    out2, err2 = p2.communicate(timeout=120)
    if p2.returncode != 0:
        console.print(f"[red]process 2 failed with exit status {p2.returncode}[/]\n{out2}{err2}")
        return 1
    resumed = json.loads(out2.strip().splitlines()[-1])
    console.print(
        f"  process 2 (pid {p2.pid}) resumed at {resumed['resumed_at']} and finished: exit status 0\n"
    )

    # ---- which node ran where (the side log is written outside the database)
    runs: dict[str, dict[str, list[str]]] = {n: {"run": [], "resume": []} for n in NODES}
    with open(side_log, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            runs[rec["node"]][rec["phase"]].append(rec["event"])

    def cell(events: list[str]) -> str:
        if not events:
            return "-"
        if events[-1] == "done":
            return "[green]ran[/]" if len(events) == 2 else f"ran x{events.count('done')}"
        return "[red]started, killed[/]"

    table = Table(title="Which node ran in which process", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("node")
    table.add_column(f"process 1 (pid {p1.pid})")
    table.add_column(f"process 2 (pid {p2.pid})")
    for i, node in enumerate(NODES, 1):
        table.add_row(str(i), node, cell(runs[node]["run"]), cell(runs[node]["resume"]))
    console.print(table)

    # ---- read the result back and verify the signed history (read-only: setup=False registers no key)
    config = {"configurable": {"thread_id": thread_id}}
    with WardenSaver.from_url(url, key_store=EphemeralKeyStore(), setup=False) as saver:
        tup = saver.get_tuple(config)  # verified against the signed chain
        state = tup.checkpoint["channel_values"] if tup else {}
        report = saver.ledger.verify(thread_id=thread_id)
        head = saver.ledger.head(thread_id)
        with saver.engine.connect() as conn:
            keys = saver.ledger.public_keys(conn)
            ev = schema.events
            signers = [
                r.key_id
                for r in conn.execute(
                    select(ev.c.key_id).where(ev.c.thread_id == thread_id, ev.c.signature.is_not(None)).distinct()
                )
            ]
        kinds: dict[str, int] = {}
        for e in saver.ledger.events(thread_id):
            kinds[e.kind] = kinds.get(e.kind, 0) + 1

    trail = state.get("trail") or []
    once = all(runs[n]["run"].count("done") + runs[n]["resume"].count("done") == 1 for n in NODES)
    completed = bool(resumed.get("done")) and bool(state.get("notified")) and once
    console.print("\n[bold]Resumed result[/] (read back from the file)")
    console.print(f"  order      : {state.get('order_id')} for {state.get('customer')}")
    console.print(f"  total      : {_money(state.get('total_cents'))} (subtotal {_money(state.get('subtotal_cents'))} + tax {_money(state.get('tax_cents'))})")
    console.print(f"  payment    : {state.get('payment_id')}")
    console.print(f"  tracking   : {state.get('tracking_number')}")
    console.print(f"  notified   : {state.get('notified')}")
    console.print(
        "  completed  : "
        + ", ".join(f"{n} (p{1 if ph == 'run' else 2})" for n, ph, _pid in trail)
    )
    console.print(
        "  resume completed: yes (every node completed exactly once)"
        if completed
        else "  resume completed: NO"
    )

    console.print("\n[bold]Signed event history[/] (saver.ledger.verify())")
    console.print(f"  events     : {report.events} ({', '.join(f'{k} x{v}' for k, v in sorted(kinds.items()))})")
    console.print(f"  public keys registered: {len(keys)} (one per writing process; each process had its own ephemeral key)")
    console.print(f"  heads signed by       : {len(signers)} key(s): {', '.join(signers)}")
    if report.ok:
        console.print(f"  verification: [bold green]OK[/] — {report.events} events, hash chain intact, signatures valid, rows match")
    else:
        console.print(f"  verification: [bold red]FAILED[/] — {len(report.findings)} finding(s)")
        for finding in report.findings:
            console.print(f"    - {finding}")
    if head is not None:
        console.print("  signed chain head:")
        console.print(f"    seq       : {head.seq}")
        console.print(f"    hash      : {head.hash}")
        console.print(f"    key_id    : {head.key_id} ({head.key_store} key of process 2: {head.key_id == resumed['key_id']})")
        console.print(f"    signature : {head.signature[:43]}... (Ed25519)")

    ok = completed and report.ok and head is not None
    console.print(f"\nCheck it yourself: warden audit verify --db {shown}")
    console.rule(
        f"[bold green]done in {time.monotonic() - t0:.1f} s: crashed, resumed, verified[/]"
        if ok
        else "[bold red]quickstart FAILED[/]"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Crash a checkpointed LangGraph run mid-way and resume it from the file.")
    ap.add_argument("--db", default=str(DEFAULT_DB), help=f"SQLite path or database URL (default {DEFAULT_DB}; recreated each run)")
    ap.add_argument("--phase", choices=["run", "resume"], help=argparse.SUPPRESS)
    ap.add_argument("--thread", help=argparse.SUPPRESS)
    ap.add_argument("--side-log", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.phase:
        return child(args.phase, _db_url(args.db), args.thread, args.side_log)
    return parent(args.db)


if __name__ == "__main__":
    sys.exit(main())
