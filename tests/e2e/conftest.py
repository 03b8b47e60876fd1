"""E2E fixtures reuse the integration ones (a migrated database per backend, users, tokens)."""

import pytest

from ..integration.conftest import (  # noqa: F401
    PASSWORD,
    SEEDED,
    Api,
    api,
    app,
    bundled,
    clock,
    database_url,
    reused,
    seed_bundled,
    templates,
    world,
)


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
