"""Embedded Rego engine on ``regopy`` (Microsoft's rego-cpp bindings): no server needed.

Why the care at load time: rego-cpp does not implement every OPA builtin (for
example ``net.cidr_contains`` or ``http.send``). A call to a missing builtin
compiles, then evaluates to *undefined* — and a ``deny`` rule built on it silently
stops matching, which fails open. :class:`RegoEngine` therefore compiles the
policy once into a bundle, reads the list of builtins the compiled plan calls,
and refuses to load if any of them is not available, naming the builtin and where
it is called.

Evaluation reuses the one compiled bundle; the interpreter is not thread-safe,
so calls are serialised with a lock. ``strict_built_in_errors`` is on, so a
builtin that fails at runtime (e.g. a type error) is an error — and a deny —
rather than undefined.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from langgraph_warden import canonical
from langgraph_warden.guards.rego_projection import input_projection, project

from .policy import (
    POLICY_INPUT_VERSION,
    REASON_MALFORMED_DECISION,
    REASON_POLICY_UNDEFINED,
    MalformedDecisionError,
    PolicyDecision,
    PolicyLoadError,
    UnsupportedBuiltinError,
    check_input_version,
    decision_from_document,
    fail_closed,
    input_version_arg,
    is_fatal,
    safe_input_digest,
)

__all__ = ["DEFAULT_QUERY", "RegoEngine", "RegoEvaluationError", "PolicyUndefined"]

DEFAULT_QUERY = "data.warden.decision"
_QUERY_RE = re.compile(r"^data(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_ERROR_LOC_RE = re.compile(r"\(error \d+:(?P<file>[^|\n]*)\|(?P<offset>\d+)\|(?P<length>\d+)")
_ERROR_MSG_RE = re.compile(r"\(errormsg \d+:(?P<msg>[^\n]*)\)")


class RegoEvaluationError(RuntimeError):
    """rego-cpp reported an error while evaluating (conflicting rules, builtin error...)."""


class PolicyUndefined(LookupError):
    """The query evaluated to undefined: no rule produced a decision."""


def _line_col(source: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a byte offset into ``source``."""
    prefix = source.encode("utf-8")[:offset].decode("utf-8", errors="ignore")
    line = prefix.count("\n") + 1
    return line, len(prefix) - (prefix.rfind("\n") + 1) + 1


def _load_error(exc: Exception, sources: Mapping[str, str], stage: str) -> PolicyLoadError:
    """Turn rego-cpp's error s-expression into a message with file:line:column."""
    text = str(exc)
    locs = list(_ERROR_LOC_RE.finditer(text))
    msgs = [m.group("msg") for m in _ERROR_MSG_RE.finditer(text)]
    if not locs:
        detail = "; ".join(msgs) or text.strip()
        return PolicyLoadError(f"Rego policy could not be {stage}: {detail}")
    lines = []
    first: tuple[str, int, int] | None = None
    for loc, msg in zip(locs, msgs + [""] * len(locs), strict=False):
        file = loc.group("file")
        line, col = _line_col(sources.get(file, ""), int(loc.group("offset")))
        if first is None:
            first = (file, line, col)
        lines.append(f"{file}:{line}:{col}: {msg}")
    assert first is not None
    return PolicyLoadError(
        f"Rego policy could not be {stage}:\n  " + "\n  ".join(lines),
        file=first[0], line=first[1], column=first[2],
    )


