"""Run governed graphs on LangGraph Agent Server (``langgraph dev``, self-hosted or managed).

Why a module of its own: on Agent Server the server, not the user's code, opens the checkpointer
and invokes the graph, so everything ``Warden.open(...)`` and ``warden.start_run(...)`` do in a
script must come from configuration instead. This module is that configuration:

* ``langgraph.json`` → ``"checkpointer": {"path": "langgraph_warden.server.checkpointer"}`` — an
  async context manager yielding the process's :class:`WardenSaver`, opened from the environment
  (:class:`ServerSettings`), which implements every optional method the server probes for
  (``adelete_thread``, ``adelete_for_runs``, ``acopy_thread``, ``aprune``, ``aget_iter``);
* :func:`graph_factory` — the graph module's pattern: build the guarded graph once per process
  with the same :class:`Warden` (one saver, so the checkpointer and the guard share one ledger);
* the guard reads each run's charter from the run (the authenticated user, run metadata,
  the assistant's or the run's config: :mod:`langgraph_warden.guards.run_charter`).

Everything blocking (opening the database, migrations, reading keys) runs in a worker thread:
the server's event loop must not block (``langgraph dev`` fails such calls).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from .checkpointers import DEFAULT_WORKLOAD_ID, WardenSaver
from .errors import ConfigurationError
from .guards.run_charter import NO_OWNER_HINT, charter_from_run
from .keys import b64u_decode
from .warden import Warden

__all__ = ["ServerSettings", "checkpointer", "server_warden", "graph_factory", "ENV_DATABASE_URL"]

ENV_DATABASE_URL = "WARDEN_DATABASE_URL"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What the server's Warden is opened with, read from environment variables.

    ===============================  ==============================================================
    ``WARDEN_DATABASE_URL``          required: ``sqlite:///path.db`` or ``postgresql+psycopg://...``
    ``WARDEN_KEY_DIR``               the signing keys in private files there (else the OS keyring)
    ``WARDEN_EPHEMERAL_KEYS=1``      keys in memory, for ``langgraph dev`` and tests only
    ``WARDEN_TRUSTED_KEY_IDS``       comma-separated key ids whose signatures are accepted
    ``WARDEN_HEAD_STORE_DIR``        keep each thread's newest signed head in files there
    ``WARDEN_WORKLOAD_ID``           the workload's SPIFFE id
    ``WARDEN_POLICY``                a ``.rego`` / ``.cedar`` policy file (default: the shipped one)
    ``WARDEN_MODE``                  ``enforce`` (default) or ``monitor``
    ``WARDEN_APPROVER_KEYS``         a JSON file ``{approver: base64url Ed25519 public key}``
    ===============================  ==============================================================
    """

    database_url: str
    ephemeral_keys: bool = False
    key_dir: str | None = None
    trusted_key_ids: tuple[str, ...] | None = None
    head_store_dir: str | None = None
    workload_id: str = DEFAULT_WORKLOAD_ID
    policy: str | None = None
    mode: str = "enforce"
    approver_keys_file: str | None = None
    #: the server has custom auth (``LANGGRAPH_AUTH``, set by the server from langgraph.json's "auth"):
    #: owners come only from authenticated users.
    server_auth: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        """Read the settings; a missing database URL or contradictory keys raise ``ConfigurationError``."""
        env = os.environ if env is None else env
        url = (env.get(ENV_DATABASE_URL) or "").strip()
        if not url:
            raise ConfigurationError(
                f"{ENV_DATABASE_URL} is not set: the warden checkpointer of this Agent Server needs the database its "
                "signed history lives in, e.g. sqlite:////data/warden.db or postgresql+psycopg://user@host/db. Set it "
                "in langgraph.json (\"env\") or in the server's environment"
            )
        ephemeral = (env.get("WARDEN_EPHEMERAL_KEYS") or "").strip().lower() in _TRUE
        key_dir = (env.get("WARDEN_KEY_DIR") or "").strip() or None
        if ephemeral and key_dir:
            raise ConfigurationError(
                "both WARDEN_EPHEMERAL_KEYS and WARDEN_KEY_DIR are set: keep keys in files (WARDEN_KEY_DIR, for a real "
                "server) or in memory (WARDEN_EPHEMERAL_KEYS=1, for langgraph dev), not both"
            )
        trusted = tuple(k.strip() for k in (env.get("WARDEN_TRUSTED_KEY_IDS") or "").split(",") if k.strip())
        mode = (env.get("WARDEN_MODE") or "enforce").strip()
        if mode not in ("enforce", "monitor"):
            raise ConfigurationError(f"WARDEN_MODE is {mode!r}; use 'enforce' or 'monitor'")
        return cls(
            database_url=url,
            ephemeral_keys=ephemeral,
            key_dir=key_dir,
            trusted_key_ids=trusted or None,
            head_store_dir=(env.get("WARDEN_HEAD_STORE_DIR") or "").strip() or None,
            workload_id=(env.get("WARDEN_WORKLOAD_ID") or "").strip() or DEFAULT_WORKLOAD_ID,
            policy=(env.get("WARDEN_POLICY") or "").strip() or None,
            mode=mode,
            approver_keys_file=(env.get("WARDEN_APPROVER_KEYS") or "").strip() or None,
            server_auth=_has_custom_auth(env.get("LANGGRAPH_AUTH")),
        )

    def approver_keys(self) -> dict[str, bytes]:
        """The registered approvers' public keys (empty without ``WARDEN_APPROVER_KEYS``)."""
        if self.approver_keys_file is None:
            return {}
        try:
            with open(self.approver_keys_file, encoding="utf-8") as fh:
                doc = json.load(fh)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            return {str(name): b64u_decode(str(key)) for name, key in doc.items()}
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"WARDEN_APPROVER_KEYS={self.approver_keys_file!r} could not be read ({exc}); it must be a JSON file "
                '{"approver name": "base64url Ed25519 public key", ...}'
            ) from None

    def open(self) -> Warden:
        """Open (and migrate) the database and wire a :class:`Warden` whose guard reads charters from runs."""
        head_store = None
        if self.head_store_dir is not None:
            from .anchors import FileHeadStore

            head_store = FileHeadStore(self.head_store_dir)
        warden = Warden.open(
            self.database_url,
            ephemeral_keys=self.ephemeral_keys,
            key_dir=self.key_dir,
            workload_id=self.workload_id,
            trusted_key_ids=self.trusted_key_ids,
            head_store=head_store,
            policy=self.policy,
            mode=self.mode,
            approver_keys=self.approver_keys(),
        )
        warden.guard.charter_source = functools.partial(charter_from_run, require_auth=self.server_auth)
        warden.guard.charter_hint = NO_OWNER_HINT
        return warden


