"""The ledger as the guard sees it, counting round trips (tests and ``bench/guard.py``)."""

from __future__ import annotations

from typing import Any


class CountingSink:
    """The ledger, counting round trips: reads (and rows read), appends waited for and appends queued."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads = self.rows = self.appends = self.queued = 0

    @property
    def supports_watermarks(self) -> bool:
        return getattr(self.inner, "supports_watermarks", False)

    def append_soon(self, thread_id, drafts, **kw):
        self.queued += 1
        return self.inner.append_soon(thread_id, drafts, **kw)

    def append(self, thread_id, drafts, **kw):
        self.appends += 1
        return self.inner.append(thread_id, drafts, **kw)

    async def aappend(self, thread_id, drafts):
        self.appends += 1
        return await self.inner.aappend(thread_id, drafts)

    def flush(self):
        return self.inner.flush()

    def events(self, thread_id, **kw):
        out = self.inner.events(thread_id, **kw)
        self.reads += 1
        self.rows += len(out)
        return out

    def summaries(self, thread_id, **kw):
        out = self.inner.summaries(thread_id, **kw)
        self.reads += 1
        self.rows += len(out)
        return out

    async def aevents(self, thread_id, **kw):
        out = await self.inner.aevents(thread_id, **kw)
        self.reads += 1
        self.rows += len(out)
        return out

    def reset(self) -> None:
        self.reads = self.rows = self.appends = self.queued = 0
