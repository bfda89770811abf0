"""Alembic environment: always run programmatically with a connection supplied.

``WardenSaver.setup()`` passes its own connection in ``config.attributes`` so
migrations run inside the saver's engine (and its SQLite settings); the
version table is ``warden_alembic_version`` so it never collides with an
application's own Alembic history in the same database.
"""

from alembic import context

from langgraph_warden.checkpointers.schema import metadata

VERSION_TABLE = "warden_alembic_version"

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - guarded by setup()
    raise RuntimeError("run warden migrations through WardenSaver.setup() or langgraph_warden.checkpointers.migrate")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
