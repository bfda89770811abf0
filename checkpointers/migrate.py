"""Create or upgrade the warden schema with the Alembic migrations shipped in the package.

Re-running is a no-op. A database stamped with a revision this package does
not know (written by a newer langgraph-warden) is refused with
:class:`~langgraph_warden.errors.SchemaVersionError` instead of being touched.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from langgraph_warden.errors import SchemaVersionError

from .engine import WRITE

__all__ = ["upgrade", "current_revision", "head_revision", "VERSION_TABLE"]

VERSION_TABLE = "warden_alembic_version"
_MIGRATIONS = Path(__file__).with_name("migrations")


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head() or ""


def current_revision(conn: Connection) -> str | None:
    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def _check_known(current: str | None, known: set[str], head: str) -> None:
    if current is not None and current not in known:
        raise SchemaVersionError(
            f"the database schema is at revision {current!r}, which this langgraph-warden does not know "
            f"(its newest is {head!r}): it was written by a newer version. Upgrade langgraph-warden; "
            "it will not modify a schema it does not understand."
        )


def upgrade(engine: Engine) -> str:
    """Bring the schema to the package's head revision; return that revision.

    Safe when many workers start at once: on PostgreSQL the upgrade runs under a
    transaction-scoped advisory lock and re-reads the revision once it holds it
    (SQLite serialises writers with ``BEGIN IMMEDIATE``).
    """
    script = ScriptDirectory.from_config(_config())
    known = {rev.revision for rev in script.walk_revisions()}
    head = script.get_current_head() or ""
    with engine.connect() as probe:
        current = current_revision(probe)
    _check_known(current, known, head)
    if current == head:
        return head
    with engine.execution_options(**WRITE).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('langgraph-warden:' || current_schema()))")
        current = current_revision(conn)
        _check_known(current, known, head)
        if current == head:
            return head
        cfg = _config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head
