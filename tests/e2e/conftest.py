"""E2E fixtures reuse the integration ones (a migrated database per backend, users, tokens)."""

import pytest

from ..integration.conftest import Api, api, app, clock, database_url, pg_template, world  # noqa: F401


@pytest.fixture
def bundled(app, world):  # noqa: F811  (the fixtures imported above)
    """Deploy processes/ as the server does at start; returns each key's version."""
    from server.config import project_root
    from server.workflow.definitions import deploy_bundled

    with app.app_context():
        return {row.key: row.version for row, _created in deploy_bundled(project_root() / "processes")}
