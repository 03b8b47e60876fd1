"""The persisted state: sites, users, tokens, definitions, therapies, task projections, audit and outbox."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Sequence,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, query_expression, relationship
from sqlalchemy.types import TypeDecorator

from engine.definition import DEFAULT_PARTY, PARTIES
from server.clock import utcnow
from server.store.extensions import db

if TYPE_CHECKING:
    # ``db.Model`` is a class Flask-SQLAlchemy builds at run time from ``Base`` (its columns, metadata and
    # registry) plus its own query and bind-key mixins, which no model here relies on. A type checker cannot
    # follow a base class made by a call, so it checks the models against the declarative base they are built from.
    from server.store.extensions import Base as Model
else:
    Model = db.Model

ROLES = ("admin", "designer", "coordinator", "planner", "manufacturing", "logistics", "qa", "integrator", "auditor")
UNSCOPED_ROLES = ("admin", "designer", "auditor")
SITE_KINDS = ("treatment-centre", "apheresis-centre", "manufacturing", "logistics")
# The kinds of site that may take each party of a therapy (an apheresis unit may sit in a treatment centre).
PARTY_SITE_KINDS = {
    "treatment": ("treatment-centre",),
    "apheresis": ("apheresis-centre", "treatment-centre"),
    "manufacturing": ("manufacturing",),
    "logistics": ("logistics",),
}
# The parties that see the patient reference (need to know): the sites that meet the patient.
PATIENT_PARTIES = ("treatment", "apheresis")
REASON_KINDS = ("cancel", "hold", "reschedule", "reassign")
# Scarce capacity a therapy books: a collection (apheresis), a manufacturing run, an infusion.
SLOT_KINDS = ("apheresis", "manufacturing", "infusion")
assert tuple(PARTY_SITE_KINDS) == PARTIES


def new_id() -> str:
    """A random identifier for a new row."""
    return str(uuid.uuid4())


class UtcDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def table_of(model: type[Model]) -> Table:
    """The table a model is mapped to, for Core statements (the declarative base declares only a FromClause)."""
    table = model.__table__
    if not isinstance(table, Table):  # pragma: no cover - every model here declares a __tablename__
        raise TypeError(f"{model.__name__} is not mapped to a table")
    return table


user_sites = db.Table(
    "user_site",
    db.Column("user_id", Integer, ForeignKey("user_account.id"), primary_key=True),
    db.Column("site_id", Integer, ForeignKey("site.id"), primary_key=True),
)


class Site(Model):
    """A treatment centre, apheresis centre, manufacturing site or logistics hub (a courier)."""

    __tablename__ = "site"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32), default="treatment-centre")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class User(Model):
    """A person or system account. Ids are never reused (AUTOINCREMENT / identity)."""

    __tablename__ = "user_account"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    roles: Mapped[list] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_signatures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sites: Mapped[list[Site]] = relationship(secondary=user_sites, lazy="selectin")

    @property
    def site_codes(self) -> list[str]:
        """Codes of the sites this user is scoped to (empty: not scoped)."""
        return sorted(s.code for s in self.sites)

    @property
    def scoped(self) -> bool:
        """Whether the user sees only therapies of their sites."""
        return bool(self.sites) and not any(r in UNSCOPED_ROLES for r in self.roles)


class ApiToken(Model):
    """A bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_token"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class WebSession(Model):
    """One login to the web pages: the signed cookie carries a random token, this row its SHA-256 and its life.

    A session ends by logout, by expiry (``expires_at``, or idleness), or when its user's password changes or
    the account is locked or deactivated; an ended session is kept, with when and why it ended.
    """

    __tablename__ = "web_session"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)


