"""21 CFR Part 11 and EU GMP Annex 11, requirement by requirement, through the API and behind its back.

Tamper tests act as an attacker with direct database access: they drop the protecting trigger first, change
the stored audit trail, and expect verification to name the first broken entry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from unittest import mock

import pytest
import sqlalchemy as sa

from server.config import project_root

from ..e2e.test_bundled_journeys import run_journey
from ..scenario_data import AUTOLOGOUS_HAPPY_PATH, form_data
from ..support.audit_split import split_in_processes, verified
from ..support.journeys import ENROLMENT, complete, enrol, only_task, start, to_receipt
from .conftest import PASSWORD

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


# -- helpers ---------------------------------------------------------------------------------------------
def enrolled(api, world, **start_data):
    """A mini therapy past enrolment, waiting for the shipment message; returns the therapy."""
    therapy = start(api, world["coord"], data=start_data or None)
    enrol(api, world, therapy)
    return therapy


def at_receipt(api, world):
    """A mini therapy whose signed 'Receive shipment' task is ready for logistics: (therapy, task)."""
    therapy = start(api, world["coord"])
    return therapy, to_receipt(api, world, therapy, payload={"carrier": "ColdChain"})


def sign(api, token, task_id, password=PASSWORD, data=None, meaning="approval"):
    """Complete a signed task (by default 'Receive shipment', received ok) with the signature's password."""
    data = data if data is not None else {"received_ok": True}
    return complete(api, token, task_id, data, signature={"password": password, "meaning": meaning})


def audit_items(api, world, **filters):
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    return api.as_(world["auditor"]).get(f"/api/v1/audit?limit=500&{query}").get_json()["items"]


def all_audit(app):
    from server.store.extensions import db
    from server.store.models import AuditEntry

    with app.app_context():
        rows = db.session.execute(sa.select(AuditEntry).order_by(AuditEntry.seq)).scalars().all()
        return [(e.seq, e.action, e.actor, e.data) for e in rows]


def verify(app):
    """The verdict of one pass, which the trail split into ranges (three workers' ranges, and at every seq) must
    give too."""
    return verified(app)


def user_id(app, username):
    from server.store.extensions import db
    from server.store.models import User

    with app.app_context():
        return db.session.execute(sa.select(User.id).where(User.username == username)).scalar_one()


def sql(app, *statements, params=None):
    """Run raw SQL as someone with database access would, committing at once."""
    from server.store.extensions import db

    with app.app_context():
        with db.engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement), params or {})


def _drop_triggers(app, on_sqlite: tuple[str, ...], on_postgresql: tuple[str, ...]) -> None:
    """Drop protective triggers by their names on the database in use (PostgreSQL's with ``ON table``)."""
    from server.store.extensions import db

    with app.app_context():
        dialect = db.engine.dialect.name
    sql(app, *(f"DROP TRIGGER {name}" for name in (on_sqlite if dialect == "sqlite" else on_postgresql)))


def drop_audit_triggers(app):
    """What an attacker with database access does first."""
    _drop_triggers(app, ("audit_entry_no_update", "audit_entry_no_delete"), ("audit_entry_no_change ON audit_entry",))


def drop_head_triggers(app):
    """So that an attacker can move a chain's head back."""
    _drop_triggers(app, ("audit_chain_head_no_rewind",), ("audit_chain_head_no_rewind ON audit_chain_head",))


def drop_seal_triggers(app):
    """So that an attacker can change a seal's record of a head."""
    _drop_triggers(app, ("audit_seal_head_no_update",), ("audit_seal_head_no_change ON audit_seal_head",))


def broken(answer):
    """The fields every broken verdict has, as the tests compare them."""
    return {key: answer.get(key) for key in ("ok", "checked", "first_bad_seq")}


def place_of(app, seq):
    """(chain, chain_seq) of the entry at ``seq``."""
    from server.store.extensions import db

    with app.app_context():
        return tuple(
            db.session.execute(sa.text("SELECT chain, chain_seq FROM audit_entry WHERE seq = :s"), {"s": seq}).one()
        )


def chain_entries(app, chain):
    """[(seq, chain_seq, hash)] of one chain, in order."""
    from server.store.extensions import db

    with app.app_context():
        rows = db.session.execute(
            sa.text("SELECT seq, chain_seq, hash FROM audit_entry WHERE chain = :c ORDER BY chain_seq"), {"c": chain}
        )
        return [tuple(row) for row in rows]


def chain_places(app, chain):
    return [place for _seq, place, _hash in chain_entries(app, chain)]


def therapy_chain(app):
    """The chain of the (one) therapy of ``busy_chain``."""
    from server.store.extensions import db

    with app.app_context():
        return db.session.execute(
            sa.text("SELECT chain FROM audit_chain_head WHERE chain <> 'system' ORDER BY chain LIMIT 1")
        ).scalar_one()


@pytest.fixture
def busy_chain(api, world):
    """A chain with a therapy's worth of entries on top of the setup ones; returns the number of entries."""
    at_receipt(api, world)
    result = api.as_(world["auditor"]).get("/api/v1/audit/verify").get_json()
    assert result["ok"] is True and result["checked"] > 30
    return result["checked"]


# -- audit trail: hash chain and its protection ---------------------------------------------------------
def test_audit_entries_form_a_hash_chain_per_therapy(app, api, world, busy_chain):
    from server.store.audit import GENESIS, SYSTEM, entry_dict, entry_hash
    from server.store.extensions import db
    from server.store.models import AuditEntry

    items = audit_items(api, world)
    assert [e["seq"] for e in items] == list(range(1, busy_chain + 1))
    chains: dict[str, list] = {}
    for item in items:
        chains.setdefault(item["chain"], []).append(item)
        assert item["chain"] == (item["therapy_id"] or SYSTEM)
    assert len(chains) == 2  # the therapy's and the system's (logins, accounts, deployments)
    for entries in chains.values():
        assert [e["chain_seq"] for e in entries] == list(range(1, len(entries) + 1))
        assert [e["prev_hash"] for e in entries] == [GENESIS] + [e["hash"] for e in entries[:-1]]
    with app.app_context():
        for entry in db.session.execute(sa.select(AuditEntry).order_by(AuditEntry.seq)).scalars():
            assert entry_hash(entry_dict(entry)) == entry.hash


