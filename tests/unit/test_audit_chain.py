"""The audit chain's hashing, without a database: the canonical form is pinned and every field counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from server.store.audit import GENESIS, canonical, entry_hash, merkle_root, seal_hash

ENTRY = {
    "seq": 7,
    "at": datetime(2026, 11, 23, 9, 30, 15, 250000, tzinfo=UTC),
    "actor": "qa",
    "action": "data.corrected",
    "subject_type": "therapy",
    "subject_id": "t-1",
    "therapy_id": "t-1",
    "site_id": 2,
    "reason": "typo é",
    "data": {"path": "qc.result", "old_value": "fail", "new_value": "pass", "n": 1.5},
    "prev_hash": "a" * 64,
}


def test_canonical_form_is_stable():
    # Stored chains are verified with this function for ever: its output must never change.
    assert entry_hash(ENTRY) == "8bfeb6cb66af3d133e007f6c7a32c788d30d56c058c81dcd238cac224d2deae0"
    assert canonical(ENTRY).startswith(b'{"action":"data.corrected","actor":"qa","at":"2026-11-23T09:30:15.250000Z"')


CHAINED = {**ENTRY, "chain": "t-1", "chain_seq": 3}


def test_canonical_form_of_a_chained_entry_is_stable():
    # An entry with a chain covers the chain and its place in it; one without (written before chains existed)
    # keeps the old form above.
    assert entry_hash(CHAINED) == "27d577ba5b40bf909ceb77438aa737340f91c90bec0998836080b75df0375002"
    assert b'"at":"2026-11-23T09:30:15.250000Z","chain":"t-1","chain_seq":3,"data":' in canonical(CHAINED)
    assert entry_hash({**CHAINED, "chain": None, "chain_seq": None}) == entry_hash(ENTRY)


@pytest.mark.parametrize("field, value", [("chain", "t-2"), ("chain", "system"), ("chain_seq", 4)])
def test_the_chain_and_the_place_are_covered_by_the_hash(field, value):
    assert entry_hash({**CHAINED, field: value}) != entry_hash(CHAINED)


def test_merkle_root_covers_every_head_and_is_independent_of_their_order():
    heads = [("system", 9, 20, "a" * 64), ("t-1", 3, 18, "b" * 64), ("t-2", 1, 19, "c" * 64)]
    root = merkle_root(heads)
    assert len(root) == 64 and root == merkle_root(list(reversed(heads)))
    assert merkle_root([]) == GENESIS
    assert merkle_root(heads[:1]) != merkle_root(heads[:2]) != root
    for index, head in enumerate(heads):
        for position in range(4):
            changed = list(head)
            changed[position] = "x" * 64 if position in (0, 3) else changed[position] + 1
            assert merkle_root([*heads[:index], tuple(changed), *heads[index + 1 :]]) != root


def test_a_seals_hash_covers_its_number_moment_heads_root_and_predecessor():
    at = ENTRY["at"]
    digest = seal_hash(2, at, 3, "r" * 64, "p" * 64)
    assert digest != seal_hash(3, at, 3, "r" * 64, "p" * 64)
    assert digest != seal_hash(2, at + timedelta(microseconds=1), 3, "r" * 64, "p" * 64)
    assert digest != seal_hash(2, at, 4, "r" * 64, "p" * 64)
    assert digest != seal_hash(2, at, 3, "s" * 64, "p" * 64)
    assert digest != seal_hash(2, at, 3, "r" * 64, "q" * 64)


def test_the_same_moment_in_any_zone_hashes_the_same():
    shifted = ENTRY["at"].astimezone(timezone(timedelta(hours=-5, minutes=-30)))
    naive = ENTRY["at"].replace(tzinfo=None)
    assert entry_hash({**ENTRY, "at": shifted}) == entry_hash(ENTRY) == entry_hash({**ENTRY, "at": naive})


def test_key_order_of_data_does_not_matter():
    reordered = {**ENTRY, "data": dict(reversed(list(ENTRY["data"].items())))}
    assert entry_hash(reordered) == entry_hash(ENTRY)


@pytest.mark.parametrize(
    "field, value",
    [
        ("seq", 8),
        ("at", ENTRY["at"] + timedelta(microseconds=1)),
        ("actor", "qa2"),
        ("action", "data.changed"),
        ("subject_type", "task"),
        ("subject_id", "t-2"),
        ("therapy_id", None),
        ("site_id", 3),
        ("reason", "typo"),
        ("data", {**ENTRY["data"], "new_value": "fail"}),
        ("prev_hash", GENESIS),
    ],
)
def test_every_field_is_covered_by_the_hash(field, value):
    assert entry_hash({**ENTRY, field: value}) != entry_hash(ENTRY)


def _stored_row(entry: dict, data_text: str | None = None) -> tuple:
    """An entry as the verifier reads it back: timestamp text, data as the compact serializer stored it."""
    from server.store.audit import _json_ready, _timestamp
    from server.store.extensions import compact_json

    return (
        entry["seq"],
        _timestamp(entry["at"]),
        entry["actor"],
        entry["action"],
        entry["subject_type"],
        entry["subject_id"],
        entry["therapy_id"],
        entry["site_id"],
        entry["reason"],
        data_text if data_text is not None else compact_json(_json_ready(entry["data"])),
        entry["prev_hash"],
        entry_hash(entry),
        entry.get("chain"),
        entry.get("chain_seq"),
    )


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"therapy_id": None, "site_id": None, "reason": None},
        {"actor": 'quote " and \\ backslash', "reason": "line\nbreak\ttab \u2028 \x01 ünïcode 😀"},
        {"data": {"z": [1, 2.5, None, True], "a": {"ü": "é", "nested": {"b": 1, "a": -0.1}}, "m": "😀"}},
        {"data": {}},
        {"data": {"big": 10**30, "small": 1e-7, "exp": 1e16}},
        {"chain": "t-1", "chain_seq": 3},
        {"chain": 'odd " chain ü', "chain_seq": 12345678901},
    ],
)
def test_verifier_reads_the_stored_form_exactly_as_the_chain_hashes_it(changes):
    from server.store.audit import _intact, stored_form
    from server.store.audit_scan import chained_form

    entry = {**ENTRY, **changes}
    row = _stored_row(entry)
    assert stored_form(row).encode() == entry["prev_hash"].encode() + canonical(entry)
    assert _intact(row)
    if entry.get("chain") is not None:  # verification's quick path hashes this form of a chained entry
        assert chained_form(row) == stored_form(row)


def test_verifier_falls_back_to_decoding_and_still_catches_changes():
    from server.store.audit import _intact

    legacy = _stored_row(ENTRY, data_text='{"path": "qc.result", "n": 1.5, "old_value": "fail", "new_value": "pass"}')
    assert _intact(legacy)  # stored with spaces and in another key order: decoded, hashed exactly, intact
    changed = _stored_row(ENTRY, data_text='{"path": "qc.result", "n": 1.5, "old_value": "fail", "new_value": "ok"}')
    assert not _intact(changed)
    assert not _intact((*_stored_row(ENTRY)[:1], "not a time", *_stored_row(ENTRY)[2:]))


def _chain_of(entries: list[dict]) -> list[tuple]:
    """``entries`` chained in order (each linked to the one before it in its chain), as the verifier reads them."""
    last: dict[str, tuple[int, str]] = {}
    rows = []
    for seq, entry in enumerate(entries, start=1):
        place, prev_hash = last.get(entry["chain"], (0, GENESIS))
        entry = {**entry, "seq": seq, "chain_seq": place + 1, "prev_hash": prev_hash}
        rows.append(_stored_row(entry))
        last[entry["chain"]] = (place + 1, rows[-1][11])
    return rows


def _scanned(rows: list[tuple]) -> dict[str, tuple]:
    """What a range's scan says of each chain when only the stored form counts (no slow decoding)."""
    from server.store.audit_scan import Scan

    scan = Scan({}, lambda row: False)
    scan.bounds = {row[12]: (10**6, None) for row in rows}
    scan.rows(rows)
    return scan.result()


