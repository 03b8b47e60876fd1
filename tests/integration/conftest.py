"""Integration fixtures: a migrated database per test, on SQLite and (when configured) on PostgreSQL."""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa

from engine.clock import FakeClock

from ..conftest import ROOT

PG_URL = os.environ.get("TETHER_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def pg_template():
    """A PostgreSQL database migrated once, cloned for every test."""
    if not PG_URL:
        yield None
        return
    from server import create_app
    from server.cli import upgrade_database

    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"tether_tpl_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    app = create_app({"DATABASE_URL": _with_database(PG_URL, name), "SCHEDULER": False, "SECRET_KEY": "t"})
    upgrade_database(app)
    with app.app_context():
        from server.store.extensions import db

        db.engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path, pg_template):
    """A fresh, migrated database for one test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tether.sqlite3'}"
        return
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"tether_t_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"'))
    yield _with_database(PG_URL, name)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def clock():
    """The fake clock the engine and server read in tests."""
    return FakeClock()


@pytest.fixture
def app(database_url, clock, tmp_path):
    """A Tether app on a migrated database, with the bundled forms and a fake clock; no scheduler."""
    from server import create_app
    from server.cli import upgrade_database

    app = create_app(
        {
            "DATABASE_URL": database_url,
            "SCHEDULER": False,
            "SECRET_KEY": "test-secret",
            "CLOCK": clock,
            "FORMS_DIR": str(ROOT / "forms"),
            "TESTING": True,
        }
    )
    if database_url.startswith("sqlite"):
        upgrade_database(app)
    yield app
    with app.app_context():
        from server.store.extensions import db

        db.session.remove()
        db.engine.dispose()


class Api:
    """A test client that speaks JSON with a bearer token."""

    def __init__(self, client, token: str | None = None):
        self.client, self.token = client, token

    def as_(self, token: str) -> Api:
        """The same client with another caller's token."""
        return Api(self.client, token)

    def _headers(self, headers):
        out = dict(headers or {})
        if self.token:
            out.setdefault("Authorization", f"Bearer {self.token}")
        return out

    def get(self, path, **kw):
        return self.client.get(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def post(self, path, json=None, **kw):
        return self.client.post(path, json=json, headers=self._headers(kw.pop("headers", None)), **kw)

    def patch(self, path, json=None, **kw):
        return self.client.patch(path, json=json, headers=self._headers(kw.pop("headers", None)), **kw)


PASSWORD = "correct-horse-9"


@pytest.fixture
def world(app):
    """Sites, one user per role, their tokens, and the mini diagram deployed."""
    from server.access import accounts
    from server.workflow.definitions import deploy

    fixtures = ROOT / "tests" / "fixtures"
    tokens = {}
    with app.app_context():
        accounts.add_site("SITE-A", "Treatment Centre A", "treatment-centre", "test")
        accounts.add_site("SITE-B", "Treatment Centre B", "treatment-centre", "test")
        accounts.add_site("MFG-1", "Manufacturing 1", "manufacturing", "test")
        people = {
            "admin": (["admin"], []),
            "designer": (["designer"], []),
            "auditor": (["auditor"], []),
            "coord": (["coordinator"], ["SITE-A"]),
            "coordb": (["coordinator"], ["SITE-B"]),
            "logistics": (["logistics"], ["SITE-A"]),
            "qa": (["qa"], []),
            "integrator": (["integrator"], []),
            "mfg": (["manufacturing"], ["MFG-1", "SITE-A"]),
        }
        for name, (roles, sites) in people.items():
            accounts.add_user(name, roles, sites, f"{name.title()} Person", PASSWORD, "test")
            tokens[name] = accounts.issue_token(name, "test", "test")
        forms = {p.name: p.read_bytes() for p in fixtures.glob("*.json")}
        deploy((fixtures / "mini.bpmn").read_bytes(), forms, "test")
    return tokens


@pytest.fixture
def api(app, world):
    """A JSON client; ``api.as_(world['coord'])`` acts as a user."""
    return Api(app.test_client())
