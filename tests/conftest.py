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


@pytest.fixture
def key_store() -> EphemeralKeyStore:
    return EphemeralKeyStore()
