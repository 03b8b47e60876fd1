"""E2E fixtures reuse the integration ones (a migrated database per backend, users, tokens)."""

import pytest

from ..integration.conftest import PASSWORD, Api, api, app, clock, database_url, pg_template, world  # noqa: F401


@pytest.fixture
def bundled(app, world):  # noqa: F811  (the fixtures imported above)
    """Deploy processes/ as the server does at start; returns each key's version."""
    from server.config import project_root
    from server.workflow.definitions import deploy_bundled

    with app.app_context():
        return {row.key: row.version for row, _created in deploy_bundled(project_root() / "processes")}


@pytest.fixture
def network(app, world):  # noqa: F811
    """The world's users and tokens, and a therapy network around SITE-A: an apheresis centre (APH-1) with its
    coordinator ``apheresis``, a second manufacturing site (MFG-2) with its maker ``mfg2`` and a courier
    (COURIER-1) with its logistics user ``courier``."""
    from server.access import accounts

    tokens = dict(world)
    with app.app_context():
        accounts.add_site("APH-1", "Apheresis Centre One", "apheresis-centre", "test")
        accounts.add_site("MFG-2", "Manufacturing 2", "manufacturing", "test")
        accounts.add_site("COURIER-1", "Courier One", "logistics", "test")
        for name, role, site in (
            ("apheresis", "coordinator", "APH-1"),
            ("mfg2", "manufacturing", "MFG-2"),
            ("courier", "logistics", "COURIER-1"),
        ):
            accounts.add_user(name, [role], [site], f"{name.title()} Person", PASSWORD, "test")
            tokens[name] = accounts.issue_token(name, "test", "test")
    return tokens
