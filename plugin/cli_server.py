"""``warden approvals list/decide --server URL``: approvals of runs on LangGraph Agent Server.

Why a module of its own: on Agent Server the graph lives in the server, so the CLI cannot import
it and resume it in-process (``--graph``); it talks to the server's API through ``langgraph-sdk``
instead. Pending requests are the threads' interrupts whose value is a warden approval request;
an answer is sent as LangChain's HITL response ``{"decisions": [...]}``, addressed to the
interrupt's id and carrying the request id and action digest it was read with (so the guard
refuses it if the request changed or was answered meanwhile), the approver's name when given
(with server auth the server's authenticated user is the approver, and a different ``--as`` is
refused), and a signature with ``--key``.

A token for the server's auth comes from ``--token`` or ``$WARDEN_SERVER_TOKEN`` (sent as
``Authorization: Bearer``); ``$LANGGRAPH_API_KEY`` is honoured by the SDK. Neither is printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError, WardenError
from .guards.approval import APPROVAL_REQUEST_KIND, ApprovalRequest, approve, edit, reject
from .keys import SigningKey

__all__ = ["ServerError", "RefusedAnswer", "pending_on_server", "decide_on_server"]

_PAGE = 100


class ServerError(WardenError):
    """The server could not be reached, or answered with an error (the message says which)."""


class RefusedAnswer(WardenError):
    """The guard on the server refused the answer; the run stays paused."""


def _client(url: str, token: str | None) -> Any:
    try:
        from langgraph_sdk import get_sync_client
    except ImportError:
        raise ConfigurationError(
            "--server needs langgraph-sdk: pip install 'langgraph-warden[server]'"
        ) from None
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return get_sync_client(url=url, headers=headers, timeout=60)


def _call(what: str, url: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one SDK call; its failure becomes one line naming the server (never the token)."""
    try:
        return fn(*args, **kwargs)
    except WardenError:
        raise
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        detail = f"HTTP {status}" if status else type(exc).__name__
        if status == 404:
            raise ServerError(f"{what} on {url}: not found (HTTP 404); check the thread id") from None
        if status in (401, 403):
            raise ServerError(f"{what} on {url}: {detail}, the server refused the credentials; pass --token "
                              "(or set WARDEN_SERVER_TOKEN)") from None
        raise ServerError(f"{what} on {url} failed ({detail}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def _approvals(client: Any, url: str, thread: str) -> list[tuple[str, ApprovalRequest]]:
    """The thread's pending warden approval requests, each with the id of the interrupt that holds it.

    Read from the thread's *state*, not the thread record: after a refused answer the server marks
    the thread ``error`` and clears the record's interrupts, while the checkpoint still holds the
    pending interrupt (the guard refused the answer before LangGraph recorded it).
    """
    state = _call(f"reading the state of thread {thread!r}", url, client.threads.get_state, thread)
    out: list[tuple[str, ApprovalRequest]] = []
    for item in state.get("interrupts") or []:
        value = item.get("value") if isinstance(item, Mapping) else None
        if isinstance(value, Mapping) and value.get("kind") == APPROVAL_REQUEST_KIND:
            out.append((str(item.get("id")), ApprovalRequest.from_dict(value)))
    return out


def _paused_threads(client: Any, url: str) -> list[str]:
    """Threads that may hold a pending approval: interrupted, or errored by a refused answer."""
    found: list[str] = []
    for status in ("interrupted", "error"):
        offset = 0
        while True:
            page = _call(f"listing {status} threads", url, client.threads.search, status=status, limit=_PAGE, offset=offset)
            found.extend(str(t["thread_id"]) for t in page)
            offset += len(page)
            if len(page) < _PAGE:
                break
    return found


def pending_on_server(url: str, token: str | None, thread: str | None = None) -> list[tuple[str, ApprovalRequest]]:
    """``(interrupt id, request)`` of every pending warden approval on the server (or one thread)."""
    client = _client(url, token)
    threads = [thread] if thread is not None else _paused_threads(client, url)
    return [pair for t in threads for pair in _approvals(client, url, t)]


def hitl_decision(native: Mapping[str, Any], req: ApprovalRequest) -> dict[str, Any]:
    """Warden's answer (``approve``/``reject``/``edit``) as one HITL decision, every field kept (the signature covers them)."""
    doc: dict[str, Any] = {"type": native["decision"], "request_id": native["request_id"],
                           "action_digest": native["action_digest"], "approver": native["approver"]}
    if native.get("message") is not None:
        doc["message"] = native["message"]
    if native["decision"] == "edit":
        doc["edited_action"] = {"name": req.tool, "args": dict(native["args"])}
    if native.get("key_id") is not None:
        doc["key_id"], doc["signature"] = native["key_id"], native["signature"]
    return doc


def decide_on_server(
    url: str,
    token: str | None,
    thread: str,
    request_id: str,
    decision: str,
    *,
    approver: str | None,
    message: str | None = None,
    args: Mapping[str, Any] | None = None,
    key: SigningKey | None = None,
    assistant: str | None = None,
) -> dict[str, Any]:
    """Answer one pending request through the server and wait for the resumed run.

    Returns ``{"result": <the tool's message or None>, "pending": [request ids still pending]}``;
    raises :class:`RefusedAnswer` if the guard refused the answer (the run stays paused) and
    :class:`ServerError` / ``ConfigurationError`` for what the command could not do.
    """
    client = _client(url, token)
    record = _call(f"reading thread {thread!r}", url, client.threads.get, thread)
    pending = {r.request_id: (iid, r) for iid, r in _approvals(client, url, thread)}
    if request_id not in pending:
        raise ConfigurationError(
            f"no pending approval request {request_id!r} on thread {thread!r}"
            + (f"; pending: {sorted(pending)}" if pending else "; nothing is pending there")
        )
    interrupt_id, req = pending[request_id]
    answer = _answer(req, decision, approver, message, args, key)
    metadata = record.get("metadata") or {}
    assistant_id = assistant or metadata.get("assistant_id") or metadata.get("graph_id")
    if not assistant_id:
        raise ConfigurationError(f"thread {thread!r} names no assistant (metadata.assistant_id); pass --assistant")
    out = _call(
        f"resuming thread {thread!r}", url, client.runs.wait, thread, assistant_id,
        command={"resume": {interrupt_id: {"decisions": [answer]}}}, raise_error=False,
    )
    error = out.get("__error__") if isinstance(out, Mapping) else None
    still = [r.request_id for _, r in _approvals(client, url, thread)]
    if request_id in still:
        detail = (error or {}).get("message") if isinstance(error, Mapping) else None
        raise RefusedAnswer(detail or f"the server did not accept the answer to {request_id!r}; it is still pending")
    if error:
        raise ServerError(f"the resumed run on thread {thread!r} failed: {error.get('message', error)}")
    return {"result": _tool_result(out, req.tool_call_id), "pending": still}


def _answer(
    req: ApprovalRequest, decision: str, approver: str | None, message: str | None, args: Mapping[str, Any] | None,
    key: SigningKey | None,
) -> dict[str, Any]:
    """The HITL decision answering ``req``; without ``approver`` the server fills in its authenticated user."""
    if approver is None and key is not None:
        raise ConfigurationError("--key signs the approver's name: pass --as with it")
    name = approver or "-"  # placeholder, dropped below: the server fills in its authenticated user
    if decision == "approve":
        native = approve(req, name, message=message, key=key)
    elif decision == "reject":
        native = reject(req, name, message=message or "", key=key)
    else:
        native = edit(req, name, dict(args or {}), message=message, key=key)
    answer = hitl_decision(native, req)
    if approver is None:
        answer.pop("approver")
    return answer


def _tool_result(out: Any, tool_call_id: str) -> str | None:
    """The resumed call's tool message in the run's output, as text (None if it did not run)."""
    result = None
    for m in (out or {}).get("messages", []) if isinstance(out, Mapping) else []:
        if isinstance(m, Mapping) and m.get("tool_call_id") == tool_call_id:
            content = m.get("content")
            result = content if isinstance(content, str) else str(content)
    return result
