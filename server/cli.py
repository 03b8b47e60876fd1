"""The ``tether`` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import Flask


def _app() -> Flask:
    from . import create_app

    return create_app()


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@click.group()
def main() -> None:
    """Tether: BPMN orchestration for cell and gene therapy supply chains."""


@main.group()
def db() -> None:
    """Database schema commands."""


def upgrade_database(app: Flask) -> None:
    """Apply every migration that is not applied yet."""
    from flask_migrate import upgrade

    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations."""
    app = _app()
    upgrade_database(app)
    click.echo("database schema is up to date")


def deploy_bundled(app: Flask) -> None:
    """Deploy the bundled processes/ diagrams that are new, and say what happened."""
    from .config import project_root
    from .definitions import deploy_bundled as deploy_folder

    folder = Path(app.config.get("PROCESSES_DIR") or project_root() / "processes")
    with app.app_context():
        for row, created in deploy_folder(folder):
            click.echo(f"{'deployed' if created else 'up to date'}: {row.key} version {row.version}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="server processes")
@click.option("--threads", default=8, show_default=True, type=int, help="threads per process")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Upgrade the schema, deploy new bundled processes, start the scheduler and serve."""
    from .serving import run

    app = _app()
    upgrade_database(app)
    deploy_bundled(app)
    run(host, port, workers, threads)


@main.group()
def site() -> None:
    """Sites: treatment centres, manufacturing sites, logistics hubs."""


@site.command("add")
@click.argument("code")
@click.option("--name", default=None)
@click.option("--kind", type=click.Choice(["treatment-centre", "manufacturing", "logistics"]),
              default="treatment-centre", show_default=True)
def site_add(code: str, name: str | None, kind: str) -> None:
    """Register a site with a short unique CODE (SITE-A, MFG-1)."""
    from . import accounts

    app = _app()
    with app.app_context():
        try:
            accounts.add_site(code, name or code, kind, actor="cli")
        except accounts.AccountError as exc:
            _fail(str(exc))
    click.echo(f"site {code} added")


@main.group()
def user() -> None:
    """Users and their roles and sites."""


@user.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, help="admin, designer, coordinator, ...")
@click.option("--site", "sites", multiple=True, help="site code (repeat for several)")
@click.option("--display-name", default=None, help="printed name used on signatures")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
def user_add(name: str, roles: tuple[str, ...], sites: tuple[str, ...], display_name: str | None,
             password_stdin: bool) -> None:
    """Create user NAME with roles and sites."""
    from . import accounts

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    app = _app()
    with app.app_context():
        try:
            accounts.add_user(name, list(roles), list(sites), display_name or name, password, actor="cli")
        except accounts.AccountError as exc:
            _fail(str(exc))
    click.echo(f"user {name} added with roles {', '.join(roles)}")


@main.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.argument("name")
@click.option("--label", default="cli")
def token_create(name: str, label: str) -> None:
    """Create an API token for user NAME; the token is the last line printed."""
    from . import accounts

    app = _app()
    with app.app_context():
        try:
            value = accounts.issue_token(name, label, actor="cli")
        except accounts.AccountError as exc:
            _fail(str(exc))
    click.echo(f"token for {name} (shown once):")
    click.echo(value)


@main.command()
@click.argument("bpmn", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("forms", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def deploy(bpmn: Path, forms: tuple[Path, ...]) -> None:
    """Deploy a BPMN definition with its forms, as the upload endpoint does."""
    from engine.errors import EngineError

    from .definitions import deploy as deploy_definition

    app = _app()
    with app.app_context():
        try:
            row, created = deploy_definition(bpmn.read_bytes(), {f.name: f.read_bytes() for f in forms}, "cli")
        except EngineError as exc:
            _fail(str(exc))
    click.echo(f"{'deployed' if created else 'already deployed'}: {row.key} version {row.version} ({row.id})")


@main.group()
def audit() -> None:
    """The audit trail."""


@audit.command("verify")
def audit_verify() -> None:
    """Verify the whole audit chain: exit 0 when intact, 1 naming the first broken entry."""
    from . import audit as audit_chain

    app = _app()
    with app.app_context():
        result = audit_chain.verify()
    if result["ok"]:
        click.echo(f"audit chain intact: {result['checked']} entries checked")
        return
    click.echo(f"audit chain BROKEN at entry seq {result['first_bad_seq']} "
               f"({result['checked']} entries verified before it)")
    sys.exit(1)


@main.command()
def demo() -> None:
    """Seed sites, users, tokens and therapies at different stages, for a first look."""
    from .demo import seed

    app = _app()
    upgrade_database(app)
    deploy_bundled(app)
    with app.app_context():
        seed(click.echo)


if __name__ == "__main__":  # pragma: no cover
    main()
