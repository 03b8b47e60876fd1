"""The commands as the only way in: one handler each, the same rule and the same refusal audit whoever calls."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from sqlalchemy import select

from server import usecases
from server.errors import ApiError
from server.store.extensions import db
from server.store.models import AuditEntry, Therapy, User

from ..support.journeys import start
from ..support.pages import csrf
from .test_web_pages import _log_in


def _commands() -> list[type]:
    """Every command class defined in the ``*_commands`` modules of ``server.usecases``."""
    modules = [m for name, m in inspect.getmembers(usecases, inspect.ismodule) if name.endswith("_commands")]
    return [
        cls
        for module in modules
        for _name, cls in inspect.getmembers(module, dataclasses.is_dataclass)
        if isinstance(cls, type) and cls.__module__ == module.__name__
    ]


def test_every_command_is_a_frozen_dataclass_naming_its_caller_with_one_handler():
    commands = _commands()
    assert {"StartTherapy", "CompleteTask", "DeliverMessage", "CorrectValue", "AcknowledgeAlert"} <= {
        c.__name__ for c in commands
    }
    for command in commands:
        assert command.__dataclass_params__.frozen, command  # type: ignore[attr-defined]
        assert "by" in {f.name for f in dataclasses.fields(command)}, command
        assert command in usecases.HANDLERS, f"{command.__name__} has no handler"
    assert len(set(usecases.HANDLERS.values())) == len(usecases.HANDLERS)


def _user(name: str) -> User:
    return db.session.execute(select(User).where(User.username == name)).scalar_one()


def _status(app, therapy_id: str) -> str:
    with app.app_context():
        return db.session.get_one(Therapy, therapy_id).status


def test_a_page_and_the_api_meet_the_same_rule_for_a_cancellation_reason(app, api, world):
    therapy = start(api, world["coord"])
    refused = api.as_(world["coord"]).post(f"/api/v1/therapies/{therapy['id']}/cancel", json={"reason": "   "})
    assert refused.status_code == 422 and "reason" in refused.get_json()["error"]["details"]["fields"]
    client = app.test_client()
    _log_in(client, "coord")
    page = client.post(
        f"/therapies/{therapy['id']}/cancel",
        data={"reason": "  ", "csrf_token": csrf(client, f"/therapies/{therapy['id']}")},
        follow_redirects=True,
    )
    assert "Not cancelled" in page.get_data(as_text=True)
    assert _status(app, therapy["id"]) == "active"


def test_a_refused_page_action_is_audited_as_the_api_audits_it(app, world):
    client = app.test_client()
    _log_in(client, "coord")  # scoped to SITE-A
    page = client.post(
        "/therapies",
        data={
            "process_key": "mini_therapy",
            "site": "SITE-B",
            "patient_reference": "PT-ELSEWHERE",
            "csrf_token": csrf(client, "/dashboard"),
        },
        follow_redirects=True,
    )
    assert "The therapy was not started: You may not start therapies at this site." in page.get_data(as_text=True)
    with app.app_context():
        entry = db.session.execute(
            select(AuditEntry).where(AuditEntry.action == "request.refused").order_by(AuditEntry.seq.desc())
        ).scalar_one()
        assert (entry.actor, entry.data["status"], entry.data["path"]) == ("coord", 403, "/therapies")
        assert db.session.execute(select(Therapy).where(Therapy.patient_reference == "PT-ELSEWHERE")).first() is None


def test_a_command_run_outside_a_request_audits_its_refusal_under_its_own_name(app, api, world):
    therapy = start(api, world["coord"])
    with app.app_context():
        command = usecases.CancelTherapy(therapy_id=therapy["id"], reason="Patient withdrew", by=_user("qa"))
        with pytest.raises(ApiError) as refused:
            usecases.handle(command)
        assert refused.value.status == 403
        entry = db.session.execute(select(AuditEntry).where(AuditEntry.action == "request.refused")).scalar_one()
        assert (entry.actor, entry.subject_type, entry.subject_id) == ("qa", "command", "CancelTherapy")
    assert _status(app, therapy["id"]) == "active"
