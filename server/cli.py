"""The ``tether`` command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from flask import Flask

from server.store.models import SITE_KINDS

if TYPE_CHECKING:
    from server.store.models import User


def _app() -> Flask:
    from . import create_app

    return create_app()


def _fail(message: str) -> NoReturn:
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
    from server.workflow.definitions import deploy_bundled as deploy_folder

    from .config import project_root

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


def _run(command: Any, *, not_found: str | None = None) -> Any:
    """Hand ``command`` to its handler (in an app context); a refusal ends the command line with its reason,
    in the words of the rule that refused it (``not_found`` instead for something that does not exist)."""
    from engine.errors import EngineError
    from server.access.accounts import AccountError
    from server.errors import ApiError
    from server.usecases import handle

    try:
        return handle(command)
    except EngineError as exc:
        _fail(str(exc))
    except ApiError as exc:
        if not_found is not None and exc.status == 404:
            _fail(not_found)
        _fail(str(exc.__cause__) if isinstance(exc.__cause__, (AccountError, EngineError)) else exc.message)


@main.group()
def site() -> None:
    """Sites: treatment centres, manufacturing sites, logistics hubs."""


@site.command("add")
@click.argument("code")
@click.option("--name", default=None)
@click.option(
    "--kind",
    type=click.Choice(SITE_KINDS),
    default="treatment-centre",
    show_default=True,
)
def site_add(code: str, name: str | None, kind: str) -> None:
    """Register a site with a short unique CODE (SITE-A, MFG-1)."""
    from server.usecases.account_commands import AddSite
    from server.usecases.console import OPERATOR

    app = _app()
    with app.app_context():
        _run(AddSite(code, name or code, kind, OPERATOR))
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
def user_add(
    name: str, roles: tuple[str, ...], sites: tuple[str, ...], display_name: str | None, password_stdin: bool
) -> None:
    """Create user NAME with roles and sites."""
    from server.usecases.account_commands import AddUser
    from server.usecases.console import OPERATOR

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    app = _app()
    with app.app_context():
        _run(AddUser(name, roles, sites, display_name or name, password, OPERATOR))
    click.echo(f"user {name} added with roles {', '.join(roles)}")


def _change_user(name: str, change: Callable[[User], None]) -> None:
    """Run ``change(user)`` on user NAME in an app context; an unknown name ends the command."""
    from server.access import accounts

    app = _app()
    with app.app_context():
        try:
            account = accounts.find_user(name)
        except accounts.AccountError as exc:
            _fail(str(exc))
        change(account)


@user.command("list")
def user_list() -> None:
    """List users with their roles, sites and whether they are active or locked."""
    from sqlalchemy import select

    from server.store.extensions import db as database
    from server.store.models import User

    app = _app()
    with app.app_context():
        for row in database.session.execute(select(User).order_by(User.id)).scalars():
            status = "active" if row.active else "deactivated"
            status += ", locked" if row.locked else ""
            click.echo(
                f"{row.id:>5} {row.username:<20} {', '.join(row.roles):<24} "
                f"{', '.join(row.site_codes) or 'all sites':<20} {status}"
            )


@user.command("unlock")
@click.argument("name")
@click.option("--reason", default=None)
def user_unlock(name: str, reason: str | None) -> None:
    """Unlock user NAME after repeated failed signatures."""
    from server.usecases.account_commands import UnlockUser
    from server.usecases.console import OPERATOR

    def change(account: User) -> None:
        _, done = _run(UnlockUser(account.id, OPERATOR, reason))
        click.echo(f"user {name} unlocked" if done else f"user {name} was not locked")

    _change_user(name, change)


@user.command("deactivate")
@click.argument("name")
@click.option("--reason", default=None)
def user_deactivate(name: str, reason: str | None) -> None:
    """Deactivate user NAME (users are never deleted; their ids are never reused)."""
    _set_active(name, False, reason)


@user.command("reactivate")
@click.argument("name")
@click.option("--reason", default=None)
def user_reactivate(name: str, reason: str | None) -> None:
    """Reactivate user NAME."""
    _set_active(name, True, reason)


def _set_active(name: str, active: bool, reason: str | None) -> None:
    from server.usecases.account_commands import ChangeUser
    from server.usecases.console import OPERATOR

    def change(account: User) -> None:
        _run(ChangeUser(account.id, OPERATOR, active=active, reason=reason))
        click.echo(f"user {name} {'reactivated' if active else 'deactivated'}")

    _change_user(name, change)


@user.group("role")
def user_role() -> None:
    """Grant and withdraw roles."""


@user_role.command("add")
@click.argument("name")
@click.argument("role")
@click.option("--reason", default=None)
def user_role_add(name: str, role: str, reason: str | None) -> None:
    """Grant ROLE to user NAME."""
    _set_roles(name, lambda roles: [*roles, role], reason)


@user_role.command("remove")
@click.argument("name")
@click.argument("role")
@click.option("--reason", default=None)
def user_role_remove(name: str, role: str, reason: str | None) -> None:
    """Withdraw ROLE from user NAME."""

    def without(roles: list[str]) -> list[str]:
        if role not in roles:
            _fail(f"user {name} does not have the role {role}")
        return [r for r in roles if r != role]

    _set_roles(name, without, reason)


def _set_roles(name: str, new_roles: Callable[[list[str]], list[str]], reason: str | None) -> None:
    """Give user NAME the roles ``new_roles(their roles)`` and say which they now have."""
    from server.usecases.account_commands import ChangeUser
    from server.usecases.console import OPERATOR

    def change(account: User) -> None:
        user, _ = _run(ChangeUser(account.id, OPERATOR, roles=tuple(new_roles(list(account.roles))), reason=reason))
        click.echo(f"user {name} now has roles {', '.join(user.roles)}")

    _change_user(name, change)


@main.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.argument("name")
@click.option("--label", default="cli")
def token_create(name: str, label: str) -> None:
    """Create an API token for user NAME; the token is the last line printed."""
    from server.usecases.account_commands import IssueToken
    from server.usecases.console import OPERATOR

    value = ""

    def issue(account: User) -> None:
        nonlocal value
        value, _ = _run(IssueToken(OPERATOR, label=label, user_id=account.id))

    _change_user(name, issue)
    click.echo(f"token for {name} (shown once):")
    click.echo(value)


@token.command("list")
@click.argument("name", required=False)
def token_list(name: str | None) -> None:
    """List API tokens (of user NAME, or all) without their secrets."""
    from sqlalchemy import select

    from server.access import accounts
    from server.store.extensions import db as database
    from server.store.models import ApiToken

    app = _app()
    with app.app_context():
        query = select(ApiToken).order_by(ApiToken.id)
        if name:
            try:
                query = query.where(ApiToken.user_id == accounts.find_user(name).id)
            except accounts.AccountError as exc:
                _fail(str(exc))
        for row in database.session.execute(query).scalars():
            expires = row.expires_at.isoformat() if row.expires_at else "never"
            click.echo(
                f"{row.id:>5} {row.user.username:<20} {row.label:<16} {accounts.token_status(row):<8} expires {expires}"
            )


def _run_on_token(command: Any) -> bool:
    """Run a command on the token ``command.token_id`` in an app context; whether it changed the token."""
    app = _app()
    with app.app_context():
        _, changed = _run(
            command, not_found=f"token {command.token_id} does not exist ('tether token list' shows the ids)"
        )
    return changed


@token.command("revoke")
@click.argument("token_id", type=int)
@click.option("--reason", default=None)
def token_revoke(token_id: int, reason: str | None) -> None:
    """Revoke token TOKEN_ID at once."""
    from server.usecases.account_commands import RevokeToken
    from server.usecases.console import OPERATOR

    done = _run_on_token(RevokeToken(token_id, OPERATOR, reason=reason))
    click.echo(f"token {token_id} revoked" if done else f"token {token_id} was already revoked")


@token.command("expire")
@click.argument("token_id", type=int)
@click.option("--reason", default=None)
def token_expire(token_id: int, reason: str | None) -> None:
    """Expire token TOKEN_ID now."""
    from server.usecases.account_commands import ExpireToken
    from server.usecases.console import OPERATOR

    done = _run_on_token(ExpireToken(token_id, OPERATOR, reason=reason))
    click.echo(f"token {token_id} expired" if done else f"token {token_id} had expired already")


@main.command()
@click.argument("bpmn", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("forms", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def deploy(bpmn: Path, forms: tuple[Path, ...]) -> None:
    """Deploy a BPMN definition with its forms, as the upload endpoint does."""
    from server.usecases.console import OPERATOR
    from server.usecases.definition_commands import DeployDefinition

    app = _app()
    with app.app_context():
        row, created = _run(DeployDefinition(bpmn.read_bytes(), OPERATOR, {f.name: f.read_bytes() for f in forms}))
    click.echo(f"{'deployed' if created else 'already deployed'}: {row.key} version {row.version} ({row.id})")


@main.group()
def audit() -> None:
    """The audit trail."""


@audit.command("verify")
def audit_verify() -> None:
    """Verify every audit chain and seal: exit 0 when intact, 1 naming the first broken entry or seal."""
    from sqlalchemy import func, select

    from server.store import audit as audit_chain
    from server.store.extensions import db as database
    from server.store.models import AuditChainHead

    app = _app()
    with app.app_context():
        total = int(database.session.execute(select(func.coalesce(func.sum(AuditChainHead.chain_seq), 0))).scalar_one())
        # Progress on stderr, so scripts reading the verdict from stdout see only the verdict.
        with click.progressbar(length=total, label="verifying", file=sys.stderr, show_pos=True) as bar:
            done = [0]

            def advance(checked: int) -> None:
                bar.update(min(checked, total) - done[0])
                done[0] = min(checked, total)

            result = audit_chain.verify(progress=advance)
    if result["ok"]:
        click.echo(
            f"audit chain intact: {result['checked']} entries checked in {result['chains']} chains, "
            f"{result['seals']} seals"
        )
        if "last_seal" in result:
            click.echo(f"latest seal {result['last_seal']['id']}, hash {result['last_seal']['hash']}")
        _report_spool(result)
        return
    if "first_bad_seq" in result:
        click.echo(
            f"audit chain BROKEN at entry seq {result['first_bad_seq']} (chain {result['first_bad_chain']}, "
            f"entry {result['first_bad_chain_seq']} of it; {result['checked']} entries verified before it)"
        )
    if "first_bad_seal" in result:
        click.echo(f"audit seals BROKEN at seal {result['first_bad_seal']}")
    _report_spool(result)
    sys.exit(1)


def _report_spool(result: dict) -> None:
    """Say how many refusals still wait in the audit spool: they are on record but not yet in a chain."""
    if result.get("spooled"):
        click.echo(
            f"{result['spooled']} audit entries of refused requests wait in the audit spool for a busy database; "
            "they join the chain at the next write (run the check again then)"
        )


@audit.command("seal")
def audit_seal() -> None:
    """Seal the audit chains' heads that moved since the last seal (``tether serve`` does it periodically)."""
    from server.store import audit as audit_chain

    app = _app()
    with app.app_context():
        sealed = audit_chain.seal()
    if sealed is None:
        click.echo("nothing to seal: no chain moved since the last seal")
        return
    click.echo(f"seal {sealed['seal']}: {sealed['heads']} chain heads, root {sealed['root']}, hash {sealed['hash']}")


@main.command()
@click.option(
    "--url",
    default="http://127.0.0.1:5000",
    show_default=True,
    help="where the server will answer (tether serve's --host and --port), for the hints printed",
)
def demo(url: str) -> None:
    """Seed sites, users, tokens and therapies at different stages, for a first look."""
    from .demo import seed

    app = _app()
    upgrade_database(app)
    deploy_bundled(app)
    with app.app_context():
        seed(click.echo, base_url=url.rstrip("/"))


if __name__ == "__main__":  # pragma: no cover
    main()
