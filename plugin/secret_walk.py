"""The best-effort scrubber of in-memory values and exceptions (copy on change, exceptions in place).

Why its own module: a value that is about to be logged, returned or raised can carry a secret in
any container, attribute, slot or exception link; walking Python objects is a job of its own,
apart from searching bytes (:mod:`langgraph_warden.secret_patterns`). The storage scrubbers remain
the guarantee; this walk keeps secrets out of what the caller sees.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import types
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any

from .secret_patterns import Patterns

__all__ = ["RedactedObject", "Walker"]


class RedactedObject:
    """Stands in for an object whose ``repr``/``str`` showed a secret: both give the scrubbed text."""

    __slots__ = ("_repr", "_str")

    def __init__(self, repr_text: str, str_text: str | None = None) -> None:
        self._repr = repr_text
        self._str = repr_text if str_text is None else str_text

    def __repr__(self) -> str:
        return self._repr

    def __str__(self) -> str:
        return self._str


_SCALARS = (type(None), bool, int, float, complex)
#: Not walked: scalars, classes, modules, functions and methods (their text names code, not data).
_OPAQUE = (*_SCALARS, type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
#: How many objects one walk visits at most (a value that reaches a whole object graph stops there).
_MAX_NODES = 20_000
_EXC_ATTRS = ("filename", "filename2", "strerror", "msg", "text", "reason", "object", "name", "path")
_MAX_ITEMS = 100_000  # a Sequence/Mapping larger than this is not walked (e.g. range(10**12))


def _safe_text(fn: Callable[[Any], str], value: Any) -> str | None:
    try:
        text = fn(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not break redaction
        return None
    return text if isinstance(text, str) else None


class Walker:
    """One best-effort, copy-on-change walk of a value (exceptions are redacted in place)."""

    def __init__(self, patterns: Patterns) -> None:
        self.p = patterns
        self.memo: dict[int, Any] = {}
        self.keep: list[Any] = []  # keeps walked objects alive, so their ids stay unique
        self.changed = False

    def leaks(self, value: Any) -> bool:
        for fn in (repr, str):
            text = _safe_text(fn, value)
            if text is not None and self.p._find(text, self.p.text):
                return True
        return False

    def stand_in(self, value: Any) -> RedactedObject:
        self.changed = True
        r = _safe_text(repr, value) or f"<{type(value).__name__}>"
        s = _safe_text(str, value)
        return RedactedObject(self.p.scrub_text(r), self.p.scrub_text(s) if s is not None else None)

    def value(self, v: Any) -> Any:
        if isinstance(v, str):
            clean = self.p.scrub_text(v)
            if clean is not v:
                self.changed = True
            return clean
        if isinstance(v, (bytes, bytearray, memoryview)):
            clean = self.p.scrub_bytes(v)
            if clean is not v:
                self.changed = True
                return type(v)(clean) if isinstance(v, (bytes, bytearray)) else clean
            return v
        if isinstance(v, _OPAQUE):
            return v
        key = id(v)
        if key in self.memo:
            return self.memo[key]
        if len(self.memo) >= _MAX_NODES:
            return v
        self.memo[key] = v  # a cycle back to v keeps v
        self.keep.append(v)
        try:
            out = self._container(v)
        except RecursionError:
            out = self.stand_in(v) if self.leaks(v) else v
        except Exception:  # noqa: BLE001 - best effort: an object that resists copying is replaced if it leaks
            out = self.stand_in(v) if self.leaks(v) else v
        self.memo[key] = out
        return out

    def _rebuild(self, v: Any, items: Any, plain: Callable[[Any], Any]) -> Any:
        self.changed = True
        if type(v) in (list, tuple, dict, set, frozenset):
            return plain(items)
        try:
            if isinstance(v, tuple) and hasattr(v, "_make"):
                return v._make(items)
            return type(v)(items)
        except Exception:  # noqa: BLE001 - a constructor we cannot call: the plain container
            return plain(items)

    def _container(self, v: Any) -> Any:
        if isinstance(v, BaseException):
            self.exception(v)
            return v
        if isinstance(v, Mapping):
            if len(v) > _MAX_ITEMS:
                return v
            pairs = [(k, x) for k, x in v.items()]
            clean = [(self.value(k), self.value(x)) for k, x in pairs]
            out: Any
            if all(a is c and b is d for (a, b), (c, d) in zip(pairs, clean, strict=True)):
                out = v
            else:
                out = self._rebuild(v, dict(clean), dict)
            return self._final(v, out)
        if isinstance(v, (list, tuple, Set)) or (isinstance(v, Sequence) and not isinstance(v, range)):
            if len(v) > _MAX_ITEMS:
                return v
            items = list(v)
            clean = [self.value(x) for x in items]
            if all(a is b for a, b in zip(items, clean, strict=True)):
                out = v
            else:
                plain = frozenset if isinstance(v, frozenset) else set if isinstance(v, Set) else tuple if isinstance(v, tuple) else list
                out = self._rebuild(v, clean, plain)
            return self._final(v, out)
        if dataclasses.is_dataclass(v):
            names = [f.name for f in dataclasses.fields(v)]
            return self._final(v, self._with_fields(v, {n: getattr(v, n) for n in names if hasattr(v, n)}, dataclass=True))
        attrs = getattr(v, "__dict__", None)
        if isinstance(attrs, dict) and attrs:
            clean_attrs = {k: self.value(x) for k, x in list(attrs.items())}
            if any(clean_attrs[k] is not x for k, x in attrs.items()):
                dup = copy.copy(v)  # never mutate the caller's object (a shared client, say)
                if dup is v or getattr(dup, "__dict__", None) is attrs:
                    return self.stand_in(v)
                dup.__dict__.update(clean_attrs)
                self.changed = True
                v = dup
        slots = [n for c in type(v).__mro__ for n in getattr(c, "__slots__", ()) if isinstance(n, str) and n not in ("__dict__", "__weakref__")]
        if slots:
            v = self._with_fields(v, {n: getattr(v, n) for n in slots if hasattr(v, n)})
        return self._final(v, v)

    def _with_fields(self, v: Any, values: Mapping[str, Any], *, dataclass: bool = False) -> Any:
        """``v``, or a copy of it whose fields (attributes) in ``values`` are scrubbed."""
        clean = {n: self.value(x) for n, x in values.items()}
        changed = {n: c for n, c in clean.items() if c is not values[n]}
        if not changed:
            return v
        self.changed = True
        if dataclass:
            try:
                return dataclasses.replace(v, **changed)
            except Exception:  # noqa: BLE001 - init=False fields, a validating __post_init__: copy instead
                pass
        dup = copy.copy(v)
        if dup is v:
            return self.stand_in(v)
        for n, c in changed.items():
            object.__setattr__(dup, n, c)
        return dup

    def _final(self, v: Any, out: Any) -> Any:
        """Builtin containers show their items, which were walked; anything else may have its own repr."""
        if type(out) in (list, tuple, dict, set, frozenset):
            return out
        return self.stand_in(out) if self.leaks(out) else out

    def exception(self, exc: BaseException) -> None:
        """Redact one exception and everything it links to, in place."""
        stack: list[BaseException | None] = [exc]
        seen: set[int] = set()
        while stack:
            cur = stack.pop()
            if cur is None or id(cur) in seen:
                continue
            seen.add(id(cur))
            self.keep.append(cur)
            self._one_exception(cur)
            stack.extend([cur.__cause__, cur.__context__])
            if isinstance(cur, BaseExceptionGroup):
                stack.extend(cur.exceptions)

    def _one_exception(self, exc: BaseException) -> None:
        try:
            args = exc.args
            clean = self.value(args)
            if clean is not args:
                exc.args = tuple(clean)
            notes = getattr(exc, "__notes__", None)
            if isinstance(notes, list):
                clean_notes = self.value(notes)
                if clean_notes is not notes:
                    exc.__notes__ = list(clean_notes)
            attrs = getattr(exc, "__dict__", None)
            if isinstance(attrs, dict):
                for k, x in list(attrs.items()):
                    if k == "__notes__":
                        continue
                    cx = self.value(x)
                    if cx is not x:
                        attrs[k] = cx
            names = [n for c in type(exc).__mro__ for n in getattr(c, "__slots__", ()) if isinstance(n, str)]
            for name in (*_EXC_ATTRS, *names):
                if attrs is not None and name in attrs:
                    continue
                try:
                    x = getattr(exc, name)
                except Exception:  # noqa: BLE001
                    continue
                if isinstance(x, _OPAQUE):
                    continue
                cx = self.value(x)
                if cx is not x:
                    try:
                        setattr(exc, name, cx)
                    except Exception:  # noqa: BLE001 - read-only: left as is
                        pass
        except Exception:  # noqa: BLE001 - redaction must never replace the step's own error
            pass
        if self.leaks(exc):
            _shield(exc)
            self.changed = True


#: Process-wide on purpose: one scrubbing subclass per exception class, so every shielded instance of a
#: class shares one type (``type(a) is type(b)`` and pickling keep working) and none is built twice.
_SHIELDED: dict[type, type] = {}
_SHIELD_LOCK = threading.Lock()


def _shield(exc: BaseException) -> None:
    """Give an exception whose own ``__str__``/``__repr__`` still shows a secret a subclass that scrubs them.

    Same name, module and qualname; ``except`` clauses and ``isinstance`` still match.
    Pickles as the original class. Fails silently where ``__class__`` cannot be assigned
    (builtin exception types, whose text comes from the args already scrubbed).
    """
    cls = type(exc)
    if getattr(cls, "__warden_shielded__", False):
        return
    with _SHIELD_LOCK:
        safe = _SHIELDED.get(cls)
        if safe is None:

            def __str__(self: BaseException) -> str:
                from .redaction import scrub_text  # the live registry, which imports this module

                return scrub_text(_safe_text(cls.__str__, self) or "")

            def __repr__(self: BaseException) -> str:
                from .redaction import scrub_text  # the live registry, which imports this module

                return scrub_text(_safe_text(cls.__repr__, self) or f"{cls.__name__}()")

            def __reduce__(self: BaseException) -> Any:
                state = getattr(self, "__dict__", None)
                return (cls, tuple(self.args), state or None)

            try:
                safe = type(cls.__name__, (cls,), {
                    "__str__": __str__, "__repr__": __repr__, "__reduce__": __reduce__,
                    "__module__": cls.__module__, "__qualname__": cls.__qualname__, "__warden_shielded__": True,
                    "__slots__": (),
                })
            except TypeError:
                return
            _SHIELDED[cls] = safe
    try:
        exc.__class__ = safe
    except TypeError:
        pass

