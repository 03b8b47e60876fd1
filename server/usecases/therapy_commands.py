"""A therapy's own commands: start it (by a person or by an integrator's message), deliver a message to it,
correct one of its recorded values, cancel it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import select

from engine.coi import CoiError, parse_coi
from server.access.auth import can_see_site, check_roles
from server.errors import Forbidden, Invalid
from server.store.extensions import db
from server.store.models import Correction, Site, Therapy, User
from server.workflow import bookings, corrections, lifecycle, reason_codes, therapies
from server.workflow.definitions import started_by_message

from .checks import audits_refusals, check_treatment_site, required_text, visible_therapy

STARTERS = ("coordinator", "integrator", "admin")


@dataclass(frozen=True)
class StartTherapy:
    """``by`` starts one patient's therapy at ``site`` on process ``process_key`` (its latest version unless
    ``version`` is given), with initial process ``data``."""

    ROLES: ClassVar[tuple[str, ...]] = STARTERS

    process_key: str
    site: str
    patient_reference: str
    by: User
    version: int | None = None
    data: dict[str, Any] | None = None
    # The other parties' sites (apheresis, manufacturing, logistics), by site code; see workflow/parties.py.
    parties: Mapping[str, str | None] | None = None


@dataclass(frozen=True)
class StartTherapyByMessage:
    """An integrator's message ``name`` starts a therapy: the one process (or ``process_key``'s) whose message
    start event has that name. ``site`` and ``patient`` (``{"reference": ...}``) say for whom, in the command or
    in the message's ``payload``."""

    ROLES: ClassVar[tuple[str, ...]] = STARTERS

    name: str
    by: User
    process_key: str | None = None
    site: str | None = None
    patient: dict[str, Any] | None = None
    payload: Any = None
    parties: Mapping[str, str | None] | None = None


@dataclass(frozen=True)
class DeliverMessage:
    """``by`` delivers the message ``name`` with ``payload`` to the therapy named by ``therapy_id`` or by its
    ``coi`` (any of the COI's written forms), which must wait for a message of that name."""

    ROLES: ClassVar[tuple[str, ...]] = ("integrator", "logistics", "manufacturing", "coordinator", "qa", "admin")

    name: str
    by: User
    therapy_id: str | None = None
    coi: str | None = None
    payload: Any = None


@dataclass(frozen=True)
class CorrectValue:
    """``by`` corrects the recorded process-data value at ``path`` of a therapy to ``value``, for ``reason``."""

    ROLES: ClassVar[tuple[str, ...]] = ("qa", "admin")

    therapy_id: str
    path: str
    value: Any
    reason: str | None
    by: User


@dataclass(frozen=True)
class CancelTherapy:
    """``by`` (of the treatment centre) ends an active therapy for ``reason_code`` (of kind ``cancel``) and
    ``reason``; its open tasks are withdrawn. Without a code, ``reason`` is required and the code is OTHER."""

    ROLES: ClassVar[tuple[str, ...]] = ("coordinator", "admin")

    therapy_id: str
    reason: str | None
    by: User
    reason_code: str | None = None


@dataclass(frozen=True)
class HoldTherapy:
    """``by`` (of the treatment centre) holds an active therapy for ``reason_code`` (kind hold) and ``reason``:
    nothing of it moves until it is resumed."""

    ROLES: ClassVar[tuple[str, ...]] = ("coordinator", "admin")

    therapy_id: str
    reason_code: str
    by: User
    reason: str | None = None


@dataclass(frozen=True)
class ResumeTherapy:
    """``by`` (of the treatment centre) resumes a held therapy; its clocks go on with the time they had left."""

    ROLES: ClassVar[tuple[str, ...]] = ("coordinator", "admin")

    therapy_id: str
    by: User
    reason: str | None = None


