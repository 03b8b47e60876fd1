"""Issuing COIs from a per-facility, per-year counter that never hands out a number twice."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select, update

from engine.coi import Coi, issue_coi, validate_fin
from server.store.extensions import db
from server.store.models import CoiCounter, utcnow
from server.store.uow import rows_changed


def next_coi() -> Coi:
    """Take the next number under a row lock (UPDATE first) inside the current transaction."""
    fin = validate_fin(current_app.config["FACILITY_FIN"])
    year = utcnow().year % 100
    bumped = rows_changed(
        update(CoiCounter)
        .where(CoiCounter.fin == fin, CoiCounter.year == year)
        .values(next_number=CoiCounter.next_number + 1)
    )
    if bumped == 0:
        db.session.add(CoiCounter(fin=fin, year=year, next_number=1))
        db.session.flush()
    number = db.session.execute(
        select(CoiCounter.next_number).where(CoiCounter.fin == fin, CoiCounter.year == year)
    ).scalar_one()
    return issue_coi(fin, year, number)
