"""Shipments: a courier's consignment of a therapy's material as a record of its own, with its tracking.

A shipment names its carrier and tracking number, who sends and who receives it, when it is expected and the
temperature range it travels in. The courier reports positions (latitude, longitude, when) and its data logger's
readings; the readings are the therapy's condition readings (``server.custody.conditions``) tagged with the
shipment's id, so an excursion is detected, alerted and told to the process exactly as for any reading.

Proactive warning: whenever the expected arrival changes (a new estimate, or a position that brings one), it is
compared with the therapy's window, the earliest due timer among what the therapy waits for now (in the bundled
autologous diagram the 24-hour fresh delivery window while it awaits the delivery). An arrival expected after
the window closes raises a high alert of kind ``shipment_late`` at once, for the treatment centre's coordinators
and for the courier (the logistics party's site), not hours later when the timer fires. One estimate is alerted
once: a repeat of the same estimate raises nothing, a later one raises again.

Every change is audited and published through the outbox (``shipment.created``, ``shipment.position``,
``shipment.eta_changed``, ``shipment.delivered``, ``shipment.lost``) in the transaction that makes it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from server.clock import clock, iso
from server.custody import conditions
from server.errors import Conflict, Invalid
from server.integration import outbox
from server.oversight.alerts import raise_alert
from server.store.extensions import db
from server.store.models import SHIPMENT_STATUSES, Alert, ConditionReading, Shipment, ShipmentPosition, Therapy
from server.store.uow import unit_of_work

LATE_KIND = "shipment_late"
# A courier's clock may run a little ahead of the server's; more than this is a mistake, not skew.
FUTURE_TOLERANCE = timedelta(minutes=5)
CLOSED = ("delivered", "lost")
MAX_READINGS_SHOWN = 1000


def _now() -> datetime:
    return clock()()


def _party_site(therapy: Therapy, named: str) -> str:
    """A party of the therapy ("manufacturing") as its site code when it has one; any other text as written."""
    text = named.strip()
    site = therapy.parties.get(text.casefold())
    return site or text


def create(
    therapy: Therapy,
    *,
    carrier: str,
    tracking_number: str,
    from_party: str,
    to_party: str,
    actor: str,
    expected_arrival: datetime | None = None,
    temperature_min_c: float | None = None,
    temperature_max_c: float | None = None,
) -> Shipment:
    """Record a new shipment of ``therapy`` (audited, ``shipment.created``); 409 when the therapy has ended or the
    carrier's tracking number is already one of its shipments; 422 for an inverted temperature range."""
    if therapy.status not in ("active", "on_hold"):
        raise Conflict(
            f"The therapy is {therapy.status}; it takes no new shipments.",
            code="therapy_not_active",
            details={"status": therapy.status},
        )
    if temperature_min_c is not None and temperature_max_c is not None and temperature_min_c > temperature_max_c:
        raise Invalid(
            "The temperature range is inverted.",
            code="invalid_request",
            details={"fields": {"temperature_max_c": ["must not be below temperature_min_c"]}},
        )
    from_party, to_party = _party_site(therapy, from_party), _party_site(therapy, to_party)
    if from_party.casefold() == to_party.casefold():
        raise Invalid(
            "A shipment goes from one party to another.",
            code="invalid_request",
            details={"fields": {"to_party": ["must differ from from_party"]}},
        )
    existing = db.session.execute(
        select(Shipment.id).where(
            Shipment.therapy_id == therapy.id,
            Shipment.carrier == carrier,
            Shipment.tracking_number == tracking_number,
        )
    ).scalar_one_or_none()
    if existing is not None:
        raise Conflict(
            f"{carrier} {tracking_number} is already a shipment of this therapy.",
            code="shipment_exists",
            details={"shipment_id": existing},
        )
    now = _now()
    with unit_of_work():
        shipment = Shipment(
            therapy_id=therapy.id,
            carrier=carrier,
            tracking_number=tracking_number,
            from_party=from_party,
            to_party=to_party,
            expected_arrival=expected_arrival,
            temperature_min_c=temperature_min_c,
            temperature_max_c=temperature_max_c,
            status="in_transit",
            created_at=now,
            created_by=actor,
            updated_at=now,
        )
        db.session.add(shipment)
        db.session.flush()
        outbox.record_event("shipment.created", therapy, _event_data(shipment), actor)
        if expected_arrival is not None:
            check_late(shipment, therapy, actor)
    return shipment


