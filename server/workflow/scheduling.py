"""Scheduling: the earliest feasible chains of free slots for a therapy, or for one being planned.

A chain is an apheresis slot at the apheresis site, then a manufacturing slot at the manufacturing site that
starts within the definition's ``apheresisToManufacturing`` lead time after the collection ends, then, when the
definition declares ``manufacturingToInfusion``, an infusion slot at the treatment centre within that lead time
after manufacturing ends (else ``infusion`` is null). Each link is the earliest free slot that fits; the chains
come earliest collection first, one per collection slot. The definition declares its lead times as process
properties (see docs/bpmn-conventions.md).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from engine.definition import DefinitionInfo
from server.store.extensions import db
from server.store.models import Slot
from server.workflow.capacity import slot_item

# How many collection slots are looked at for chains before giving up (the rest lie further out).
SCAN = 200


def _free(site_id: int, kind: str, earliest: datetime, latest: datetime | None):
    """Free slots of a site and kind starting in [earliest, latest], earliest first."""
    query = (
        select(Slot)
        .where(
            Slot.site_id == site_id,
            Slot.kind == kind,
            Slot.status == "open",
            Slot.booked < Slot.capacity,
            Slot.start_at >= earliest,
        )
        .order_by(Slot.start_at, Slot.id)
    )
    if latest is not None:
        query = query.where(Slot.start_at <= latest)
    return query


def _window(base: datetime, lead: tuple[float, float] | None) -> tuple[datetime, datetime | None]:
    if lead is None:
        return base, None
    return base + timedelta(seconds=lead[0]), base + timedelta(seconds=lead[1])


def options(
    info: DefinitionInfo,
    apheresis_site_id: int,
    manufacturing_site_id: int,
    treatment_site_id: int,
    after: datetime,
    limit: int,
) -> list[dict]:
    """Up to ``limit`` chains ``{"apheresis": slot, "manufacturing": slot, "infusion": slot | None}``."""
    to_manufacturing = info.lead_times.get("apheresisToManufacturing")
    to_infusion = info.lead_times.get("manufacturingToInfusion")
    chains: list[dict] = []
    collections = db.session.execute(_free(apheresis_site_id, "apheresis", after, None).limit(SCAN)).scalars()
    for collection in collections:
        earliest, latest = _window(collection.end_at, to_manufacturing)
        run = db.session.execute(_free(manufacturing_site_id, "manufacturing", earliest, latest).limit(1)).scalar()
        if run is None:
            continue
        infusion = None
        if to_infusion is not None:
            earliest, latest = _window(run.end_at, to_infusion)
            infusion = db.session.execute(_free(treatment_site_id, "infusion", earliest, latest).limit(1)).scalar()
            if infusion is None:
                continue
        chains.append(
            {
                "apheresis": slot_item(collection),
                "manufacturing": slot_item(run),
                "infusion": slot_item(infusion) if infusion is not None else None,
            }
        )
        if len(chains) >= limit:
            break
    return chains
