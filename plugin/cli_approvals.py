"""``warden approvals`` — see and answer the approval requests of paused runs.

    warden approvals list   --db URL [--thread T] [--format table|json]
    warden approvals decide THREAD REQUEST --db URL --graph my_app.graphs:build \\
        (--approve | --reject --message TEXT | --edit-args JSON) --as NAME [--key SERVICE:USER | --key FILE]
    warden approvals list   --server URL [--token T] [--thread T]
    warden approvals decide THREAD REQUEST --server URL [--token T] (--approve | ...) [--as NAME] [--key ...]

``--server URL`` works on runs deployed on LangGraph Agent Server, through its API
(:mod:`langgraph_warden.cli_server`), instead of a database and an imported graph.

``list`` reads the signed ledger: every request with no decision yet, across threads.

``decide`` builds the resume payload for the pending :class:`ApprovalRequest`
(bound to its request id and action digest; signed when ``--key`` is given), then
resumes the run with ``Command(resume=...)`` through the user's graph. ``--graph``
is a ``module:attribute`` reference, imported from the current directory or
``sys.path`` (as ``python -m`` and uvicorn do): a compiled graph, or a callable that returns
one given either the ``Warden`` this command opened (first parameter named
``warden``) or its checkpointer. A factory that takes the ``Warden`` must wire
``warden.guard`` into its ToolNode (or ``warden.middleware()`` into ``create_agent``)
and set the same policy as the application (``warden.guard.policy = ...``) if it
is not the default one. When several interrupts are pending the payload is sent
keyed by the interrupt id; a request that LangGraph has not surfaced (a sibling
call in the same ToolNode task) is answered by request id.

Keys: the resumed run appends signed events, so the process needs the ledger's
signing key from the OS keyring — or ``--ephemeral-keys`` (demos and tests only:
a throwaway in-memory key, marked ``ephemeral`` in every signed record). An
approver signs with ``--key SERVICE:USERNAME`` (a base64 Ed25519 seed stored in
the keyring) or ``--key FILE`` (the same seed in a file); runs whose tier requires
signed approvals check it against ``--approver-keys FILE`` (JSON ``{name:
base64 public key}``) plus whatever the graph factory registers.

``list`` only reads: it never creates, migrates or writes a database. ``decide``
writes (the resumed run appends events) but only to an existing warden database:
a missing, empty, foreign or corrupt one is refused, never created or migrated.

Exit codes: 0 decided (or listed), 1 the guard refused the answer (the run stays
paused), 2 usage or configuration error (one line on stderr): a missing, foreign,
too-new or unreachable database, an unknown thread or request, a bad option.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import inspect
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from .cli_db import database_errors, fail, one_line, open_for_reading, require_thread
from .cli_errors import WardenGroup
from .errors import WardenError

__all__ = ["app"]

app = typer.Typer(help="List and answer the approval requests of paused runs.", no_args_is_help=True, cls=WardenGroup)

DbOption = Annotated[
    str,
    typer.Option("--db", help="Database URL: sqlite:///path.db or postgresql+psycopg://user@host/db", envvar="WARDEN_DB"),
]


OptDbOption = Annotated[
    str | None,
    typer.Option("--db", help="Database URL: sqlite:///path.db or postgresql+psycopg://user@host/db", envvar="WARDEN_DB"),
]
ServerOption = Annotated[
    str | None,
    typer.Option("--server", envvar="WARDEN_SERVER",
                 help="URL of a LangGraph Agent Server (e.g. http://127.0.0.1:2024): use its API instead of --db/--graph"),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="WARDEN_SERVER_TOKEN", show_default=False,
                 help="Bearer token for the server's auth (--server only); never printed"),
]


class _Usage(WardenError):
    pass


def _fail(message: str, code: int = 2) -> NoReturn:
    fail(message, code)


def _decode_b64(text: str, what: str) -> bytes:
    text = text.strip()
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) if ("-" in text or "_" in text) else base64.b64decode(
            text + "=" * (-len(text) % 4), validate=True
        )
    except (binascii.Error, ValueError):
        raise _Usage(f"{what} is not base64") from None


def _signing_key(ref: str):
    """``--key``: a file holding a base64 Ed25519 seed (or a PEM private key), or ``SERVICE:USERNAME`` in the keyring."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from .keys import SigningKey

    path = Path(ref)
    if path.is_file():
        data = path.read_bytes()
        if data.lstrip().startswith(b"-----BEGIN"):
            private = load_pem_private_key(data, password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise _Usage(f"--key {ref}: the PEM key is not an Ed25519 private key")
        else:
            seed = _decode_b64(data.decode("ascii", "replace"), f"--key {ref}")
            if len(seed) != 32:
                raise _Usage(f"--key {ref}: expected a 32-byte Ed25519 seed, got {len(seed)} bytes")
            private = Ed25519PrivateKey.from_private_bytes(seed)
        return SigningKey.from_private(private, "file")
    if ":" in ref:
        import keyring

        service, _, username = ref.partition(":")
        try:
            stored = keyring.get_password(service, username)
        except Exception as exc:  # keyring raises varied errors on broken configs
            raise _Usage(f"--key {ref}: the keyring could not be read ({type(exc).__name__}: {exc})") from None
        if stored is None:
            raise _Usage(f"--key {ref}: no key stored in the keyring under service={service!r} username={username!r}")
        seed = _decode_b64(stored, f"--key {ref}")
        if len(seed) != 32:
            raise _Usage(f"--key {ref}: the keyring entry is not a 32-byte Ed25519 seed")
        return SigningKey.from_private(Ed25519PrivateKey.from_private_bytes(seed), "keyring")
    raise _Usage(f"--key {ref!r} is neither a file nor SERVICE:USERNAME of a keyring entry")


def _approver_keys(path: Path | None) -> dict[str, bytes]:
    if path is None:
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _Usage(f"--approver-keys {path}: not a JSON file ({exc})") from None
    if not isinstance(doc, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in doc.items()):
        raise _Usage(f"--approver-keys {path}: expected a JSON object {{approver name: base64 public key}}")
    return {name: _decode_b64(v, f"--approver-keys {path} entry {name!r}") for name, v in doc.items()}


def _cwd_importable() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m``, uvicorn and the langgraph CLI do.

    Why: the ``warden`` console script's ``sys.path`` starts at its own bin directory, so
    ``--graph myagent:build_graph`` could not import ``myagent.py`` from where the user stands.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def _load_graph(ref: str, warden: Any) -> Any:
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise _Usage(f"--graph {ref!r}: use module:attribute, e.g. my_app.graphs:build")
    _cwd_importable()
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        missing = isinstance(exc, ModuleNotFoundError) and exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + "."))
        if missing:
            raise _Usage(f"--graph {ref!r}: no module {module_name!r} in {os.getcwd()!r} nor on sys.path; run the "
                         "command from the directory that holds it, or add that directory to PYTHONPATH") from None
        raise _Usage(f"--graph {ref!r}: importing {module_name!r} failed ({type(exc).__name__}: {exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise _Usage(f"--graph {ref!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not (hasattr(obj, "invoke") and hasattr(obj, "get_state")) and callable(obj):
        params = list(inspect.signature(obj).parameters)
        obj = obj(warden if params and params[0] == "warden" else warden.checkpointer)
    if not (hasattr(obj, "invoke") and hasattr(obj, "get_state")):
        raise _Usage(f"--graph {ref!r} is not a compiled LangGraph graph nor a factory returning one")
    if getattr(obj, "checkpointer", None) is None:
        raise _Usage(f"--graph {ref!r}: the graph has no checkpointer; compile it with checkpointer=warden.checkpointer")
    return obj


def _request_row(r: Any) -> dict[str, Any]:
    return {
        "thread_id": r.thread_id,
        "request_id": r.request_id,
        "tool_call_id": r.tool_call_id,
        "tool": r.tool,
        "args": dict(r.args),
        "owner": r.owner,
        "intent": r.intent,
        "risk_tier": r.risk_tier,
        "reasons": list(r.reasons),
        "expires_at": r.expires_at,
        "separation_of_duties": r.separation_of_duties,
        "requires_signature": r.requires_signature,
        "action_digest": r.action_digest,
    }


@app.command("list")
def list_(
    db: OptDbOption = None,
    thread: Annotated[str | None, typer.Option("--thread", help="One thread only.")] = None,
    output: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    server: ServerOption = None,
    token: TokenOption = None,
) -> None:
    """Show pending approval requests across threads (read-only; needs no key)."""
    from .warden import Warden

    if output not in ("table", "json"):
        _fail(f"--format {output!r}: use table or json")
    if server is not None:
        from .cli_server import pending_on_server

        try:
            rows = [{**_request_row(r), "interrupt_id": iid} for iid, r in pending_on_server(server, token, thread)]
        except WardenError as exc:
            _fail(str(exc))
    else:
        if db is None:
            _fail("pass --db URL (the warden database), or --server URL for runs on LangGraph Agent Server")
            return
        with open_for_reading(db) as saver:
            if thread is not None:
                require_thread(saver, thread)
            pending = Warden(saver, credentials=False).pending_approvals(thread)
        rows = [_request_row(r) for r in pending]
    if output == "json":
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    console = Console(width=200)
    table = Table(title=f"{len(rows)} pending approval(s)")
    for col in ("thread", "request", "tool", "args", "owner", "tier", "reasons", "expires"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["thread_id"], r["request_id"], r["tool"], json.dumps(r["args"], sort_keys=True)[:120],
            r["owner"] or "-", r["risk_tier"], ", ".join(r["reasons"]), r["expires_at"][:19],
        )
    console.print(table)


@app.command("decide")
def decide(
    thread: Annotated[str, typer.Argument(help="Thread id of the paused run")],
    request: Annotated[str, typer.Argument(help="Approval request id (from `warden approvals list`)")],
    db: OptDbOption = None,
    as_: Annotated[str | None, typer.Option("--as", help="Your name as approver (recorded and checked); "
                                                     "with --server and server auth, the authenticated user")] = None,
    graph: Annotated[
        str | None,
        typer.Option("--graph", envvar="WARDEN_GRAPH",
                     help="module:attribute of the compiled graph, or of a factory taking the Warden or the checkpointer; "
                          "imported from the current directory or sys.path"),
    ] = None,
    approve_: Annotated[bool, typer.Option("--approve", help="Approve the exact action")] = False,
    reject_: Annotated[bool, typer.Option("--reject", help="Reject it (the agent sees --message)")] = False,
    edit_args: Annotated[
        str | None, typer.Option("--edit-args", help="Approve with these arguments instead (JSON object); policy decides again")
    ] = None,
    message: Annotated[str | None, typer.Option("--message", help="Message for the agent / the record")] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="Sign the decision: SERVICE:USERNAME of a keyring entry, or a key file")
    ] = None,
    approver_keys: Annotated[
        Path | None, typer.Option("--approver-keys", help="JSON {approver: base64 Ed25519 public key} for signed approvals")
    ] = None,
    ephemeral_keys: Annotated[
        bool,
        typer.Option("--ephemeral-keys", help="Demo/test only: sign ledger events with a throwaway in-memory key instead of the key in $WARDEN_KEY_DIR or the keyring"),
    ] = False,
    output: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    server: ServerOption = None,
    token: TokenOption = None,
    assistant: Annotated[str | None, typer.Option("--assistant", help="--server: the assistant to resume with "
                                                                      "(default: the thread's)")] = None,
) -> None:
    """Answer one pending request and resume its run."""
    chosen = [n for n, on in (("--approve", approve_), ("--reject", reject_), ("--edit-args", edit_args is not None)) if on]
    if len(chosen) != 1:
        _fail("choose exactly one of --approve, --reject and --edit-args")
    if reject_ and not message:
        _fail("--reject needs --message: the agent is told why")
    if server is not None:
        _decide_on_server(server, token, thread, request, chosen[0], as_, message, edit_args, key, assistant, output)
        return
    missing = [n for n, v in (("--db", db), ("--graph", graph), ("--as", as_)) if v is None]
    if missing:
        _fail(f"pass {', '.join(missing)} (or --server URL for runs on LangGraph Agent Server)")
    assert db is not None and graph is not None and as_ is not None
    decision = _DECISIONS[chosen[0]]
    warden, new_args, signing = _open_for_decision(db, edit_args, key, approver_keys, ephemeral_keys)
    result, still = _answer_and_resume(warden, graph, thread, request, decision, as_, message, new_args, signing)
    doc: dict[str, Any] = {"thread_id": thread, "request_id": request, "decision": decision,
                           "approver": as_, "signed": signing is not None, "result": result, "pending": still}
    if output == "json":
        typer.echo(json.dumps(doc, indent=2))
    else:
        typer.echo(f"{_VERBS[decision]} {request} on {thread} as {as_}" + (" (signed)" if signing else ""))
        if result is not None:
            typer.echo(f"tool result: {result}")
        typer.echo(f"still pending on {thread}: {', '.join(still) if still else 'none'}")


