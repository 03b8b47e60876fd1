"""Verification of the audit trail split into ranges must give exactly the answer of one pass over it.

``verified`` is what the tamper tests call instead of ``audit.verify``: it verifies in one pass, then split in
the three ranges three worker processes would get (``TETHER_AUDIT_VERIFY_WORKERS`` 3,
``TETHER_AUDIT_VERIFY_PARALLEL_FROM`` 0, forced on a short trail), then split in two at every ``seq`` of the trail,
the ranges checked in the test's process and stitched as the workers' are, and asserts that every answer is the
one-pass answer, which it returns. So a break on a range's first or last entry, a deletion or a reordering across
two ranges and chains spread over ranges are all checked against the single pass. Starting the worker processes
themselves (a fresh interpreter each, most of a second of CPU) is left to the tests that call
``split_in_processes``: the progress they report, a tamper case, a trail sealed and written while it is verified,
and workers that cannot start.
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


def _here(ranges, bounds, progress, batch):
    """What ``audit._scan_apart`` returns, each range checked in this process instead of a worker's."""
    from server.store import audit

    return [audit._scan_here(bounds, progress, batch, after, upto) for after, upto in ranges]


def split_here(app, workers: int = 3, **options: Any) -> dict[str, Any]:
    """``audit.verify(**options)`` with the trail split in the ranges of ``workers`` worker processes, however
    short, each checked in this process."""
    from server.store import audit

    with mock.patch.object(audit, "_scan_apart", _here):
        return split_in_processes(app, workers, **options)


def split_at(app, cuts: list[int], **options: Any) -> dict[str, Any]:
    """``audit.verify(**options)`` with the trail cut after each ``seq`` of ``cuts``, the ranges checked in this
    process and stitched together as the worker processes' ranges are."""
    from server.store import audit, audit_scan

    ranges = list(pairwise([0, *cuts, audit_scan.LAST_SEQ]))
    with ExitStack() as patched:
        patched.enter_context(mock.patch.object(audit, "_ranges", lambda batch: ranges))
        patched.enter_context(mock.patch.object(audit, "_scan_apart", _here))
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
    assert split_here(app) == one_pass, "the ranges of three worker processes"
    for cut in range(1, last_seq(app)):
        assert split_at(app, [cut]) == one_pass, f"split after seq {cut}"
    return one_pass
