"""Real ``tether serve`` processes and ``tether`` commands for the tests: ``serving`` (a server for the length of a
block), ``Server`` (one a test starts and stops, ``served_environment`` and ``prepare_served`` for its database),
``KillableServer`` (in a process group of its own, so a test can kill it and all its workers at once),
``database_for``, ``tether_cli`` and ``cli_user``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from ..conftest import FIXTURES, ROOT
from ..integration.conftest import PG_URL, _with_database
from .network import free_port


@contextlib.contextmanager
def serving(env: dict, cwd: Path, start_timeout: float = 60) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """``tether serve`` on a free port with ``env``, in ``cwd`` (its output in ``cwd/serve.log``), once it answers
    its health check: (the API's base URL, the process, the log's path). Stopped when the block ends."""
    server = Server(env, cwd, "serve")
    try:
        server.wait_healthy(start_timeout)
        yield server.base, server.proc, server.log_path
    finally:
        server.stop()


def tether_cli(*args: str, env: dict, cwd: Path, stdin: str | None = None, check: bool = False):
    """Run the ``tether`` command line with ``env`` as its environment and ``cwd`` as its folder; with ``check``,
    fail the test on an error. Returns a ``CompletedProcess`` (``returncode``, ``stdout``, ``stderr``).

    The command runs in this process through click's test runner: the same command, arguments, input and
    settings, without the second or two a new interpreter needs to import the server (set
    ``TETHER_TEST_CLI_SUBPROCESS=1`` to run ``python -m server.cli`` instead). Each app the command makes is
    disposed of afterwards, so no connection outlives it.
    """
    if os.environ.get("TETHER_TEST_CLI_SUBPROCESS") == "1":
        done = subprocess.run(
            [sys.executable, "-m", "server.cli", *args],
            env=env,
            cwd=cwd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    else:
        done = _in_process(list(args), env, cwd, stdin)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _in_process(args: list[str], env: dict, cwd: Path, stdin: str | None) -> subprocess.CompletedProcess:
    from click.testing import CliRunner

    from server import cli

    made = []
    make = cli._app

    def app():
        made.append(make())
        return made[-1]

    overrides: dict[str, str | None] = {name: None for name in os.environ if name not in env}
    overrides.update(env)
    try:
        cli._app = app
        with contextlib.chdir(cwd):
            result = CliRunner().invoke(cli.main, args, input=stdin, env=overrides, catch_exceptions=True)
    finally:
        cli._app = make
        for each in made:
            with each.app_context():
                from server.store.extensions import db

                db.session.remove()
                db.engine.dispose()
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["tether", *args], result.exit_code, result.stdout, stderr)


class Server:
    """One ``tether serve`` subprocess on a free port (with ``workers`` worker processes; with ``new_session`` the
    leader of a process group of its own)."""

    def __init__(self, env: dict, cwd: Path, name: str, workers: int | None = None, new_session: bool = False):
        self.port, self.cwd, self.name = free_port(), cwd, name
        self.base = f"http://127.0.0.1:{self.port}/api/v1"
        self.log_path = cwd / f"{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--port", str(self.port)]
            + (["--workers", str(workers)] if workers is not None else []),
            env=env,
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )

    def wait_healthy(self, seconds: float = 45) -> None:
        """Wait until the server answers its health check with its scheduler running; fail the test with its log
        when it has not within ``seconds`` or has ended."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                health = requests.get(f"{self.base}/health", timeout=3)
                if health.status_code == 200 and health.json()["scheduler"] == "running":
                    return
            except requests.RequestException:  # not listening yet, or busy starting
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"{self.name} did not start:\n" + self.log_path.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def served_environment(tmp_path: Path, database_url: str, diagram: bytes) -> dict:
    """The environment of a ``tether serve`` on ``database_url`` with ``diagram`` as its one process (in
    ``tmp_path/processes``), the test forms and no webhook dispatcher."""
    processes = tmp_path / "processes"
    processes.mkdir()
    (processes / "timers.bpmn").write_bytes(diagram)
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TETHER_DATABASE_URL": database_url,
        "TETHER_PROCESSES_DIR": str(processes),
        "TETHER_FORMS_DIR": str(FIXTURES),
        "TETHER_SECRET_KEY": "two-servers",
        "TETHER_DISPATCHER": "false",
    }


