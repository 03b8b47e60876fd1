"""The therapy network: which registered site takes each party's part (treatment, apheresis, manufacturing,
logistics) in a therapy, and what follows a change of site.

The treatment centre is the therapy's ``site`` and its ``treatment`` party; the apheresis party is the
treatment centre unless another site is named. A user task belongs to a party (the diagram says which,
``engine.definition.UserTaskInfo.party``) and is at that party's site; a task whose party has no site yet
waits, unassigned, until one is named.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select

from engine.definition import PARTIES
from server.clock import clock
from server.errors import Conflict, Invalid
from server.integration import outbox
from server.store.extensions import db
from server.store.models import PARTY_SITE_KINDS, Site, TaskRecord, Therapy, TherapyParty
from server.store.uow import unit_of_work

TREATMENT = "treatment"
# Parties whose site may change during a therapy (the treatment centre owns the therapy and stays).
CHANGEABLE = tuple(p for p in PARTIES if p != TREATMENT)


def site_for(party: str, code: object) -> Site:
    """The registered site ``code`` when its kind may take ``party``; 422 naming the party otherwise."""
    field = f"parties.{party}"
    if party not in PARTIES:
        raise Invalid(
            f"'{party}' is not a party of a therapy; the parties are {', '.join(PARTIES)}.",
            code="unknown_party",
            details={"field": field},
        )
    named = isinstance(code, str) and code
    site = db.session.execute(select(Site).where(Site.code == code)).scalar_one_or_none() if named else None
    if site is None:
        raise Invalid(
            f"No registered site '{code}' for the {party} party.", code="unknown_site", details={"field": field}
        )
    if site.kind not in PARTY_SITE_KINDS[party]:
        raise Invalid(
            f"Site {site.code} is a {site.kind}; the {party} party needs a site of kind "
            f"{' or '.join(PARTY_SITE_KINDS[party])}.",
            code="wrong_site_kind",
            details={"field": field, "site": site.code, "kind": site.kind},
        )
    return site


def requested_sites(treatment: Site, requested: Mapping[str, object] | None) -> dict[str, Site]:
    """The sites of a new therapy's parties: the treatment centre, the apheresis site (the treatment centre
    unless named) and whichever others are named; 422 naming the first party that is wrong."""
    requested = dict(requested or {})
    if requested.get(TREATMENT) not in (None, treatment.code):
        raise Invalid(
            "The treatment party is the therapy's site; name it once, as 'site'.",
            code="invalid_request",
            details={"field": "parties.treatment"},
        )
    requested.pop(TREATMENT, None)
    sites = {TREATMENT: site_for(TREATMENT, treatment.code)}
    for party, code in requested.items():
        if code is not None:
            sites[party] = site_for(party, code)
    sites.setdefault("apheresis", treatment)
    return sites


def assign(therapy: Therapy, sites: Mapping[str, Site], actor: str) -> None:
    """Give a new therapy its parties' sites (inside the caller's transaction); an apheresis party at the
    treatment centre needs no row of its own."""
    now = clock()()
    for party, site in sites.items():
        if party == "apheresis" and site.id == therapy.site_id:
            continue
        therapy.party_rows.append(_row(therapy, party, site, now, actor))


def _row(therapy: Therapy, party: str, site: Site, now, actor: str) -> TherapyParty:
    return TherapyParty(
        party=party,
        site_id=site.id,
        site=site,
        therapy_created_at=therapy.created_at,
        assigned_at=now,
        assigned_by=actor,
    )


def task_site(therapy: Therapy, party: str) -> int | None:
    """The site of a task of ``party`` in ``therapy`` (None while the party has no site)."""
    return therapy.party_site_ids.get(party)


def change(
    therapy: Therapy, changes: Mapping[str, object], actor: str, reason_code: str, reason: str | None
) -> dict[str, tuple[str | None, str]]:
    """Hand parties of an active therapy to other sites, in one transaction: the rows, the open tasks of
    those parties (moved to the new site), an audit entry with old and new sites and the reason, and the
    ``therapy.parties_changed`` event. Returns ``{party: (old code, new code)}``.

    422 for an unknown party or site, a site of the wrong kind, the treatment party (it stays) or no change
    at all; 409 ``not_active`` for a therapy that has ended.
    """
    if not changes:
        raise Invalid("Name at least one party and its new site.", code="invalid_request", details={"field": "parties"})
    if TREATMENT in changes:
        raise Invalid(
            "The treatment centre owns the therapy and cannot be changed; start a new therapy there instead.",
            code="invalid_request",
            details={"field": "parties.treatment"},
        )
    if therapy.status not in ("active", "on_hold"):
        raise Conflict(f"The therapy is {therapy.status}; its parties no longer change.", code="not_active")
    current = therapy.parties
    new_sites = {party: site_for(party, code) for party, code in changes.items()}
    for party, site in new_sites.items():
        if current.get(party) == site.code:
            raise Invalid(
                f"Site {site.code} is already the {party} party.",
                code="no_change",
                details={"field": f"parties.{party}"},
            )
    moved: dict[str, tuple[str | None, str]] = {
        party: (current.get(party), site.code) for party, site in new_sites.items()
    }
    now = clock()()
    with unit_of_work():
        rows = {row.party: row for row in therapy.party_rows}
        for party, site in new_sites.items():
            row = rows.get(party)
            if party == "apheresis" and site.id == therapy.site_id:
                if row is not None:  # back at the treatment centre: its own row goes
                    therapy.party_rows.remove(row)
            elif row is None:
                therapy.party_rows.append(_row(therapy, party, site, now, actor))
            else:
                row.site_id, row.site, row.assigned_at, row.assigned_by = site.id, site, now, actor
            open_tasks = db.session.execute(
                select(TaskRecord).where(
                    TaskRecord.therapy_id == therapy.id, TaskRecord.party == party, TaskRecord.status == "ready"
                )
            ).scalars()
            for task in open_tasks:
                task.site_id, task.site = site.id, site
        therapy.updated_at = now
        data = {
            "reason_code": reason_code,
            "changes": {party: {"from": old, "to": new} for party, (old, new) in moved.items()},
            "parties": therapy.parties,
        }
        outbox.record_event("therapy.parties_changed", therapy, data, actor, reason=reason)
    return moved