def in_threads(app, work, count: int) -> list[Exception]:
    """Run ``work(n)`` for n in range(count), each in its own thread inside an app context; the errors raised."""
    errors: list[Exception] = []

    def run(n):
        try:
            with app.app_context():
                work(n)
        except Exception as exc:  # returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_concurrent_appends_never_fork_the_chain(app, world):
    from server.store import audit
    from server.store.uow import unit_of_work

    before = verify(app)["checked"]

    def writer(n):
        for i in range(8):
            with unit_of_work():
                audit.append(f"writer{n}", "test.appended", "test", f"{n}-{i}")

    assert in_threads(app, writer, 4) == []
    result = verify(app)
    assert result == {
        "ok": True,
        "checked": before + 32,
        "last_hash": result["last_hash"],
        "chains": 1,
        "seals": 0,
        "spooled": 0,
    }


def test_concurrent_appends_to_different_therapies_each_keep_their_chain(app, world):
    from server.store import audit
    from server.store.uow import unit_of_work

    before = verify(app)

    def writer(n):
        for i in range(8):
            with unit_of_work():
                audit.append(f"writer{n}", "test.appended", "therapy", f"t{n}", therapy_id=f"therapy-{n % 3}")
                if i % 4 == 0:
                    audit.append(f"writer{n}", "test.appended", "test", f"{n}-{i}")  # and the system chain

    assert in_threads(app, writer, 6) == []
    result = verify(app)
    assert result["ok"] is True and result["checked"] == before["checked"] + 6 * 10
    assert result["chains"] == before["chains"] + 3
    assert chain_places(app, "therapy-0") == list(range(1, 17))


def test_audit_entry_cannot_be_updated_in_database(app, world):
    with pytest.raises(sa.exc.DBAPIError):
        sql(app, "UPDATE audit_entry SET actor = 'mallory' WHERE seq = 3")
    assert all_audit(app)[2][2] != "mallory"
    assert verify(app)["ok"] is True


def test_audit_entry_cannot_be_deleted_in_database(app, world):
    count = len(all_audit(app))
    with pytest.raises(sa.exc.DBAPIError):
        sql(app, "DELETE FROM audit_entry WHERE seq = 3")
    from server.store.extensions import db

    with app.app_context():
        postgres = db.engine.dialect.name == "postgresql"
    if postgres:
        with pytest.raises(sa.exc.DBAPIError):
            sql(app, "TRUNCATE audit_entry")
    assert len(all_audit(app)) == count
    assert verify(app)["ok"] is True


def test_no_api_edits_or_deletes_audit_entries(api, world):
    headers = {"Authorization": f"Bearer {world['admin']}"}
    for method in ("PUT", "PATCH", "DELETE"):
        assert api.client.open("/api/v1/audit/3", method=method, headers=headers).status_code in (404, 405)
        assert api.client.open("/api/v1/audit", method=method, headers=headers).status_code == 405
    assert api.as_(world["auditor"]).get("/api/v1/audit/verify").get_json()["ok"] is True


def test_verify_reports_its_progress_batch_by_batch(app, busy_chain):
    from server.store import audit

    seen = []
    with app.app_context():
        result = audit.verify(progress=seen.append, batch=10)
    assert result["ok"] is True and result["checked"] == busy_chain
    assert seen == [*range(10, busy_chain, 10), busy_chain]  # what `tether audit verify` draws its bar from


def test_verify_split_over_worker_processes_reports_its_progress_as_they_go(app, busy_chain):
    from server.store import audit

    seen: list[int] = []
    with mock.patch.object(audit.subprocess, "Popen", wraps=subprocess.Popen) as started:
        result = split_in_processes(app, progress=seen.append, batch=5)
    assert started.call_count == 3  # the three worker processes
    assert result["ok"] is True and result["checked"] == busy_chain
    # every batch of every worker counted once: more reports than one pass's, rising to the whole trail
    assert len(seen) >= busy_chain // 5 and seen == sorted(seen) and seen[-1] == busy_chain


def test_verify_is_one_pass_when_its_worker_processes_cannot_start(app, busy_chain, monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    result = split_in_processes(app)
    assert result["ok"] is True and result["checked"] == busy_chain


def test_verify_detects_a_changed_field(app, api, world, busy_chain, database_url):
    drop_audit_triggers(app)
    sql(app, "UPDATE audit_entry SET actor = 'mallory' WHERE seq = 17")
    answer = api.as_(world["auditor"]).get("/api/v1/audit/verify").get_json()
    assert broken(answer) == {"ok": False, "checked": 16, "first_bad_seq": 17}
    assert (answer["first_bad_chain"], answer["first_bad_chain_seq"]) == place_of(app, 17)
    assert split_in_processes(app) == verify(app)  # real worker processes name the same entry
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "audit", "verify"],
        capture_output=True,
        text=True,
        env={**os.environ, "TETHER_DATABASE_URL": database_url},
        cwd=project_root(),
        timeout=120,
    )
    assert result.returncode == 1 and "seq 17" in result.stdout, result.stdout + result.stderr


def test_verify_detects_a_changed_data_value(app, world, busy_chain):
    drop_audit_triggers(app)
    from server.store.extensions import db

    with app.app_context():
        seq = db.session.execute(sa.text("SELECT max(seq) FROM audit_entry WHERE action = 'task.completed'")).scalar()
        db.session.execute(
            sa.text("UPDATE audit_entry SET data = :data WHERE seq = :seq"),
            {"data": '{"patient_initials": "ZZ"}', "seq": seq},
        )
        db.session.commit()
    assert verify(app)["first_bad_seq"] == seq