def _has_custom_auth(value: str | None) -> bool:
    """Whether the server's ``LANGGRAPH_AUTH`` (JSON of langgraph.json's "auth") configures a custom auth handler."""
    try:
        doc = json.loads(value) if value else None
    except ValueError:
        return True  # something is configured that we cannot read: err towards requiring auth
    return isinstance(doc, dict) and bool(doc.get("path"))


#: Process-wide on purpose: Agent Server imports the checkpointer entry point and each graph factory
#: separately, and they must share one Warden (one ledger, one guard, one set of in-flight claims).
_lock = threading.Lock()
_warden: Warden | None = None
_users = 0


def server_warden() -> Warden:
    """This process's Warden, opened from :class:`ServerSettings` on first use (blocking: call it off the loop)."""
    global _warden
    with _lock:
        if _warden is None:
            _warden = ServerSettings.from_env().open()
        return _warden


def _release() -> None:
    global _warden, _users
    with _lock:
        _users -= 1
        if _users == 0 and _warden is not None:
            _warden.close()
            _warden = None


@asynccontextmanager
async def checkpointer() -> AsyncIterator[WardenSaver]:
    """The Agent Server checkpointer: ``"checkpointer": {"path": "langgraph_warden.server.checkpointer"}``.

    Yields the saver of :func:`server_warden` (the server may enter it once per event loop; the
    Warden is shared and closed when the last one exits).
    """
    global _users
    warden = await asyncio.to_thread(server_warden)
    with _lock:
        _users += 1
    try:
        yield warden.checkpointer
    finally:
        await asyncio.to_thread(_release)


def graph_factory(build: Callable[[Warden], Any]) -> Callable[..., Any]:
    """Turn ``build(warden) -> graph`` into an Agent Server graph factory (``"graphs"`` in langgraph.json).

    ``build`` runs once per process, in a worker thread, with :func:`server_warden`: declare the tools
    (``warden.tools.register``) and return the graph with ``warden.middleware()`` (``create_agent``) or
    ``ToolNode(..., awrap_tool_call=warden.guard.awrap)``, compiled *without* a checkpointer — the
    server passes its own, which is this Warden's saver. ::

        @graph_factory
        def agent(warden):
            warden.tools.register(ToolSpec("issue_refund", irreversible=True))
            return create_agent(model, [issue_refund], middleware=[warden.middleware()])
    """
    built: list[Any] = []  # [warden, graph]: the graph built with that Warden
    guard = threading.Lock()

    def once() -> Any:
        with guard:
            warden = server_warden()
            if not built or built[0] is not warden:  # first use, or the Warden was closed and reopened
                built[:] = [warden, build(warden)]
            return built[1]

    async def factory(config: Any) -> Any:
        current = built
        if current and current[0] is _warden:
            return current[1]
        return await asyncio.to_thread(once)

    factory.__name__ = getattr(build, "__name__", "graph")
    factory.__doc__ = build.__doc__
    return factory
