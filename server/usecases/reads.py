"""The reads the API and the pages share: the therapies a user may see, newest first, what their inbox
holds, and how lists load therapies and tasks without their engine state."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.orm import contains_eager, defer

from server.access.auth import visible_site_ids
from server.store.models import Site, TaskRecord, Therapy, TherapyParty, User

# Large JSON documents of a therapy that a summary does not show: left in the database when listing. Its waits
# (a few small records) are read with it: a summary says whether it can be sent back to scheduling from them.
SUMMARY_DEFERRED = (Therapy.state, Therapy.data, Therapy.current_activities)
# The therapy columns a task in a list shows (its COI, patient reference) or needs (its definition's forms).
TASK_THERAPY_COLUMNS = (
    Therapy.id,
    Therapy.coi,
    Therapy.patient_reference,
    Therapy.definition_id,
    Therapy.status,
    Therapy.site_id,
)


def summary_options() -> tuple:
    """Loader options for therapies shown as summaries: their engine state and process data are not read."""
    return tuple(defer(column) for column in SUMMARY_DEFERRED)


def therapies_for(user: User, query: Select | None = None) -> Select:
    """``query`` (by default every therapy, as summaries) kept to the therapies ``user`` may see, newest first.

    A user of one site reads that site's rows of ``therapy_party`` in index order (its therapies newest first,
    whichever party the site is); a user of several sites gets the therapies any of them takes part in.
    """
    query = query if query is not None else select(Therapy).options(*summary_options())
    sites = visible_site_ids(user)
    if sites is None:
        return query.order_by(Therapy.created_at.desc(), Therapy.id)
    if len(sites) == 1:
        return (
            query.join(TherapyParty, TherapyParty.therapy_id == Therapy.id)
            .where(TherapyParty.site_id == next(iter(sites)))
            .order_by(TherapyParty.therapy_created_at.desc(), TherapyParty.therapy_id.desc())
        )
    taking_part = select(TherapyParty.therapy_id).where(TherapyParty.site_id.in_(sites))
    return query.where(Therapy.id.in_(taking_part)).order_by(Therapy.created_at.desc(), Therapy.id)


def at_party_sites(query: Select, wanted: dict[str, str]) -> Select:
    """``query`` of therapies kept to those whose parties are at the sites ``wanted`` names (party to code); an
    apheresis party without a row of its own is at the treatment centre."""
    for party, code in wanted.items():
        if not code:
            continue
        site_ids = select(Site.id).where(Site.code == code)
        at_site = select(TherapyParty.therapy_id).where(TherapyParty.party == party, TherapyParty.site_id.in_(site_ids))
        condition: ColumnElement[bool] = Therapy.id.in_(at_site)
        if party == "apheresis":
            elsewhere = select(TherapyParty.therapy_id).where(TherapyParty.party == party)
            condition = or_(condition, and_(Therapy.site_id.in_(site_ids), Therapy.id.not_in(elsewhere)))
        query = query.where(condition)
    return query


def task_list_options() -> tuple:
    """Loader options for a list of tasks selected with ``.join(Therapy)``: that join fills ``task.therapy``
    (no second join) with the few columns a list shows, never the therapy's engine state; the therapy's site is
    the task's (joined with the task)."""
    return (contains_eager(TaskRecord.therapy).load_only(*TASK_THERAPY_COLUMNS).lazyload(Therapy.site),)


def inbox_query(user: User, role: str = "") -> Select:
    """READY tasks of active therapies that ``user`` may complete (of their roles, or just ``role``, at their
    sites), soonest due first and undated last: the order of the inbox index."""
    query = (
        select(TaskRecord)
        .join(Therapy)
        .where(TaskRecord.status == "ready", Therapy.status == "active")
        .options(*task_list_options())
        .where(TaskRecord.role.in_([r for r in user.roles if not role or r == role]))
        .order_by(TaskRecord.due_at.is_(None), TaskRecord.due_at, TaskRecord.created_at, TaskRecord.id)
    )
    sites = visible_site_ids(user)
    return query if sites is None else query.where(TaskRecord.site_id.in_(sites))
