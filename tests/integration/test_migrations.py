"""The migrations build exactly the schema the models describe (no drift), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext


def _differences(app) -> list:
    """What autogenerate would add to a new migration after every existing one has run."""
    from server.store.extensions import db

    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": False})
        return compare_metadata(context, db.metadata)


# SQLAlchemy cannot reflect expression indexes (the inbox's ordering index); the models declare them as well.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_the_migrated_schema_matches_the_models(app):
    """A model change without its migration (or the reverse) fails here, naming the table and column."""
    assert _differences(app) == []


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based index")
def test_a_column_without_its_migration_is_caught(app):
    """The comparison above can fail: a model column that no migration created shows up as a difference."""
    import sqlalchemy as sa

    from server.store.extensions import db

    metadata = sa.MetaData()
    for table in db.metadata.tables.values():
        table.to_metadata(metadata)
    metadata.tables["therapy"].append_column(sa.Column("not_migrated", sa.Integer, nullable=True))
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert [(d[0], d[3].name) for d in differences] == [("add_column", "not_migrated")]
