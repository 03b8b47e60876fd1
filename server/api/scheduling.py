"""``GET /schedule/options``: the earliest feasible chains of free slots for a therapy or a planned one."""

from __future__ import annotations

from flask import g, request

from engine.definition import DefinitionInfo
from server.access.auth import require
from server.clock import clock
from server.store.models import ProcessDefinition, Site
from server.usecases.checks import visible_therapy
from server.workflow import parties, scheduling
from server.workflow.definitions import latest_version

from ..errors import Invalid
from . import bp
from .filters import moment_arg, whole_number

DEFAULT_OPTIONS = 5
MAX_OPTIONS = 20


def _site(party: str, code: str | None) -> Site:
    if not code:
        raise Invalid(
            f"Name the {party} site ('{party}'), or the therapy ('therapy_id').",
            code="invalid_request",
            details={"field": party},
        )
    return parties.site_for(party, code)


@bp.get("/schedule/options")
@require()
def schedule_options():
    """Chains of free apheresis, manufacturing (and infusion) slots that respect the parties and lead times:
    for ``therapy_id``, or for ``process_key`` at ``site`` made at ``manufacturing`` (``apheresis`` defaults to
    the site), from ``from`` (default now), at most ``limit``."""
    limit = whole_number("limit", 1, MAX_OPTIONS) or DEFAULT_OPTIONS
    after = moment_arg("from") or clock()()
    if request.args.get("therapy_id"):
        therapy = visible_therapy(g.user, request.args["therapy_id"], state=False)
        definition: ProcessDefinition = therapy.definition
        sites = therapy.party_site_ids
        if "manufacturing" not in sites:
            raise Invalid(
                "The therapy has no manufacturing site yet; name one first.",
                code="party_unassigned",
                details={"field": "therapy_id"},
            )
        treatment, apheresis, manufacturing = sites["treatment"], sites["apheresis"], sites["manufacturing"]
    else:
        key = request.args.get("process_key") or ""
        found = latest_version(key) if key else None
        if found is None:
            raise Invalid(f"No deployed process '{key}'.", code="unknown_process", details={"field": "process_key"})
        definition = found
        treatment_site = _site("treatment", request.args.get("site"))
        apheresis_code = request.args.get("apheresis") or treatment_site.code
        treatment = treatment_site.id
        apheresis = parties.site_for("apheresis", apheresis_code).id
        manufacturing = _site("manufacturing", request.args.get("manufacturing")).id
    info = DefinitionInfo.from_dict(definition.info)
    chains = scheduling.options(info, apheresis, manufacturing, treatment, after, limit)
    return {"items": chains, "lead_times": info.lead_times, "next_cursor": None}
