"""The chain of custody: every handoff of a therapy's material, with the verified scan of its label.

Transfers are appended, never changed or removed; each one is an audit entry and a ``custody.transferred``
event written in the same transaction as the row. A handoff names its giver and taker by the therapy's party
("manufacturing") or by a site code, and is recorded with the site's code; any other text (a courier's
driver, a ward) is kept as written.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, select

from engine.coi import parse_coi
from server.custody.scans import verify_scan
from server.errors import Invalid
from server.integration import outbox
from server.store import audit
from server.store.extensions import db
from server.store.models import AuditEntry, CustodyTransfer, Site, Therapy
from server.store.uow import unit_of_work

# A handheld's clock may run a little ahead of the server's; more than this is a mistake, not skew.
FUTURE_TOLERANCE = timedelta(minutes=5)


def _now() -> datetime:
    from server.clock import clock

    return clock()()


def record_transfer(
    therapy: Therapy,
    *,
    material_id: str,
    from_party: str,
    to_party: str,
    scanned_coi: str,
    actor: str,
    location: str | None = None,
    occurred_at: datetime | None = None,
) -> CustodyTransfer:
    """Verify the scan, then append one transfer (audited and published) in one transaction."""
    now = _now()
    from_party, to_party = _by_site(therapy, from_party, "from_party"), _by_site(therapy, to_party, "to_party")
    if occurred_at is not None and occurred_at > now + FUTURE_TOLERANCE:
        raise Invalid(
            "occurred_at lies in the future.",
            code="invalid_request",
            details={"fields": {"occurred_at": ["must not lie in the future"]}},
        )
    if from_party.strip().casefold() == to_party.strip().casefold():
        raise Invalid(
            "A transfer needs two different parties.",
            code="invalid_request",
            details={"fields": {"to_party": ["must differ from from_party"]}},
        )
    verify_scan(
        therapy,
        scanned_coi,
        actor,
        context={
            "where": "custody_transfer",
            "material_id": material_id,
            "from_party": from_party,
            "to_party": to_party,
            "location": location,
        },
    )
    with unit_of_work():
        transfer = CustodyTransfer(
            therapy_id=therapy.id,
            material_id=material_id,
            from_party=from_party,
            to_party=to_party,
            location=location,
            scanned_coi=scanned_coi.strip(),
            occurred_at=occurred_at or now,
            recorded_at=now,
            recorded_by=actor,
        )
        db.session.add(transfer)
        db.session.flush()
        data = transfer_item(transfer)
        audit.append(
            actor,
            "custody.transferred",
            "custody_transfer",
            transfer.id,
            data=data,
            therapy_id=therapy.id,
            site_id=therapy.site_id,
        )
        outbox.emit("custody.transferred", {"coi": therapy.coi, **data}, therapy_id=therapy.id, site_id=therapy.site_id)
    return transfer


def _by_site(therapy: Therapy, named: str, field: str) -> str:
    """The site code for a party of ``therapy`` or a site code; other text as written. 422 for a party with no
    site yet, or a registered site that takes no part in the therapy."""
    parties = therapy.parties
    text = named.strip()
    if text.casefold() in parties:
        site = parties[text.casefold()]
        if site is None:
            raise Invalid(
                f"The therapy has no {text.casefold()} site yet; name the party by its site once it has one.",
                code="party_unassigned",
                details={"field": field},
            )
        return site
    code = text.upper()
    if code in parties.values():
        return code
    if db.session.execute(select(Site.id).where(Site.code == code)).scalar_one_or_none() is not None:
        raise Invalid(
            f"Site {code} takes no part in this therapy (its parties: "
            + ", ".join(f"{party} {site}" for party, site in parties.items() if site)
            + ").",
            code="not_a_party",
            details={"field": field},
        )
    return text


def chain(therapy_id: str) -> list[CustodyTransfer]:
    """The therapy's transfers in the order they happened (then in the order they were recorded)."""
    recorded = and_(
        AuditEntry.subject_type == "custody_transfer",
        AuditEntry.subject_id == CustodyTransfer.id,
        AuditEntry.action == "custody.transferred",
    )
    return list(
        db.session.execute(
            select(CustodyTransfer)
            .outerjoin(AuditEntry, recorded)
            .where(CustodyTransfer.therapy_id == therapy_id)
            .order_by(CustodyTransfer.occurred_at, CustodyTransfer.recorded_at, AuditEntry.seq)
        ).scalars()
    )


def breaks(transfers: list[CustodyTransfer]) -> list[dict]:
    """Handoffs whose giver is not who last received that material: gaps an inspector should see."""
    holder: dict[str, str] = {}
    gaps = []
    for transfer in transfers:
        previous = holder.get(transfer.material_id)
        if previous is not None and previous.casefold() != transfer.from_party.casefold():
            gaps.append(
                {
                    "transfer_id": transfer.id,
                    "material_id": transfer.material_id,
                    "expected_from": previous,
                    "from_party": transfer.from_party,
                }
            )
        holder[transfer.material_id] = transfer.to_party
    return gaps


def transfer_item(transfer: CustodyTransfer) -> dict:
    """A transfer as the API and the therapy record show it."""
    from server.clock import iso

    return {
        "id": transfer.id,
        "therapy_id": transfer.therapy_id,
        "material_id": transfer.material_id,
        "from_party": transfer.from_party,
        "to_party": transfer.to_party,
        "location": transfer.location,
        "occurred_at": iso(transfer.occurred_at),
        "recorded_at": iso(transfer.recorded_at),
        "recorded_by": transfer.recorded_by,
        "scanned_coi": transfer.scanned_coi,
        "verified_coi": parse_coi(transfer.scanned_coi).value,
    }
