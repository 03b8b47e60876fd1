"""E2E fixtures reuse the integration ones (a migrated database per backend, users, tokens)."""

from ..integration.conftest import Api, api, app, clock, database_url, pg_template, world  # noqa: F401