_DECISIONS = {"--approve": "approve", "--reject": "reject", "--edit-args": "edit"}
_VERBS = {"approve": "approved", "reject": "rejected", "edit": "approved with edited arguments"}


def _open_for_decision(
    db: str, edit_args: str | None, key: str | None, approver_keys: Path | None, ephemeral_keys: bool
) -> tuple[Any, dict[str, Any] | None, Any]:
    """Check the options that need no database, then open the (existing) warden database: (warden, new args, signing key)."""
    from .checkpointers.readonly import check_existing
    from .warden import Warden

    try:
        new_args = None
        if edit_args is not None:
            try:
                new_args = json.loads(edit_args)
            except ValueError as exc:
                raise _Usage(f"--edit-args is not JSON: {exc}") from None
            if not isinstance(new_args, dict):
                raise _Usage("--edit-args must be a JSON object of the tool's arguments")
        signing = _signing_key(key) if key else None
        keys = _approver_keys(approver_keys)
        # An existing warden database only: a missing or foreign one is refused, not created or migrated
        # (an older warden schema is migrated by Warden.open, as the application would).
        check_existing(db, require_head=False)
        warden = Warden.open(db, ephemeral_keys=ephemeral_keys, approver_keys=keys)
    except WardenError as exc:
        _fail(str(exc))
    except database_errors() as exc:
        _fail(f"opening the database failed: {one_line(exc)}")
    return warden, new_args, signing


