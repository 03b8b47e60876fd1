"""Account, token and webhook commands through their handlers, and the command line's operator at the console."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from .conftest import PASSWORD


def _user(name: str):
    from server.access import accounts

    return accounts.find_user(name)


def _audit(action: str) -> list:
    from server.store.extensions import db
    from server.store.models import AuditEntry

    return (
        db.session.execute(sa.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq))
        .scalars()
        .all()
    )


def test_a_handler_refuses_a_caller_without_the_role_and_audits_the_refusal(app, world):
    from server.errors import Forbidden
    from server.store.extensions import db
    from server.store.models import Site
    from server.usecases import handle
    from server.usecases.account_commands import AddSite
    from server.usecases.webhook_commands import Subscribe

    with app.app_context():
        with pytest.raises(Forbidden) as refused:
            handle(AddSite("SITE-Z", "Centre Z", "treatment-centre", _user("coord")))
        assert refused.value.details == {"required_roles": ["admin"]}
        assert db.session.execute(sa.select(Site).where(Site.code == "SITE-Z")).scalar_one_or_none() is None
        entry = _audit("request.refused")[-1]
        assert (entry.actor, entry.subject_type, entry.subject_id) == ("coord", "command", "AddSite")
        assert entry.data["status"] == 403

        with pytest.raises(Forbidden):
            handle(Subscribe("https://example.com/hook", ("therapy.*",), _user("coord")))


def test_administrators_cannot_lock_themselves_out_through_the_handler(app, world):
    from server.errors import Conflict
    from server.usecases import handle
    from server.usecases.account_commands import ChangeUser

    with app.app_context():
        admin = _user("admin")
        for change in ({"active": False}, {"roles": ("designer",)}):
            with pytest.raises(Conflict) as refused:
                handle(ChangeUser(admin.id, admin, **change))
            assert refused.value.code == "self_lockout"
        admin = _user("admin")
        assert admin.active and admin.roles == ["admin"]
        assert [e.data["code"] for e in _audit("request.refused")] == ["self_lockout", "self_lockout"]

        user, changes = handle(ChangeUser(_user("coord").id, admin, active=False, reason="left"))
        assert changes == ["user.deactivated"] and not user.active


def test_only_an_administrator_issues_tokens_for_others(app, world):
    from server.errors import Invalid
    from server.usecases import handle
    from server.usecases.account_commands import IssueToken, RevokeToken

    with app.app_context():
        with pytest.raises(Invalid) as refused:
            handle(IssueToken(_user("coord"), user_id=_user("qa").id))
        assert refused.value.code == "unknown_user"
        _, record = handle(IssueToken(_user("admin"), label="for qa", user_id=_user("qa").id))
        assert record.user.username == "qa"
        from server.errors import NotFound

        with pytest.raises(NotFound):  # another user's token does not exist for a coordinator
            handle(RevokeToken(record.id, _user("coord")))


def test_the_operator_at_the_console_administers_every_site_and_is_named_cli(app, world):
    from server.access.auth import can_see_site, visible_site_ids
    from server.usecases import handle
    from server.usecases.account_commands import AddSite, IssueToken, RevokeToken
    from server.usecases.console import OPERATOR

    with app.app_context():
        site = handle(AddSite("SITE-Z", "Centre Z", "treatment-centre", OPERATOR))
        assert visible_site_ids(OPERATOR) is None and can_see_site(OPERATOR, site.id)
        assert _audit("site.created")[-1].actor == "cli"
        _, record = handle(IssueToken(OPERATOR, label="ops", user_id=_user("coord").id))
        assert record.user.username == "coord"
        _, revoked = handle(RevokeToken(record.id, OPERATOR, reason="rotated"))
        assert revoked and [e.actor for e in _audit("token.revoked")] == ["cli"]


@pytest.fixture
def tether(app, world, monkeypatch):
    """Run ``tether ...`` on the test's app: (exit code, standard output, standard error)."""
    from server import cli

    monkeypatch.setattr(cli, "_app", lambda: app)

    def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli.main, list(args), input=stdin)
        return result.exit_code, result.stdout, result.stderr

    return run


def test_the_command_line_says_what_it_did_and_why_it_refused(app, tether):
    assert tether("site", "add", "SITE-Z", "--name", "Centre Z") == (0, "site SITE-Z added\n", "")
    assert tether("site", "add", "SITE-Z") == (2, "", "error: site SITE-Z already exists\n")
    added = tether(
        "user", "add", "nurse", "--role", "coordinator", "--site", "SITE-Z", "--password-stdin", stdin=PASSWORD
    )
    assert added == (0, "user nurse added with roles coordinator\n", "")
    assert tether("user", "add", "nurse", "--role", "coordinator") == (2, "", "error: user nurse already exists\n")
    assert tether("user", "role", "add", "nurse", "qa") == (0, "user nurse now has roles coordinator, qa\n", "")
    assert tether("user", "role", "remove", "nurse", "admin") == (
        2,
        "",
        "error: user nurse does not have the role admin\n",
    )
    assert tether("user", "deactivate", "nurse", "--reason", "left") == (0, "user nurse deactivated\n", "")
    assert tether("user", "unlock", "ghost") == (2, "", "error: user ghost does not exist\n")
    assert tether("token", "create", "nurse") == (2, "", "error: user nurse is deactivated\n")
    code, out, _ = tether("token", "create", "coord", "--label", "ops")
    assert (
        code == 0 and out.splitlines()[0] == "token for coord (shown once):" and out.splitlines()[1].startswith("tth_")
    )
    assert tether("token", "revoke", "9999") == (
        2,
        "",
        "error: token 9999 does not exist ('tether token list' shows the ids)\n",
    )
    with app.app_context():
        changes = [*_audit("user.created"), *_audit("user.roles_changed"), *_audit("user.deactivated")]
        assert [(e.actor, e.action) for e in changes if e.data["username"] == "nurse"] == [
            ("cli", "user.created"),
            ("cli", "user.roles_changed"),
            ("cli", "user.deactivated"),
        ]
        assert [e.actor for e in _audit("site.created") if e.data["code"] == "SITE-Z"] == ["cli"]
