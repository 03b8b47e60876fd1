"""Integration fixtures: a migrated database per test, on SQLite and (when configured) on PostgreSQL.

Migrating and seeding cost more than most tests, so each test process builds every database a test starts
from once, as a template, and gives each test a copy of its own: on SQLite a copy of the template file, on
PostgreSQL ``CREATE DATABASE ... TEMPLATE``. A template is the migrated schema with the layers a test's fixtures
ask for seeded on it, in a fixed order (``LAYERS``): the ``world`` (sites, users, tokens, the mini diagram), the
``bundled`` diagrams, the therapy ``network`` (more sites and users, the network diagram). Each template is made
on first use, from a copy of the one with one layer less. The copies are made with the same settings and the same
fake clock a test's own app has, so a test sees exactly what seeding its own database would have left.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa

from engine.clock import FakeClock

from ..conftest import ROOT

PG_URL = os.environ.get("TETHER_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])
PASSWORD = "correct-horse-9"
# The layers a template can hold on the migrated schema, in the order they are seeded (a fixture of each name
# seeds its layer itself when the test's database was not copied from a template holding it).
LAYERS = ("world", "bundled", "network")
Kind = tuple[str, ...]  # the layers of one template, in LAYERS order; () is the migrated schema alone


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


def seed_network(app, world: dict[str, str]) -> dict[str, str]:
    """Beside the world's sites and users: a second manufacturing site, a courier and an apheresis centre, a
    user at each (MFG-1's and MFG-2's makers, the courier's logistics, a planner at MFG-1, the apheresis
    centre's coordinator) and a maker of no particular site, and the network diagram (enrolment at the centre,
    manufacturing in a lane of the manufacturing party, shipping by the logistics party) deployed; returns the
    world's tokens with theirs."""
    from server.access import accounts
    from server.workflow.definitions import deploy

    with app.app_context():
        accounts.add_site("MFG-2", "Manufacturing 2", "manufacturing", "test")
        accounts.add_site("COURIER-1", "Courier One", "logistics", "test")
        accounts.add_site("APH-1", "Apheresis Centre One", "apheresis-centre", "test")
        people = {
            "mfg1": (["manufacturing"], ["MFG-1"]),
            "mfg2": (["manufacturing"], ["MFG-2"]),
            "courier": (["logistics"], ["COURIER-1"]),
            "planner1": (["planner"], ["MFG-1"]),
            "apheresis": (["coordinator"], ["APH-1"]),
            "maker": (["manufacturing"], []),  # not scoped to a site: sees every therapy
        }
        tokens = dict(world)
        for name, (roles, sites) in people.items():
            accounts.add_user(name, roles, sites, f"{name.title()} Person", PASSWORD, "test")
            tokens[name] = accounts.issue_token(name, "test", "test")
        deploy((ROOT / "tests" / "fixtures" / "network.bpmn").read_bytes(), {}, "test")
    return tokens


def _seed(layer: str, app, seeded: Seeded) -> Any:
    """Seed one layer on ``app``'s database, which holds ``seeded`` already; what the layer's fixture returns."""
    if layer == "world":
        return seed_world(app)
    if layer == "bundled":
        return seed_bundled(app)
    return seed_network(app, seeded["world"])


Seeded = dict[str, Any]  # what a test's database already holds: each seeded layer's result, by layer


