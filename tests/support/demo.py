"""``tether demo`` seeded once per test run, and a copy of it for each test that serves it.

Seeding the demo takes ten to fifty seconds of CPU (every demo therapy is run through its process). The first
test process that needs the demo on a backend seeds it, under a lock in the folder the run's test processes
share, into a template: a SQLite file, or a PostgreSQL database. Every test then gets a copy of its own (a file
copy, or ``CREATE DATABASE ... TEMPLATE``), holding exactly what ``tether demo`` left, and the output the command
printed (the demo users' tokens and password). The PostgreSQL templates are dropped when the run ends
(``drop_templates``, from ``tests/conftest.py``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from ..conftest import ROOT
from ..integration.conftest import PG_URL, _admin, _with_database

# The PostgreSQL templates made in this run, one name a line, in the folder the test processes share.
TEMPLATES_FILE = "demo-templates.txt"


@dataclass
class Demo:
    """A copy of the seeded demo: its database URL and what ``tether demo`` printed."""

    url: str
    stdout: str

    @property
    def tokens(self) -> dict[str, str]:
        """The demo users' API tokens, by user name."""
        return {
            line.split()[0]: line.split()[-1]
            for line in self.stdout.splitlines()
            if line.strip().split(" ")[-1].startswith("tth_")
        }

    @property
    def password(self) -> str:
        """The demo users' password."""
        return next(line.split(": ")[1].rstrip("):") for line in self.stdout.splitlines() if "password" in line)


def shared_folder(tmp_path_factory) -> Path:
    """The folder every test process of this run shares (each xdist worker's own folder is inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _seed(backend: str, folder: Path) -> dict:
    """Run ``tether demo`` (a process of its own, as a user would) into a new template; what it made."""
    if backend == "sqlite":
        where = str(folder / "demo-template.sqlite3")
        url = f"sqlite:///{where}"
    else:
        assert PG_URL
        where = f"tether_demo_tpl_{uuid.uuid4().hex[:10]}"
        with _admin() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{where}"'))
        with open(folder / TEMPLATES_FILE, "a") as listed:
            listed.write(where + "\n")
        url = _with_database(PG_URL, where)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TETHER_DATABASE_URL": url}
    seeded = subprocess.run(
        [sys.executable, "-m", "server.cli", "demo"],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert seeded.returncode == 0, seeded.stderr
    if backend == "sqlite":  # everything in the main file: a copy of it alone is the whole database
        with sqlite3.connect(where) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    return {"where": where, "stdout": seeded.stdout}


def demo_copy(backend: str, tmp_path_factory, target: Path) -> Demo:
    """A database holding what ``tether demo`` seeds, of the test's own: a SQLite file in ``target`` (a folder),
    or a new PostgreSQL database (drop it with ``drop_copy``)."""
    if backend == "postgresql" and not PG_URL:
        pytest.skip("needs TETHER_TEST_POSTGRES_URL (scripts/with-postgres)")
    folder = shared_folder(tmp_path_factory)
    record = folder / f"demo-{backend}.json"
    with _locked(folder / f"demo-{backend}.lock"):  # one seeds, the others wait for it; copies one at a time
        if record.exists():
            made = json.loads(record.read_text())
        else:
            made = _seed(backend, folder)
            record.write_text(json.dumps(made))
        if backend == "sqlite":
            copy = target / "db.sqlite3"
            shutil.copyfile(made["where"], copy)
            return Demo(f"sqlite:///{copy}", made["stdout"])
        name = f"tether_demo_{uuid.uuid4().hex[:10]}"
        with _admin() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{made["where"]}"'))
        assert PG_URL
        return Demo(_with_database(PG_URL, name), made["stdout"])


def drop_copy(demo: Demo) -> None:
    """Drop a PostgreSQL copy (a SQLite copy goes with its temporary folder)."""
    if demo.url.startswith("postgresql"):
        name = demo.url.rsplit("/", 1)[1]
        with _admin() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def drop_templates(folder: Path) -> None:
    """Drop the PostgreSQL templates of the run whose shared folder is ``folder`` (at its very end)."""
    listed = folder / TEMPLATES_FILE
    if not listed.exists():
        return
    with _admin() as conn:
        for name in listed.read_text().split():
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    listed.unlink()
