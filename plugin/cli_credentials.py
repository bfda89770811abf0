"""``warden credentials`` — inspect and revoke just-in-time credential leases.

``warden credentials list --db URL [--thread ID]`` prints the leases that were
never revoked (a run that died mid-step leaves one). ``warden credentials
revoke-run THREAD --db URL`` revokes every outstanding lease of that run: each
lease goes on the revocation list (a per-step token fails ``verify`` at once)
and gets a signed ``credential.revoked`` event (reason ``run_revoked``,
``recovered: true``). Neither command ever prints a token or secret: the lease
table holds none.

Both work on an existing warden database only and never create or migrate one;
``list`` only reads.

Exit codes: 0 success, 2 error, as one line on stderr (bad URL; a missing, empty,
foreign, corrupt, too-new or unreachable database; an unknown thread; no signing key).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .cli_db import database_errors, fail, one_line, open_for_reading, require_thread
from .cli_errors import WardenGroup
from .errors import WardenError

__all__ = ["app"]

app = typer.Typer(help="Inspect and revoke just-in-time credential leases.", no_args_is_help=True, cls=WardenGroup)

DbOption = Annotated[
    str,
    typer.Option("--db", help="Database URL: sqlite:///path.db or postgresql+psycopg://user@host/db", envvar="WARDEN_DB"),
]
FormatOption = Annotated[str, typer.Option("--format", help="text or json")]


def _fail(message: str) -> None:
    fail(message)


def _record(rec) -> dict:
    return {
        "lease_id": rec.lease_id,
        "thread_id": rec.thread_id,
        "tool_call_id": rec.tool_call_id,
        "provider": rec.provider,
        "jit": rec.jti is not None,
        "audience": rec.audience,
        "scopes": list(rec.scopes),
        "issued_at": rec.issued_at.isoformat(),
        "expires_at": rec.expires_at.isoformat(),
    }


@app.callback()
def _credentials() -> None:
    """Inspect and revoke just-in-time credential leases."""


@app.command("list")
def list_leases(
    db: DbOption,
    thread: Annotated[str | None, typer.Option("--thread", help="Only this run's leases.")] = None,
    output: FormatOption = "text",
) -> None:
    """List outstanding (never revoked) leases, of one run or of all."""
    from .checkpointers.leases import SqlLeaseStore

    with open_for_reading(db) as saver:
        if thread is not None:
            require_thread(saver, thread)
        store = SqlLeaseStore(saver.engine)
        rows = store.outstanding(thread) if thread else store.outstanding_all()
    records = [_record(r) for r in rows]
    if output == "json":
        typer.echo(json.dumps({"outstanding": records}, indent=2))
        return
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 220)  # ids stay whole when piped
    if records:
        table = Table(title="outstanding credential leases")
        for col in ("lease", "thread", "tool call", "provider", "audience", "scopes", "expires"):
            table.add_column(col, no_wrap=col in ("lease", "thread"))
        for r in records:
            table.add_row(r["lease_id"], r["thread_id"], r["tool_call_id"] or "-", r["provider"], r["audience"],
                          " ".join(r["scopes"]), r["expires_at"])
        console.print(table)
    where = f" for run {thread}" if thread else ""
    console.print(f"{len(records)} outstanding lease(s){where}", highlight=False)


@app.command("revoke-run")
def revoke_run(
    thread: Annotated[str, typer.Argument(help="Thread id of the run whose leases to revoke.")],
    db: DbOption,
    ephemeral_keys: Annotated[
        bool,
        typer.Option("--ephemeral-keys", help="Sign the revocation events with a throwaway key (demos and tests; "
                                              "recorded as ephemeral). Default: the signing key in $WARDEN_KEY_DIR if set, else the OS keyring."),
    ] = False,
    workload_id: Annotated[str | None, typer.Option("--workload-id", help="SPIFFE id recorded with a new key.")] = None,
    output: FormatOption = "text",
) -> None:
    """Revoke every outstanding lease of a run (after a crash) and record each revocation."""
    from .checkpointers import DEFAULT_WORKLOAD_ID, WardenSaver
    from .checkpointers.leases import SqlLeaseStore
    from .checkpointers.readonly import check_existing
    from .guards.credentials import revoke_outstanding
    from .keys import EphemeralKeyStore

    try:
        check_existing(db)  # never create or migrate a database here (setup=False below writes no schema)
        with WardenSaver.from_url(
            db, key_store=EphemeralKeyStore() if ephemeral_keys else None,
            workload_id=workload_id or DEFAULT_WORKLOAD_ID, setup=False,
        ) as saver:
            require_thread(saver, thread)
            revoked = revoke_outstanding(SqlLeaseStore(saver.engine), saver.ledger, thread)
    except WardenError as exc:
        _fail(str(exc))
        return
    except database_errors() as exc:
        _fail(f"the database failed: {one_line(exc)}")
        return
    if output == "json":
        typer.echo(json.dumps({"thread_id": thread, "revoked": revoked}, indent=2))
    elif revoked:
        typer.echo(f"revoked {len(revoked)} lease(s) of run {thread}: {', '.join(revoked)}")
    else:
        typer.echo(f"run {thread} has no outstanding leases")
