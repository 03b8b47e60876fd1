"""The therapy network on the pages: each party's site, the patient reference on a need-to-know basis, finding a
therapy by what a person types, and the choices of the forms that name sites and reasons.

The patient reference is shown only to those ``server.access.auth.sees_patient`` allows (admin, auditor, the
users of the treatment and apheresis sites); everyone else reads "withheld" and keeps the COI. Nobody finds a
therapy by a patient reference they may not know.
"""

from __future__ import annotations

from sqlalchemy import or_, select

from engine.coi import CoiError, parse_coi
from engine.definition import PARTIES
from server.access.auth import can_see_therapy, sees_patient, visible_site_ids
from server.store.extensions import db
from server.store.models import PARTY_SITE_KINDS, ReasonCode, Site, TaskRecord, Therapy, TherapyParty, User
from server.usecases.reads import summary_options
from server.workflow import reason_codes
from server.workflow.parties import CHANGEABLE

from .present import eye_readable
from .session import session_user

WITHHELD = "withheld"
# The parties a list filters by (the treatment centre is the list's ``site``), as the API's list names them.
FILTERED_PARTIES = CHANGEABLE
# How the pages name each party.
PARTY_NAMES = {
    "treatment": "treatment centre",
    "apheresis": "apheresis",
    "manufacturing": "manufacturing",
    "logistics": "logistics",
}
assert tuple(PARTY_NAMES) == PARTIES


def patient_reference(therapy: Therapy) -> str:
    """The therapy's patient reference for the session's user, or "withheld" when they need not know it."""
    user = session_user()
    return therapy.patient_reference if user is not None and sees_patient(user, therapy) else WITHHELD


def therapy_name(therapy: Therapy) -> str:
    """What names the therapy in headings: its patient reference, or its COI when that is withheld."""
    reference = patient_reference(therapy)
    return eye_readable(therapy.coi) if reference == WITHHELD else reference


def waiting_for_site(task: TaskRecord) -> str | None:
    """What an open task whose party has no site waits for; None when it has its site (or is not open)."""
    if task.site_id is not None or task.status != "ready":
        return None
    return f"waiting for the treatment centre to name a {PARTY_NAMES.get(task.party, task.party)} site"


def party_sites(user: User | None = None) -> dict[str, list[Site]]:
    """The registered sites that may take each party, by code: every one (a centre names sites it is not scoped
    to), or for ``user`` only the sites that take part in therapies they may see (a list's filters)."""
    query = select(Site).order_by(Site.code)
    mine = visible_site_ids(user) if user is not None else None
    if mine is not None:
        theirs = select(TherapyParty.therapy_id).where(TherapyParty.site_id.in_(mine))
        taking_part = select(TherapyParty.site_id).where(TherapyParty.therapy_id.in_(theirs))
        query = query.where(or_(Site.id.in_(mine), Site.id.in_(taking_part)))
    sites = db.session.execute(query).scalars().all()
    return {party: [s for s in sites if s.kind in kinds] for party, kinds in PARTY_SITE_KINDS.items()}


def reasons(kind: str) -> list[ReasonCode]:
    """The active reason codes of ``kind`` (``cancel``, ``reassign``, ...), for a form's select."""
    return reason_codes.listed(kind)


def therapies_named(user: User, text: str) -> list[Therapy]:
    """The therapies ``user`` may see that ``text`` names: by id, by COI (any written form), or by patient
    reference where the user may know it. Newest first."""
    text = text.strip()
    if not text:
        return []
    try:
        coi = parse_coi(text).value
    except CoiError:
        coi = text.upper()
    found = db.session.execute(
        select(Therapy)
        .options(*summary_options())
        .where(or_(Therapy.id == text, Therapy.coi == coi, Therapy.patient_reference == text))
        .order_by(Therapy.created_at.desc(), Therapy.id)
        .limit(100)
    ).scalars()
    return [t for t in found if can_see_therapy(user, t) and (t.id == text or t.coi == coi or sees_patient(user, t))]


def register(app_or_bp) -> None:
    """Make the patient reference, a therapy's name and what an unassigned task waits for available as
    template filters, and the parties' names as ``party_names``."""
    app_or_bp.add_app_template_global(PARTY_NAMES, "party_names")
    app_or_bp.add_app_template_filter(patient_reference, "patient")
    app_or_bp.add_app_template_filter(therapy_name, "therapy_name")
    app_or_bp.add_app_template_filter(waiting_for_site, "waiting_for_site")