class ProcessDefinition(Model):
    """One deployed version of a therapy's BPMN diagram, with its forms and parsed spec (stored once)."""

    __tablename__ = "process_definition"
    __table_args__ = (UniqueConstraint("key", "version"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    checksum: Mapped[str] = mapped_column(String(64), index=True)
    bpmn_xml: Mapped[str] = mapped_column(Text, deferred=True)  # large and read rarely: loaded when asked for
    forms: Mapped[dict] = mapped_column(JSON, default=dict)
    info: Mapped[dict] = mapped_column(JSON)
    spec: Mapped[dict] = mapped_column(JSON, deferred=True)
    deployed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    deployed_by: Mapped[str] = mapped_column(String(64))
    # The DMN files its business rule tasks evaluate (file name -> XML text); null when it has none. The tables
    # themselves run from the spec; these are kept to show them and to say what was deployed.
    decisions: Mapped[dict | None] = mapped_column(JSON, nullable=True, default=None)


class ProcessDraft(Model):
    """A diagram being designed in the studio: saved, checked and deployed from there, never run by a therapy
    and never shown to site staff. Its uploaded forms and decision tables travel with it."""

    __tablename__ = "process_draft"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    bpmn_xml: Mapped[str] = mapped_column(Text)
    forms: Mapped[dict] = mapped_column(JSON, default=dict)  # form file name -> JSON Schema
    decisions: Mapped[dict | None] = mapped_column(JSON, nullable=True, default=None)  # DMN file name -> XML
    # The deployed version it started from, then the one it last deployed (the diff is against the newest).
    based_on_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    based_on_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Therapy(Model):
    """One patient's treatment: an instance of a definition version, with its engine state."""

    __tablename__ = "therapy"
    # The lists show the newest first: all therapies (created_at), the caller's sites' (site_id, created_at), with
    # a status filter (status, created_at), both (status, site_id, created_at), of one process (process_key,
    # created_at); each is read in order and stops at the end of the page.
    __table_args__ = (
        Index("ix_therapy_created", "created_at"),
        Index("ix_therapy_site_created", "site_id", "created_at"),
        Index("ix_therapy_status_created", "status", "created_at"),
        Index("ix_therapy_status_site_created", "status", "site_id", "created_at"),
        Index("ix_therapy_process_created", "process_key", "created_at"),
        # The scheduler's re-arming at start and its sweep read only this index (it covers them).
        Index("ix_therapy_due", "status", "next_due_at", "id"),
        # The control tower reads only this index for its counts by phase, its order (the deadline from
        # next_due_at, then created_at), its filters by phase, treatment site and process and its search by COI
        # and patient: the therapy row itself, behind its engine state, is read only for the page's rows.
        Index(
            "ix_therapy_tower",
            "status",
            "phase",
            "next_due_at",
            "created_at",
            "site_id",
            "process_key",
            "id",
            "coi",
            "patient_reference",
        ),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    definition_id: Mapped[str] = mapped_column(ForeignKey("process_definition.id"), index=True)
    process_key: Mapped[str] = mapped_column(String(200))  # first in ix_therapy_process_created
    process_version: Mapped[int] = mapped_column(Integer)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))  # indexed first in ix_therapy_site_created
    coi: Mapped[str] = mapped_column(String(15), unique=True)
    patient_reference: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), default="active")  # first in ix_therapy_status_created
    stage: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The phase of the journey (the diagram's ``phase`` of where it stands; ``completed`` at the end), in
    # ix_therapy_tower for the control tower's counts and filter.
    phase: Mapped[str | None] = mapped_column(String(40), nullable=True)
    state: Mapped[dict] = mapped_column(JSON)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    waits: Mapped[list] = mapped_column(JSON, default=list)
    current_activities: Mapped[list] = mapped_column(JSON, default=list)
    next_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)  # in ix_therapy_due
    row_version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    # While held (status ``on_hold``): since when, why, and the messages that came meanwhile (delivered on resume).
    held_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    hold_reason_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    held_messages: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # When the cells were last collected and the product first infused (as the record's vein-to-vein clock
    # reads them from the tasks), kept here as those tasks complete so that lists need no query per therapy.
    collected_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    infused_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    # Whether an incident of the therapy waits for a retry or for a person, read with the therapy only where a
    # query asks for it (``with_expression``: a task's load for its completion, server/usecases/checks.py); None
    # where it was not read.
    has_open_incidents: Mapped[bool | None] = query_expression()
    site: Mapped[Site] = relationship(lazy="joined", innerjoin=True)
    definition: Mapped[ProcessDefinition] = relationship(lazy="select")
    # The sites that act in the therapy, one row per assigned party whose site is not the treatment centre's
    # already (the treatment party is ``site`` too; the apheresis party is the treatment centre unless named).
    party_rows: Mapped[list[TherapyParty]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="TherapyParty.party"
    )
    # The rows of its READY tasks, as read: only for a query that loads them with the therapy (a task's load for
    # its completion, server/usecases/checks.py); never written through, and not kept up to date by a step.
    ready_task_rows: Mapped[list[TaskRecord]] = relationship(
        "TaskRecord",
        primaryjoin="and_(TaskRecord.therapy_id == Therapy.id, TaskRecord.status == 'ready')",
        viewonly=True,
        lazy="raise",
    )

    __mapper_args__ = {"version_id_col": row_version}

    @property
    def parties(self) -> dict[str, str | None]:
        """Each party's site code, or None while it is not assigned."""
        assigned = {"treatment": self.site.code, "apheresis": self.site.code}
        assigned.update({row.party: row.site.code for row in self.party_rows})
        return {party: assigned.get(party) for party in PARTIES}

    @property
    def party_site_ids(self) -> dict[str, int]:
        """The site id of each assigned party."""
        return {"treatment": self.site_id, "apheresis": self.site_id} | {
            row.party: row.site_id for row in self.party_rows
        }


