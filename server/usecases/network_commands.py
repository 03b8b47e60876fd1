"""The therapy network's commands: hand a party of a therapy to another site, and keep the reason codes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from server.access.auth import check_roles
from server.errors import Invalid
from server.store.models import ReasonCode, Therapy, User
from server.workflow import parties, reason_codes

from .checks import audits_refusals, check_treatment_site, required_text, visible_therapy


@dataclass(frozen=True)
class ChangeParties:
    """``by`` hands the parties ``sites`` names (party to site code) of a therapy to those sites, for
    ``reason_code`` (of kind ``reassign``) and ``reason``; the parties' open tasks move with them."""

    ROLES: ClassVar[tuple[str, ...]] = ("coordinator", "planner", "admin")

    therapy_id: str
    sites: Mapping[str, str]
    reason_code: str
    by: User
    reason: str | None = None


@dataclass(frozen=True)
class AddReasonCode:
    """``by`` (an administrator) adds the reason code ``code`` of ``kind`` with its ``description``."""

    ROLES: ClassVar[tuple[str, ...]] = ("admin",)

    kind: str
    code: str
    description: str
    by: User


@dataclass(frozen=True)
class ChangeReasonCode:
    """``by`` (an administrator) changes the description of reason code ``code`` of ``kind``, or retires it
    (``active`` false) or brings it back."""

    ROLES: ClassVar[tuple[str, ...]] = ("admin",)

    kind: str
    code: str
    by: User
    description: str | None = None
    active: bool | None = None


@audits_refusals
def change_parties(command: ChangeParties) -> Therapy:
    """Change the sites; a coordinator must be of the treatment centre (a planner of a site taking part may
    too). 422 for an unknown party, site or reason code, a site of the wrong kind, the treatment party or a
    party already at that site; 409 for a therapy that has ended. Nothing changes on a refusal."""
    check_roles(command.by, command.ROLES)
    therapy = visible_therapy(command.by, command.therapy_id)
    if "planner" not in command.by.roles:
        check_treatment_site(command.by, therapy, "hands a therapy's parties to other sites")
    code, reason = reason_codes.checked("reassign", command.reason_code, command.reason)
    parties.change(therapy, command.sites, command.by.username, code, reason)
    return therapy


@audits_refusals
def add_reason_code(command: AddReasonCode) -> ReasonCode:
    """Add the code (upper case); 409 ``reason_code_exists`` when its kind has it."""
    check_roles(command.by, command.ROLES)
    reason_codes.check_kind(command.kind)
    code = required_text(command.code, "code", 32).strip()
    if not (code.replace("_", "").isascii() and code.replace("_", "").isalnum()):
        raise Invalid(
            "A reason code is letters, digits and underscores (for example SITE_CLOSED).",
            code="invalid_request",
            details={"field": "code"},
        )
    return reason_codes.add(
        command.kind, code, required_text(command.description, "description", 200), command.by.username
    )


@audits_refusals
def change_reason_code(command: ChangeReasonCode) -> ReasonCode:
    """Change or retire the code; 404 for an unknown one, 422 for an empty description."""
    check_roles(command.by, command.ROLES)
    description = None if command.description is None else required_text(command.description, "description", 200)
    return reason_codes.change(command.kind, command.code, description, command.active, command.by.username)
