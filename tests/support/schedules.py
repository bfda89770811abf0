"""The two schedules a sync ``ToolNode`` can give a step's parallel calls, made deterministic.

``ToolNode`` runs a message's calls through ``Executor.map`` on a fresh thread pool. When one
call raises (an approval interrupt is an exception), ``map`` cancels the calls the pool has not
started yet. On an idle machine every call has started by then and runs to its end; under CPU
load a later call may never start in that run. Both are LangGraph's behaviour; which one a test
gets is up to the scheduler. A test about one of them installs it in place of
``langgraph.prebuilt.tool_node.get_executor_for_config`` (``monkeypatch.setattr``), so it does not
depend on the machine's load.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import wait
from contextlib import contextmanager
from typing import Any

from langchain_core.runnables.config import ContextThreadPoolExecutor
from langgraph.prebuilt import tool_node

__all__ = ["tool_node", "every_call_starts", "later_calls_never_start"]


@contextmanager
def every_call_starts(config: Any) -> Iterator[Any]:
    """Every call runs to its end before any result is read: a call that pauses cancels nothing."""
    with ContextThreadPoolExecutor(max_workers=(config or {}).get("max_concurrency")) as pool:

        class StartAll:
            def map(self, fn: Any, *iterables: Any) -> Iterator[Any]:
                futures = [pool.submit(fn, *args) for args in zip(*iterables)]
                wait(futures)
                return (f.result() for f in futures)

        yield StartAll()


@contextmanager
def later_calls_never_start(config: Any) -> Iterator[Any]:
    """Each call starts only after the one before it returned: a call that pauses leaves the later
    ones never started, as ``Executor.map`` does when it cancels them."""
    with ContextThreadPoolExecutor(max_workers=1) as pool:

        class OneAfterAnother:
            def map(self, fn: Any, *iterables: Any) -> Iterator[Any]:
                return (pool.submit(fn, *args).result() for args in zip(*iterables))

        yield OneAfterAnother()