def _answer_and_resume(
    warden: Any, graph: str, thread: str, request: str, decision: str, as_: str, message: str | None,
    new_args: dict[str, Any] | None, signing: Any,
) -> tuple[str | None, list[str]]:
    """Answer the pending request and resume the run through the user's graph; closes ``warden``.

    Returns the tool's result (None if it did not run) and the requests still pending on the thread.
    """
    from langgraph.types import Command

    from .checkpointers.readonly import require_thread as check_thread
    from .guards.approval import InvalidApprovalError, approve, edit, reject

    try:
        check_thread(warden.saver.engine, thread)
        pending = {r.request_id: r for r in warden.pending_approvals(thread)}
        req = pending.get(request)
        if req is None:
            raise _Usage(
                f"no pending approval request {request!r} on thread {thread!r}"
                + (f"; pending: {sorted(pending)}" if pending else "; nothing is pending there")
            )
        if decision == "approve":
            payload = approve(req, as_, message=message, key=signing)
        elif decision == "reject":
            payload = reject(req, as_, message=message or "", key=signing)
        else:
            payload = edit(req, as_, new_args or {}, message=message, key=signing)
        g = _load_graph(graph, warden)
        cfg = {"configurable": {"thread_id": thread}}
        interrupts = list(g.get_state(cfg).interrupts)
        ours = [i for i in interrupts if isinstance(i.value, Mapping) and i.value.get("request_id") == req.request_id]
        if ours:
            resume: Any = payload if len(interrupts) == 1 else {ours[0].id: payload}
        else:  # a sibling call of the surfaced one in the same ToolNode task: answer by request id
            resume = {req.request_id: payload}
        try:
            out = g.invoke(Command(resume=resume), cfg)
        except InvalidApprovalError as exc:
            _fail(f"refused ({exc.reason}): {exc}", code=1)
        result = None
        for m in (out or {}).get("messages", []) if isinstance(out, Mapping) else []:
            if getattr(m, "tool_call_id", None) == req.tool_call_id:
                result = m.content if isinstance(m.content, str) else json.dumps(m.content)
        still = [r.request_id for r in warden.pending_approvals(thread)]
    except WardenError as exc:
        _fail(str(exc))
    finally:
        warden.close()
    return result, still


