"""The ``warden`` command line.

``warden audit verify`` exits 0 when every thread's history verifies and 1
otherwise, printing each failure (thread, seq, what). ``warden audit head``
prints the signed chain heads as JSON; keep that file somewhere the database's
writers cannot reach and pass it back with ``verify --against`` to detect a
truncated tail or a rewritten history.

The ``audit`` commands only read: they open an existing warden database and never
create, migrate or write one (see :mod:`langgraph_warden.cli_db`). A missing, empty,
foreign, corrupt, too-new or unreachable database, or an unknown ``--thread``, exits 2
with one line on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .cli_db import fail, open_for_reading, require_thread
from .cli_errors import EXIT_CODES_HELP, WardenGroup
from .errors import WardenError
from .events import SignedHead

app = typer.Typer(
    name="warden",
    help="langgraph-warden: durable, governed execution for LangGraph agents.",
    no_args_is_help=True,
    add_completion=False,
    cls=WardenGroup,
    epilog=EXIT_CODES_HELP,
)
audit_app = typer.Typer(help="Verify and inspect the signed event history.", no_args_is_help=True, cls=WardenGroup)
app.add_typer(audit_app, name="audit")

console = Console()
err_console = Console(stderr=True)

DbOption = Annotated[
    str,
    typer.Option("--db", help="Database URL: sqlite:///path.db or postgresql+psycopg://user@host/db", envvar="WARDEN_DB"),
]


def _fail(exc: Exception) -> None:
    fail(exc)


@audit_app.command("verify")
def audit_verify(
    db: DbOption,
    thread: Annotated[str | None, typer.Option("--thread", help="Verify one thread only.")] = None,
    against: Annotated[
        Path | None, typer.Option("--against", help="JSON from `warden audit head` saved earlier.", exists=True)
    ] = None,
    all_signatures: Annotated[
        bool, typer.Option("--all-signatures", help="Verify every signed head, not only each key's latest.")
    ] = False,
    trust_key: Annotated[
        list[str] | None, typer.Option("--trust-key", help="Accept only signatures by these key ids (repeatable).")
    ] = None,
    head_store: Annotated[
        Path | None,
        typer.Option("--head-store", help="Directory of a FileHeadStore (head_store=): each thread is checked against "
                     "the head saved there.", exists=True, file_okay=False),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """Verify hash chains, signatures, checkpoint and write rows, and that no call ran twice or without
    an authorisation; exit 1 on any failure."""
    heads: list[SignedHead] = []
    if against is not None:
        try:
            doc = json.loads(against.read_text())
            items = doc["heads"] if isinstance(doc, dict) and "heads" in doc else doc
            heads = [SignedHead.from_dict(h) for h in items]
        except (ValueError, KeyError, TypeError) as exc:
            _fail(WardenError(f"{against} is not a head file from `warden audit head` ({type(exc).__name__}: {exc})"))
    if output not in ("text", "json"):
        _fail(WardenError(f"--format {output!r}: use text or json"))
    # No signing key is needed to verify: the public keys are in the database.
    with open_for_reading(db) as saver:
        if thread is not None and not any(h.thread_id == thread for h in heads):
            # A thread with a saved head but no history is a deleted history: verify reports it (exit 1).
            require_thread(saver, thread)
        if trust_key:
            saver.ledger.trusted_key_ids = frozenset(trust_key)
        if head_store is not None:
            from .anchors import FileHeadStore

            saver.ledger.head_store = FileHeadStore(head_store)
        report = saver.ledger.verify(
            thread_id=thread, signatures="all" if all_signatures else "heads", against=heads
        )
        conduct = _conduct(saver, report.threads)
    report.findings.extend(conduct)
    if output == "json":
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for f in report.findings:
            where = f"seq {f.seq}" if f.seq is not None else "-"
            console.print(f"[red]FAIL[/] thread={f.thread_id} {where} {f.reason}: {f.detail}", highlight=False)
        status = "[green]OK[/]" if report.ok else "[red]FAILED[/]"
        console.print(
            f"{status} {len(report.threads)} thread(s), {report.events} event(s), "
            f"{len(report.findings)} failure(s)",
            highlight=False,
        )
    raise typer.Exit(code=0 if report.ok else 1)


def _conduct(saver, threads) -> list:
    """Findings about what the verified histories record: a call executed twice or without
    authorisation, a view snapshot that does not recompute."""
    from .audit import reconstruct, view_snapshot_findings
    from .chain import Finding

    found = []
    for thread_id, chain in threads.items():
        if not chain.ok:
            continue  # an unverified history proves nothing about conduct; its failures are reported
        events, report = saver.ledger.history(thread_id)
        trail = reconstruct(thread_id, events, report)
        found.extend(_conduct_findings(trail, Finding))
        found.extend(view_snapshot_findings(thread_id, events))
    return found


def _conduct_findings(trail, finding_type) -> list:
    out = []
    for a in trail.actions:
        if a.executed_twice:
            out.append(finding_type(trail.thread_id, a.seqs[0] if a.seqs else None, "executed_twice",
                                    f"call {a.tool_call_id} ({a.tool}): {a.executed_twice}"))
        if a.ran_without_authorisation:
            out.append(finding_type(trail.thread_id, a.seqs[0] if a.seqs else None, "ran_without_authorisation",
                                    f"call {a.tool_call_id} ({a.tool}) started without an authorisation in force"))
    return out


@audit_app.command("head")
def audit_head(
    db: DbOption,
    thread: Annotated[str | None, typer.Option("--thread", help="One thread only.")] = None,
) -> None:
    """Print the signed chain head of every thread as JSON (save it outside the database)."""
    with open_for_reading(db) as saver:
        if thread is not None:
            require_thread(saver, thread)
        with saver.engine.connect() as conn:
            threads = [thread] if thread else saver.ledger.thread_ids(conn)
        heads = [h.to_dict() for t in threads if (h := saver.ledger.head(t)) is not None]
    typer.echo(json.dumps({"format": "langgraph-warden/heads/v1", "heads": heads}, indent=2))


@audit_app.command("show")
def audit_show(
    db: DbOption,
    thread: Annotated[str, typer.Argument(help="Thread id")],
) -> None:
    """Show a thread's audit trail: actions, decisions, approvers, leases, replays, and the verdict.

    Exit 1 if verification failed or anything ran without an authorisation.
    """
    from .audit import reconstruct
    from .chain import Finding

    with open_for_reading(db) as saver:
        require_thread(saver, thread)
        # The trail and its verdict come from one read of the history (see Ledger.history).
        events, chain = saver.ledger.history(thread)
        report = saver.ledger.verify(thread_id=thread)  # with the stored rows' check
        trail = reconstruct(thread, events, chain)
    if not trail.events:
        _fail(WardenError(f"thread {thread!r} has no recorded events in this database"))
    console.print(trail.rich_table())
    s = trail.summary
    console.print(
        f"authorised {len(s.authorised)} · ran {len(s.ran)} · replayed {len(s.replayed)} · denied {len(s.denied)} · "
        f"rejected {len(s.rejected)} · aborted {len(s.aborted)} · failed {len(s.failed)} · pending {len(s.pending)} · "
        f"ran without authorisation {len(s.ran_without_authorisation)} · "
        f"credentials {s.credentials_issued} issued / {s.credentials_revoked} revoked",
        highlight=False,
    )
    conduct = _conduct_findings(trail, Finding) if chain.ok else []
    for f in [*report.findings, *conduct]:
        console.print(f"[red]FAIL[/] {f}", highlight=False)
    ok = trail.verified and report.ok and not conduct
    console.print("[green]verified[/]" if ok else "[red]NOT verified[/]")
    raise typer.Exit(code=0 if ok else 1)


@audit_app.command("export")
def audit_export(
    db: DbOption,
    thread: Annotated[str | None, typer.Option("--thread", help="One thread only (default: every thread).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Only jsonl is supported.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Export events as JSON lines (one record per event, with chain position, hash and verification)."""
    from .audit import export_jsonl, reconstruct

    if fmt != "jsonl":
        _fail(WardenError(f"--format {fmt!r} is not supported; use --format jsonl"))
    with open_for_reading(db) as saver:
        if thread is not None:
            require_thread(saver, thread)
        with saver.engine.connect() as conn:
            threads = [thread] if thread else saver.ledger.thread_ids(conn)
        trails = [reconstruct(t, *saver.ledger.history(t)) for t in threads]
    lines = export_jsonl(trails)
    if output is None:
        for line in lines:
            typer.echo(line)
    else:
        with open(output, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(line + "\n")
        err_console.print(f"wrote {output}")


@audit_app.command("events")
def audit_events(
    db: DbOption,
    thread: Annotated[str, typer.Argument(help="Thread id")],
) -> None:
    """List a thread's events (seq, time, kind, subject) as a table."""
    with open_for_reading(db) as saver:
        require_thread(saver, thread)
        events, chain = saver.ledger.history(thread)
    table = Table(title=f"events of {thread}" + ("" if chain.ok else " — NOT verified"))
    for col in ("seq", "time", "kind", "ns", "hash"):
        table.add_column(col)
    for e in events:
        table.add_row(str(e.seq), e.ts.isoformat(timespec="seconds"), e.kind, e.checkpoint_ns, e.hash[7:19])
    console.print(table)
    for f in chain.findings:
        console.print(f"[red]FAIL[/] {f}", highlight=False)
    if not chain.ok:
        raise typer.Exit(code=1)


@app.command("demo")
def demo(
    db: Annotated[
        str | None, typer.Option("--db", help="Run on this database (URL, e.g. PostgreSQL, or a SQLite file path) "
                                    "instead of a new SQLite file; each run is a new thread, earlier runs are kept.")
    ] = None,
    approve_all: Annotated[bool, typer.Option("--approve-all", help="Approve every request without asking.")] = False,
    reject_all: Annotated[bool, typer.Option("--reject-all", help="Reject every request without asking.")] = False,
) -> None:
    """Run the governed demo: charter, policy, approvals, JIT credentials, a crash and resume, audit, verify.

    Exit 0 when everything verified and the assistant's answer matches what happened, 1 if not, 2 when the
    database cannot be used, 130 when interrupted at an approval prompt (the run stays paused).
    """
    from .demo import run_demo

    if approve_all and reject_all:
        _fail(WardenError("choose one of --approve-all and --reject-all"))
    if approve_all:
        mode = "approve"
    elif reject_all:
        mode = "reject"
    else:
        mode = "prompt" if sys.stdin.isatty() else "approve"
        if mode == "approve":
            console.print("[dim]no terminal attached: approving every request (use --reject-all to see rejections)[/]")
    raise typer.Exit(code=run_demo(db, decide=mode, console=console))


def _mount_optional() -> None:
    """Sub-apps that live with the parts they drive (each module exposes a typer ``app``)."""
    import importlib

    for module, name in (("cli_policy", "policy"), ("cli_approvals", "approvals"), ("cli_credentials", "credentials")):
        try:
            sub = importlib.import_module(f"{__package__}.{module}")
        except ModuleNotFoundError as exc:  # pragma: no cover - sub-app not present in this build
            if exc.name != f"{__package__}.{module}":
                raise
            continue
        app.add_typer(sub.app, name=name)


_mount_optional()


def main() -> None:  # console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
