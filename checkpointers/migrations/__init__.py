"""Alembic migrations for the warden schema (run by ``WardenSaver.setup()``)."""