@dataclass(frozen=True)
class RescheduleTherapy:
    """``by`` (of the treatment centre) sends the therapy back to scheduling for ``reason_code`` (kind
    reschedule) and ``reason``, where its diagram allows it; the new slots move its bookings with that code."""

    ROLES: ClassVar[tuple[str, ...]] = ("coordinator", "admin")

    therapy_id: str
    reason_code: str
    by: User
    reason: str | None = None


@audits_refusals
def start_therapy(command: StartTherapy) -> Therapy:
    """Start the therapy; 403 for a site the caller is not scoped to, 422 for an unknown process or site."""
    check_roles(command.by, command.ROLES)
    reference = required_text(command.patient_reference, "patient.reference", 100)
    _check_site(command.by, command.site)
    return therapies.start_therapy(
        required_text(command.process_key, "process_key", 200),
        command.version,
        required_text(command.site, "site", 32),
        reference,
        command.data,
        command.by.username,
        command.parties,
    )


@audits_refusals
def start_therapy_by_message(command: StartTherapyByMessage) -> tuple[Therapy, str | None]:
    """Start the process that starts on the message, and deliver the message to it; returns the therapy and
    the activity that took the message.

    422 ``no_message_start`` when no deployed process starts on that name (the sender most likely meant to
    name a therapy), 422 ``ambiguous_message_start`` when several do and ``process_key`` does not say which,
    403 without a starting role or for another site, 422 when the site or patient reference is missing.
    """
    matches = started_by_message(command.name, command.process_key)
    if not matches:
        raise Invalid(
            f"Name the therapy ('therapy_id' or 'coi'): no deployed process starts on a message "
            f"named '{command.name}'" + (f" in '{command.process_key}'" if command.process_key else "") + ".",
            code="no_message_start",
            details={"field": "therapy_id", "name": command.name},
        )
    if len(matches) > 1:
        raise Invalid(
            f"Several processes start on '{command.name}'; say which with 'process_key'.",
            code="ambiguous_message_start",
            details={"field": "process_key", "process_keys": [d.key for d in matches]},
        )
    if not any(role in command.by.roles for role in command.ROLES):
        raise Forbidden(
            f"Starting a therapy needs one of the roles: {', '.join(command.ROLES)}.",
            details={"required_roles": list(command.ROLES)},
        )
    payload = command.payload if isinstance(command.payload, dict) else {}
    site_code = command.site or payload.get("site")
    patient = command.patient or payload.get("patient") or {}
    reference = (patient.get("reference") if isinstance(patient, dict) else None) or payload.get("patient_reference")
    if not isinstance(site_code, str) or not site_code:
        raise Invalid(
            "A message that starts a therapy needs 'site' (a site code), in the body or the payload.",
            code="invalid_request",
            details={"field": "site"},
        )
    if not isinstance(reference, str) or not 0 < len(reference) <= 100:
        raise Invalid(
            "A message that starts a therapy needs 'patient': {'reference': ...}, in the body or the payload.",
            code="invalid_request",
            details={"field": "patient.reference"},
        )
    _check_site(command.by, site_code)
    definition = matches[0]
    return therapies.start_by_message(
        definition.key,
        definition.version,
        site_code,
        reference,
        (command.name, command.payload),
        command.by.username,
        command.parties or payload.get("parties"),
    )


def _check_site(user: User, site_code: str) -> None:
    """403 when the site exists and ``user`` is not scoped to it (an unknown site is the step's 422)."""
    site = db.session.execute(select(Site).where(Site.code == site_code)).scalar_one_or_none()
    if site is not None and not can_see_site(user, site.id):
        raise Forbidden("You may not start therapies at this site.", details={"field": "site"})