def test_verify_detects_a_deleted_entry(app, world, busy_chain):
    drop_audit_triggers(app)
    chain, place = place_of(app, 12)
    sql(app, "DELETE FROM audit_entry WHERE seq = 12")
    answer = verify(app)
    assert broken(answer) == {"ok": False, "checked": 11, "first_bad_seq": 12}
    assert (answer["first_bad_chain"], answer["first_bad_chain_seq"]) == (chain, place)


def test_verify_detects_the_last_entry_deleted(app, world, busy_chain):
    drop_audit_triggers(app)
    sql(app, "DELETE FROM audit_entry WHERE seq = :seq", params={"seq": busy_chain})
    assert verify(app)["first_bad_seq"] == busy_chain


def test_verify_detects_a_therapys_newest_entries_deleted_with_its_head_rewritten_once_sealed(app, world, busy_chain):
    """Removing a chain's newest entries and moving its head back to match leaves a consistent chain: the seal
    that covered them names the first one removed."""
    from server.store import audit

    therapy = therapy_chain(app)
    places = chain_entries(app, therapy)
    with app.app_context():
        assert audit.seal()["heads"] == 2  # the therapy's chain and the system's
    drop_audit_triggers(app)
    drop_head_triggers(app)
    (seq_gone, place_gone, _), (_seq, _place, _hash), kept = places[-2], places[-1], places[-3]
    sql(app, "DELETE FROM audit_entry WHERE chain = :c AND chain_seq >= :p", params={"c": therapy, "p": place_gone})
    sql(
        app,
        "UPDATE audit_chain_head SET chain_seq = :p, seq = :s, hash = :h, sealed_seq = 0 WHERE chain = :c",
        params={"p": kept[1], "s": kept[0], "h": kept[2], "c": therapy},
    )
    answer = verify(app)
    assert answer["ok"] is False and answer["first_bad_seq"] == seq_gone
    assert (answer["first_bad_chain"], answer["first_bad_chain_seq"]) == (therapy, place_gone)


def test_an_unsealed_tail_removed_with_its_head_is_not_detectable(app, world, busy_chain):
    """What a seal adds: before it, a chain cut back consistently (entries and head) still verifies."""
    therapy = therapy_chain(app)
    kept = chain_entries(app, therapy)[-2]
    drop_audit_triggers(app)
    drop_head_triggers(app)
    sql(app, "DELETE FROM audit_entry WHERE chain = :c AND chain_seq > :p", params={"c": therapy, "p": kept[1]})
    sql(
        app,
        "UPDATE audit_chain_head SET chain_seq = :p, seq = :s, hash = :h WHERE chain = :c",
        params={"p": kept[1], "s": kept[0], "h": kept[2], "c": therapy},
    )
    assert verify(app)["ok"] is True


def test_verify_detects_a_changed_seal(app, world, busy_chain):
    from server.store import audit

    with app.app_context():
        audit.seal()
    with app.app_context():
        from server.store.uow import unit_of_work

        with unit_of_work():
            audit.append("test", "test.appended", "test", "1")
        assert audit.seal()["seal"] == 2
    assert verify(app)["seals"] == 2
    drop_seal_triggers(app)
    sql(app, "UPDATE audit_seal_head SET hash = :h WHERE seal_id = 1 AND chain = 'system'", params={"h": "0" * 64})
    answer = verify(app)
    assert answer["ok"] is False and answer["first_bad_seal"] == 1 and "first_bad_seq" not in answer


def test_gaps_in_seq_are_not_deletions(app, world, busy_chain):
    from server.store import audit
    from server.store.extensions import db
    from server.store.uow import unit_of_work

    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("SQLite hands out seq without gaps")
        db.session.execute(sa.text("SELECT nextval('audit_entry_seq') FROM generate_series(1, 5)"))
        db.session.commit()
        with unit_of_work():
            audit.append("test", "test.appended", "test", "1")
        assert db.session.execute(sa.text("SELECT max(seq) FROM audit_entry")).scalar() == busy_chain + 6
    assert verify(app)["ok"] is True and verify(app)["checked"] == busy_chain + 1


def _forged_entry(app, seq, prev_hash, chain=None, chain_seq=None):
    """An entry an attacker computes with the published algorithm, linked to ``prev_hash``."""
    from datetime import UTC, datetime

    from server.store.audit import entry_hash

    fields = {
        "seq": seq,
        "at": datetime(2026, 11, 23, 9, 30, tzinfo=UTC),
        "actor": "mallory",
        "action": "task.completed",
        "subject_type": "task",
        "subject_id": "forged",
        "therapy_id": None,
        "site_id": None,
        "reason": None,
        "data": {},
        "prev_hash": prev_hash,
        "chain": chain,
        "chain_seq": chain_seq,
    }
    fields["hash"] = entry_hash(fields)
    from server.store.extensions import db
    from server.store.models import AuditEntry

    with app.app_context():
        db.session.add(AuditEntry(**fields))
        db.session.commit()


def _hash_at(app, seq):
    from server.store.extensions import db
    from server.store.models import AuditEntry

    with app.app_context():
        return db.session.get(AuditEntry, seq).hash


def test_verify_detects_an_inserted_entry(app, world, busy_chain):
    drop_audit_triggers(app)
    chain, place = place_of(app, 20)
    before = next(e for e in chain_entries(app, chain) if e[1] == place - 1)
    # Make room at seq 20 and at its place in its chain (renumbering through negatives so no key is ever taken
    # twice), then forge it there.
    sql(
        app,
        "UPDATE audit_entry SET seq = -seq - 1 WHERE seq >= 20",
        "UPDATE audit_entry SET seq = -seq WHERE seq < 0",
        "UPDATE audit_entry SET chain_seq = -chain_seq - 1 WHERE chain = :c AND chain_seq >= :p",
        "UPDATE audit_entry SET chain_seq = -chain_seq WHERE chain = :c AND chain_seq < 0",
        params={"c": chain, "p": place},
    )
    _forged_entry(app, 20, before[2], chain, place)
    # The forged entry links to its predecessor; the first entry after it no longer does.
    answer = verify(app)
    assert broken(answer) == {"ok": False, "checked": 20, "first_bad_seq": 21}


