"""Seals over the audit chains' heads: by hand (`tether audit seal`) and every TETHER_AUDIT_SEAL_SECONDS in serve."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from ..support.audit_split import split_in_processes, verified


@pytest.fixture
def tether(app, monkeypatch):
    """Run ``tether ...`` on the test's app: (exit code, standard output)."""
    from server import cli

    monkeypatch.setattr(cli, "_app", lambda: app)

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli.main, list(args))
        return result.exit_code, result.stdout

    return run


def seals(app) -> list[tuple]:
    from server.store.extensions import db

    with app.app_context():
        return [tuple(row) for row in db.session.execute(sa.text("SELECT id, heads FROM audit_seal ORDER BY id"))]


def append(app, therapy_id=None):
    from server.store import audit
    from server.store.uow import unit_of_work

    with app.app_context():
        with unit_of_work():
            audit.append("test", "test.appended", "test", "1", therapy_id=therapy_id)


def test_tether_audit_seal_seals_what_moved_and_verify_counts_the_seals(app, world, tether):
    code, out = tether("audit", "seal")
    assert code == 0 and out.startswith("seal 1: 1 chain heads, root ")
    assert tether("audit", "seal") == (0, "nothing to seal: no chain moved since the last seal\n")
    append(app, therapy_id="t-1")
    append(app, therapy_id="t-2")
    code, out = tether("audit", "seal")
    assert code == 0 and out.startswith("seal 2: 2 chain heads")  # only the two therapies' chains moved
    assert seals(app) == [(1, 1), (2, 2)]
    seal_hash = out.split("hash ")[-1].strip()
    code, out = tether("audit", "verify")
    assert code == 0 and "in 3 chains, 2 seals" in out
    assert out.endswith(f"latest seal 2, hash {seal_hash}\n")  # what to record outside the database

    assert verified(app)["last_seal"] == {"id": 2, "hash": seal_hash}


def test_tether_audit_verify_names_a_broken_seal(app, world, tether):
    from server.store.extensions import db

    tether("audit", "seal")
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            db.session.execute(sa.text("DROP TRIGGER audit_seal_no_update"))
        else:
            db.session.execute(sa.text("DROP TRIGGER audit_seal_no_change ON audit_seal"))
        db.session.execute(sa.text("UPDATE audit_seal SET heads = 2"))
        db.session.commit()
    assert tether("audit", "verify") == (1, "audit seals BROKEN at seal 1\n")


def test_serve_seals_periodically(app, world):
    from server.workflow.scheduler import TimerScheduler

    app.config.update(AUDIT_SEAL_SECONDS=0.2)
    scheduler = TimerScheduler(app)
    try:
        scheduler.start()
        deadline = time.monotonic() + 10
        while not seals(app) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seals(app) == [(1, 1)]
        append(app, therapy_id="t-1")
        while len(seals(app)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seals(app) == [(1, 1), (2, 1)]
    finally:
        scheduler.shutdown()


def test_no_periodic_seal_when_turned_off(app, world):
    from server.workflow.scheduler import TimerScheduler

    app.config.update(AUDIT_SEAL_SECONDS=0)
    scheduler = TimerScheduler(app)
    try:
        scheduler.start()
        assert scheduler.scheduler.get_job("tether-audit-seal") is None
    finally:
        scheduler.shutdown()


def test_verification_while_therapies_append_stays_intact(app, world):
    """Entries chained (and seals written) while verification runs lie beyond the seals and heads it read first:
    left to the next run, never read as tampering."""
    import threading

    from server.store import audit

    stop, errors = threading.Event(), []

    def writer(number):
        try:
            while not stop.is_set():
                append(app, therapy_id=f"t-{number}")
                append(app)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    def sealer():
        try:
            while not stop.is_set():
                with app.app_context():
                    audit.seal()
                time.sleep(0.01)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)] + [threading.Thread(target=sealer)]
    for thread in threads:
        thread.start()
    try:
        verdicts = []
        for round_ in range(6):  # in one pass and split over worker processes in turn
            if round_ % 2:
                verdicts.append(split_in_processes(app, batch=7))
                continue
            with app.app_context():
                verdicts.append(audit.verify(batch=7))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert [v for v in verdicts if not v["ok"]] == [], str([v for v in verdicts if not v["ok"]])
    with app.app_context():
        settled = audit.verify()
    # One pass and split over worker processes agree; the trail is thousands of entries long by now, so the split
    # after every seq (a verification per entry, which the tamper tests' short trails afford) is left to them.
    assert settled["ok"] is True and split_in_processes(app) == settled


def test_the_first_bad_entry_is_the_earliest_whichever_chain_it_is_in(app, world):
    from server.store.extensions import db

    append(app, therapy_id="t-1")
    append(app, therapy_id="t-1")
    append(app)
    with app.app_context():
        therapy_seqs = list(
            db.session.execute(sa.text("SELECT seq FROM audit_entry WHERE chain = 't-1' ORDER BY seq")).scalars()
        )
        if db.engine.dialect.name == "sqlite":
            db.session.execute(sa.text("DROP TRIGGER audit_entry_no_update"))
            db.session.execute(sa.text("DROP TRIGGER audit_entry_no_delete"))
        else:
            db.session.execute(sa.text("DROP TRIGGER audit_entry_no_change ON audit_entry"))
        # The therapy's newest entry deleted (found at the end, from its head), and a later system entry changed.
        db.session.execute(sa.text("DELETE FROM audit_entry WHERE seq = :s"), {"s": therapy_seqs[-1]})
        db.session.execute(
            sa.text("UPDATE audit_entry SET actor = 'mallory' WHERE seq = :s"), {"s": therapy_seqs[-1] + 1}
        )
        db.session.commit()
    answer = verified(app)
    assert (answer["first_bad_seq"], answer["first_bad_chain"], answer["first_bad_chain_seq"]) == (
        therapy_seqs[-1],
        "t-1",
        2,
    )


def test_two_processes_sealing_at_once_never_fork_the_seals(app, world):
    import threading

    from server.store import audit

    results, errors = [], []
    for round_ in range(3):
        append(app, therapy_id=f"t-{round_}")
        go = threading.Barrier(2)

        def sealer(go=go):
            try:
                with app.app_context():
                    go.wait()
                    results.append(audit.seal())
            except Exception as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=sealer) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    numbers = [row[0] for row in seals(app)]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 3
    with app.app_context():
        assert audit.seal() is None  # every head that moved is sealed
    verdict = verified(app)
    assert verdict["ok"] is True and verdict["seals"] == len(numbers)
