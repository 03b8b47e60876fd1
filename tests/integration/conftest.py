"""Integration fixtures: a migrated database per test, on SQLite and (when configured) on PostgreSQL.

Migrating and seeding cost more than most tests, so each test process builds every database a test starts
from once, as a template, and gives each test a copy of its own: on SQLite a copy of the template file, on
PostgreSQL ``CREATE DATABASE ... TEMPLATE``. There are three templates, made on first use: the migrated
schema alone, the schema with the ``world`` (sites, users, tokens, the mini diagram), and that with the
bundled diagrams too (the ``bundled`` fixture of ``tests/e2e``). A test that asks for ``world`` starts from the
second; one that also asks for ``bundled`` from the third. The copies are made with the same settings and the
same fake clock a test's own app has, so a test sees exactly what seeding its own database would have left.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa

from engine.clock import FakeClock

from ..conftest import ROOT

PG_URL = os.environ.get("TETHER_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
PASSWORD = "correct-horse-9"
# What a template holds, in the order it is seeded: each one adds to the one before.
KINDS = ("migrated", "world", "bundled")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _app_config(database_url: str, clock) -> dict:
    """The settings of every test's app (the ``app`` fixture), also used to seed the templates."""
    return {
        "DATABASE_URL": database_url,
        "SCHEDULER": False,
        "SECRET_KEY": "test-secret",
        "CLOCK": clock,
        "FORMS_DIR": str(ROOT / "forms"),
        "TESTING": True,
    }


def _dispose(app) -> None:
    with app.app_context():
        from server.store.extensions import db

        db.session.remove()
        db.engine.dispose()


def seed_world(app) -> dict[str, str]:
    """Sites, one user per role, their tokens, and the mini diagram deployed; returns the tokens by user."""
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


def seed_bundled(app) -> dict[str, int]:
    """Deploy processes/ as the server does at start; returns each key's version."""
    from server.config import project_root
    from server.workflow.definitions import deploy_bundled

    with app.app_context():
        return {row.key: row.version for row, _created in deploy_bundled(project_root() / "processes")}


@dataclass
class Seeded:
    """What a test's database already holds: the world's tokens and the bundled versions, when seeded."""

    tokens: dict[str, str] | None = None
    versions: dict[str, int] | None = None


@dataclass
class Templates:
    """The template databases of one test process, built on first use and removed at the end."""

    folder: Path
    built: dict[tuple[str, str], tuple[str, Seeded]] = field(default_factory=dict)

    def get(self, backend: str, kind: str) -> tuple[str, Seeded]:
        """(the SQLite file or PostgreSQL database name, what it holds) of one template."""
        if (backend, kind) not in self.built:
            self.built[backend, kind] = self._build(backend, kind)
        return self.built[backend, kind]

    def _build(self, backend: str, kind: str) -> tuple[str, Seeded]:
        from server import create_app
        from server.cli import upgrade_database

        before = KINDS[KINDS.index(kind) - 1] if kind != "migrated" else None
        seeded = Seeded()
        if backend == "sqlite":
            where = str(self.folder / f"{kind}.sqlite3")
            if before:
                base, seeded = self.get(backend, before)
                shutil.copyfile(base, where)
            url = f"sqlite:///{where}"
        else:
            where = f"tether_tpl_{kind[:3]}_{uuid.uuid4().hex[:8]}"
            template = f' TEMPLATE "{self.get(backend, before)[0]}"' if before else ""
            if before:
                seeded = self.get(backend, before)[1]
            with _admin() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{where}"{template}'))
            url = _with_database(PG_URL, where)
        app = create_app(_app_config(url, FakeClock()))
        if kind == "migrated":
            upgrade_database(app)
        elif kind == "world":
            seeded = Seeded(tokens=seed_world(app))
        else:
            seeded = Seeded(tokens=seeded.tokens, versions=seed_bundled(app))
        _dispose(app)
        if backend == "sqlite":  # everything in the main file: a copy of it alone is the whole database
            with sqlite3.connect(where) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        return where, seeded

    def drop(self) -> None:
        """Remove the PostgreSQL templates (the SQLite files go with the temporary folder)."""
        names = [where for (backend, _kind), (where, _seeded) in self.built.items() if backend == "postgresql"]
        if names:
            with _admin() as conn:
                for name in reversed(names):
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class _admin:
    """An autocommit connection to the PostgreSQL server, for creating and dropping databases."""

    def __enter__(self):
        self.engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        self.conn = self.engine.connect()
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()
        self.engine.dispose()


# What each test's database was copied from, by database URL (read by the ``world`` and ``bundled`` fixtures).
SEEDED: dict[str, Seeded] = {}


def _kind(request) -> str:
    """The fullest template a test can start from: the fixtures it asks for would seed the rest themselves."""
    names = request.fixturenames
    return "bundled" if "bundled" in names and "world" in names else "world" if "world" in names else "migrated"


@pytest.fixture(scope="session")
def templates(tmp_path_factory):
    """This test process's template databases."""
    built = Templates(tmp_path_factory.mktemp("templates"))
    yield built
    built.drop()


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path, templates):
    """A fresh database for one test: an empty SQLite file (the ``app`` fixture fills it), or a PostgreSQL
    database copied from the template the test's fixtures need."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tether.sqlite3'}"
        return
    template, seeded = templates.get("postgresql", _kind(request))
    name = f"tether_t_{uuid.uuid4().hex[:10]}"
    with _admin() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    url = _with_database(PG_URL, name)
    SEEDED[url] = seeded
    yield url
    SEEDED.pop(url, None)
    with _admin() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def clock():
    """The fake clock the engine and server read in tests."""
    return FakeClock()


@pytest.fixture
def app(request, database_url, clock, templates):
    """A Tether app on a migrated database, with the bundled forms and a fake clock; no scheduler."""
    from server import create_app

    if database_url.startswith("sqlite"):
        template, seeded = templates.get("sqlite", _kind(request))
        shutil.copyfile(template, database_url.removeprefix("sqlite:///"))
        SEEDED[database_url] = seeded
    app = create_app(_app_config(database_url, clock))
    yield app
    if database_url.startswith("sqlite"):
        SEEDED.pop(database_url, None)
    _dispose(app)


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


@pytest.fixture
def world(app, database_url):
    """Sites, one user per role, their tokens, and the mini diagram deployed (copied from a template)."""
    seeded = SEEDED.get(database_url)
    if seeded is not None and seeded.tokens is not None:
        return dict(seeded.tokens)
    return seed_world(app)


@pytest.fixture
def api(app, world):
    """A JSON client; ``api.as_(world['coord'])`` acts as a user."""
    return Api(app.test_client())
