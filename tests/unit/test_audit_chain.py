"""The audit chain's hashing, without a database: the canonical form is pinned and every field counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from server.audit import GENESIS, canonical, entry_hash

ENTRY = {"seq": 7, "at": datetime(2026, 11, 23, 9, 30, 15, 250000, tzinfo=UTC), "actor": "qa",
         "action": "data.corrected", "subject_type": "therapy", "subject_id": "t-1", "therapy_id": "t-1",
         "site_id": 2, "reason": "typo é", "data": {"path": "qc.result", "old_value": "fail", "new_value": "pass",
                                                    "n": 1.5}, "prev_hash": "a" * 64}


def test_canonical_form_is_stable():
    # Stored chains are verified with this function for ever: its output must never change.
    assert entry_hash(ENTRY) == "8bfeb6cb66af3d133e007f6c7a32c788d30d56c058c81dcd238cac224d2deae0"
    assert canonical(ENTRY).startswith(b'{"action":"data.corrected","actor":"qa","at":"2026-11-23T09:30:15.250000Z"')


def test_the_same_moment_in_any_zone_hashes_the_same():
    shifted = ENTRY["at"].astimezone(timezone(timedelta(hours=-5, minutes=-30)))
    naive = ENTRY["at"].replace(tzinfo=None)
    assert entry_hash({**ENTRY, "at": shifted}) == entry_hash(ENTRY) == entry_hash({**ENTRY, "at": naive})


def test_key_order_of_data_does_not_matter():
    reordered = {**ENTRY, "data": dict(reversed(list(ENTRY["data"].items())))}
    assert entry_hash(reordered) == entry_hash(ENTRY)


@pytest.mark.parametrize("field, value", [
    ("seq", 8), ("at", ENTRY["at"] + timedelta(microseconds=1)), ("actor", "qa2"), ("action", "data.changed"),
    ("subject_type", "task"), ("subject_id", "t-2"), ("therapy_id", None), ("site_id", 3), ("reason", "typo"),
    ("data", {**ENTRY["data"], "new_value": "fail"}), ("prev_hash", GENESIS)])
def test_every_field_is_covered_by_the_hash(field, value):
    assert entry_hash({**ENTRY, field: value}) != entry_hash(ENTRY)
