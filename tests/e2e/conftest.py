"""E2E fixtures reuse the integration ones (a migrated database per backend, users, tokens, the therapy network)."""

from ..integration.conftest import (  # noqa: F401
    PASSWORD,
    SEEDED,
    Api,
    api,
    app,
    bundled,
    clock,
    database_url,
    network,
    reused,
    seed_bundled,
    templates,
    world,
)