class TherapyParty(Model):
    """The site that takes one party's part in a therapy (apheresis when not the treatment centre,
    manufacturing, logistics). The treatment centre is the therapy's ``site`` and gets a row too, so that every
    site of a therapy has one row (no two parties of a therapy are one site: their kinds differ)."""

    __tablename__ = "therapy_party"
    # A site's therapies, newest first (the therapy's creation time copied here; it never changes): a
    # site-scoped user's list reads this index in order.
    __table_args__ = (Index("ix_therapy_party_site", "site_id", "therapy_created_at", "therapy_id"),)
    therapy_id: Mapped[str] = mapped_column(ForeignKey("therapy.id"), primary_key=True)
    party: Mapped[str] = mapped_column(String(16), primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    therapy_created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    assigned_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    assigned_by: Mapped[str] = mapped_column(String(64))
    site: Mapped[Site] = relationship(lazy="joined", innerjoin=True)


class TaskRecord(Model):
    """The projection of a user task, for lists and for completed-task history."""

    __tablename__ = "task"
    # The inbox: READY tasks of a role at a site in the inbox's order (soonest due first, those without a due
    # time last), so that a page is read in order and the scan stops at its end. A therapy's tasks of one
    # status (its open ones, its completed ones) by (therapy_id, status), which SQLite, without statistics,
    # then prefers to the inbox index for those queries.
    __table_args__ = (
        Index("ix_task_inbox", "status", "role", "site_id", text("(due_at IS NULL)"), "due_at", "created_at", "id"),
        Index("ix_task_therapy_status", "therapy_id", "status"),
        # The control tower's earliest open deadline per therapy, read from this index alone (it serves a
        # therapy's tasks of one status as well as ix_task_therapy_status).
        Index("ix_task_ready_due", "status", "therapy_id", "due_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    therapy_id: Mapped[str] = mapped_column(ForeignKey("therapy.id"))
    activity_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    # The party that acts (from the diagram) and its site; no site while that party is not assigned yet.
    party: Mapped[str] = mapped_column(String(16), default=DEFAULT_PARTY, server_default=DEFAULT_PARTY)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"), index=True, nullable=True)
    form: Mapped[str | None] = mapped_column(String(200), nullable=True)
    ui_form: Mapped[str | None] = mapped_column(String(200), nullable=True)
    instructions: Mapped[str | None] = mapped_column(Text, nullable=True)
    signature: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="ready")
    due_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    completed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # One instance of a multi-instance or loop task: {"index", "count", "variable", "item"}; null otherwise.
    instance: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    # Loaded when first used (from the identity map when the therapy is at hand); lists join it themselves.
    therapy: Mapped[Therapy] = relationship()
    site: Mapped[Site | None] = relationship(lazy="joined")


class ReasonCode(Model):
    """Why a therapy was cancelled, held, rescheduled or handed to another site: master data per kind."""

    __tablename__ = "reason_code"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    description: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))


