"""One object per SQLAlchemy engine, closed when the engine is disposed or collected.

Why: the direct SQLite writer and the PostgreSQL connection pool must be shared by every saver
and ledger on one engine (one group-commit queue, one set of idle connections), and must not
outlive it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from sqlalchemy import Engine, event


class _Closable(Protocol):
    def close(self) -> None: ...


T = TypeVar("T", bound=_Closable)


class PerEngine(Generic[T]):
    """A process-wide registry: :meth:`get` makes an engine's object once and ties its close to the engine."""

    def __init__(self) -> None:
        self._objects: weakref.WeakKeyDictionary[Engine, T] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, engine: Engine, make: Callable[[], T]) -> T:
        with self._lock:
            found = self._objects.get(engine)
            if found is None:
                found = self._objects[engine] = make()
                weakref.finalize(engine, found.close)
                event.listen(engine, "engine_disposed", lambda _e: found.close())
            return found