def _collect_sources(policies: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> dict[str, str]:
    """Read policy files (a directory means every ``*.rego`` in it, sorted)."""
    items = [policies] if isinstance(policies, (str, os.PathLike)) else list(policies)
    if not items:
        raise PolicyLoadError("RegoEngine: no policy given; pass a .rego file or a directory of them")
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.rego") if p.is_file())
            if not found:
                raise PolicyLoadError(f"RegoEngine: directory {path} holds no *.rego file", file=str(path))
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise PolicyLoadError(f"RegoEngine: policy file {path} does not exist", file=str(path))
    sources: dict[str, str] = {}
    for path in paths:
        try:
            sources[str(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyLoadError(f"RegoEngine: cannot read {path}: {exc}", file=str(path)) from exc
    return sources


def _native_input(value: Any) -> Any:
    """Build a rego-cpp input term from JSON-shaped Python data, ~2-3x faster than
    ``regopy.Input`` (which dispatches through ABC ``isinstance`` checks and copies
    every string into a ctypes buffer). Input conversion is a large share of an
    evaluation with a long step history. Returns a native handle the caller frees.
    """
    from regopy import rego_shared as native

    lib = native.rego
    new_input = native.rego_new_input
    p_in = new_input()
    put_int, put_float, put_str = lib.regoInputInt, lib.regoInputFloat, lib.regoInputString
    put_bool, put_null = lib.regoInputBoolean, lib.regoInputNull
    put_item, put_obj, put_arr = lib.regoInputObjectItem, lib.regoInputObject, lib.regoInputArray

    def add(val: Any) -> int:
        t = type(val)
        if t is str:
            return put_str(p_in, val.encode("utf-8"))
        if t is dict:
            for k, v in val.items():
                if type(k) is not str:
                    raise TypeError(f"object key {k!r} is not a string")
                if put_str(p_in, k.encode("utf-8")) or add(v) or put_item(p_in):
                    return 1
            return put_obj(p_in, len(val))
        if t is list or t is tuple:
            for v in val:
                if add(v):
                    return 1
            return put_arr(p_in, len(val))
        if t is bool:
            return put_bool(p_in, val)
        if t is int:
            return put_int(p_in, val)
        if t is float:
            return put_float(p_in, val)
        if val is None:
            return put_null(p_in)
        if isinstance(val, Mapping):
            return add(dict(val))
        raise TypeError(f"cannot pass {t.__name__} to Rego; policy input must be JSON data")

    try:
        if add(value):
            raise RegoEvaluationError("rego-cpp refused to build the input document")
    except BaseException:
        native.rego_free_input(p_in)
        raise
    return p_in


def _walk_calls(node: Any) -> Iterable[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "CallStmt" and isinstance(node.get("stmt"), dict):
            yield node["stmt"]
        for value in node.values():
            yield from _walk_calls(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk_calls(value)


# regopy 1.5.2's save_bundle corrupts the heap (free(): invalid pointer) once
# greenlet — imported by SQLAlchemy's asyncio support — is loaded. The plan is
# therefore produced in a short-lived subprocess, once per policy revision.
# save_bundle also writes every module back to its *module name* as a path: a
# module named by its absolute path (a user's policy file, the shipped default)
# was truncated and rewritten in place, so a process loading the same policy at
# that moment read an empty file ("Invalid file"), and a read-only install
# failed. The subprocess therefore names modules by neutral relative aliases
# (``_module_alias``), which land inside its temporary directory.
_PLAN_SCRIPT = r"""
import json, os, sys, tempfile
import regopy
req = json.load(sys.stdin)
interp = regopy.Interpreter()
interp.log_level = regopy.LogLevel.NONE
for name, source in req["sources"]:
    interp.add_module(name, source)  # a relative alias: save_bundle writes it under the bundle directory
if req["data"]:
    interp.add_data_json(json.dumps(req["data"]))
bundle = interp.build(req["query"])
with tempfile.TemporaryDirectory(prefix="warden-rego-") as tmp:
    os.chdir(tmp)  # belt and braces: nothing is written outside the temporary directory
    target = os.path.join(tmp, "bundle")
    interp.save_bundle(target, bundle)
    with open(os.path.join(target, "plan.json"), encoding="utf-8") as fh:
        sys.stdout.write(fh.read())
"""
#: Process-wide on purpose: compiling a plan starts a subprocess (~0.5 s); every engine of this process
#: loading the same policy revision reuses it. Keyed by the revision (a digest of sources, data, query).
_PLAN_CACHE: dict[str, dict[str, Any]] = {}
_PLAN_LOCK = threading.Lock()


def _module_alias(index: int) -> str:
    """The name a policy module gets in the plan subprocess (see ``_PLAN_SCRIPT``'s note)."""
    return f"module{index:04d}.rego"


def _compiled_plan(revision: str, sources: Mapping[str, str], data: Mapping[str, Any], query: str) -> dict[str, Any]:
    """The compiled plan (plan.json) of a policy, computed in an isolated process and cached.

    Modules are compiled under :func:`_module_alias` names; the plan's file list is
    mapped back to the caller's file names before it is returned.
    """
    import subprocess
    import sys

    with _PLAN_LOCK:
        cached = _PLAN_CACHE.get(revision)
    if cached is not None:
        return cached
    names = list(sources)
    aliases = {_module_alias(i): name for i, name in enumerate(names)}
    request = json.dumps({
        "sources": [[_module_alias(i), sources[name]] for i, name in enumerate(names)],
        "data": dict(data),
        "query": query,
    })
    proc = subprocess.run(
        [sys.executable, "-c", _PLAN_SCRIPT], input=request, capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise PolicyLoadError(
            "RegoEngine: could not compile the policy plan to check its builtins "
            f"(exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    plan = json.loads(proc.stdout)
    for entry in plan.get("static", {}).get("files", []):
        if isinstance(entry, dict) and isinstance(entry.get("value"), str):
            value = entry["value"]
            entry["value"] = aliases.get(value, aliases.get(os.path.basename(value), value))
    with _PLAN_LOCK:
        _PLAN_CACHE[revision] = plan
    return plan


class RegoEngine:
    """Embedded Rego policy engine (the default).

    ``policies``: a ``.rego`` file, a directory of them, or a list of either.
    ``data``: an optional base document (e.g. limits), visible as ``data.<key>``.
    ``query``: the rule holding the decision document.
    ``input_version``: the policy input document the policy reads (1 or 2, see
    :mod:`~langgraph_warden.guards.policy`); an input of the other version is denied.
    """

    def __init__(
        self,
        policies: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
        *,
        data: Mapping[str, Any] | None = None,
        query: str = DEFAULT_QUERY,
        name: str = "rego",
        input_version: int = POLICY_INPUT_VERSION,
    ) -> None:
        self._input_version = input_version_arg(input_version, "RegoEngine")
        self._setup(_collect_sources(policies), data, query, name)

    @classmethod
    def from_source(
        cls,
        source: str,
        *,
        filename: str = "policy.rego",
        data: Mapping[str, Any] | None = None,
        query: str = DEFAULT_QUERY,
        name: str = "rego",
        input_version: int = POLICY_INPUT_VERSION,
    ) -> RegoEngine:
        """Build from policy text (``filename`` is used in error messages)."""
        engine = cls.__new__(cls)
        engine._input_version = input_version_arg(input_version, "RegoEngine")
        engine._setup({filename: source}, data, query, name)
        return engine

    # -- loading ---------------------------------------------------------------

    def _setup(self, sources: dict[str, str], data: Mapping[str, Any] | None, query: str, name: str) -> None:
        import regopy  # local: keep `import langgraph_warden.guards` cheap

        if not isinstance(query, str) or not _QUERY_RE.match(query):
            raise PolicyLoadError(
                f"RegoEngine query {query!r} is not a data path; use the form data.<package>.<rule>, "
                f"e.g. {DEFAULT_QUERY}"
            )
        if data is not None and not isinstance(data, Mapping):
            raise PolicyLoadError(f"RegoEngine data: expected a JSON object, got {type(data).__name__}")
        self._name = name
        self._query = query
        self._sources = dict(sources)
        self._data = dict(data or {})
        self._revision = canonical.digest({"sources": self._sources, "data": self._data, "query": query})
        self._lock = threading.Lock()

        interp = regopy.Interpreter()
        interp.log_level = regopy.LogLevel.NONE  # errors come back as exceptions; keep stdout clean
        interp.strict_built_in_errors = True
        for file, source in self._sources.items():
            try:
                interp.add_module(file, source)
            except regopy.RegoError as exc:
                raise _load_error(exc, self._sources, "parsed") from None
        if self._data:
            try:
                interp.add_data_json(json.dumps(self._data, allow_nan=False))
            except (regopy.RegoError, ValueError, TypeError) as exc:
                raise PolicyLoadError(f"RegoEngine data: not a valid JSON object: {exc}") from None
        try:
            bundle = interp.build(query)
        except regopy.RegoError as exc:
            raise _load_error(exc, self._sources, "compiled") from None
        if not bundle.ok():
            raise PolicyLoadError(f"RegoEngine: compiling {query} produced no usable bundle")
        plan = _compiled_plan(self._revision, self._sources, self._data, self._query)
        self._check_builtins(interp, plan)
        # Only what the compiled policy can read is converted on each evaluation (rego_projection).
        self._projection = input_projection(plan)
        self._interp = interp
        self._bundle = bundle

    def _check_builtins(self, interp: Any, plan: Mapping[str, Any]) -> None:
        """Refuse a policy that calls a builtin rego-cpp lacks.

        The compiled plan lists every builtin the policy's rules and functions
        call (``static.builtin_funcs``), whether or not the query reaches it, and
        each call site with file/row/col; ``Interpreter.is_builtin`` says which
        ones rego-cpp implements. That is exact where a text scan of the source
        would be fooled by aliases, comments and strings.
        """
        static = plan.get("static", {})
        names = [f.get("name") for f in static.get("builtin_funcs", []) if isinstance(f, dict)]
        missing = sorted({n for n in names if isinstance(n, str) and not interp.is_builtin(n)})
        if not missing:
            return
        files = [f.get("value") for f in static.get("files", [])]
        sites: list[tuple[str, str | None, int | None, int | None]] = []
        for name in missing:
            call = next((c for c in _walk_calls(plan) if c.get("func") == name and "row" in c), None)
            if call is None:
                sites.append((name, None, None, None))
                continue
            idx = call.get("file")
            file = files[idx] if isinstance(idx, int) and idx < len(files) else None  # the user's file name
            sites.append((name, file, int(call["row"]) + 1, int(call["col"]) + 1))
        described = "; ".join(
            f"{n} (called at {f}:{line}:{col})" if f else n for n, f, line, col in sites
        )
        _, file, line, col = sites[0]
        raise UnsupportedBuiltinError(
            f"Rego policy calls builtin(s) the embedded engine (regopy) does not implement: {described}. "
            "A call to a missing builtin evaluates to undefined and could fail open; rewrite the rule "
            "without it, or use OpaServerEngine against a real OPA.",
            builtins=missing, file=file, line=line, column=col,
        )

    # -- evaluation --------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def revision(self) -> str:
        """Digest of the policy sources, data and query: changes whenever the policy does."""
        return self._revision

    @property
    def query(self) -> str:
        return self._query

    @property
    def input_version(self) -> int:
        """The policy input version this engine decides on (the guard builds that document)."""
        return self._input_version

    def evaluate(self, policy_input: Mapping[str, Any]) -> Any:
        """The raw value of the query for ``policy_input``.

        Raises :class:`PolicyUndefined` when no rule defines it and
        :class:`RegoEvaluationError` when rego-cpp reports an error. Used by
        :meth:`decide` and by tools that need the document itself (e.g. an
        OPA-compatible test server).

        Reads the output through regopy's C-level accessors rather than
        ``regopy.Output``: rego-cpp reports some runtime errors (recursion,
        conflicting rules) *inside* an "ok" result as an s-expression, which
        ``Output`` feeds to ``json.loads`` and loses the message.
        """
        from regopy import rego_shared as native

        projection = self._projection
        p_in = _native_input(policy_input if projection is None else project(policy_input, projection))
        with self._lock:
            try:
                native.rego_set_input(self._interp._impl, p_in)  # copies the term
            finally:
                native.rego_free_input(p_in)
            out = native.rego_bundle_query(self._interp._impl, self._bundle._impl)
            try:
                ok = native.rego_output_ok(out)
                text = native.rego_output_string(out)
            finally:
                native.rego_free_output(out)
        if not ok or not text.startswith(("{", "[", "undefined")):
            msgs = _ERROR_MSG_RE.findall(text)
            raise RegoEvaluationError(
                f"evaluating {self._query} failed: {'; '.join(msgs) or text.strip()[:500]}"
            )
        if text.strip() == "undefined":
            raise PolicyUndefined(f"{self._query} is undefined for this input")
        try:
            parsed = json.loads(text)
        except ValueError:
            msgs = _ERROR_MSG_RE.findall(text)
            raise RegoEvaluationError(
                f"evaluating {self._query} failed: {'; '.join(msgs) or 'result is not JSON'}"
            ) from None
        results = parsed if isinstance(parsed, list) else [parsed]
        if not results or not results[0].get("expressions"):
            raise PolicyUndefined(f"{self._query} is undefined for this input")
        if len(results) > 1 or len(results[0]["expressions"]) > 1:
            raise RegoEvaluationError(f"{self._query} produced {len(results)} results; expected exactly one")
        return results[0]["expressions"][0]

    def decide(self, policy_input: Mapping[str, Any]) -> PolicyDecision:
        """Evaluate the policy; never raises for a policy problem (fails closed to a deny)."""
        refused = check_input_version(self, policy_input)
        if refused is not None:
            return refused
        digest = safe_input_digest(policy_input)
        if digest.startswith("unavailable:"):
            # The whole document must be JSON data, not only the part this policy reads (rego_projection).
            return fail_closed(self, policy_input, TypeError("the policy input is not JSON data"), input_digest=digest)
        try:
            document = self.evaluate(policy_input)
            return decision_from_document(
                document, engine=self._name, policy_revision=self._revision, input_digest=digest
            )
        except PolicyUndefined as exc:
            return fail_closed(self, policy_input, exc, reason=REASON_POLICY_UNDEFINED, input_digest=digest)
        except MalformedDecisionError as exc:
            return fail_closed(self, policy_input, exc, reason=REASON_MALFORMED_DECISION, input_digest=digest)
        except BaseException as exc:  # native bindings may raise anything
            if is_fatal(exc):
                raise
            return fail_closed(self, policy_input, exc, input_digest=digest)

    async def adecide(self, policy_input: Mapping[str, Any]) -> PolicyDecision:
        """Async :meth:`decide`. Evaluation is CPU-bound and well under a millisecond,
        so it runs inline rather than paying a thread hop."""
        await asyncio.sleep(0)  # a cancellation point, like any other await
        return self.decide(policy_input)

    def __repr__(self) -> str:
        return (f"RegoEngine(files={list(self._sources)}, query={self._query!r}, "
                f"input_version={self._input_version}, revision={self._revision[:19]}...)")