def add_position(
    shipment: Shipment,
    therapy: Therapy,
    *,
    latitude: float,
    longitude: float,
    actor: str,
    recorded_at: datetime | None = None,
    note: str | None = None,
    expected_arrival: datetime | None = None,
) -> ShipmentPosition:
    """Append one reported position (audited, ``shipment.position``); with ``expected_arrival`` the estimate
    changes in the same transaction. 409 for a shipment delivered or lost, 422 for a time in the future."""
    _check_open(shipment)
    now = _now()
    _not_future(recorded_at, now, "recorded_at")
    with unit_of_work():
        _hold(shipment)
        position = ShipmentPosition(
            shipment_id=shipment.id,
            recorded_at=recorded_at or now,
            latitude=latitude,
            longitude=longitude,
            note=note,
            recorded_by=actor,
        )
        db.session.add(position)
        db.session.flush()
        shipment.updated_at = now
        outbox.record_event(
            "shipment.position", therapy, {**_event_data(shipment), "position": position_item(position)}, actor
        )
        if expected_arrival is not None:
            _change_estimate(shipment, therapy, expected_arrival, actor)
    return position


def record_readings(
    shipment: Shipment, therapy: Therapy, readings: list[dict[str, Any]], actor: str, *, tell_process
) -> dict[str, Any]:
    """Store the data logger's ``readings`` as the therapy's condition readings of this shipment (the sensor
    defaults to the tracking number), checked against the range that applies now as every reading is and against
    the shipment's own temperature range when it has one (a reading outside either is an excursion)."""
    _check_open(shipment)
    tagged = [
        {
            "sensor_id": reading.get("sensor_id") or shipment.tracking_number[:100],
            "temperature_c": reading["temperature_c"],
            "recorded_at": reading["recorded_at"],
            "shipment_id": shipment.id,
            "location": reading.get("location"),
        }
        for reading in readings
    ]
    with unit_of_work():
        _hold(shipment)
        shipment.updated_at = _now()
        result = conditions.record_readings(
            therapy,
            tagged,
            actor,
            tell_process=tell_process,
            within=(shipment.temperature_min_c, shipment.temperature_max_c),
        )
    return {"shipment_id": shipment.id, **result}


def update(
    shipment: Shipment,
    therapy: Therapy,
    actor: str,
    *,
    expected_arrival: datetime | None = None,
    status: str | None = None,
) -> Shipment:
    """Change the expected arrival and/or close the shipment as delivered or lost (each audited and published).
    409 for a shipment already delivered or lost."""
    _check_open(shipment)
    if status is not None and status not in SHIPMENT_STATUSES:
        raise Invalid(
            "Unknown shipment status.",
            code="invalid_request",
            details={"fields": {"status": [f"one of {', '.join(SHIPMENT_STATUSES)}"]}},
        )
    with unit_of_work():
        _hold(shipment)
        if expected_arrival is not None:
            _change_estimate(shipment, therapy, expected_arrival, actor)
        if status is not None and status != shipment.status:
            shipment.status = status
            shipment.updated_at = _now()
            outbox.record_event(f"shipment.{status}", therapy, _event_data(shipment), actor)
    return shipment


def _change_estimate(shipment: Shipment, therapy: Therapy, expected_arrival: datetime, actor: str) -> None:
    """Set a new expected arrival (an unchanged one records nothing) and warn when it misses the window."""
    if shipment.expected_arrival is not None and shipment.expected_arrival == expected_arrival:
        return
    previous = shipment.expected_arrival
    shipment.expected_arrival, shipment.updated_at = expected_arrival, _now()
    outbox.record_event(
        "shipment.eta_changed", therapy, {**_event_data(shipment), "previous_expected_arrival": iso(previous)}, actor
    )
    check_late(shipment, therapy, actor)