class Slot(Model):
    """A window of capacity at a site (apheresis, manufacturing or infusion) with a number of places.

    ``booked`` counts the places taken; the database refuses more than ``capacity`` (a booking takes its place
    with one guarded UPDATE, so of concurrent requests for the last places exactly as many win as there are
    places). A closed slot takes no bookings and is no longer listed.
    """

    __tablename__ = "slot"
    __table_args__ = (
        # A site's slots of a kind in time order (calendars, options, overlap checks), and by their end (a
        # calendar window reads the slots ending after its start from there on).
        Index("ix_slot_site_kind_start", "site_id", "kind", "start_at"),
        Index("ix_slot_site_kind_end", "site_id", "kind", "end_at"),
        # A site's free slots of a kind in time order (GET /slots?available=true, the booking options): only the
        # open slots with a place left, so a centre's thousands of full past slots are never read to find them.
        Index(
            "ix_slot_free",
            "site_id",
            "kind",
            "start_at",
            sqlite_where=text("status = 'open' AND booked < capacity"),
            postgresql_where=text("status = 'open' AND booked < capacity"),
        ),
        CheckConstraint("booked >= 0 AND booked <= capacity", name="ck_slot_places"),
        CheckConstraint("end_at > start_at", name="ck_slot_window"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"))
    kind: Mapped[str] = mapped_column(String(16))
    start_at: Mapped[datetime] = mapped_column(UtcDateTime)
    end_at: Mapped[datetime] = mapped_column(UtcDateTime)
    capacity: Mapped[int] = mapped_column(Integer)
    booked: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    site: Mapped[Site] = relationship(lazy="joined", innerjoin=True)


class Blackout(Model):
    """A day a site takes no bookings of any kind (a holiday, a shutdown): no slot is opened on it."""

    __tablename__ = "blackout"
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    reason: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    site: Mapped[Site] = relationship(lazy="joined", innerjoin=True)


class Booking(Model):
    """A therapy's place in a slot. At most one booking of each kind is ``booked`` per therapy (a unique
    index over the booked ones); moving one marks it ``moved``, cancelling ``cancelled``."""

    __tablename__ = "booking"
    __table_args__ = (
        Index(
            "ux_booking_therapy_kind",
            "therapy_id",
            "kind",
            unique=True,
            sqlite_where=text("status = 'booked'"),
            postgresql_where=text("status = 'booked'"),
        ),
        Index("ix_booking_slot", "slot_id", "status"),
        Index("ix_booking_therapy", "therapy_id"),  # a therapy's bookings, its history included
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    therapy_id: Mapped[str] = mapped_column(ForeignKey("therapy.id"))
    slot_id: Mapped[str] = mapped_column(ForeignKey("slot.id"))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="booked")
    reason_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    ended_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    slot: Mapped[Slot] = relationship(lazy="joined", innerjoin=True)


class AuditEntry(Model):
    """One link of the tamper-evident audit trail; never updated, never deleted.

    ``chain`` is the therapy the entry belongs to, or ``"system"`` for entries without one; ``chain_seq`` its
    place in that chain, whose previous entry ``prev_hash`` names. Entries written before chains existed have
    neither (null): they are the start of the ``"system"`` chain, at the place their ``seq`` gives.
    """

    __tablename__ = "audit_entry"
    __table_args__ = (Index("ix_audit_entry_chain", "chain", "chain_seq", unique=True),)
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(64))
    therapy_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    site_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    chain: Mapped[str | None] = mapped_column(String(36), nullable=True)
    chain_seq: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), nullable=True)


# PostgreSQL hands out ``audit_entry.seq`` from this sequence, so no row is locked for it (gaps are harmless).
AUDIT_ENTRY_SEQ = Sequence("audit_entry_seq", metadata=Model.metadata)