def test_verify_detects_an_entry_replaced_by_one_hashed_right_but_linked_elsewhere(app, world, busy_chain):
    drop_audit_triggers(app)
    therapy = therapy_chain(app)
    entries = chain_entries(app, therapy)
    seq, place, _hash = entries[4]
    sql(app, "DELETE FROM audit_entry WHERE seq = :s", params={"s": seq})
    _forged_entry(app, seq, entries[1][2], therapy, place)  # its own hash right, its link to an older entry
    answer = verify(app)
    assert broken(answer) == {"ok": False, "checked": seq - 1, "first_bad_seq": seq}
    assert (answer["first_bad_chain"], answer["first_bad_chain_seq"]) == (therapy, place)


def test_verify_detects_an_entry_appended_behind_the_servers_back(app, world, busy_chain):
    drop_audit_triggers(app)
    therapy = therapy_chain(app)
    last = chain_entries(app, therapy)[-1]
    _forged_entry(app, busy_chain + 1, last[2], therapy, last[1] + 1)
    answer = verify(app)
    assert answer["first_bad_seq"] == busy_chain + 1
    assert (answer["first_bad_chain"], answer["first_bad_chain_seq"]) == (therapy, last[1] + 1)


def test_verify_detects_an_entry_moved_to_another_chain(app, world, busy_chain):
    drop_audit_triggers(app)
    therapy = therapy_chain(app)
    seq = chain_entries(app, therapy)[3][0]
    sql(app, "UPDATE audit_entry SET chain = 'elsewhere' WHERE seq = :s", params={"s": seq})
    assert verify(app)["first_bad_seq"] == seq


def test_verify_detects_reordered_entries(app, world, busy_chain):
    from server.store.audit import COLUMNS
    from server.store.extensions import db
    from server.store.models import AuditEntry

    drop_audit_triggers(app)
    columns = [c for c in COLUMNS if c not in ("seq", "chain", "chain_seq")]  # every field moves but the position
    with app.app_context():
        first, second = (db.session.get(AuditEntry, s) for s in (14, 15))
        values = [{c: getattr(e, c) for c in columns} for e in (first, second)]
        db.session.execute(sa.update(AuditEntry).where(AuditEntry.seq == 14).values(**values[1]))
        db.session.execute(sa.update(AuditEntry).where(AuditEntry.seq == 15).values(**values[0]))
        db.session.commit()
    assert broken(verify(app)) == {"ok": False, "checked": 13, "first_bad_seq": 14}


# -- audit trail: what is audited beyond state changes ----------------------------------------------------
def test_logins_success_and_failure_are_audited(api, world):
    good = api.post("/api/v1/auth/token", json={"username": "coord", "password": PASSWORD})
    assert good.status_code == 201 and good.get_json()["token"].startswith("tth_")
    bad = api.post("/api/v1/auth/token", json={"username": "coord", "password": "wrong-password-1"})
    assert bad.status_code == 401 and bad.get_json()["error"]["code"] == "login_failed"
    nobody = api.post("/api/v1/auth/token", json={"username": "nobody", "password": "wrong-password-1"})
    assert nobody.status_code == 401 and nobody.get_json() == bad.get_json()
    logins = [e for e in audit_items(api, world) if e["action"].startswith("login.")]
    assert [(e["action"], e["actor"], e["data"].get("reason")) for e in logins] == [
        ("login.succeeded", "coord", None),
        ("login.failed", "coord", "wrong_password"),
        ("login.failed", "nobody", "unknown_user"),
    ]
    assert all(e["data"]["channel"] == "api" for e in logins)
    assert "token.created" in [e["action"] for e in audit_items(api, world)[-5:]]


def test_refused_requests_on_gmp_data_are_audited(api, world):
    therapy = start(api, world["coord"])
    task = only_task(api, world["coord"], therapy["id"])
    wrong_role = complete(api, world["logistics"], task["id"], {})
    assert wrong_role.status_code == 403
    complete(api, world["coord"], task["id"], ENROLMENT)
    twice = complete(api, world["coord"], task["id"], ENROLMENT)
    assert twice.status_code == 409
    not_allowed = api.as_(world["designer"]).post(
        "/api/v1/messages", json={"name": "shipment.delivered", "coi": therapy["coi"], "payload": {}}
    )
    assert not_allowed.status_code == 403
    not_waiting = api.as_(world["integrator"]).post(
        "/api/v1/messages", json={"name": "qc.results", "therapy_id": therapy["id"], "payload": {}}
    )
    assert not_waiting.status_code == 409
    refusals = [
        (e["action"], e["actor"], e["data"].get("status") or e["data"].get("reason"))
        for e in audit_items(api, world, therapy_id=therapy["id"])
        if e["action"].endswith(".refused")
    ]
    assert refusals == [
        ("task.refused", "logistics", 403),
        ("task.refused", "coord", 409),
        ("message.refused", "designer", 403),
        ("message.refused", "integrator", 409),
    ]
    last = [e for e in audit_items(api, world, therapy_id=therapy["id"]) if e["action"] == "message.refused"][-1]
    assert (last["data"]["code"], last["data"]["reason"], last["data"]["name"]) == (
        "not_waiting",
        "not_waiting",
        "qc.results",
    )


