"""Calls this process is handling now, and their cross-process claims.

LangGraph's async ToolNode gathers a message's calls and returns on the first interrupt while
siblings still run; a resume must wait for them rather than mistake a live call for one cut off
by a crash ("in doubt"). The table is per guard, not process-wide: a call is always handled by
the guard of the node that runs it, and two guards on one process share nothing but the ledger
(whose claims, below, cover other processes and other guards alike).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

from langgraph_warden.errors import CallInProgressError

from .guard_settings import GuardSettings

__all__ = ["Flight", "InFlight"]

#: (thread id, tool call id, argument digest)
CallKey = tuple[str, str, str]


class Flight:
    """A call this process owns: its in-flight entry and, while held, its cross-process lock."""

    __slots__ = ("key", "done", "release")

    def __init__(self, key: CallKey, done: threading.Event) -> None:
        self.key = key
        self.done = done
        self.release: Callable[[], None] | None = None

    def take_release(self) -> Callable[[], None] | None:
        """Hand the cross-process lock's release to the caller (once)."""
        release, self.release = self.release, None
        return release


class InFlight:
    """Who handles which call: one owner per call in this process, one per call across processes.

    ``on_landed(thread_id, tool_call_id)`` runs when a call is let go, before waiters wake (the
    recorder forgets the decision it counted for the call).
    """

    def __init__(self, settings: GuardSettings, on_landed: Callable[[str, str], None]) -> None:
        self._settings = settings
        self._on_landed = on_landed
        #: The calls owned in this process now, each with the event its waiters wait on.
        self.calls: dict[CallKey, threading.Event] = {}
        self._lock = threading.Lock()

    def claim(self, key: CallKey, timeout: float = 600.0) -> Flight:
        """Wait for any in-flight handling of this call in this process, then own it; then hold the
        call's cross-process lock (waiting while another live process runs it)."""
        while True:
            with self._lock:
                current = self.calls.get(key)
                if current is None:
                    done = self.calls[key] = threading.Event()
                    break
            if not current.wait(timeout):
                raise TimeoutError(f"tool call {key[1]!r} on thread {key[0]!r} is still being handled after {timeout}s")
        flight = Flight(key, done)
        claims = self._settings.claims
        if claims is not None:
            thread_id, tool_call_id = key[0], key[1]
            timeout_s = self._settings.claim_timeout
            try:
                held = claims.acquire(thread_id, tool_call_id, timeout_s)
            except BaseException:
                self.land(flight)
                raise
            if not held:
                self.land(flight)
                raise CallInProgressError(
                    f"tool call {tool_call_id!r} on thread {thread_id!r} is being executed by another live process "
                    f"and did not finish within {timeout_s:g}s; nothing was run here. Resume the run later: "
                    "its recorded outcome will be replayed, not executed again."
                )
            flight.release = partial(claims.release, thread_id, tool_call_id)
        return flight

    def land(self, flight: Flight | None) -> None:
        """Let the call go: its cross-process lock (if still held), then its entry here; wake waiters."""
        if flight is None:
            return
        release = flight.take_release()
        if release is not None:
            release()
        key, done = flight.key, flight.done
        self._on_landed(key[0], key[1])
        with self._lock:
            if self.calls.get(key) is done:
                del self.calls[key]
        done.set()

    def here(self, thread_id: str, tool_call_id: str) -> bool:
        """Whether this process is handling that call now (under any arguments)."""
        with self._lock:
            return any(key[0] == thread_id and key[1] == tool_call_id for key in self.calls)

    def alone(self, thread_id: str) -> bool:
        """Whether at most one call of the thread (the caller's) is in flight in this process."""
        with self._lock:
            return sum(1 for key in self.calls if key[0] == thread_id) <= 1
