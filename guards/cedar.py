"""Cedar engine via ``cedarpy``: the same policy input in, the same decision document out.

Cedar answers one yes/no question per request, so the decision is made of two
evaluations in one ``is_authorized_batch`` call:

* ``Action::"call"`` — may this call happen at all? When denied, the ``@id``
  annotations of the matching ``forbid`` policies are the deny reasons.
* ``Action::"call_without_approval"`` — may it happen without a human? When
  denied, the ``@id``\\ s of the matching forbids are the approval reasons.

Mapping of the policy input (either version; the engine is built for one):

* principal ``Run::"<thread_id>"`` with ``owner``, ``intent``, ``purpose`` (when set),
  ``risk_tier``, ``allowed_tools`` / ``allowed_data_classes`` (only when restricted);
* resource ``Tool::"<name>"`` with every ToolSpec field plus ``known``;
* context ``{workload, target (when a string/number/bool), calls_of_tool, calls_in_run,
  limits: {per_tool, per_run}}`` and, for version 2, ``run_counts`` / ``tool_counts``
  (the run's and this tool's counters, ints only). ``calls_of_tool`` / ``calls_in_run``
  count calls that were not denied, as default.rego does: version 2 reads them off the
  aggregates (``allowed + require_approval``), so their cost does not grow with the
  thread; version 1 scans the history list (Cedar has no aggregation).
  ``args`` are not passed: Cedar has no floats or nulls.

Scopes and ``ttl_seconds`` are not Cedar decisions: an allowed call gets the tool's
declared scopes and the ttl of its risk tier from ``ttl_seconds`` (same defaults
as default.rego). Any Cedar evaluation error fails closed: Cedar skips a policy
whose condition errors, which for a ``forbid`` would fail open.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langgraph_warden import canonical

from .policy import (
    HISTORY_COUNTERS,
    POLICY_INPUT_VERSION,
    REASON_MALFORMED_DECISION,
    MalformedDecisionError,
    PolicyDecision,
    PolicyLoadError,
    approval_triggers,
    check_input_version,
    decision_from_document,
    fail_closed,
    input_version_arg,
    is_fatal,
    safe_input_digest,
)

__all__ = ["CedarEngine", "DEFAULT_LIMITS", "DEFAULT_TTL_SECONDS", "CedarEvaluationError"]

DEFAULT_LIMITS: Mapping[str, int] = {"per_tool": 20, "per_run": 100}
DEFAULT_TTL_SECONDS: Mapping[str, int] = {"low": 300, "medium": 120, "high": 60}
_FALLBACK_TTL = 60

ACTION_CALL = {"type": "Action", "id": "call"}
ACTION_CALL_WITHOUT_APPROVAL = {"type": "Action", "id": "call_without_approval"}

_TOKEN_RE = re.compile(r"`([^`]+)`")


class CedarEvaluationError(RuntimeError):
    """Cedar reported errors while evaluating policies (their conditions were skipped)."""


def _statements(source: str) -> list[tuple[int, str]]:
    """Split Cedar text into ``(offset, text)`` statements at ``;`` outside strings/comments."""
    out: list[tuple[int, str]] = []
    start, i, n = 0, 0, len(source)
    while i < n:
        ch = source[i]
        if ch == '"':
            i += 1
            while i < n and source[i] != '"':
                i += 2 if source[i] == "\\" else 1
        elif source.startswith("//", i):
            nl = source.find("\n", i)
            i = n if nl < 0 else nl
            continue
        elif ch == ";":
            out.append((start, source[start:i + 1]))
            start = i + 1
        i += 1
    if source[start:].strip():
        out.append((start, source[start:]))
    return out


def _locate(source: str, offset: int) -> tuple[int, int]:
    prefix = source[:offset]
    return prefix.count("\n") + 1, offset - (prefix.rfind("\n") + 1) + 1


def _cedar_load_error(file: str, source: str, exc: Exception) -> PolicyLoadError:
    """cedarpy's parse errors carry no position: find the first statement that
    fails on its own, then the offending token inside it (best effort)."""
    import cedarpy

    message = str(exc).strip() or type(exc).__name__
    for offset, text in _statements(source):
        if not text.strip() or text.strip() == ";" or _only_comments(text):
            continue
        try:
            cedarpy.PolicySet.from_str(text)
        except ValueError as stmt_exc:
            message = str(stmt_exc).strip() or message
            lead = len(text) - len(text.lstrip())
            # skip comment lines preceding the statement
            body = text[lead:]
            while body.startswith("//"):
                nl = body.find("\n")
                lead += (nl + 1) if nl >= 0 else len(body)
                stripped = text[lead:]
                lead += len(stripped) - len(stripped.lstrip())
                body = text[lead:]
            pos = offset + lead
            token = _TOKEN_RE.search(message)
            if token:
                found = text.find(token.group(1), lead)
                if found >= 0:
                    pos = offset + found
            line, col = _locate(source, pos)
            return PolicyLoadError(f"Cedar policy {file}:{line}:{col}: {message}", file=file, line=line, column=col)
    return PolicyLoadError(f"Cedar policy {file}: {message}", file=file)


def _only_comments(text: str) -> bool:
    return all(not ln.strip() or ln.strip().startswith("//") for ln in text.splitlines())


def _context_scalar(value: Any) -> bool:
    return isinstance(value, (str, bool)) or (type(value) is int and -(2**63) <= value < 2**63)


class CedarEngine:
    """Cedar policy engine over the policy input.

    ``policies``: a ``.cedar`` file (or use :meth:`from_source`). ``limits`` and
    ``ttl_seconds`` play the role of ``data.warden_config`` in the Rego policy.
    ``input_version``: the policy input version to map (1 or 2); the other is denied.
    """

    def __init__(
        self,
        policies: str | os.PathLike[str],
        *,
        limits: Mapping[str, int] | None = None,
        ttl_seconds: Mapping[str, int] | None = None,
        name: str = "cedar",
        input_version: int = POLICY_INPUT_VERSION,
    ) -> None:
        self._input_version = input_version_arg(input_version, "CedarEngine")
        path = Path(policies)
        if not path.is_file():
            raise PolicyLoadError(f"CedarEngine: policy file {path} does not exist", file=str(path))
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyLoadError(f"CedarEngine: cannot read {path}: {exc}", file=str(path)) from exc
        self._setup(str(path), source, limits, ttl_seconds, name)

    @classmethod
    def from_source(
        cls,
        source: str,
        *,
        filename: str = "policy.cedar",
        limits: Mapping[str, int] | None = None,
        ttl_seconds: Mapping[str, int] | None = None,
        name: str = "cedar",
        input_version: int = POLICY_INPUT_VERSION,
    ) -> CedarEngine:
        engine = cls.__new__(cls)
        engine._input_version = input_version_arg(input_version, "CedarEngine")
        engine._setup(filename, source, limits, ttl_seconds, name)
        return engine

    def _setup(self, file: str, source: str, limits: Mapping[str, int] | None,
               ttl_seconds: Mapping[str, int] | None, name: str) -> None:
        import cedarpy

        self._limits = {**DEFAULT_LIMITS, **(limits or {})}
        self._ttl = {**DEFAULT_TTL_SECONDS, **(ttl_seconds or {})}
        for label, table in (("limits", self._limits), ("ttl_seconds", self._ttl)):
            for key, value in table.items():
                if type(value) is not int or value < 0:
                    raise PolicyLoadError(f"CedarEngine {label}[{key!r}]: expected an int >= 0, got {value!r}")
        try:
            self._policies = cedarpy.PolicySet.from_str(source)
        except ValueError as exc:
            raise _cedar_load_error(file, source, exc) from None
        if len(self._policies) == 0:
            raise PolicyLoadError(f"Cedar policy {file}: holds no policy; every call would be denied", file=file)
        self._name = name
        self._file = file
        self._revision = canonical.digest({"source": source, "limits": self._limits, "ttl": self._ttl})

    @property
    def name(self) -> str:
        return self._name

    @property
    def revision(self) -> str:
        return self._revision

    @property
    def input_version(self) -> int:
        """The policy input version this engine maps (the guard builds that document)."""
        return self._input_version

    # -- mapping -------------------------------------------------------------------

    def _request_parts(self, policy_input: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any], dict, dict]:
        run = policy_input["run"]
        tool = policy_input["tool"]
        run_attrs: dict[str, Any] = {"risk_tier": run["risk_tier"], "approval_triggers": approval_triggers(run)}
        for key in ("owner", "intent", "purpose"):
            if isinstance(run.get(key), str):
                run_attrs[key] = run[key]
        for key in ("allowed_tools", "allowed_data_classes"):
            if run.get(key) is not None:
                run_attrs[key] = list(run[key])
        tool_attrs = {
            "name": tool["name"],
            "known": bool(tool["known"]),
            "sensitivity": tool["sensitivity"],
            "data_classes": list(tool["data_classes"]),
            "irreversible": bool(tool["irreversible"]),
            "external": bool(tool["external"]),
            "escalates": bool(tool["escalates"]),
            "idempotent": bool(tool["idempotent"]),
            "scopes": list(tool["scopes"]),
        }
        principal = {"type": "Run", "id": run["thread_id"]}
        resource = {"type": "Tool", "id": tool["name"]}
        entities = [
            {"uid": principal, "attrs": run_attrs, "parents": []},
            {"uid": resource, "attrs": tool_attrs, "parents": []},
        ]
        context: dict[str, Any] = {"workload": policy_input["workload"]["id"], "limits": dict(self._limits)}
        if self._input_version == 2:
            history = policy_input["history"]
            run_counts = {k: history["run"][k] for k in HISTORY_COUNTERS}
            # The Rego default reads history.tool; a document from build_policy_input or
            # validate_policy_input carries it, equal to this lookup (checked there).
            tool_entry = history.get("tool") or history["tools"].get(tool["name"])
            tool_counts = {k: tool_entry[k] for k in HISTORY_COUNTERS} if tool_entry else dict.fromkeys(HISTORY_COUNTERS, 0)
            context["run_counts"], context["tool_counts"] = run_counts, tool_counts
            context["calls_of_tool"] = tool_counts["allowed"] + tool_counts["require_approval"]
            context["calls_in_run"] = run_counts["allowed"] + run_counts["require_approval"]
        else:
            counted = [h["tool"] for h in policy_input.get("history", ()) if h.get("decision") != "deny"]
            context["calls_of_tool"] = sum(1 for t in counted if t == tool["name"])
            context["calls_in_run"] = len(counted)
        target = policy_input.get("target")
        if _context_scalar(target):
            context["target"] = target
        return entities, context, principal, resource

    @staticmethod
    def _reasons(result: Any) -> list[str]:
        diagnostics = result.diagnostics
        annotations = diagnostics.id_annotations_by_reason
        return sorted({annotations.get(pid) or pid for pid in diagnostics.reasons})

    def evaluate(self, policy_input: Mapping[str, Any]) -> dict[str, Any]:
        """The decision document for ``policy_input`` (raises on Cedar errors)."""
        import cedarpy

        entities, context, principal, resource = self._request_parts(policy_input)
        requests = [
            {"principal": principal, "action": action, "resource": resource, "context": context}
            for action in (ACTION_CALL, ACTION_CALL_WITHOUT_APPROVAL)
        ]
        call, without_approval = cedarpy.is_authorized_batch(requests, self._policies, entities)
        errors = list(call.diagnostics.errors) + list(without_approval.diagnostics.errors)
        if errors:
            raise CedarEvaluationError("; ".join(map(str, errors))[:1000])
        if not call.allowed:
            return {
                "allow": False, "require_approval": False,
                "reasons": self._reasons(call) or ["no_permit"],
                "scopes": [], "ttl_seconds": 0, "obligations": {},
            }
        approval_reasons = [] if without_approval.allowed else (self._reasons(without_approval) or ["approval_required"])
        return {
            "allow": True,
            "require_approval": bool(approval_reasons),
            "reasons": approval_reasons,
            "scopes": list(policy_input["tool"]["scopes"]),
            "ttl_seconds": self._ttl.get(policy_input["run"]["risk_tier"], _FALLBACK_TTL),
            "obligations": {"rate_limit": dict(self._limits)},
        }

    def decide(self, policy_input: Mapping[str, Any]) -> PolicyDecision:
        """Evaluate; never raises for a policy problem (fails closed to a deny)."""
        refused = check_input_version(self, policy_input)
        if refused is not None:
            return refused
        digest = safe_input_digest(policy_input)
        try:
            return decision_from_document(
                self.evaluate(policy_input), engine=self._name, policy_revision=self._revision,
                input_digest=digest,
            )
        except MalformedDecisionError as exc:
            return fail_closed(self, policy_input, exc, reason=REASON_MALFORMED_DECISION, input_digest=digest)
        except BaseException as exc:  # pyo3 panics derive from BaseException
            if is_fatal(exc):
                raise
            return fail_closed(self, policy_input, exc, input_digest=digest)

    async def adecide(self, policy_input: Mapping[str, Any]) -> PolicyDecision:
        """Async :meth:`decide`; Cedar evaluation is CPU-bound and fast, so it runs inline."""
        await asyncio.sleep(0)
        return self.decide(policy_input)

    def __repr__(self) -> str:
        return f"CedarEngine(file={self._file!r}, input_version={self._input_version}, revision={self._revision[:19]}...)"