def test_user_and_role_changes_are_audited_with_old_and_new_values(app, api, world):
    admin = api.as_(world["admin"])
    coord = user_id(app, "coord")
    changed = admin.client.patch(
        f"/api/v1/users/{coord}",
        json={
            "roles": ["coordinator", "logistics"],
            "sites": ["SITE-A", "SITE-B"],
            "display_name": "Cora Ordinator",
            "reason": "covers logistics at both centres",
        },
        headers={"Authorization": f"Bearer {world['admin']}"},
    )
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["roles"] == ["coordinator", "logistics"]
    entries = {
        e["action"]: e for e in audit_items(api, world) if e["subject_type"] == "user" and e["subject_id"] == str(coord)
    }
    assert entries["user.roles_changed"]["data"]["old"] == ["coordinator"]
    assert entries["user.roles_changed"]["data"]["new"] == ["coordinator", "logistics"]
    assert entries["user.sites_changed"]["data"] == {
        "username": "coord",
        "field": "sites",
        "old": ["SITE-A"],
        "new": ["SITE-A", "SITE-B"],
        "request_id": changed.headers["X-Request-ID"],  # the request that made the change, as its answer named it
    }
    assert entries["user.renamed"]["data"]["old"] == "Coord Person"
    assert entries["user.roles_changed"]["actor"] == "admin"
    assert entries["user.roles_changed"]["reason"] == "covers logistics at both centres"
    created = admin.post(
        "/api/v1/users",
        json={
            "username": "nora",
            "display_name": "Nora Nurse",
            "roles": ["coordinator"],
            "sites": ["SITE-B"],
            "password": PASSWORD,
        },
    )
    assert created.status_code == 201
    assert audit_items(api, world)[-1]["action"] == "user.created"


def test_token_creation_expiry_and_revocation_are_audited(api, world):
    mine = api.as_(world["coord"])
    first = mine.post("/api/v1/tokens", json={"label": "lims"}).get_json()
    second = mine.post("/api/v1/tokens", json={"label": "script", "ttl_days": 7}).get_json()
    assert mine.post(f"/api/v1/tokens/{first['id']}/revoke", json={"reason": "leaked"}).status_code == 200
    assert mine.post(f"/api/v1/tokens/{second['id']}/expire", json={}).status_code == 200
    actions = [
        (e["action"], e["data"].get("token_id")) for e in audit_items(api, world) if e["action"].startswith("token.")
    ]
    assert actions[-4:] == [
        ("token.created", first["id"]),
        ("token.created", second["id"]),
        ("token.revoked", first["id"]),
        ("token.expired", second["id"]),
    ]


# -- electronic signatures ----------------------------------------------------------------------------------
def test_signature_needs_the_password_and_the_meaning(api, world):
    _therapy, task = at_receipt(api, world)
    missing = complete(api, world["logistics"], task["id"], {"received_ok": True})
    assert missing.status_code == 422 and missing.get_json()["error"]["code"] == "signature_required"
    wrong_meaning = sign(api, world["logistics"], task["id"], meaning="review")
    assert wrong_meaning.status_code == 422 and wrong_meaning.get_json()["error"]["code"] == "signature_meaning"
    assert only_task(api, world["logistics"], task["therapy_id"])["status"] == "ready"


def test_failed_signature_is_401_and_audited(api, world):
    therapy, task = at_receipt(api, world)
    failed = sign(api, world["logistics"], task["id"], password="not-my-password-1")
    assert failed.status_code == 401 and failed.get_json()["error"]["code"] == "signature_failed"
    entry = audit_items(api, world, therapy_id=therapy["id"])[-1]
    assert entry["action"] == "signature.failed" and entry["actor"] == "logistics"
    assert entry["data"]["failed_in_a_row"] == 1 and entry["data"]["account_locked"] is False
    assert only_task(api, world["logistics"], therapy["id"])["status"] == "ready"


def test_five_failed_signatures_lock_the_account_until_an_admin_unlocks_it(app, api, world):
    therapy, task = at_receipt(api, world)
    for attempt in range(1, 6):
        failed = sign(api, world["logistics"], task["id"], password=f"guess-number-{attempt}")
        assert failed.status_code == 401 and failed.get_json()["error"]["code"] == "signature_failed"
    assert failed.get_json()["error"]["details"]["account_locked"] is True
    locked = sign(api, world["logistics"], task["id"])
    assert locked.status_code == 401 and locked.get_json()["error"]["code"] == "account_locked"
    login = api.post("/api/v1/auth/token", json={"username": "logistics", "password": PASSWORD})
    assert login.status_code == 401
    assert audit_items(api, world)[-1]["data"]["reason"] == "locked"
    assert "user.locked" in [e["action"] for e in audit_items(api, world)]

    logistics_id = user_id(app, "logistics")
    assert api.as_(world["coord"]).post(f"/api/v1/users/{logistics_id}/unlock", json={}).status_code == 403
    unlocked = api.as_(world["admin"]).post(
        f"/api/v1/users/{logistics_id}/unlock", json={"reason": "verified by phone"}
    )
    assert unlocked.status_code == 200 and unlocked.get_json()["locked"] is False
    entry = [e for e in audit_items(api, world) if e["action"] == "user.unlocked"][-1]
    assert entry["actor"] == "admin" and entry["reason"] == "verified by phone"
    assert entry["data"]["old"] == {"locked": True, "failed_signatures": 5}
    assert sign(api, world["logistics"], task["id"]).status_code == 200


def test_failures_must_be_in_a_row_to_lock(api, world):
    _therapy, task = at_receipt(api, world)
    for attempt in range(4):
        sign(api, world["logistics"], task["id"], password=f"guess-number-{attempt}")
    assert sign(api, world["logistics"], task["id"]).status_code == 200
    therapy, task = at_receipt(api, world)
    for attempt in range(4):
        assert sign(api, world["logistics"], task["id"], password=f"guess-again-{attempt}").status_code == 401
    assert sign(api, world["logistics"], task["id"]).status_code == 200


def test_signature_shows_printed_name_time_and_meaning_wherever_the_record_is_shown(app, api, world, clock):
    therapy, task = at_receipt(api, world)
    signed = sign(api, world["logistics"], task["id"])
    assert signed.status_code == 200, signed.get_json()
    expected = {
        "printed_name": "Logistics Person",
        "signer": "logistics",
        "meaning": "approval",
        "signed_at": clock().isoformat().replace("+00:00", "Z"),
        "valid": True,
        "task_id": task["id"],
    }
    [in_response] = signed.get_json()["task"]["signatures"]
    [on_task] = api.as_(world["auditor"]).get(f"/api/v1/tasks/{task['id']}").get_json()["signatures"]
    [on_therapy] = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["signatures"]
    from server.compliance.signatures import signatures_for
    from server.store.extensions import db
    from server.store.models import Therapy

    with app.app_context():
        [in_record] = signatures_for(db.session.get(Therapy, therapy["id"]))
    for shown in (in_response, on_task, on_therapy, in_record):
        assert {k: shown[k] for k in expected} == expected
        assert len(shown["content_hash"]) == 64
    applied = [e for e in audit_items(api, world, therapy_id=therapy["id"]) if e["action"] == "signature.applied"]
    assert applied[0]["data"]["signed_hash"] == on_task["content_hash"]


