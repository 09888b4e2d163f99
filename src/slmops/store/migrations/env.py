"""Alembic environment: slmops always passes an open connection in ``config.attributes``."""

from alembic import context

from slmops.store.schema import metadata

connection = context.config.attributes["connection"]
# render_as_batch lets later migrations alter SQLite tables (copy-and-move under the hood).
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
