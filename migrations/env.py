"""Alembic environment: migrations run against the app's own engine and metadata."""

from __future__ import annotations

import logging

from alembic import context
from flask import current_app

log = logging.getLogger("alembic.env")
config = context.config


def _target_metadata():
    return current_app.extensions["migrate"].db.metadata


def run_migrations_offline() -> None:
    """Emit SQL for the configured URL without a connection."""
    url = current_app.extensions["migrate"].db.engine.url.render_as_string(hide_password=False)
    context.configure(url=url, target_metadata=_target_metadata(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Apply migrations over the app's engine."""
    engine = current_app.extensions["migrate"].db.engine
    with engine.connect() as connection:
        options = {"render_as_batch": connection.dialect.name == "sqlite",
                   **current_app.extensions["migrate"].configure_args}
        context.configure(connection=connection, target_metadata=_target_metadata(), **options)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