def test_signature_invalid_after_signed_data_changes(app, api, world):
    therapy, task = at_receipt(api, world)
    assert sign(api, world["logistics"], task["id"]).status_code == 200
    corrected = api.as_(world["qa"]).post(
        f"/api/v1/therapies/{therapy['id']}/corrections",
        json={"path": "received_ok", "value": False, "reason": "bag was found damaged on re-inspection"},
    )
    assert corrected.status_code == 201, corrected.get_json()
    [shown] = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["signatures"]
    assert shown["valid"] is False and shown["printed_name"] == "Logistics Person"
    assert api.as_(world["coord"]).get(f"/api/v1/tasks/{task['id']}").get_json()["signatures"][0]["valid"] is False


def test_signature_invalid_after_signed_data_changes_behind_the_servers_back(app, api, world):
    therapy, task = at_receipt(api, world)
    assert sign(api, world["logistics"], task["id"]).status_code == 200
    sql(app, "UPDATE task SET data = :data WHERE id = :id", params={"data": '{"received_ok": false}', "id": task["id"]})
    assert api.as_(world["coord"]).get(f"/api/v1/tasks/{task['id']}").get_json()["signatures"][0]["valid"] is False
    other, other_task = at_receipt(api, world)
    assert sign(api, world["logistics"], other_task["id"]).status_code == 200
    sql(app, "UPDATE signature SET printed_name = 'Someone Else' WHERE task_id = :id", params={"id": other_task["id"]})
    [shown] = api.as_(world["coord"]).get(f"/api/v1/therapies/{other['id']}").get_json()["signatures"]
    assert shown["printed_name"] == "Someone Else" and shown["valid"] is False


def test_only_qa_may_sign_a_batch_release(api, world, clock, bundled):
    before_release = AUTOLOGOUS_HAPPY_PATH[: AUTOLOGOUS_HAPPY_PATH.index(("task", "Task_QaRelease"))]
    therapy = run_journey(api, world, clock, "autologous_car_t", before_release)
    release = only_task(api, world["qa"], therapy["id"])
    assert release["activity_id"] == "Task_QaRelease" and release["signature"] == {
        "meaning": "approval",
        "field": "release_decision",
        "meanings": {"released": "approval", "rejected": "rejection"},
    }
    data = form_data(release["form"]["name"], therapy["coi"])
    signature = {"password": PASSWORD, "meaning": "approval"}
    # The release is the manufacturing site's: other roles there are refused, the treatment centre does not see it.
    for outsider, status in (("admin", 403), ("mfg", 403), ("auditor", 403), ("coord", 404)):
        refused = complete(api, world[outsider], release["id"], data, signature=signature)
        assert refused.status_code == status, (outsider, refused.get_json())
    assert api.as_(world["qa"]).get(f"/api/v1/tasks/{release['id']}").get_json()["status"] == "ready"
    released = complete(api, world["qa"], release["id"], data, signature=signature)
    assert released.status_code == 200, released.get_json()
    [signature] = released.get_json()["task"]["signatures"]
    assert signature["printed_name"] == "Qa Person" and signature["meaning"] == "approval"


# -- access control ------------------------------------------------------------------------------------------
def test_tokens_can_be_listed_without_secrets_expired_and_revoked(api, world):
    mine = api.as_(world["coord"])
    created = mine.post("/api/v1/tokens", json={"label": "lims"})
    assert created.status_code == 201
    secret = created.get_json()["token"]
    listed = mine.get("/api/v1/tokens")
    assert secret not in listed.get_data(as_text=True) and "tth_" not in listed.get_data(as_text=True)
    labels = {t["label"]: t["status"] for t in listed.get_json()["items"]}
    assert labels == {"test": "active", "lims": "active"}
    assert api.as_(secret).get("/api/v1/tasks").status_code == 200
    assert mine.post(f"/api/v1/tokens/{created.get_json()['id']}/expire", json={}).status_code == 200
    assert api.as_(secret).get("/api/v1/tasks").status_code == 401
    again = mine.post("/api/v1/tokens", json={"label": "again"}).get_json()
    assert api.as_(world["coordb"]).post(f"/api/v1/tokens/{again['id']}/revoke", json={}).status_code == 404
    assert api.as_(world["admin"]).post(f"/api/v1/tokens/{again['id']}/revoke", json={}).status_code == 200
    assert api.as_(again["token"]).get("/api/v1/tasks").status_code == 401
    statuses = {t["label"]: t["status"] for t in mine.get("/api/v1/tokens").get_json()["items"]}
    assert statuses == {"test": "active", "lims": "expired", "again": "revoked"}
    everyone = api.as_(world["admin"]).get("/api/v1/tokens?limit=500").get_json()["items"]
    assert {t["username"] for t in everyone} >= {"coord", "qa", "auditor"}


def test_passwords_meet_a_minimum_policy(api, world):
    for weak in ("short1", "onlyletterslong", "1234567890123"):
        refused = api.as_(world["admin"]).post(
            "/api/v1/users",
            json={"username": "weakling", "display_name": "Weak Ling", "roles": ["qa"], "password": weak},
        )
        assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "weak_password", weak
    assert api.as_(world["admin"]).get("/api/v1/users?limit=500").get_json()["items"][-1]["username"] != "weakling"


