"""Shared fixtures: real SQLite files and, when WARDEN_TEST_POSTGRES_URL is set, the real PostgreSQL.

Each PostgreSQL test gets its own schema (``search_path``) so tests never see
each other's rows and need no cleanup between runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from langgraph_warden.keys import EphemeralKeyStore

from .support.forker import Launcher

PG_ENV = "WARDEN_TEST_POSTGRES_URL"
PG_URL = os.environ.get(PG_ENV)

requires_pg = pytest.mark.skipif(
    not PG_URL, reason=f"PostgreSQL tests need {PG_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
)


def pg_schema_url(prefix: str = "t") -> str:
    """Create a fresh schema and return a URL whose search_path points at it."""
    assert PG_URL
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    eng = create_engine(PG_URL)
    with eng.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng.dispose()
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / f'w-{uuid.uuid4().hex[:8]}.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[requires_pg, pytest.mark.postgres])])
def db_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
    else:
        yield pg_schema_url()


#: Imported once by the session's launcher (``forked``), so a forked run starts without importing them.
FORK_PRELOAD = ["langgraph_warden.warden", "tests.support.proc_approval", "tests.support.proc_crash",
                "tests.support.proc_approval_crash", "tests.support.proc_durability"]


@pytest.fixture(scope="session")
def forked(tmp_path_factory) -> Iterator[Launcher]:
    """Runs ``module.function(*args)`` in a fresh OS process forked from one launcher that paid the
    imports once (``tests/support/forker.py``): its own memory, connections and keys; SIGKILL ends
    it alone. For tests that need another process, not a fresh interpreter."""
    launcher = Launcher(tmp_path_factory.mktemp("forked"), FORK_PRELOAD)
    try:
        yield launcher
    finally:
        launcher.close()


@pytest.fixture
def key_store() -> EphemeralKeyStore:
    return EphemeralKeyStore()


@pytest.fixture
def memory_keyring():
    """Install an in-memory keyring backend for one test, then restore the previous one."""
    import keyring

    from .support.memory_keyring import MemoryKeyring

    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def no_keyring():
    """Install keyring's 'fail' backend (no usable backend), then restore the previous one."""
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)


# --- CI guard: the PostgreSQL tests must run (not skip) where PostgreSQL is promised. ----------
REQUIRE_PG_ENV = "WARDEN_REQUIRE_POSTGRES"
_pg_outcomes = {"passed": 0, "skipped": 0, "failed": 0}


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.skipped):
        if "postgres" in report.keywords:
            if report.passed:
                _pg_outcomes["passed"] += 1
            elif report.skipped and not hasattr(report, "wasxfail"):
                _pg_outcomes["skipped"] += 1
            else:
                _pg_outcomes["failed"] += 1


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get(REQUIRE_PG_ENV) and (_pg_outcomes["passed"] == 0 or _pg_outcomes["skipped"]):
        session.exitstatus = 1
        print(
            f"\n{REQUIRE_PG_ENV} is set but PostgreSQL tests did not all run: {_pg_outcomes}. "
            f"Is PostgreSQL listening at {PG_URL}?"
        )
