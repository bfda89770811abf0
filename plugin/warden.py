"""``Warden``: one object wiring the signed checkpointer, the guard, credentials and audit.

    warden = Warden.open("sqlite:///agent.db", ephemeral_keys=True)   # demo keys, said explicitly
    warden.tools.register(ToolSpec("issue_refund", irreversible=True, scopes=("payments:write",)))
    graph = builder.compile(checkpointer=warden.checkpointer)        # ToolNode(..., wrap_tool_call=warden.guard)
    config = warden.start_run("ticket-42", owner="alice@example.com", intent="refund order 1234")
    graph.invoke(inputs, config)
    warden.audit("ticket-42")                                           # rich HTML in a notebook

This is the only module (with the CLI and audit) that imports both
``checkpointers`` and ``guards``; they never import each other.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from .anchors import HeadStore
from .audit import AuditTrail, reconstruct, view_snapshot_findings
from .charter import RiskTier, RunCharter
from .checkpointers import DEFAULT_WORKLOAD_ID, VerificationReport, WardenSaver
from .checkpointers.leases import SqlLeaseStore
from .errors import ConfigurationError
from .event_payloads import ApprovalAnswered, ApprovalRequested
from .events import EventDraft, EventKind
from .guards.approval import ApprovalRequest
from .guards.credentials import CredentialBroker, CredentialProvider, LocalTokenProvider, revoke_outstanding
from .guards.guard import ToolGuard
from .guards.policy import PolicyEngine
from .guards.tools import ToolRegistry, UnknownTools
from .identity import EphemeralWorkloadKeyStore, LocalIdentityProvider, WorkloadKeyStore, default_workload_key_store
from .keyfiles import FileKeyStore, FileWorkloadKeyStore
from .keys import EphemeralKeyStore, KeyStore, default_key_store

__all__ = ["Warden"]


#: Process-wide on purpose: the shipped policy never changes in a process, and compiling it costs a subprocess.
_DEFAULT_POLICY: PolicyEngine | None = None
_DEFAULT_POLICY_LOCK = threading.Lock()


def _default_policy() -> PolicyEngine:
    """The shipped Rego policy, compiled once per process (the engine is thread-safe)."""
    global _DEFAULT_POLICY
    from .guards.policy import DEFAULT_REGO_POLICY
    from .guards.rego import RegoEngine

    with _DEFAULT_POLICY_LOCK:
        if _DEFAULT_POLICY is None:
            _DEFAULT_POLICY = RegoEngine(DEFAULT_REGO_POLICY)
        return _DEFAULT_POLICY


def _policy_engine(policy: Any) -> PolicyEngine:
    """``policy=``: an engine, or the path of a policy file loaded by the engine its extension names.

    Checked here so a wrong value fails at ``open`` with the right call named, not at the first
    tool call with an ``AttributeError``.
    """
    engines = ("RegoEngine('policy.rego'), CedarEngine('policy.cedar'), OpaServerEngine(url)"
               " from langgraph_warden.guards.rego/.cedar/.opa")
    if isinstance(policy, (str, os.PathLike)):
        text = os.fspath(policy)
        if "\n" in text or text.lstrip().startswith(("package ", "permit", "forbid")):
            raise ConfigurationError("policy= got policy text; pass RegoEngine.from_source(text) or "
                                     "CedarEngine.from_source(text), or the path of a .rego/.cedar file")
        path = Path(text)
        suffix = path.suffix.lower()
        if suffix not in (".rego", ".cedar") and not path.is_dir():
            raise ConfigurationError(f"policy={text!r}: expected a .rego or .cedar file, a directory of .rego "
                                     f"files, or an engine: {engines}")
        if not path.exists():
            raise ConfigurationError(f"policy={text!r}: no such file ({path.resolve()}); check the path, or "
                                     "omit policy= to use the shipped default policy")
        if suffix == ".cedar":
            from .guards.cedar import CedarEngine

            return CedarEngine(path)
        from .guards.rego import RegoEngine

        return RegoEngine(path)
    if not callable(getattr(policy, "decide", None)):
        raise ConfigurationError(f"policy= expects a policy engine or a .rego/.cedar path, got "
                                 f"{type(policy).__name__}: use {engines}")
    return policy


class Warden:
    """Durable, governed execution for one LangGraph application."""

    def __init__(
        self,
        saver: WardenSaver,
        *,
        policy: PolicyEngine | str | os.PathLike[str] | None = None,
        tools: ToolRegistry | None = None,
        identity: LocalIdentityProvider | None = None,
        providers: Sequence[CredentialProvider] = (),
        credentials: bool = True,
        max_credential_ttl_seconds: int = 300,
        mode: str = "enforce",
        approver_keys: Mapping[str, bytes] | None = None,
        default_charter: RunCharter | None = None,
        default_provider: str | None = None,
        routes: Mapping[str, str] | None = None,
        unknown_tools: UnknownTools = "deny",
    ) -> None:
        """``policy``: a policy engine, or the path of a ``.rego`` / ``.cedar`` file (or a directory of
        ``.rego`` files) loaded by the matching engine; default: the shipped Rego policy.

        ``default_provider`` names the provider a tool gets unless ``routes`` maps it (tool → provider
        name) to another; by default the built-in local token provider ("local").

        ``unknown_tools``: a call to a tool ``tools`` does not declare is denied whatever the policy
        answers (``"deny"``, the default), or decided by the policy alone (``"policy"``)."""
        self.saver = saver
        self.ledger = saver.ledger
        self.tools = tools if tools is not None else ToolRegistry()
        self.policy = _policy_engine(policy) if policy is not None else _default_policy()
        self.identity = identity
        self.lease_store = SqlLeaseStore(saver.engine)
        self.broker: CredentialBroker | None = None
        if credentials:
            all_providers = list(providers)
            if identity is not None:
                all_providers.insert(
                    0, LocalTokenProvider(identity, issuer=str(identity.spiffe_id), lease_store=self.lease_store)
                )
            if all_providers:
                self.broker = CredentialBroker(
                    all_providers,
                    self.ledger,
                    max_ttl_seconds=max_credential_ttl_seconds,
                    lease_store=self.lease_store,
                    default_provider=default_provider,
                )
                for tool_name, provider_name in (routes or {}).items():
                    self.broker.route(tool_name, provider_name)
        self.guard = ToolGuard(
            self.ledger,
            self.policy,
            self.tools,
            workload_id=self.ledger.workload_id,
            broker=self.broker,
            mode=mode,  # type: ignore[arg-type]
            approver_keys=approver_keys,
            default_charter=default_charter,
            unknown_tools=unknown_tools,
        )

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def open(
        cls,
        url: str = "sqlite:///warden.db",
        *,
        ephemeral_keys: bool = False,
        key_dir: str | os.PathLike[str] | None = None,
        key_store: KeyStore | None = None,
        workload_key_store: WorkloadKeyStore | None = None,
        workload_id: str = DEFAULT_WORKLOAD_ID,
        trusted_key_ids: Sequence[str] | None = None,
        head_store: HeadStore | None = None,
        **kwargs: Any,
    ) -> Warden:
        """Open (and migrate) the database and wire everything with the embedded defaults.

        Both keys (the Ed25519 signing key and the ES256 workload key) come from the OS
        keyring, or from private files in ``$WARDEN_KEY_DIR`` when it is set. ``key_dir=DIR``
        keeps both in files (servers, CI: :mod:`langgraph_warden.keyfiles`);
        ``ephemeral_keys=True`` keeps both in memory (demos and tests; marked ``ephemeral``
        in every signed record). ``trusted_key_ids`` and ``head_store`` are trust anchors
        kept outside the database (see :class:`~langgraph_warden.checkpointers.WardenSaver`).
        """
        chosen = [n for n, on in (("ephemeral_keys=True", ephemeral_keys), ("key_dir", key_dir is not None),
                                  ("key_store/workload_key_store", key_store is not None or workload_key_store is not None)) if on]
        if len(chosen) > 1:
            raise ConfigurationError(f"pass one way to hold the keys, not {' and '.join(chosen)}")
        ks: KeyStore
        wks: WorkloadKeyStore
        if ephemeral_keys:
            ks, wks = EphemeralKeyStore(), EphemeralWorkloadKeyStore()
        elif key_dir is not None:
            ks, wks = FileKeyStore(key_dir), FileWorkloadKeyStore(key_dir)
        else:
            ks, wks = key_store or default_key_store(), workload_key_store or default_workload_key_store()
        saver = WardenSaver.from_url(
            url, key_store=ks, workload_id=workload_id, trusted_key_ids=trusted_key_ids, head_store=head_store
        )
        try:
            identity = kwargs.pop("identity", None) or LocalIdentityProvider(workload_id, wks)
            return cls(saver, identity=identity, **kwargs)
        except BaseException:
            saver.close()
            raise

    def close(self) -> None:
        self.saver.close()

    def __repr__(self) -> str:
        url = self.saver.engine.url.render_as_string(hide_password=True)
        return (
            f"<Warden {url} workload={self.ledger.workload_id} policy={self.policy.name}@{self.policy.revision[:19]} "
            f"tools={len(self.tools)} unknown_tools={self.guard.unknown_tools} mode={self.guard.mode} credentials={'on' if self.broker is not None else 'off'}>"
        )

    def threads(self) -> list[str]:
        """Ids of the threads (runs) this database holds history for, sorted."""
        with self.saver.engine.connect() as conn:
            return self.ledger.thread_ids(conn)

    def __enter__(self) -> Warden:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- wiring
    @property
    def checkpointer(self) -> WardenSaver:
        return self.saver

    def middleware(self) -> Any:
        """Middleware for ``langchain.agents.create_agent(..., middleware=[warden.middleware()])``.

        Imported here: ``langchain.agents`` costs ~0.7 s to import and only this path needs it.
        """
        from .guards.middleware import WardenMiddleware

        return WardenMiddleware(self.guard)

    # ------------------------------------------------------------------ runs
    def start_run(
        self,
        thread_id: str,
        charter: RunCharter | None = None,
        *,
        owner: str | None = None,
        intent: str | None = None,
        risk_tier: RiskTier = "medium",
        purpose: Mapping[str, Any] | None = None,
        allowed_tools: Sequence[str] | None = None,
        allowed_data_classes: Sequence[str] | None = None,
        **profile_overrides: Any,
    ) -> dict[str, Any]:
        """Record the run's charter as its signed ``run.started`` event; return the graph config."""
        if charter is None:
            if owner is None or intent is None:
                raise ConfigurationError("start_run needs a charter, or owner= and intent=")
            charter = RunCharter(
                owner=owner,
                intent=intent,
                risk_tier=risk_tier,
                purpose=purpose,
                allowed_tools=tuple(allowed_tools) if allowed_tools is not None else None,
                allowed_data_classes=tuple(allowed_data_classes) if allowed_data_classes is not None else None,
            )
        if profile_overrides:
            charter = charter.with_profile(**profile_overrides)
        if self.ledger.head(thread_id) is not None:
            # The thread has history: this is a resume, possibly after a crash. A step that died
            # holding a credential never reached its `finally`; end those leases before anything runs.
            self.recover(thread_id)
        existing = self.guard.recorded_charter(thread_id)  # the guard's verified view: no re-read of the history
        if existing is None or existing.to_dict() != charter.to_dict():
            self.guard.record(
                thread_id,
                [
                    EventDraft(
                        kind=EventKind.RUN_STARTED,
                        payload={"charter": charter.to_dict(), "workload_id": self.ledger.workload_id, "source": "api"},
                    )
                ],
            )
        return {"configurable": {"thread_id": thread_id}}

    def charter(self, thread_id: str) -> RunCharter | None:
        return self.guard.charter(thread_id)

    def pending_approvals(self, thread_id: str | None = None) -> list[ApprovalRequest]:
        """Approval requests with no answer yet, across threads (or one)."""
        with self.saver.engine.connect() as conn:
            threads = [thread_id] if thread_id else self.ledger.thread_ids(conn)
        out: list[ApprovalRequest] = []
        finals = {EventKind.APPROVAL_GRANTED, EventKind.APPROVAL_REJECTED, EventKind.APPROVAL_EDITED, EventKind.APPROVAL_EXPIRED}
        for t in threads:
            open_requests: dict[str | None, ApprovalRequest] = {}
            for e in self.ledger.events(t, kinds=[EventKind.APPROVAL_REQUESTED, *finals]):
                rid = cast(ApprovalAnswered, e.payload).get("request_id")  # every kind read here names its request
                if e.kind == EventKind.APPROVAL_REQUESTED:
                    open_requests[rid] = ApprovalRequest.from_dict(cast(ApprovalRequested, e.payload)["request"])
                else:
                    open_requests.pop(rid, None)
            out.extend(open_requests.values())
        return out

    def revoke_run(self, thread_id: str) -> list[str]:
        """Revoke every outstanding credential lease of a run (crash recovery)."""
        return self.recover(thread_id)

    def recover(self, thread_id: str) -> list[str]:
        """Crash recovery for one run: revoke and record every lease it left outstanding.

        Called by :meth:`start_run` when the thread already has history. Each lease
        gets a ``credential.revoked`` event (reason ``run_revoked``, ``recovered: true``);
        per-step tokens land on the revocation list, so they fail ``verify`` at once.
        Works without the providers that issued them. Returns the revoked lease ids.

        Do not call it for a thread that another live process is executing right now:
        that process's in-flight credential would be revoked under it.
        """
        providers = self.broker.providers if self.broker is not None else None
        clock = self.broker.clock if self.broker is not None else time.time
        return revoke_outstanding(self.lease_store, self.ledger, thread_id, providers=providers, clock=clock)

    # ----------------------------------------------------------------- audit
    def audit(self, thread_id: str) -> AuditTrail:
        """The verified, reconstructed audit trail of one thread."""
        events, report = self.ledger.history(thread_id)
        if report.ok:
            report.findings.extend(view_snapshot_findings(thread_id, events))
        return reconstruct(thread_id, events, report)

    def verify(self, thread_id: str | None = None, **kwargs: Any) -> VerificationReport:
        """The ledger's offline verification, and every view snapshot recomputed from its history."""
        report = self.ledger.verify(thread_id=thread_id, **kwargs)
        for tid, chain in report.threads.items():
            if chain.ok:
                found = view_snapshot_findings(tid, self.ledger.history(tid)[0])
                chain.findings.extend(found)
                report.findings.extend(found)
        return report