def test_user_ids_are_never_reused(app, api, world):
    admin = api.as_(world["admin"])
    body = {"username": "temp", "display_name": "Temp Orary", "roles": ["designer"], "password": PASSWORD}
    temp = admin.post("/api/v1/users", json=body).get_json()
    headers = {"Authorization": f"Bearer {world['admin']}"}
    assert admin.client.delete(f"/api/v1/users/{temp['id']}", headers=headers).status_code == 405
    off = admin.client.patch(f"/api/v1/users/{temp['id']}", json={"active": False}, headers=headers)
    assert off.status_code == 200 and off.get_json()["active"] is False
    assert api.post("/api/v1/auth/token", json={"username": "temp", "password": PASSWORD}).status_code == 401
    # Even a row removed behind the server's back does not free its id.
    sql(app, "DELETE FROM user_account WHERE id = :id", params={"id": temp["id"]})
    later = admin.post("/api/v1/users", json={**body, "username": "later"}).get_json()
    assert later["id"] > temp["id"]


def test_deactivated_user_cannot_use_existing_tokens(app, api, world):
    headers = {"Authorization": f"Bearer {world['admin']}"}
    coord = user_id(app, "coord")
    assert api.as_(world["coord"]).get("/api/v1/tasks").status_code == 200
    api.client.patch(f"/api/v1/users/{coord}", json={"active": False, "reason": "left"}, headers=headers)
    refused = api.as_(world["coord"]).get("/api/v1/tasks")
    assert refused.status_code == 401 and refused.get_json()["error"]["code"] == "account_deactivated"


def test_only_admin_manages_users(app, api, world):
    for who in ("coord", "qa", "designer"):
        refused = api.as_(world[who]).post(
            "/api/v1/users",
            json={"username": "sneaky", "display_name": "Sneaky", "roles": ["admin"], "password": PASSWORD},
        )
        assert refused.status_code == 403
    coord = user_id(app, "coord")
    grab = api.client.patch(
        f"/api/v1/users/{coord}", json={"roles": ["admin"]}, headers={"Authorization": f"Bearer {world['coord']}"}
    )
    assert grab.status_code == 403
    assert api.as_(world["coord"]).get("/api/v1/users/me").get_json()["roles"] == ["coordinator"]


def _fill(rule, values: dict) -> str:
    """The rule's URL with each argument from ``values`` (a placeholder when unknown)."""
    path = rule.rule
    for name in rule.arguments:
        converter = rule._converters[name]
        value = values.get(name, 1 if type(converter).__name__ == "IntegerConverter" else "x")
        for token in (f"<int:{name}>", f"<string:{name}>", f"<path:{name}>", f"<{name}>"):
            path = path.replace(token, str(value))
    return path


def test_scoped_user_cannot_learn_that_another_sites_therapy_exists(app, api, world):
    therapy = enrolled(api, world)
    other = api.as_(world["coordb"])
    checked = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or "therapy_id" not in rule.arguments:
            continue
        real, unknown = _fill(rule, {"therapy_id": therapy["id"]}), _fill(rule, {"therapy_id": str(uuid.uuid4())})
        for method in sorted(rule.methods & {"GET", "POST"}):
            send = other.get if method == "GET" else other.post
            seen = send(real, json={}) if method == "POST" else send(real)
            unseen = send(unknown, json={}) if method == "POST" else send(unknown)
            assert (seen.status_code, (seen.get_json() or {}).get("error", {}).get("code")) == (
                unseen.status_code,
                (unseen.get_json() or {}).get("error", {}).get("code"),
            ), (method, rule.rule)
            assert therapy["coi"] not in seen.get_data(as_text=True), (method, rule.rule)
            if method == "GET":
                assert seen.status_code == 404, rule.rule
            checked.append((method, rule.rule))
    assert ("GET", "/api/v1/therapies/<therapy_id>") in checked and len(checked) >= 5


def test_scoped_user_sees_only_their_sites_in_lists_tasks_and_audit(api, world):
    mine = start(api, world["coordb"], site="SITE-B")
    theirs = start(api, world["coord"])
    listed = {t["id"] for t in api.as_(world["coordb"]).get("/api/v1/therapies").get_json()["items"]}
    assert listed == {mine["id"]}
    tasks = {t["therapy_id"] for t in api.as_(world["coordb"]).get("/api/v1/tasks").get_json()["items"]}
    assert tasks == {mine["id"]}
    assert api.as_(world["coordb"]).get(f"/api/v1/audit?therapy_id={theirs['id']}").get_json()["items"] == []
    seen = {e["therapy_id"] for e in api.as_(world["coordb"]).get("/api/v1/audit?limit=500").get_json()["items"]}
    assert theirs["id"] not in seen and mine["id"] in seen
    by_coi = api.as_(world["coordb"]).post(
        "/api/v1/messages", json={"name": "shipment.delivered", "coi": theirs["coi"], "payload": {}}
    )
    assert by_coi.status_code == 404


def test_auditor_is_read_only_everywhere(app, api, world):
    therapy, task = at_receipt(api, world)
    tokens = api.as_(world["auditor"]).get("/api/v1/tokens").get_json()["items"]
    values = {
        "therapy_id": therapy["id"],
        "task_id": task["id"],
        "user_id": user_id(app, "coord"),
        "token_id": tokens[0]["id"],
        "key": "mini_therapy",
        "version": 1,
    }
    before = [e for e in all_audit(app)]
    auditor = {"Authorization": f"Bearer {world['auditor']}"}
    checked = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or rule.rule == "/api/v1/auth/token":
            continue
        for method in sorted(rule.methods & STATE_CHANGING):
            response = api.client.open(_fill(rule, values), method=method, json={}, headers=auditor)
            assert response.status_code == 403, (method, rule.rule, response.get_json())
            assert response.get_json()["error"]["code"] == "read_only", (method, rule.rule)
            checked.append((method, rule.rule))
    assert ("POST", "/api/v1/tasks/<task_id>/complete") in checked and len(checked) >= 10
    after = all_audit(app)[len(before) :]
    assert after and all(action.endswith(".refused") for _seq, action, _actor, _data in after)
    assert only_task(api, world["logistics"], therapy["id"])["status"] == "ready"


