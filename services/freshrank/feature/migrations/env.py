"""Alembic environment: migrations run on the connection ``freshrank.feature.migrate`` passes."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run feature-store migrations through freshrank.feature.migrate.upgrade()")

context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