def _hold(shipment: Shipment) -> None:
    """Lock the shipment's row for this transaction and read it again (still open?), so that two changes of one
    shipment never pass the same checks side by side: two couriers' estimates would both find no late alert for
    the new estimate and raise it twice. On SQLite the write lock of the transaction already orders them."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(
            select(Shipment)
            .where(Shipment.id == shipment.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one()
    _check_open(shipment)


def _check_open(shipment: Shipment) -> None:
    if shipment.status in CLOSED:
        raise Conflict(
            f"The shipment is {shipment.status}; it takes no more tracking.",
            code="shipment_closed",
            details={"shipment_id": shipment.id, "status": shipment.status},
        )


def _not_future(moment: datetime | None, now: datetime, field: str) -> None:
    if moment is not None and moment > now + FUTURE_TOLERANCE:
        raise Invalid(
            f"{field} lies in the future.",
            code="invalid_request",
            details={"fields": {field: ["must not lie in the future"]}},
        )


# -- the window and the late warning --------------------------------------------------------------------
def window(therapy: Therapy) -> dict[str, Any] | None:
    """The deadline a shipment of ``therapy`` must meet: the earliest due timer among what the therapy waits for
    now (``activity_id``, ``label``, ``due_at`` as a datetime), or None (no timer runs, or the therapy is not
    active: a held therapy's clocks are paused)."""
    if therapy.status != "active":
        return None
    timers = []
    for wait in therapy.waits or []:
        if wait.get("type") != "timer" or not wait.get("due_at"):
            continue
        try:
            due = datetime.fromisoformat(str(wait["due_at"]).replace("Z", "+00:00"))
        except ValueError:
            continue
        timers.append((due if due.tzinfo else due.replace(tzinfo=UTC), wait))
    if not timers:
        return None
    due, wait = min(timers, key=lambda pair: pair[0])
    activities = (therapy.definition.info or {}).get("activities") or {}
    timer_name = (activities.get(wait.get("activity_id")) or {}).get("name") or wait.get("name")
    attached = (activities.get(wait.get("attached_to") or "") or {}).get("name")
    label = " on ".join(f"'{name}'" for name in (timer_name or wait.get("activity_id"), attached) if name)
    return {
        "activity_id": wait.get("activity_id"),
        "attached_to": wait.get("attached_to"),
        "label": label,
        "due_at": due,
    }


def lateness(shipment: Shipment, therapy: Therapy) -> timedelta | None:
    """By how much the shipment's expected arrival falls after the therapy's window (None: it does not, or
    either is unknown)."""
    closes = window(therapy)
    if closes is None or shipment.expected_arrival is None or shipment.status in CLOSED:
        return None
    late = shipment.expected_arrival - closes["due_at"]
    return late if late > timedelta(0) else None


def _duration(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} d"] * bool(days) + [f"{hours} h"] * bool(hours) + [f"{minutes} min"] * bool(minutes)
    return " ".join(parts) or "under a minute"


def check_late(shipment: Shipment, therapy: Therapy, actor: str) -> list[Alert]:
    """Raise the ``shipment_late`` alerts when the expected arrival falls after the therapy's window, once per
    estimate: one for the treatment centre's coordinators and one for the courier's site (the logistics party,
    when it is another site). Inside the caller's transaction; returns the alerts raised."""
    closes = window(therapy)
    late = lateness(shipment, therapy)
    if closes is None or late is None or shipment.expected_arrival is None:
        return []
    estimate = iso(shipment.expected_arrival)
    raised_before = db.session.execute(
        select(Alert.data).where(Alert.therapy_id == therapy.id, Alert.kind == LATE_KIND)
    ).scalars()
    if any(
        (data or {}).get("shipment_id") == shipment.id and (data or {}).get("expected_arrival") == estimate
        for data in raised_before
    ):
        return []
    message = (
        f"Shipment {shipment.carrier} {shipment.tracking_number} to {shipment.to_party} is expected "
        f"{estimate}, {_duration(late)} after the window {closes['label']} closes ({iso(closes['due_at'])}). "
        "Ask the courier for a faster route or an earlier slot, and tell the receiving site; if it cannot arrive "
        "in time, prepare the deviation (the material's viability, a new collection)."
    )
    data = {
        "shipment_id": shipment.id,
        "carrier": shipment.carrier,
        "tracking_number": shipment.tracking_number,
        "expected_arrival": estimate,
        "window_activity_id": closes["activity_id"],
        "window_due_at": iso(closes["due_at"]),
        "late_by_minutes": int(late.total_seconds() // 60),
    }
    audiences = [("coordinator", therapy.site_id)]
    logistics_site = therapy.party_site_ids.get("logistics")
    if logistics_site is not None and logistics_site != therapy.site_id:
        audiences.append(("logistics", logistics_site))
    return [
        raise_alert(
            therapy,
            LATE_KIND,
            message,
            actor,
            severity="high",
            role=role,
            activity_id=closes["attached_to"] or closes["activity_id"],
            data=data,
            site_id=site_id,
        )
        for role, site_id in audiences
    ]


# -- reading ------------------------------------------------------------------------------------------------
def of_therapy(therapy_id: str) -> list[Shipment]:
    """The therapy's shipments, oldest first."""
    return list(
        db.session.execute(
            select(Shipment).where(Shipment.therapy_id == therapy_id).order_by(Shipment.created_at, Shipment.id)
        ).scalars()
    )


def positions(shipment_id: str) -> list[ShipmentPosition]:
    """The shipment's positions in the order they were recorded (then in the order they were reported)."""
    return list(
        db.session.execute(
            select(ShipmentPosition)
            .where(ShipmentPosition.shipment_id == shipment_id)
            .order_by(ShipmentPosition.recorded_at, ShipmentPosition.id)
        ).scalars()
    )


def readings(shipment: Shipment, limit: int = MAX_READINGS_SHOWN) -> list[dict[str, Any]]:
    """The shipment's data-logger readings, oldest first."""
    rows = db.session.execute(
        conditions.series_query(shipment.therapy_id).where(ConditionReading.shipment_id == shipment.id).limit(limit)
    ).all()
    return [conditions.reading_item(row) for row in rows]


def position_item(position: ShipmentPosition) -> dict[str, Any]:
    """A position as the API shows it."""
    return {
        "id": position.id,
        "recorded_at": iso(position.recorded_at),
        "latitude": position.latitude,
        "longitude": position.longitude,
        "note": position.note,
        "recorded_by": position.recorded_by,
    }


def _event_data(shipment: Shipment) -> dict[str, Any]:
    return {
        "shipment_id": shipment.id,
        "carrier": shipment.carrier,
        "tracking_number": shipment.tracking_number,
        "from_party": shipment.from_party,
        "to_party": shipment.to_party,
        "expected_arrival": iso(shipment.expected_arrival),
        "status": shipment.status,
    }


def shipment_item(shipment: Shipment, therapy: Therapy, *, last: ShipmentPosition | None = None) -> dict[str, Any]:
    """A shipment as the API lists it: its record, its last position, and the window it must meet."""
    closes = window(therapy)
    late = lateness(shipment, therapy)
    if last is None:
        last = db.session.execute(
            select(ShipmentPosition)
            .where(ShipmentPosition.shipment_id == shipment.id)
            .order_by(ShipmentPosition.recorded_at.desc(), ShipmentPosition.id.desc())
            .limit(1)
        ).scalar_one_or_none()
    has_range = shipment.temperature_min_c is not None or shipment.temperature_max_c is not None
    return {
        "id": shipment.id,
        "therapy_id": shipment.therapy_id,
        "coi": therapy.coi,
        "carrier": shipment.carrier,
        "tracking_number": shipment.tracking_number,
        "from_party": shipment.from_party,
        "to_party": shipment.to_party,
        "expected_arrival": iso(shipment.expected_arrival),
        "temperature_min_c": shipment.temperature_min_c,
        "temperature_max_c": shipment.temperature_max_c,
        "temperature_range": [shipment.temperature_min_c, shipment.temperature_max_c] if has_range else None,
        "status": shipment.status,
        "created_at": iso(shipment.created_at),
        "created_by": shipment.created_by,
        "updated_at": iso(shipment.updated_at),
        "last_position": position_item(last) if last is not None else None,
        "window": (
            {"activity_id": closes["activity_id"], "label": closes["label"], "due_at": iso(closes["due_at"])}
            if closes
            else None
        ),
        "late": late is not None,
        "late_by_minutes": int(late.total_seconds() // 60) if late is not None else None,
    }