# -- corrections with a reason -------------------------------------------------------------------------------
def test_correction_changes_the_recorded_value_and_audits_old_new_and_reason(api, world):
    therapy = enrolled(api, world)
    corrected = api.as_(world["qa"]).post(
        f"/api/v1/therapies/{therapy['id']}/corrections",
        json={"path": "patient_initials", "value": "CD", "reason": "transcription error on the enrolment form"},
    )
    assert corrected.status_code == 201, corrected.get_json()
    assert corrected.get_json()["old_value"] == "AB" and corrected.get_json()["corrected_by"] == "qa"
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["data"]["patient_initials"] == "CD"
    [shown] = detail["corrections"]
    assert (shown["path"], shown["old_value"], shown["new_value"]) == ("patient_initials", "AB", "CD")
    assert shown["reason"] == "transcription error on the enrolment form"
    entry = audit_items(api, world, therapy_id=therapy["id"])[-1]
    assert entry["action"] == "data.corrected" and entry["actor"] == "qa"
    assert entry["reason"] == "transcription error on the enrolment form"
    assert (entry["data"]["old_value"], entry["data"]["new_value"]) == ("AB", "CD")
    listed = api.as_(world["auditor"]).get(f"/api/v1/therapies/{therapy['id']}/corrections").get_json()["items"]
    assert listed == [shown]


def test_correction_reaches_the_process_itself(api, world):
    therapy = enrolled(api, world)
    api.as_(world["admin"]).post(
        f"/api/v1/therapies/{therapy['id']}/corrections",
        json={"path": "patient_initials", "value": "CD", "reason": "wrong patient initials"},
    )
    # The next engine step recomputes the data from the engine state: the correction must be there.
    api.as_(world["integrator"]).post(
        "/api/v1/messages",
        json={"name": "shipment.delivered", "therapy_id": therapy["id"], "payload": {"carrier": "ColdChain"}},
    )
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["stage"] == "Receive shipment" and detail["data"]["patient_initials"] == "CD"


def test_correction_of_a_nested_value(api, world):
    therapy = enrolled(api, world, qc={"result": "fail", "report": "QC-1"})
    corrected = api.as_(world["qa"]).post(
        f"/api/v1/therapies/{therapy['id']}/corrections",
        json={"path": "qc.result", "value": "pass", "reason": "retest confirmed; first result was a sample mix-up"},
    )
    assert corrected.status_code == 201, corrected.get_json()
    data = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["data"]
    assert data["qc"] == {"result": "pass", "report": "QC-1"}


def test_correction_without_a_reason_is_422_and_changes_nothing(app, api, world):
    therapy = enrolled(api, world)
    before = len(all_audit(app))
    for body in (
        {"path": "patient_initials", "value": "CD"},
        {"path": "patient_initials", "value": "CD", "reason": "   "},
    ):
        refused = api.as_(world["qa"]).post(f"/api/v1/therapies/{therapy['id']}/corrections", json=body)
        assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "reason_required"
        assert refused.get_json()["error"]["details"]["field"] == "reason"
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["data"]["patient_initials"] == "AB" and detail["corrections"] == []
    assert len(all_audit(app)) == before


def test_correction_refuses_identity_unknown_and_invalid_values(api, world):
    therapy = enrolled(api, world)
    qa = api.as_(world["qa"])
    url = f"/api/v1/therapies/{therapy['id']}/corrections"
    cases = [
        ({"path": "coi", "value": "CHW12342600A1B7"}, "protected_field"),
        ({"path": "no_such_value", "value": 1}, "unknown_path"),
        ({"path": "patient_initials", "value": "TOOLONG"}, "invalid_form_data"),
        ({"path": "patient_initials", "value": "AB"}, "no_change"),
        ({"path": "qc..result", "value": 1}, "invalid_path"),
    ]
    for body, code in cases:
        refused = qa.post(url, json={**body, "reason": "testing"})
        assert refused.status_code == 422 and refused.get_json()["error"]["code"] == code, (body, refused.get_json())


def test_only_qa_or_admin_may_correct(api, world):
    therapy = enrolled(api, world)
    body = {"path": "patient_initials", "value": "CD", "reason": "typo"}
    for who in ("coord", "integrator", "auditor", "designer"):
        assert api.as_(world[who]).post(f"/api/v1/therapies/{therapy['id']}/corrections", json=body).status_code == 403


# -- rate and size limits ------------------------------------------------------------------------------------
def test_login_is_rate_limited(app, api, world):
    app.config["LOGIN_RATE_LIMIT"] = "5 per minute"
    for _ in range(5):
        wrong = api.post("/api/v1/auth/token", json={"username": "coord", "password": "wrong-password-1"})
        assert wrong.status_code == 401
    limited = api.post("/api/v1/auth/token", json={"username": "coord", "password": PASSWORD})
    assert limited.status_code == 429
    assert limited.get_json()["error"]["code"] == "too_many_requests"
    assert int(limited.headers["Retry-After"]) > 0
    assert api.as_(world["coord"]).get("/api/v1/tasks").status_code == 200  # other endpoints are not limited


def test_json_body_over_the_limit_is_413(app, api, world):
    app.config["MAX_JSON_BYTES"] = 2000
    therapy = enrolled(api, world)
    big = api.as_(world["integrator"]).post(
        "/api/v1/messages",
        json={"name": "shipment.delivered", "therapy_id": therapy["id"], "payload": {"blob": "x" * 3000}},
    )
    assert big.status_code == 413 and big.get_json()["error"]["code"] == "too_large"
    assert api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()["stage"] != "Receive shipment"


def test_upload_over_the_limit_is_413(app, api, world):
    import io

    app.config["MAX_CONTENT_LENGTH"] = 4000
    bpmn = (project_root() / "tests" / "fixtures" / "mini.bpmn").read_bytes()
    assert len(bpmn) > 4000
    response = api.client.post(
        "/api/v1/process-definitions",
        data={"bpmn": (io.BytesIO(bpmn), "mini.bpmn")},
        headers={"Authorization": f"Bearer {world['designer']}"},
        content_type="multipart/form-data",
    )
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "too_large"