@contextlib.contextmanager
def served_app(env: dict) -> Iterator[Any]:
    """An app on the database of a server's environment ``env`` (no scheduler), its schema migrated, the
    environment's diagrams deployed and a site SITE-A added: the block runs in its app context, and the app lets go
    of the database afterwards, before any server starts on it."""
    from server import create_app
    from server.access import accounts
    from server.cli import upgrade_database
    from server.store.extensions import db
    from server.workflow.definitions import deploy

    app = create_app(
        {
            "DATABASE_URL": env["TETHER_DATABASE_URL"],
            "SCHEDULER": False,
            "SECRET_KEY": "t",
            "FORMS_DIR": env["TETHER_FORMS_DIR"],
        }
    )
    upgrade_database(app)
    with app.app_context():
        for path in sorted(Path(env["TETHER_PROCESSES_DIR"]).glob("*.bpmn")):
            deploy(path.read_bytes(), {}, "test")
        accounts.add_site("SITE-A", "Centre A", "treatment-centre", "test")
        try:
            yield app
        finally:
            db.session.remove()
            db.engine.dispose()


def prepare_served(env: dict, therapies: int = 0, first_due_in: float = 0, spread: float = 0) -> tuple[str, list[str]]:
    """Schema, the diagram, a site, a coordinator and ``therapies`` started on the timer diagram (whose timers
    come due between ``first_due_in`` and ``first_due_in + spread`` seconds); returns a token and their ids."""
    from server.access import accounts
    from server.store.models import utcnow
    from server.workflow.therapies import start_therapy

    ids = []
    with served_app(env):
        accounts.add_user("coord", ["coordinator"], ["SITE-A"], "Coord Person", "long-enough-pw-1", "test")
        token = accounts.issue_token("coord", "test", "test")
        for i in range(therapies):
            # Due ``first_due_in`` s after the therapy starts (not after the first one did: on a busy machine the
            # seeding can outlast that, and a timer already due at the start fires in the seeding itself).
            due = utcnow() + timedelta(seconds=first_due_in + spread * i / therapies)
            ids.append(
                start_therapy("timers_due_date", None, "SITE-A", f"PT-{i:04d}", {"due_at": due.isoformat()}, "seed").id
            )
    return token, ids


class KillableServer(Server):
    """``tether serve`` with ``workers`` worker processes, started as the leader of a new process group."""

    def __init__(self, env: dict, cwd: Path, name: str, workers: int = 2):  # noqa: D107  (the parent's fields)
        super().__init__(env, cwd, name, workers=workers, new_session=True)

    def kill(self) -> None:
        """SIGKILL to the whole process group: the master and every worker die mid-request, nothing is flushed."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.log.close()

    def stop(self) -> None:
        """A normal stop, then anything left of the group is killed."""
        super().stop()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def database_for(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL for real server processes (skips PostgreSQL when none is configured)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'served.sqlite3'}"
        return
    if not PG_URL:
        pytest.skip("needs TETHER_TEST_POSTGRES_URL (scripts/with-postgres)")
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"tether_crash_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(PG_URL, name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def cli_user(name: str, role: str, site: str | None, password: str, *, env: dict, cwd: Path) -> str:
    """Add a user (``tether user add``, the password on stdin, scoped to ``site`` when given) and return a new
    API token for it (``tether token create``); fails the test on an error."""
    tether_cli(
        "user",
        "add",
        name,
        "--role",
        role,
        "--password-stdin",
        *(["--site", site] if site else []),
        env=env,
        cwd=cwd,
        stdin=password + "\n",
        check=True,
    )
    return tether_cli("token", "create", name, env=env, cwd=cwd, check=True).stdout.strip().splitlines()[-1]