def _decide_on_server(
    server: str, token: str | None, thread: str, request: str, chosen: str, as_: str | None,
    message: str | None, edit_args: str | None, key: str | None, assistant: str | None, output: str,
) -> None:
    """``decide --server``: answer through the Agent Server's API (see :mod:`langgraph_warden.cli_server`)."""
    from .cli_server import RefusedAnswer, decide_on_server

    decision = _DECISIONS[chosen]
    try:
        new_args = json.loads(edit_args) if edit_args is not None else None
    except ValueError as exc:
        _fail(f"--edit-args is not JSON: {exc}")
    if edit_args is not None and not isinstance(new_args, dict):
        _fail("--edit-args must be a JSON object of the tool's arguments")
    try:
        signing = _signing_key(key) if key else None
        got = decide_on_server(server, token, thread, request, decision, approver=as_, message=message,
                               args=new_args, key=signing, assistant=assistant)
    except RefusedAnswer as exc:
        _fail(f"refused: {exc}", code=1)
    except WardenError as exc:
        _fail(str(exc))
    doc = {"thread_id": thread, "request_id": request, "decision": decision, "approver": as_,
           "signed": key is not None, "result": got["result"], "pending": got["pending"]}
    if output == "json":
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"{_VERBS[decision]} {request} on {thread}" + (f" as {as_}" if as_ else " as the authenticated user")
               + (" (signed)" if key else ""))
    if got["result"] is not None:
        typer.echo(f"tool result: {got['result']}")
    typer.echo(f"still pending on {thread}: {', '.join(got['pending']) if got['pending'] else 'none'}")