class AuditChainHead(Model):
    """The tip of one chain (a therapy's, or ``"system"``); appending to a chain locks its row only.

    ``sealed_seq`` is the place up to which the chain is covered by an ``AuditSeal``.
    """

    __tablename__ = "audit_chain_head"
    chain: Mapped[str] = mapped_column(String(36), primary_key=True)
    chain_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    hash: Mapped[str] = mapped_column(String(64))
    sealed_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)


class AuditSeal(Model):
    """A Merkle root over the chain heads that moved since the previous seal, chained to that seal by hash."""

    __tablename__ = "audit_seal"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    heads: Mapped[int] = mapped_column(Integer)
    root: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditSealHead(Model):
    """One chain head a seal covers: the chain, its place, the entry's ``seq`` and hash."""

    __tablename__ = "audit_seal_head"
    seal_id: Mapped[int] = mapped_column(ForeignKey("audit_seal.id"), primary_key=True)
    chain: Mapped[str] = mapped_column(String(36), primary_key=True)
    chain_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    hash: Mapped[str] = mapped_column(String(64))


class OutboxEvent(Model):
    """A domain event written in the same transaction as the change that caused it."""

    __tablename__ = "outbox_event"
    __table_args__ = (
        Index("ix_outbox_broker", "broker_state", "therapy_id", "id"),
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    # A client-made unique value: SQLAlchemy matches the ids RETURNING gives back to the rows by it, so the events of
    # one flush go in one INSERT (on SQLite too, which cannot order RETURNING by the rows it was given).
    event_id: Mapped[str] = mapped_column(String(36), unique=True, default=new_id, insert_sentinel=True)
    type: Mapped[str] = mapped_column(String(64), index=True)
    therapy_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    site_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # With a message broker configured: "pending" until published to it, then "published" (else None).
    broker_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    broker_lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    broker_published_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class BrokerMessage(Model):
    """A message consumed from the broker's queue, by its id: taken once however often it is redelivered."""

    __tablename__ = "broker_message"
    message_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    outcome: Mapped[str] = mapped_column(String(16))  # delivered, started, held or refused
    therapy_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    detail: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class IdempotencyRecord(Model):
    """The first response to a POST carrying an ``Idempotency-Key``, replayed for repeats."""

    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("user_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(500))
    status: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class CoiCounter(Model):
    """The next COI sequence number per facility and year; incremented under a row lock."""

    __tablename__ = "coi_counter"
    fin: Mapped[str] = mapped_column(String(5), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_number: Mapped[int] = mapped_column(Integer, default=0)


class Alert(Model):
    """Something a person must look at: an escalation, a COI mismatch, an excursion, an incident."""

    __tablename__ = "alert"
    __table_args__ = (Index("ix_alert_status_raised", "status", "raised_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    therapy_id: Mapped[str | None] = mapped_column(ForeignKey("therapy.id"), nullable=True, index=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16), default="medium")
    message: Mapped[str] = mapped_column(Text)
    role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    activity_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="open")
    raised_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    acknowledged_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    acknowledgement_note: Mapped[str | None] = mapped_column(Text, nullable=True)


class Incident(Model):
    """A step the engine could not take (a failing service task), waiting for retry or resolution."""

    __tablename__ = "incident"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    therapy_id: Mapped[str] = mapped_column(ForeignKey("therapy.id"), index=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"), nullable=True)
    activity_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    task_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    error_type: Mapped[str] = mapped_column(String(100))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    next_retry_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    resolution: Mapped[str | None] = mapped_column(String(16), nullable=True)
    resolution_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class Signature(Model):
    """An electronic signature bound, by hash, to exactly what was signed (21 CFR 11.50, 11.70)."""

    __tablename__ = "signature"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    therapy_id: Mapped[str] = mapped_column(ForeignKey("therapy.id"), index=True)
    task_id: Mapped[str] = mapped_column(String(36), index=True)
    signer_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    signer_username: Mapped[str] = mapped_column(String(64))
    printed_name: Mapped[str] = mapped_column(String(200))
    meaning: Mapped[str] = mapped_column(String(32))
    signed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    content_hash: Mapped[str] = mapped_column(String(64))


class Correction(Model):
    """A correction of one recorded process-data value, with its mandatory reason (Annex 11 §9)."""

    __tablename__ = "correction"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    therapy_id: Mapped[str] = mapped_column(ForeignKey("therapy.id"), index=True)
    path: Mapped[str] = mapped_column(String(500))
    old_value: Mapped[dict | list | str | int | float | bool | None] = mapped_column(JSON, nullable=True)
    new_value: Mapped[dict | list | str | int | float | bool | None] = mapped_column(JSON, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    corrected_by: Mapped[str] = mapped_column(String(64))
    corrected_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class CustodyTransfer(Model):
    """One handoff of a material between parties, with the verified scan of its label."""

    __tablename__ = "custody_transfer"
    __table_args__ = (Index("ix_custody_therapy_time", "therapy_id", "occurred_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    therapy_id: Mapped[str] = mapped_column(ForeignKey("therapy.id"))
    material_id: Mapped[str] = mapped_column(String(100))
    from_party: Mapped[str] = mapped_column(String(200))
    to_party: Mapped[str] = mapped_column(String(200))
    location: Mapped[str | None] = mapped_column(String(200), nullable=True)
    scanned_coi: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    recorded_by: Mapped[str] = mapped_column(String(64))


class ConditionReading(Model):
    """One temperature reading of a therapy's material (a narrow row: 10,000 per therapy stay cheap)."""

    __tablename__ = "condition_reading"
    __table_args__ = (Index("ix_reading_therapy_time", "therapy_id", "recorded_at"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    therapy_id: Mapped[str] = mapped_column(ForeignKey("therapy.id"))
    sensor_id: Mapped[str] = mapped_column(String(100))
    shipment_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    temperature_c: Mapped[float] = mapped_column(Float)
    excursion: Mapped[bool] = mapped_column(Boolean, default=False)
    activity_id: Mapped[str | None] = mapped_column(String(200), nullable=True)


class WebhookSubscription(Model):
    """An integrator's endpoint and the event types (with wildcards) it wants."""

    __tablename__ = "webhook_subscription"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list] = mapped_column(JSON, default=list)
    secret: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class WebhookDelivery(Model):
    """One event to one subscription: attempts, outcome and when to try again."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        Index("ix_delivery_due", "status", "next_attempt_at"),
        UniqueConstraint("subscription_id", "outbox_event_id"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("webhook_subscription.id"), index=True)
    outbox_event_id: Mapped[int] = mapped_column(ForeignKey("outbox_event.id"))
    event_type: Mapped[str] = mapped_column(String(64))
    therapy_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    response_excerpt: Mapped[str | None] = mapped_column(String(500), nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


SHIPMENT_STATUSES = ("in_transit", "delivered", "lost")


class Shipment(Model):
    """A courier's shipment of a therapy's material: who carries it under which tracking number, from and to
    whom, when it is expected and in what temperature range it travels."""

    __tablename__ = "shipment"
    __table_args__ = (Index("ix_shipment_therapy_created", "therapy_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    therapy_id: Mapped[str] = mapped_column(ForeignKey("therapy.id"))
    carrier: Mapped[str] = mapped_column(String(100))
    tracking_number: Mapped[str] = mapped_column(String(100))
    from_party: Mapped[str] = mapped_column(String(200))
    to_party: Mapped[str] = mapped_column(String(200))
    expected_arrival: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    temperature_min_c: Mapped[float | None] = mapped_column(Float, nullable=True)
    temperature_max_c: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="in_transit")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ShipmentPosition(Model):
    """Where a shipment was at one moment, as its courier reported it."""

    __tablename__ = "shipment_position"
    __table_args__ = (
        Index("ix_shipment_position_time", "shipment_id", "recorded_at"),
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    shipment_id: Mapped[str] = mapped_column(ForeignKey("shipment.id"))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    latitude: Mapped[float] = mapped_column(Float)
    longitude: Mapped[float] = mapped_column(Float)
    note: Mapped[str | None] = mapped_column(String(500), nullable=True)
    recorded_by: Mapped[str] = mapped_column(String(64))
