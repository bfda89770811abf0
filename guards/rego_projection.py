"""The part of the policy input a compiled Rego policy can read, found from its plan.

Why: converting the input document into rego-cpp's terms is most of an embedded
evaluation (one ctypes call per key and value). Version 2 input carries parts the
shipped policy never reads (the ``recent`` windows, the approvals list); a user's
policy may read them. The compiled plan (the IR rego-cpp executes) says exactly
which input paths each rule can reach, so the engine converts only those.

Soundness: the analysis over-approximates. A path is kept *whole* unless every use
of it in the plan is a ``DotStmt`` with a constant string key (a lookup of one
child), so anything that can observe a whole value — a builtin call (``count``,
``object.keys``, ``json.marshal``, ``walk``), iteration, comparison, assignment,
a dynamic key, passing it to a function — keeps all of it. An input-derived value
passed to a plan function at the input position keeps it all too. A plan with a
``with`` modifier on ``input``, a function whose input parameter is not local 0,
or any shape the analysis does not know yields no projection: the whole input is
converted, as before. Dropping a part the policy cannot read cannot change its
decision; the input digest recorded with the decision is always of the whole
document.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_INPUT = 0  # the IR's fixed local for `input` in plans and in every function


class _Unknown(Exception):
    """The plan has a shape this analysis does not reason about: project nothing."""


def input_projection(plan: Mapping[str, Any]) -> dict[str, Any] | None:
    """The projection tree of ``plan`` (a compiled plan.json), or None to keep the whole input."""
    try:
        strings = [s.get("value") for s in plan["static"]["strings"]]
        bodies: list[Iterable[Mapping[str, Any]]] = []
        for p in plan.get("plans", {}).get("plans", []):
            bodies.append(p["blocks"])
        for f in (plan.get("funcs") or {}).get("funcs", []) or []:
            params = f.get("params") or []
            if params and params[0] != _INPUT:
                raise _Unknown
            bodies.append(f["blocks"])
        tree: dict[str, Any] = {}
        for blocks in bodies:
            if _body(blocks, strings, tree) is True:
                return None
        return tree
    except (_Unknown, KeyError, TypeError, IndexError, AttributeError):
        return None


def _body(blocks: Iterable[Mapping[str, Any]], strings: list[Any], tree: dict[str, Any]) -> bool | None:
    """Record in ``tree`` what one plan or function body reads; True if it reads the whole input."""
    stmts = list(_statements(blocks))
    paths = _input_paths(stmts, strings)
    whole = _whole_uses(stmts, paths)
    if () in whole:
        return True
    for path in set(paths.values()):
        if path and path not in whole and not any(_under(path, w) for w in whole):
            _keep(tree, path, whole=False)
    for path in whole:
        _keep(tree, path, whole=True)
    return None


def _input_paths(stmts: list[tuple[str, Mapping[str, Any]]], strings: list[Any]) -> dict[int, tuple[str, ...]]:
    """Pass 1: which locals hold an input path (DotStmt targets, transitively), and that path.

    A local that is the target of anything else as well is not an alias: its uses are then
    treated as whole uses (pass 2).
    """
    paths: dict[int, tuple[str, ...]] = {_INPUT: ()}
    targets: dict[int, int] = {}
    for kind, st in stmts:
        for t in _targets(kind, st):
            targets[t] = targets.get(t, 0) + 1
    changed = True
    while changed:
        changed = False
        for kind, st in stmts:
            if kind != "DotStmt":
                continue
            src = _local(st.get("source"))
            key = st.get("key") or {}
            tgt = st.get("target")
            if (src in paths and key.get("type") == "string_index" and isinstance(tgt, int) and tgt not in paths
                    and targets.get(tgt) == 1 and tgt != _INPUT):
                name = strings[key["value"]]
                if not isinstance(name, str):
                    raise _Unknown
                paths[tgt] = (*paths[src], name)
                changed = True
    return paths


def _whole_uses(stmts: list[tuple[str, Mapping[str, Any]]], paths: dict[int, tuple[str, ...]]) -> set[tuple[str, ...]]:
    """Pass 2: every use of an input-derived local that is not a constant-key DotStmt keeps its path whole."""
    whole: set[tuple[str, ...]] = set()
    for kind, st in stmts:
        if kind == "WithStmt" and st.get("local") == _INPUT:
            raise _Unknown
        if kind == "DotStmt":
            src = _local(st.get("source"))
            key = st.get("key") or {}
            if src in paths and not (key.get("type") == "string_index" and st.get("target") in paths):
                whole.add(paths[src])
            keyed = _local(key)
            if keyed is not None and keyed in paths:
                whole.add(paths[keyed])
            continue
        if kind == "CallStmt":
            args = st.get("args") or []
            func = st.get("func", "")
            for i, arg in enumerate(args):
                loc = _local(arg)
                if loc not in paths:
                    continue
                # The input itself passed on as a plan function's input parameter: that function is
                # analysed on its own. Anything else passed to a call is used whole.
                if not (i == 0 and loc == _INPUT and isinstance(func, str) and func.startswith("g0.")):
                    whole.add(paths[loc])
            continue
        for loc in _used_locals(kind, st):
            if loc in paths:
                whole.add(paths[loc])
    return whole


def _under(path: tuple[str, ...], prefix: tuple[str, ...]) -> bool:
    return len(path) > len(prefix) and path[: len(prefix)] == prefix


def _keep(tree: dict[str, Any], path: tuple[str, ...], *, whole: bool) -> None:
    node: Any = tree
    for i, name in enumerate(path):
        if node is True:
            return
        last = i == len(path) - 1
        child = node.get(name)
        if last:
            node[name] = True if whole or child is True else (child if isinstance(child, dict) else {})
        else:
            if child is True:
                return
            if not isinstance(child, dict):
                child = node[name] = {}
            node = child


def _local(operand: Any) -> int | None:
    if isinstance(operand, Mapping) and operand.get("type") == "local" and isinstance(operand.get("value"), int):
        return operand["value"]
    if isinstance(operand, int) and not isinstance(operand, bool):
        return operand
    return None


def _targets(kind: str, st: Mapping[str, Any]) -> list[int]:
    if kind == "ScanStmt":
        return [x for x in (st.get("key"), st.get("value")) if isinstance(x, int)]
    out = []
    for field in ("target", "result"):
        x = st.get(field)
        if isinstance(x, int) and not isinstance(x, bool):
            out.append(x)
    return out


# Fields that never name a local read: nested blocks, positions, written locals, and numbers
# (an array's capacity, a string index, a break depth).
_NOT_OPERANDS = frozenset(
    {"block", "blocks", "file", "row", "col", "target", "result", "func", "Index", "index", "capacity"}
)


def _used_locals(kind: str, st: Mapping[str, Any]) -> set[int]:
    """Every local a statement may read, nested blocks excluded.

    Over-approximates: any integer field not known to be a target, a position or a
    string index counts as a local read (a false read only keeps more input).
    """
    out: set[int] = set()
    for field, value in st.items():
        if field in _NOT_OPERANDS or (kind == "ScanStmt" and field in ("key", "value")) or (
            kind == "MakeNumberIntStmt" and field == "value"
        ):
            continue
        for item in value if isinstance(value, list) else (value,):
            loc = _local(item)
            if loc is not None:
                out.add(loc)
    return out


def _statements(blocks: Iterable[Mapping[str, Any]]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for block in blocks:
        for item in block["stmts"]:
            kind, st = item["type"], item["stmt"]
            yield kind, st
            if isinstance(st.get("block"), Mapping):
                yield from _statements([st["block"]])
            for inner in st.get("blocks") or ():
                yield from _statements([inner])


def project(value: Any, tree: Mapping[str, Any]) -> Any:
    """``value`` with only what ``tree`` keeps (a non-object where keys are expected is kept whole).

    ``tree`` (from :func:`input_projection`) maps a key to ``True`` (keep its value whole) or to
    the tree of the keys to keep from it.
    """
    if not isinstance(value, Mapping):
        return value
    out = {}
    for key, sub in tree.items():
        if key in value:
            out[key] = value[key] if sub is True else project(value[key], sub)
    return out