@dataclass
class Templates:
    """The template databases of one test process, built on first use and removed at the end."""

    folder: Path
    built: dict[tuple[str, Kind], tuple[str, Seeded]] = field(default_factory=dict)
    snapshots: dict[Kind, Snapshot] = field(default_factory=dict)

    def get(self, backend: str, kind: Kind) -> tuple[str, Seeded]:
        """(the SQLite file or PostgreSQL database name, what it holds) of one template."""
        if (backend, kind) not in self.built:
            self.built[backend, kind] = self._build(backend, kind)
        return self.built[backend, kind]

    def _build(self, backend: str, kind: Kind) -> tuple[str, Seeded]:
        from server import create_app
        from server.cli import upgrade_database

        before = kind[:-1] if kind else None
        seeded: Seeded = {}
        if backend == "sqlite":
            where = str(self.folder / f"{'-'.join(('migrated', *kind))}.sqlite3")
            if before is not None:
                base, seeded = self.get(backend, before)
                shutil.copyfile(base, where)
            url = f"sqlite:///{where}"
        else:
            where = f"tether_tpl_{''.join(layer[0] for layer in kind)}_{uuid.uuid4().hex[:8]}"
            template = f' TEMPLATE "{self.get(backend, before)[0]}"' if before is not None else ""
            if before is not None:
                seeded = self.get(backend, before)[1]
            with _admin() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{where}"{template}'))
            url = _with_database(PG_URL, where)
        app = create_app(_app_config(url, FakeClock()))
        if not kind:
            upgrade_database(app)
        else:
            seeded = {**seeded, kind[-1]: _seed(kind[-1], app, seeded)}
        _dispose(app)
        if backend == "sqlite":  # everything in the main file: a copy of it alone is the whole database
            with sqlite3.connect(where) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        return where, seeded

    def snapshot(self, kind: Kind) -> Snapshot:
        """The rows and sequence values of one PostgreSQL template, read on first use."""
        if kind not in self.snapshots:
            self.snapshots[kind] = Snapshot.read(_with_database(PG_URL, self.get("postgresql", kind)[0]))
        return self.snapshots[kind]

    def drop(self) -> None:
        """Remove the PostgreSQL templates (the SQLite files go with the temporary folder)."""
        names = [where for (backend, _kind), (where, _seeded) in self.built.items() if backend == "postgresql"]
        if names:
            with _admin() as conn:
                for name in reversed(names):
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# The shape of a PostgreSQL database: columns (in their order), indexes, constraints, triggers (and whether
# they are enabled) and functions. A test that changed any of it leaves a database that is not reused.
SHAPE = """
SELECT md5(string_agg(item, '|' ORDER BY item)) FROM (
    SELECT table_name || '.' || column_name || ':' || ordinal_position || ':' || data_type || ':' || is_nullable
           || ':' || coalesce(column_default, '') AS item
      FROM information_schema.columns WHERE table_schema = 'public'
    UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
    UNION ALL SELECT conrelid::regclass::text || '.' || conname || ':' || pg_get_constraintdef(oid)
      FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    UNION ALL SELECT tgrelid::regclass::text || '.' || tgname || ':' || tgenabled::text
      FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL SELECT proname || ':' || md5(prosrc) FROM pg_proc WHERE pronamespace = 'public'::regnamespace
) AS shape
"""


@dataclass
class Snapshot:
    """Everything a PostgreSQL template holds: its shape, every table's rows and every sequence's value."""

    shape: str
    tables: list[sa.Table]
    rows: dict[str, list[dict]]
    sequences: dict[str, tuple[int, bool]]

    @classmethod
    def read(cls, url: str) -> Snapshot:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                metadata = sa.MetaData()
                metadata.reflect(bind=conn)
                rows = {t.name: [dict(r._mapping) for r in conn.execute(t.select())] for t in metadata.sorted_tables}
                sequences = _sequences(conn)
                shape = conn.execute(sa.text(SHAPE)).scalar_one()
        finally:
            engine.dispose()
        return cls(shape, list(metadata.sorted_tables), rows, sequences)


def _sequences(conn) -> dict[str, tuple[int, bool]]:
    """Each sequence's value, as ``setval`` takes it: (the last value given, True), or (its start, False) when it
    has given none."""
    return {
        name: (value, True) if value is not None else (start, False)
        for name, value, start in conn.execute(
            sa.text(
                "SELECT quote_ident(sequencename), last_value, start_value"
                " FROM pg_sequences WHERE schemaname = 'public'"
            )
        )
    }


# What has been written to each table, as PostgreSQL's statistics count it (rows inserted, updated and deleted, by
# committed and rolled-back transactions alike), and the table's file (which a TRUNCATE or a rewrite replaces).
WRITES = """
SELECT s.relname, c.relfilenode::text || ':' || (s.n_tup_ins + s.n_tup_upd + s.n_tup_del)::text
  FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE s.schemaname = 'public'
"""


# The other connections to the current database (ended before a reset; PostgreSQL's own processes included).
OTHERS = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"