def test_a_scan_passes_every_entry_whose_stored_form_hashes_right_and_links():
    odd = 'odd " chain ü'
    entries = [
        {**ENTRY, "chain": "t-1", "therapy_id": "t-1"},
        {**ENTRY, "chain": odd, "therapy_id": odd, "actor": 'quote " and \\ backslash'},
        {**ENTRY, "chain": "system", "therapy_id": None, "action": "user.created"},
        {**ENTRY, "chain": "t-1", "therapy_id": "t-1", "reason": "line\nbreak \u2028 ünïcode 😀"},
        {**ENTRY, "chain": odd, "therapy_id": "another", "actor": 'quote " and \\ backslash'},
        {**ENTRY, "chain": "system", "therapy_id": None, "action": "user.created", "site_id": 7},
    ]
    results = _scanned(_chain_of(entries))
    assert {chain: (first[4], last[0], broken) for chain, (first, last, broken, _beyond) in results.items()} == {
        "t-1": (True, 2, None),
        odd: (True, 2, None),
        "system": (True, 2, None),
    }


@pytest.mark.parametrize(
    ("column", "value"),
    [(2, "mallory"), (3, "user.deleted"), (4, "task"), (6, "t-2"), (6, None), (7, 9), (8, "why not")],
)
def test_a_scan_breaks_a_chain_at_an_entry_changed_after_it_was_hashed(column, value):
    rows = _chain_of([{**ENTRY, "chain": "t-1", "therapy_id": "t-1"} for _ in range(3)])
    rows[1] = (*rows[1][:column], value, *rows[1][column + 1 :])
    first, last, broken, _beyond = _scanned(rows)["t-1"]
    assert first[4] is True and last[0] == 1 and broken == (2, "at", 2, 2, 0)
