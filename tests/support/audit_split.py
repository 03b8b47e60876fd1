"""Verification of the audit trail split into ranges must give exactly the answer of one pass over it.

``verified`` is what the tamper tests call instead of ``audit.verify``: it verifies in one pass, then split over
three worker processes (``TETHER_AUDIT_VERIFY_WORKERS`` 3, ``TETHER_AUDIT_VERIFY_PARALLEL_FROM`` 0, forced on
a short trail), then split in two at every ``seq`` of the trail (the ranges checked in the test's process and
stitched as the workers' are), and asserts that every answer is the one-pass answer, which it returns. So a
break on a range's first or last entry, a deletion or a reordering across two ranges and chains spread over
ranges are all checked against the single pass.
"""

from __future__ import annotations

from contextlib import ExitStack
from itertools import pairwise
from typing import Any
from unittest import mock


def split_in_processes(app, workers: int = 3, **options: Any) -> dict[str, Any]:
    """``audit.verify(**options)`` with the trail split over ``workers`` worker processes, however short."""
    from server.store import audit

    saved = {key: app.config.get(key) for key in ("AUDIT_VERIFY_WORKERS", "AUDIT_VERIFY_PARALLEL_FROM")}
    app.config.update(AUDIT_VERIFY_WORKERS=workers, AUDIT_VERIFY_PARALLEL_FROM=0)
    try:
        with app.app_context():
            return audit.verify(**options)
    finally:
        app.config.update(saved)


def split_at(app, cuts: list[int], **options: Any) -> dict[str, Any]:
    """``audit.verify(**options)`` with the trail cut after each ``seq`` of ``cuts``, the ranges checked in this
    process and stitched together as the worker processes' ranges are."""
    from server.store import audit, audit_scan

    ranges = list(pairwise([0, *cuts, audit_scan.LAST_SEQ]))

    def here(ranges, bounds, progress, batch):
        return [audit._scan_here(bounds, progress, batch, after, upto) for after, upto in ranges]

    with ExitStack() as patched:
        patched.enter_context(mock.patch.object(audit, "_ranges", lambda batch: ranges))
        patched.enter_context(mock.patch.object(audit, "_scan_apart", here))
        with app.app_context():
            return audit.verify(**options)


def last_seq(app) -> int:
    import sqlalchemy as sa

    from server.store.extensions import db

    with app.app_context():
        return db.session.execute(sa.text("SELECT coalesce(max(seq), 0) FROM audit_entry")).scalar_one()


def verified(app) -> dict[str, Any]:
    """The one-pass verdict, once the splits gave it too."""
    from server.store import audit

    with app.app_context():
        one_pass = audit.verify()
    assert split_in_processes(app) == one_pass, "three worker processes"
    for cut in range(1, last_seq(app)):
        assert split_at(app, [cut]) == one_pass, f"split after seq {cut}"
    return one_pass