@audits_refusals
def deliver_message(command: DeliverMessage) -> tuple[Therapy, str | None]:
    """Deliver the message; returns the therapy and the activity that took it.

    422 when the therapy is named both ways or the COI is malformed (a wrong check character included), 404
    when no therapy the sender may see has that id or COI, 409 ``not_waiting`` (audited, nothing else
    changed) when the therapy waits for no message of that name.
    """
    check_roles(command.by, command.ROLES)
    if command.name == lifecycle.RESCHEDULE_MESSAGE:
        raise Invalid(
            f"'{command.name}' is sent by POST /api/v1/therapies/{{id}}/reschedule (with a reason code), "
            "not as a message.",
            code="reserved_message",
            details={"field": "name"},
        )
    if command.therapy_id and command.coi:
        raise Invalid(
            "Name the therapy by one of 'therapy_id' or 'coi', not both.",
            code="invalid_request",
            details={"field": "therapy_id"},
        )
    if command.coi:
        try:
            coi = parse_coi(command.coi)
        except CoiError as exc:
            raise Invalid(str(exc), code=exc.code, details={"field": "coi"}) from None
        therapy_id = db.session.execute(select(Therapy.id).where(Therapy.coi == coi.value)).scalar_one_or_none()
        therapy = visible_therapy(command.by, therapy_id or "none")
    else:
        therapy = visible_therapy(command.by, command.therapy_id or "none")
    return therapies.deliver_message(therapy, command.name, command.payload, command.by.username)


@audits_refusals
def correct_value(command: CorrectValue) -> Correction:
    """Correct the value with its reason (mandatory), old and new values audited; see ``workflow.corrections``."""
    check_roles(command.by, command.ROLES)
    therapy = visible_therapy(command.by, command.therapy_id)
    return corrections.correct_value(therapy, command.path, command.value, command.reason, command.by.username)


@audits_refusals
def cancel_therapy(command: CancelTherapy) -> Therapy:
    """Cancel the therapy; 403 for a site other than its treatment centre, 422 for an unknown reason code (or
    OTHER without a reason), 409 ``not_active`` when it has ended already."""
    check_roles(command.by, command.ROLES)
    therapy = visible_therapy(command.by, command.therapy_id)
    check_treatment_site(command.by, therapy, "cancels its therapies")
    if command.reason_code is None:
        code, reason = reason_codes.OTHER, required_text(command.reason, "reason", 2000)
    else:
        code, given = reason_codes.checked("cancel", command.reason_code, command.reason)
        reason = given or code
    actor = command.by.username
    return therapies.cancel_therapy(
        therapy, reason, actor, code, also=lambda ended: bookings.free_all(ended, actor, "The therapy was cancelled.")
    )


@audits_refusals
def hold_therapy(command: HoldTherapy) -> Therapy:
    """Hold the therapy; 403 for a site other than its treatment centre, 422 for an unknown reason code (or
    OTHER without a reason), 409 ``already_held`` or ``not_active``."""
    check_roles(command.by, command.ROLES)
    therapy = visible_therapy(command.by, command.therapy_id)
    check_treatment_site(command.by, therapy, "holds its therapies")
    code, reason = reason_codes.checked("hold", command.reason_code, command.reason)
    return lifecycle.hold(therapy, code, reason, command.by.username)


@audits_refusals
def resume_therapy(command: ResumeTherapy) -> Therapy:
    """Resume the therapy; 409 ``not_held`` when it is not on hold."""
    check_roles(command.by, command.ROLES)
    therapy = visible_therapy(command.by, command.therapy_id)
    check_treatment_site(command.by, therapy, "resumes its therapies")
    reason = command.reason.strip() if isinstance(command.reason, str) and command.reason.strip() else None
    return lifecycle.resume(therapy, reason, command.by.username)


@audits_refusals
def reschedule_therapy(command: RescheduleTherapy) -> Therapy:
    """Send the therapy back to scheduling; 403 for a site other than its treatment centre, 422 for an unknown
    reason code (or OTHER without a reason), 409 ``on_hold``, ``not_active`` or ``not_reschedulable``."""
    check_roles(command.by, command.ROLES)
    therapy = visible_therapy(command.by, command.therapy_id)
    check_treatment_site(command.by, therapy, "sends its therapies back to scheduling")
    code, reason = reason_codes.checked("reschedule", command.reason_code, command.reason)
    return lifecycle.reschedule(therapy, code, reason, command.by.username)