class Reused:
    """One PostgreSQL database per test process, given back to each test exactly as a template left it.

    Creating a database from a template costs a few tenths of a second of the server's time; emptying this one
    and writing the template's few rows back costs a few hundredths, and emptying only the tables the last test
    wrote costs less again. Before each test every other connection to it is ended and waited for (as ``DROP
    DATABASE ... WITH (FORCE)`` would; an ending connection hands its statistics in as it goes), the tables the
    last test wrote (by the statistics' count of rows written and by the table's file) or whose rows the template
    holds otherwise, with every table that refers to one of them, are emptied and refilled with triggers and
    foreign keys off for the copy (``session_replication_role``, which needs a superuser, as the throwaway cluster
    of scripts/with-postgres has), and the sequences a test moved are set back to the template's values. When a
    test changed the database's shape (a migration down and up, a dropped trigger), it is dropped and made again.
    """

    def __init__(self, templates: Templates):
        self.templates = templates
        self.name: str | None = None
        self.holds: Snapshot | None = None  # the template the database held after the last reset
        self.writes: dict[str, str] = {}  # each table's count of writes and file after the last reset
        self.engine: sa.Engine | None = None
        self.conn: sa.Connection | None = None
        with _admin() as conn:
            self.possible = bool(
                conn.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
            )
            # Without the statistics' counts (a server set up with track_counts off, or one older than PostgreSQL 15,
            # which has no way to hand them in on demand) every table is reset.
            self.counted = (
                conn.execute(sa.text("SHOW track_counts")).scalar() == "on"
                and int(conn.execute(sa.text("SHOW server_version_num")).scalar()) >= 150000
            )

    @property
    def url(self) -> str:
        assert self.name is not None
        return _with_database(PG_URL, self.name)

    def database(self, kind: Kind) -> str:
        """The reused database's URL, holding exactly what the template of ``kind`` holds."""
        snapshot = self.templates.snapshot(kind)
        if self.name is not None:
            try:
                self._restore(snapshot, check=True)
                return self.url
            except _Reshaped:
                pass
            self.drop()
        self.name = f"tether_reused_{uuid.uuid4().hex[:10]}"
        with _admin() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}" TEMPLATE "{self.templates.get("postgresql", ())[0]}"'))
        self._restore(snapshot, check=False)
        return self.url

    def _stale(self, snapshot: Snapshot, writes: dict[str, str]) -> set[str]:
        """The tables to empty and refill: those written since the last reset or holding another template's rows,
        and every table that refers to one of them (PostgreSQL empties a table only with those that refer to it)."""
        held = self.holds
        stale = {
            table.name
            for table in snapshot.tables
            if writes.get(table.name) != self.writes.get(table.name)
            or (held is not snapshot and (held is None or held.rows.get(table.name) != snapshot.rows[table.name]))
        }
        referring = {table.name: {key.column.table.name for key in table.foreign_keys} for table in snapshot.tables}
        while True:
            more = {name for name, targets in referring.items() if targets & stale} - stale
            if not more:
                return stale
            stale |= more

    def _connection(self) -> sa.Connection:
        """This process's own connection to the reused database, kept from reset to reset (a new one would read
        the system catalogs anew for every statement of the reset)."""
        if self.conn is None or self.conn.closed or self.conn.invalidated:
            self.close()
            self.engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
            self.conn = self.engine.connect()
        return self.conn

    def _restore(self, snapshot: Snapshot, check: bool) -> None:
        try:
            self._reset(self._connection(), snapshot, check)
        except sa.exc.DBAPIError as error:
            if not error.connection_invalidated:  # (a test may have ended every connection, this one too)
                raise
            self._reset(self._connection(), snapshot, check)

    def _reset(self, conn: sa.Connection, snapshot: Snapshot, check: bool) -> None:
        conn.execute(sa.text(f"SELECT pg_terminate_backend(pid{', 10000' if self.counted else ''}) {OTHERS}"))
        conn.commit()  # (a transaction reads the activity and the statistics once: read them anew)
        others = conn.execute(sa.text(f"SELECT count(*) {OTHERS}")).scalar_one()
        if check and (others or conn.execute(sa.text(SHAPE)).scalar_one() != snapshot.shape):
            conn.rollback()
            raise _Reshaped
        stale = self._stale(snapshot, dict(conn.execute(sa.text(WRITES)).all())) if check and self.counted else None
        tables = [table for table in snapshot.tables if stale is None or table.name in stale]
        if tables:
            conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
            # TRUNCATE, not DELETE (which costs less): rows written after a DELETE can land in the space of the
            # deleted ones, so rows that tie in an ORDER BY would come back in another order than they were
            # written in, as they never do in a new database.
            names = ", ".join(f'"{table.name}"' for table in tables)
            conn.execute(sa.text(f"TRUNCATE {names}"))
            for table in tables:
                if snapshot.rows[table.name]:
                    conn.execute(table.insert(), snapshot.rows[table.name])
        moved = _sequences(conn) if check else {}
        for name, (value, called) in snapshot.sequences.items():
            if moved.get(name) != (value, called):
                conn.execute(
                    sa.text("SELECT setval(:name, :value, :called)"),
                    {"name": name, "value": value, "called": called},
                )
        conn.commit()
        self.holds = snapshot
        if self.counted:
            # This connection's own writes counted in the statistics before they are read as the new starting
            # point (a connection hands its counts in as it goes idle, not more often than once a second unless
            # asked).
            conn.execute(sa.text("SELECT pg_stat_force_next_flush()"))
            conn.commit()
            self.writes = dict(conn.execute(sa.text(WRITES)).all())
            conn.commit()

    def close(self) -> None:
        """Close this process's connection to the reused database."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None

    def drop(self) -> None:
        """Drop the reused database (at the end, or when a test changed its shape)."""
        self.close()
        self.holds, self.writes = None, {}
        if self.name is not None:
            with _admin() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            self.name = None


class _Reshaped(Exception):
    """A test changed the reused database's shape."""


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


