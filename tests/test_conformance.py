"""langgraph-checkpoint-conformance at the FULL level, every optional capability, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from langgraph_warden.checkpointers import WardenSaver
from langgraph_warden.keys import EphemeralKeyStore

from .conftest import pg_schema_url, requires_pg, sqlite_url


async def _run(make_url) -> None:
    @checkpointer_test(name="WardenSaver")
    async def factory():
        saver = WardenSaver.from_url(make_url(), key_store=EphemeralKeyStore())
        try:
            yield saver
        finally:
            await saver.aclose()

    report = await validate(factory)
    failures = {cap: r.failures for cap, r in report.results.items() if r.failures or r.passed is not True}
    assert not failures, failures
    detected = {cap for cap, r in report.results.items() if r.detected and r.passed}
    assert {c.value for c in ALL_CAPABILITIES} <= detected, sorted(detected)
    assert report.conformance_level() == "FULL"
    assert sum(r.tests_passed for r in report.results.values()) > 50


async def test_conformance_sqlite(tmp_path):
    await _run(lambda: sqlite_url(tmp_path))


@requires_pg
@pytest.mark.postgres
async def test_conformance_postgres():
    await _run(pg_schema_url)
