"""What the statement counter says of each statement: its kind and its table, as the benchmark prints them."""

from __future__ import annotations

import sqlalchemy as sa

from server.store.statements import counted, describe, summary


def test_each_statement_is_named_by_kind_and_table():
    assert str(describe("SELECT task.id FROM task JOIN therapy ON therapy.id = task.therapy_id")) == "SELECT task"
    assert str(describe('UPDATE "audit_head" SET seq=? WHERE audit_head.id = ?')) == "UPDATE audit_head"
    assert (
        str(describe("INSERT INTO outbox_event (type) VALUES (?)", executemany=True)) == "INSERT outbox_event (batch)"
    )
    assert str(describe("BEGIN IMMEDIATE")) == "BEGIN IMMEDIATE"
    assert str(describe("RELEASE SAVEPOINT sa_savepoint_1")) == "RELEASE SAVEPOINT"
    assert str(describe("WITH moved AS (UPDATE h SET a = 1) INSERT INTO audit_entry (seq) VALUES (1)")) == (
        "INSERT audit_entry"
    )


def test_the_counter_collects_what_the_block_sends_and_nothing_after():
    engine = sa.create_engine("sqlite://")
    with engine.connect() as connection:
        connection.exec_driver_sql("CREATE TABLE thing (id INTEGER PRIMARY KEY)")
        with counted(engine) as statements:
            connection.exec_driver_sql("INSERT INTO thing (id) VALUES (1)")
            connection.exec_driver_sql("SELECT id FROM thing")
            connection.exec_driver_sql("SELECT id FROM thing")
        connection.exec_driver_sql("SELECT id FROM thing")
    assert summary(statements) == "3 statements: INSERT thing, 2 x SELECT thing"
