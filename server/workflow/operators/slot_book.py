"""`slot.book`: books the therapy's places in slots of capacity (apheresis, manufacturing, infusion).

Parameters: `slot_id` (one slot id, or a list of them, one per kind; an empty value or `None` books nothing for
that entry), `reason_code` (optional: a reschedule reason code, needed only to move a booking the therapy
holds already). The places are taken through the therapy's bookings (one guarded update each, audited and
published as `booking.created` or `booking.moved`) in the step's transaction: all of them or none. A kind
the therapy holds a place of already is left as it is, unless `reason_code` asks to move it. A refusal (no
such slot, closed, full, begun, at a site that is not the therapy's for its kind) fails the service task
with the reason. Result: the therapy's bookings by kind, `{"manufacturing": {"slot_id": ..., "site":
"MFG-1", "start": ..., "end": ...}, ...}`, the value the server keeps under `bookings` in the process data:
name the result variable `bookings`.
"""

from __future__ import annotations

from typing import Any

PARAMETERS = {
    "slot_id": "a slot id, or a list of them (one per kind), e.g. [apheresis_slot, manufacturing_slot]",
    "reason_code": "a reschedule reason code, needed only to move a booking the therapy holds already",
}
REQUIRED = {"slot_id"}


def slot_ids(value: Any) -> list[str]:
    """The slot ids a `slot_id` parameter names, in order, without empty entries."""
    entries = value if isinstance(value, list | tuple) else [value]
    out = []
    for entry in entries:
        if entry is None or entry == "":
            continue
        if not isinstance(entry, str):
            raise ValueError(f"slot.book needs slot ids as text, got {entry!r}")
        if entry not in out:
            out.append(entry)
    return out


def run(context, params: dict) -> dict:
    """Book each named slot for the therapy (unless it holds a place of that kind) and return its bookings."""
    from server.errors import ApiError
    from server.workflow import bookings

    therapy = context.therapy
    reason_code = params.get("reason_code") or None
    held = {b.kind: b.slot_id for b in bookings.booked(therapy.id)}
    kinds: set[str] = set()
    for slot_id in slot_ids(params.get("slot_id")):
        try:
            slot = bookings.get_slot(slot_id)
            if slot.kind in kinds:
                raise ValueError(f"slot.book names two {slot.kind} slots; a therapy books one place per kind")
            kinds.add(slot.kind)
            if slot.kind in held and (held[slot.kind] == slot.id or not reason_code):
                continue
            bookings.book(therapy, slot, context.actor, reason_code, None)
        except ApiError as refused:
            raise ValueError(f"slot {slot_id} ({refused.code}): {refused.message}") from None
    return bookings.process_value(therapy.id)