def _kind(request) -> Kind:
    """The template a test starts from: the layers its fixtures ask for (each layer's fixture asks for the world)."""
    names = request.fixturenames
    return tuple(layer for layer in LAYERS if layer in names) if "world" in names else ()


@pytest.fixture(scope="session")
def templates(tmp_path_factory):
    """This test process's template databases."""
    built = Templates(tmp_path_factory.mktemp("templates"))
    yield built
    built.drop()


@pytest.fixture(scope="session")
def reused(templates):
    """This test process's reused PostgreSQL database (None when each test gets a new one)."""
    if not PG_URL or os.environ.get("TETHER_TEST_POSTGRES_REUSE", "1") != "1":
        yield None
        return
    database = Reused(templates)
    if not database.possible:
        yield None
        return
    yield database
    database.drop()


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path, templates, reused):
    """A fresh database for one test: an empty SQLite file (the ``app`` fixture fills it), or a PostgreSQL
    database holding what the template the test's fixtures need holds (the reused database, restored, or
    with TETHER_TEST_POSTGRES_REUSE=0 a new copy of the template)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tether.sqlite3'}"
        return
    if reused is not None:
        kind = _kind(request)
        url = reused.database(kind)
        SEEDED[url] = dict(templates.get("postgresql", kind)[1])
        yield url
        SEEDED.pop(url, None)
        return
    template, seeded = templates.get("postgresql", _kind(request))
    name = f"tether_t_{uuid.uuid4().hex[:10]}"
    with _admin() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    url = _with_database(PG_URL, name)
    SEEDED[url] = dict(seeded)
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
        SEEDED[database_url] = dict(seeded)
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

    def put(self, path, json=None, **kw):
        return self.client.put(path, json=json, headers=self._headers(kw.pop("headers", None)), **kw)

    def delete(self, path, **kw):
        return self.client.delete(path, headers=self._headers(kw.pop("headers", None)), **kw)


def _layer(layer: str, app, database_url: str) -> Any:
    """What seeding ``layer`` returned: from the template the test's database was copied from, or seeded now."""
    seeded = SEEDED.setdefault(database_url, {})
    if layer not in seeded:
        seeded[layer] = _seed(layer, app, seeded)
    return dict(seeded[layer])


@pytest.fixture
def world(app, database_url):
    """Sites, one user per role, their tokens, and the mini diagram deployed (copied from a template)."""
    return _layer("world", app, database_url)


@pytest.fixture
def bundled(app, world, database_url):
    """Deploy processes/ as the server does at start (copied from a template); returns each key's version."""
    return _layer("bundled", app, database_url)


@pytest.fixture
def network(app, world, database_url):
    """The world's tokens and the therapy network's (``seed_network``; copied from a template)."""
    return _layer("network", app, database_url)


@pytest.fixture
def api(app, world):
    """A JSON client; ``api.as_(world['coord'])`` acts as a user."""
    return Api(app.test_client())
