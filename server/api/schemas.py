"""Request and response schemas (marshmallow): what each POST accepts, and what the API answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from marshmallow import EXCLUDE, INCLUDE, RAISE, Schema, ValidationError, fields, validate

from engine.definition import PARTIES
from server.errors import BadRequest, Invalid
from server.inputs import ID_MAX
from server.store.models import REASON_KINDS, SLOT_KINDS


class PatientSchema(Schema):
    """The pseudonymous patient reference; never a name."""

    class Meta:
        unknown = RAISE

    reference = fields.String(required=True, validate=validate.Length(min=1, max=100))


class StartTherapySchema(Schema):
    """POST /therapies."""

    class Meta:
        unknown = RAISE

    process_key = fields.String(required=True, validate=validate.Length(min=1, max=200))
    version = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=ID_MAX))
    site = fields.String(required=True, validate=validate.Length(min=1, max=32))
    patient = fields.Nested(PatientSchema, required=True)
    data = fields.Dict(keys=fields.String(), load_default=dict)
    parties = fields.Dict(
        keys=fields.String(validate=validate.OneOf(PARTIES)),
        values=fields.String(allow_none=True, validate=validate.Length(min=1, max=32)),
        load_default=None,
        allow_none=True,
        metadata={
            "description": "site codes of the other parties: apheresis (default: site), manufacturing, logistics"
        },
    )


class SignatureSchema(Schema):
    """The re-entered password and the meaning of an electronic signature."""

    class Meta:
        unknown = RAISE

    password = fields.String(required=True, load_only=True)
    meaning = fields.String(required=True)


class CompleteTaskSchema(Schema):
    """POST /tasks/{id}/complete."""

    class Meta:
        unknown = RAISE

    data = fields.Dict(keys=fields.String(), load_default=dict)
    signature = fields.Nested(SignatureSchema, load_default=None, allow_none=True)


class MessageSchema(Schema):
    """POST /messages: to a therapy by id or COI; or, naming neither, to start one by a message start event."""

    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    therapy_id = fields.String(load_default=None, allow_none=True)
    coi = fields.String(load_default=None, allow_none=True)
    payload = fields.Raw(load_default=dict)
    site = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=32),
        metadata={"description": "for a message that starts a therapy: the site code"},
    )
    patient = fields.Nested(
        PatientSchema,
        load_default=None,
        allow_none=True,
        metadata={"description": "for a message that starts a therapy: the patient reference"},
    )
    process_key = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=200),
        metadata={"description": "which process to start when several start on this message"},
    )


class WebhookCreateSchema(Schema):
    """POST /webhooks: the endpoint and the event types (or patterns such as ``therapy.*``) it wants."""

    class Meta:
        unknown = RAISE

    url = fields.String(required=True, metadata={"description": "absolute http or https URL, no credentials"})
    events = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "event types or patterns: 'therapy.*', 'task.completed', '*'"},
    )


class CancelSchema(Schema):
    """POST /therapies/{id}/cancel."""

    class Meta:
        unknown = EXCLUDE

    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=2000))
    reason_code = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=1, max=32),
        metadata={"description": "a reason code of kind cancel; without it, 'reason' is required and means OTHER"},
    )


class HoldSchema(Schema):
    """POST /therapies/{id}/hold."""

    class Meta:
        unknown = RAISE

    reason_code = fields.String(required=True, validate=validate.Length(min=1, max=32))
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class RescheduleSchema(Schema):
    """POST /therapies/{id}/reschedule."""

    class Meta:
        unknown = RAISE

    reason_code = fields.String(
        required=True,
        validate=validate.Length(min=1, max=32),
        metadata={"description": "a reason code of kind reschedule"},
    )
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class ResumeSchema(Schema):
    """POST /therapies/{id}/resume."""

    class Meta:
        unknown = RAISE

    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class ChangePartiesSchema(Schema):
    """POST /therapies/{id}/parties: the parties to hand to other sites (site codes), and why."""

    class Meta:
        unknown = RAISE

    treatment = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=32))
    apheresis = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=32))
    manufacturing = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=32))
    logistics = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=32))
    reason_code = fields.String(required=True, validate=validate.Length(min=1, max=32))
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class ReasonCodeSchema(Schema):
    """POST /reason-codes."""

    class Meta:
        unknown = RAISE

    code = fields.String(required=True, validate=validate.Length(min=1, max=32))
    kind = fields.String(required=True)
    description = fields.String(required=True, validate=validate.Length(min=1, max=200))


class TokenRequestSchema(Schema):
    """POST /auth/token."""

    class Meta:
        unknown = RAISE

    username = fields.String(required=True)
    password = fields.String(required=True, load_only=True)
    label = fields.String(load_default="api")


def in_utc_years(moment: datetime) -> None:
    """A marshmallow validator: ``moment`` is between the years 1 and 9999 in UTC (else it cannot be stored)."""
    try:
        moment.astimezone(UTC) if moment.tzinfo else moment
    except OverflowError:
        raise ValidationError("Must lie between the years 1 and 9999 in UTC.") from None


def load_json(schema: Schema) -> dict:
    """Parse the request's JSON body with ``schema``; 400/415 for a bad body, 422 per field."""
    from flask import request

    body: Any
    if not request.is_json:
        if request.get_data():
            from werkzeug.exceptions import UnsupportedMediaType

            raise UnsupportedMediaType("Send JSON with 'Content-Type: application/json'.")
        body = {}
    else:
        body = request.get_json(silent=True)
        if body is None:
            raise BadRequest("The request body is not valid JSON.", code="malformed_json")
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="malformed_json")
    try:
        return schema.load(body)
    except ValidationError as exc:
        raise Invalid(
            "The request is not valid; see the fields.", code="invalid_request", details={"fields": exc.messages}
        ) from None


# -- response schemas: they document what the API answers (the OpenAPI document and its tests) ----------


class _Answer(Schema):
    """Base of the response schemas: more fields may be added later, so unknown ones are allowed."""

    class Meta:
        unknown = INCLUDE


def _text(nullable: bool = False, **kwargs) -> fields.String:
    """A string every answer carries (null allowed when ``nullable``)."""
    return fields.String(required=True, allow_none=nullable, **kwargs)


def _moment(nullable: bool = False) -> fields.String:
    """An ISO 8601 UTC timestamp every answer carries."""
    return fields.String(required=True, allow_none=nullable, metadata={"format": "date-time"})


class ProcessRefSchema(_Answer):
    """The process a therapy runs on."""

    key = _text()
    version = fields.Integer(required=True)


class PartiesSchema(_Answer):
    """The site (code) that takes each party's part in a therapy, or null while none is assigned."""

    treatment = _text()
    apheresis = _text(nullable=True)
    manufacturing = _text(nullable=True)
    logistics = _text(nullable=True)


class ReasonCodeItemSchema(_Answer):
    """A reason code as the API shows it."""

    code = _text()
    kind = _text(validate=validate.OneOf(REASON_KINDS))
    description = _text()
    active = fields.Boolean(required=True)


class TherapySchema(_Answer):
    """A therapy as lists show it."""

    id = _text()
    coi = _text(metadata={"description": "chain-of-identity identifier (15 characters)"})
    coi_check = _text(metadata={"description": "ISO/IEC 7064 mod 37-2 check character"})
    status = _text(validate=validate.OneOf(["active", "on_hold", "completed", "cancelled", "failed"]))
    held_since = _moment(nullable=True)
    reschedulable = fields.Boolean(
        required=True,
        metadata={"description": "whether POST .../reschedule can send it back to scheduling now"},
    )
    stage = _text(nullable=True)
    phase = _text(
        nullable=True,
        metadata={
            "description": "the phase of the journey (the diagram's phase of where it stands, such as "
            "collection or manufacturing; completed at the end), null before the first that declares one"
        },
    )
    process = fields.Nested(ProcessRefSchema, required=True)
    site = _text(metadata={"description": "the treatment centre (the treatment party)"})
    parties = fields.Nested(PartiesSchema, required=True)
    patient = fields.Nested(
        PatientSchema,
        required=True,
        allow_none=True,
        metadata={
            "description": "null unless the caller needs to know it (treatment or apheresis site, admin, auditor)"
        },
    )
    next_due_at = _moment(nullable=True)
    created_at = _moment()
    updated_at = _moment(nullable=True)
    ended_at = _moment(nullable=True)


class FormSchema(_Answer):
    """A task's form: its JSON Schema and UI schema."""

    name = _text()
    schema = fields.Dict(required=True)
    ui_schema = fields.Dict(required=True)
    prefill = fields.Dict(
        keys=fields.String(),
        metadata={
            "description": "for a ready task, the values the system already knows for fields whose ui schema "
            "names ui:prefill (a dotted path into the therapy's process data); the user may change them"
        },
    )


class SignatureMeaningSchema(_Answer):
    """The signature a task asks for."""

    meaning = _text(
        metadata={"description": "the meaning of the signature (when it follows a decision: its first choice's)"}
    )
    field = fields.String(
        metadata={"description": "present when the meaning follows a decision: the form field that decides it"}
    )
    meanings = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"description": "with field: each value of the field and the meaning a signature of it carries"},
    )


class TaskInstanceSchema(_Answer):
    """Which instance of a multi-instance or loop task a task is."""

    index = fields.Integer(required=True, metadata={"description": "its position, from 0"})
    count = fields.Integer(required=True, allow_none=True, metadata={"description": "how many instances, if known"})
    variable = _text(nullable=True, metadata={"description": "the task's inputDataItem, where the item is"})
    item = fields.Raw(required=True, allow_none=True, metadata={"description": "the item this instance works on"})


class TaskSchema(_Answer):
    """A user task."""

    id = _text()
    therapy_id = _text()
    coi = _text()
    activity_id = _text()
    name = _text()
    role = _text()
    party = _text(validate=validate.OneOf(PARTIES))
    site = _text(nullable=True, metadata={"description": "the party's site; null while the party has none"})
    instructions = _text(nullable=True)
    form = fields.Nested(FormSchema, required=True, allow_none=True)
    signature = fields.Nested(SignatureMeaningSchema, required=True, allow_none=True)
    status = _text(validate=validate.OneOf(["ready", "completed", "cancelled"]))
    created_at = _moment()
    due_at = fields.String(
        required=True,
        allow_none=True,
        metadata={
            "format": "date-time",
            "description": "the task's deadline; once passed it stays (the task is late since then) until done",
        },
    )
    late = fields.Boolean(required=True, metadata={"description": "open and past its deadline"})
    completed_at = _moment(nullable=True)
    completed_by = _text(nullable=True)
    instance = fields.Nested(
        TaskInstanceSchema,
        required=True,
        allow_none=True,
        metadata={"description": "for one instance of a multi-instance or loop task: which one, and its item"},
    )


class WaitSchema(_Answer):
    """Something a therapy waits for: a timer or a message."""

    type = _text(validate=validate.OneOf(["timer", "message"]))
    activity_id = _text()


class TherapyDetailSchema(TherapySchema):
    """One therapy with its open tasks, waits and data."""

    open_tasks = fields.List(fields.Nested(TaskSchema), required=True)
    waiting_for = fields.List(fields.Nested(WaitSchema), required=True)
    incidents = fields.List(fields.Dict(), required=True)
    alerts = fields.List(fields.Dict(), required=True)
    data = fields.Dict(required=True)


class NextTaskSchema(_Answer):
    """A task the completion made ready."""

    id = _text()
    activity_id = _text()
    name = _text()
    role = _text()
    due_at = _moment(nullable=True)


class TaskCompletedSchema(_Answer):
    """The completed task and where its therapy went next."""

    task = fields.Nested(TaskSchema, required=True)
    therapy = fields.Nested(TherapySchema, required=True)
    next_tasks = fields.List(
        fields.Nested(NextTaskSchema),
        required=True,
        metadata={
            "description": "the therapy's tasks this step made ready that the caller may see (at their sites, of "
            "any role), so that a client can go on without asking GET /tasks"
        },
    )


class MessageResultSchema(_Answer):
    """A message taken by a waiting event (or a therapy started by one)."""

    delivered = fields.Boolean(required=True)
    therapy_id = _text()
    activity_id = _text(nullable=True)
    status = _text()
    stage = _text(nullable=True)
    started = fields.Boolean(metadata={"description": "true when the message started a new therapy"})
    coi = fields.String(metadata={"description": "the new therapy's COI, when one was started"})


class DefinitionVersionSchema(_Answer):
    """One deployed version of a process definition."""

    id = _text()
    key = _text()
    version = fields.Integer(required=True)
    name = _text()
    checksum = _text()
    deployed_at = _moment()


class DefinitionSummarySchema(_Answer):
    """A process key with its latest version."""

    key = _text()
    name = _text()
    latest_version = fields.Integer(required=True)


class DefinitionVersionRefSchema(_Answer):
    """A version in a process key's history."""

    version = fields.Integer(required=True)
    id = _text()
    deployed_at = _moment()
    checksum = _text()


class DefinitionDetailSchema(_Answer):
    """A process key with all its versions."""

    key = _text()
    name = _text()
    versions = fields.List(fields.Nested(DefinitionVersionRefSchema), required=True)


class TimelineSchema(_Answer):
    """A therapy's history from the audit trail."""

    therapy_id = _text()
    items = fields.List(fields.Dict(), required=True)


class AuditEntrySchema(_Answer):
    """One link of the audit chain."""

    seq = fields.Integer(required=True)
    at = _moment()
    actor = _text()
    action = _text()
    subject_type = _text()
    subject_id = _text()
    reason = _text(nullable=True)
    data = fields.Dict(required=True)
    prev_hash = _text()
    hash = _text()
    chain = _text()
    chain_seq = fields.Integer(required=True)


class AuditVerifySchema(_Answer):
    """The result of checking every audit chain and seal."""

    ok = fields.Boolean(required=True)
    checked = fields.Integer(required=True)
    chains = fields.Integer(required=True)
    seals = fields.Integer(required=True)
    last_hash = fields.String()
    last_seal = fields.Dict()
    first_bad_seq = fields.Integer(allow_none=True)
    first_bad_chain = fields.String()
    first_bad_chain_seq = fields.Integer()
    first_bad_seal = fields.Integer()


class HealthSchema(_Answer):
    """Whether the server can work."""

    status = _text()
    database = _text()
    writes = _text()
    scheduler = _text()


class WebhookSchema(_Answer):
    """A webhook subscription."""

    id = _text()
    url = _text()
    events = fields.List(fields.String(), required=True)
    active = fields.Boolean(required=True)
    created_by = _text()
    created_at = _moment()


class WebhookCreatedSchema(WebhookSchema):
    """A new subscription, with the secret that signs its deliveries (shown only here)."""

    secret = _text(metadata={"description": "Standard Webhooks secret (whsec_...) for the webhook-signature"})


class DeliverySchema(_Answer):
    """One event's delivery to one subscription."""

    id = _text()
    subscription_id = _text()
    event_id = _text(metadata={"description": "the CloudEvent id, also sent as the webhook-id header"})
    event_type = _text()
    therapy_id = _text(nullable=True)
    status = _text(validate=validate.OneOf(["pending", "delivered", "failed"]))
    attempts = fields.Integer(required=True)
    last_status_code = fields.Integer(required=True, allow_none=True)
    last_error = _text(nullable=True)
    response_excerpt = _text(nullable=True)
    next_attempt_at = _moment(nullable=True)
    delivered_at = _moment(nullable=True)
    created_at = _moment()


class LoginTokenSchema(_Answer):
    """A token handed out by logging in."""

    token = _text()
    expires_at = _moment(nullable=True)
    user = _text()
    id = fields.Integer(required=True)


class TokenSchema(_Answer):
    """An API token, without its secret."""

    id = fields.Integer(required=True)
    user_id = fields.Integer(required=True)
    username = _text()
    label = _text()
    created_at = _moment()
    expires_at = _moment(nullable=True)
    revoked_at = _moment(nullable=True)
    status = _text(validate=validate.OneOf(["active", "expired", "revoked"]))


class TokenCreatedSchema(TokenSchema):
    """A new token with its secret (shown only here)."""

    token = _text(metadata={"description": "the bearer token; store it now, it is never shown again"})


class TokenRevokedSchema(TokenSchema):
    """A token after a revocation."""

    revoked_now = fields.Boolean(required=True, metadata={"description": "false when it was revoked already"})


class TokenExpiredSchema(TokenSchema):
    """A token after its expiry was brought forward."""

    expired_now = fields.Boolean(required=True)


class UserSchema(_Answer):
    """A user account (never its password)."""

    id = fields.Integer(required=True)
    username = _text()
    display_name = _text()
    roles = fields.List(fields.String(), required=True)
    sites = fields.List(fields.String(), required=True)
    active = fields.Boolean(required=True)
    locked = fields.Boolean(required=True)
    failed_signatures = fields.Integer(required=True)
    created_at = _moment()


class UserChangedSchema(UserSchema):
    """A user after a change, with the audit actions the change wrote."""

    changes = fields.List(fields.Raw(), required=True)


class UserUnlockedSchema(UserSchema):
    """A user after an unlock."""

    unlocked = fields.Boolean(required=True)


class AlertSchema(_Answer):
    """Something people must look at: an escalation, a COI mismatch, an excursion, an incident."""

    id = _text()
    therapy_id = _text(nullable=True)
    kind = _text()
    severity = _text()
    message = _text()
    role = _text(nullable=True)
    activity_id = _text(nullable=True)
    data = fields.Dict(required=True, allow_none=True)
    status = _text(validate=validate.OneOf(["open", "acknowledged"]))
    raised_at = _moment()
    acknowledged_by = _text(nullable=True)
    acknowledged_at = _moment(nullable=True)
    note = _text(nullable=True)


class IncidentSchema(_Answer):
    """A failed service task: retrying, open for an administrator, or resolved."""

    id = _text()
    therapy_id = _text()
    activity_id = _text(nullable=True)
    task_id = _text(nullable=True)
    status = _text()
    error_type = _text(nullable=True)
    message = _text(nullable=True)
    attempts = fields.Integer(required=True)
    history = fields.List(fields.Dict(), required=True)
    opened_at = _moment()
    next_retry_at = _moment(nullable=True)
    resolved_at = _moment(nullable=True)
    resolved_by = _text(nullable=True)


class IncidentOutcomeSchema(_Answer):
    """An incident after a retry or a resolution, and its therapy."""

    incident = fields.Nested(IncidentSchema, required=True)
    therapy = fields.Nested(TherapySchema, required=True)


class HandoffSchema(_Answer):
    """One recorded handoff of a material in the chain of custody."""

    id = _text()
    therapy_id = _text()
    material_id = _text()
    from_party = _text()
    to_party = _text()
    location = _text(nullable=True)
    occurred_at = _moment()
    recorded_at = _moment()
    recorded_by = _text()
    scanned_coi = _text()
    verified_coi = _text()


class CustodyChainSchema(_Answer):
    """A therapy's chain of custody, in order, with any gap in it."""

    therapy_id = _text()
    coi = _text()
    items = fields.List(fields.Nested(HandoffSchema), required=True)
    breaks = fields.List(fields.Dict(), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class ConditionResultSchema(_Answer):
    """Whether a reading (or any reading of a batch) was outside the allowed range."""

    excursion = fields.Boolean(required=True)
    alert_id = fields.String(metadata={"description": "the alert raised (or already open) for the excursion"})
    recorded = fields.Integer(metadata={"description": "for a batch: readings recorded"})
    excursions = fields.Integer(metadata={"description": "for a batch: readings outside the range"})


class ConditionSeriesSchema(_Answer):
    """A therapy's readings (or, with ``points``, time buckets of them) and the range that applies now."""

    therapy_id = _text()
    range = fields.List(fields.Float(), required=True, allow_none=True)
    activity_id = _text(nullable=True)
    downsampled = fields.Boolean(required=True)
    items = fields.List(fields.Dict(), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class CorrectionRecordSchema(_Answer):
    """A correction of one recorded value, with its reason."""

    id = _text()
    therapy_id = _text()
    path = _text()
    old_value = fields.Raw(required=True, allow_none=True)
    new_value = fields.Raw(required=True, allow_none=True)
    reason = _text()
    corrected_by = _text()
    corrected_at = _moment()


class TherapyRecordSchema(_Answer):
    """The complete therapy record, electronic form."""

    record = fields.Dict(required=True)
    therapy = fields.Dict(required=True)


class OpenApiDocumentSchema(_Answer):
    """This document."""

    openapi = _text()
    info = fields.Dict(required=True)
    paths = fields.Dict(required=True)


def page_of(item: type[Schema], name: str) -> type[Schema]:
    """The schema of one page of a list: ``{"items": [...], "next_cursor": "..." | null}``."""
    return _Answer.from_dict(
        {
            "items": fields.List(fields.Nested(item), required=True),
            "next_cursor": fields.String(required=True, allow_none=True),
        },
        name=name,
    )


TherapyPageSchema = page_of(TherapySchema, "TherapyPageSchema")
TaskPageSchema = page_of(TaskSchema, "TaskPageSchema")
DefinitionPageSchema = page_of(DefinitionSummarySchema, "DefinitionPageSchema")
AuditPageSchema = page_of(AuditEntrySchema, "AuditPageSchema")
WebhookPageSchema = page_of(WebhookSchema, "WebhookPageSchema")
DeliveryPageSchema = page_of(DeliverySchema, "DeliveryPageSchema")
TokenPageSchema = page_of(TokenSchema, "TokenPageSchema")
UserPageSchema = page_of(UserSchema, "UserPageSchema")
AlertPageSchema = page_of(AlertSchema, "AlertPageSchema")
ReasonCodePageSchema = page_of(ReasonCodeItemSchema, "ReasonCodePageSchema")


class SlotSchema(_Answer):
    """A slot of capacity: its site and kind, window, places and places booked."""

    id = _text()
    site = _text()
    kind = _text(validate=validate.OneOf(SLOT_KINDS))
    start = _moment()
    end = _moment()
    capacity = fields.Integer(required=True)
    booked = fields.Integer(required=True)
    available = fields.Integer(required=True)
    status = _text(validate=validate.OneOf(["open", "closed"]))


class SlotsOpenedSchema(_Answer):
    """The slots one capacity request opened, and the blackout days its recurrence skipped."""

    slots = fields.List(fields.Nested(SlotSchema), required=True)
    skipped_blackout_days = fields.List(fields.String(), required=True)


class BlackoutItemSchema(_Answer):
    """A day a site takes no bookings."""

    site = _text()
    day = _text(metadata={"format": "date"})
    reason = _text()


class BookingItemSchema(_Answer):
    """A therapy's place in a slot."""

    id = _text()
    therapy_id = _text()
    slot_id = _text()
    kind = _text(validate=validate.OneOf(SLOT_KINDS))
    site = _text()
    start = _moment()
    end = _moment()
    status = _text(validate=validate.OneOf(["booked", "moved", "cancelled"]))
    reason_code = _text(nullable=True)
    created_at = _moment()
    created_by = _text()


class ChainSchema(_Answer):
    """Free slots that fit together: a collection, a manufacturing run, and an infusion (or null)."""

    apheresis = fields.Nested(SlotSchema, required=True)
    manufacturing = fields.Nested(SlotSchema, required=True)
    infusion = fields.Nested(SlotSchema, required=True, allow_none=True)


class ScheduleOptionsSchema(_Answer):
    """The earliest feasible chains, and the lead times they respect (seconds, least and most)."""

    items = fields.List(fields.Nested(ChainSchema), required=True)
    lead_times = fields.Dict(required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class MigrationOutcomeSchema(_Answer):
    """Whether one therapy moved (or, in a dry run, could move), and why not."""

    therapy_id = _text()
    ok = fields.Boolean(required=True)
    reason = fields.String()


class MigrationResultSchema(_Answer):
    """One result per therapy of the version being left."""

    dry_run = fields.Boolean(required=True)
    results = fields.List(fields.Nested(MigrationOutcomeSchema), required=True)


class VersionDiffSchema(_Answer):
    """The BPMN elements one version added, removed and changed against another (by element id)."""

    added = fields.List(fields.String(), required=True)
    removed = fields.List(fields.String(), required=True)
    changed = fields.List(fields.String(), required=True)


class DraftRefSchema(_Answer):
    """The deployed version a draft started from or last deployed."""

    key = _text()
    version = fields.Integer(required=True)


class DraftSummarySchema(_Answer):
    """A studio draft as lists show it."""

    id = _text()
    name = _text()
    based_on = fields.Nested(DraftRefSchema, required=True, allow_none=True)
    forms = fields.List(fields.String(), required=True, metadata={"description": "the draft's own form files"})
    decisions = fields.List(
        fields.String(), required=True, metadata={"description": "the draft's own decision table (DMN) files"}
    )
    etag = _text(
        metadata={"description": "the draft's version: send it back as If-Match with a change (409 when stale)"}
    )
    created_by = _text()
    created_at = _moment()
    updated_by = _text()
    updated_at = _moment()


class DraftDecisionSchema(_Answer):
    """One of a draft's decision table files."""

    name = _text(metadata={"description": "the file name"})
    decision_id = _text()
    decision_name = _text()


class DraftDecisionPageSchema(_Answer):
    """A draft's decision table files, by name."""

    items = fields.List(fields.Nested(DraftDecisionSchema), required=True)


class DraftFormSchema(_Answer):
    """One of a draft's form files."""

    name = _text()


class DraftFormPageSchema(_Answer):
    """A draft's own form files, by name."""

    items = fields.List(fields.Nested(DraftFormSchema), required=True)


class DraftSchema(DraftSummarySchema):
    """A studio draft with its diagram's XML."""

    bpmn = _text()


class DraftPageSchema(_Answer):
    """Every draft, the most recently changed first."""

    items = fields.List(fields.Nested(DraftSummarySchema), required=True)


class DraftProblemSchema(_Answer):
    """One problem of a draft, on its element."""

    code = _text()
    message = _text()
    element_id = _text(nullable=True)
    line = fields.Integer(required=True, allow_none=True)
    details = fields.Dict(required=True)


class DraftCurrentSchema(_Answer):
    """The latest deployed version of the draft's process and the therapies running on it."""

    key = _text()
    version = fields.Integer(required=True)
    active_therapies = fields.Integer(required=True)


class DraftCheckSchema(_Answer):
    """What the checks of a deployment find in a draft; without problems, its diff against the current version."""

    ok = fields.Boolean(required=True)
    problems = fields.List(fields.Nested(DraftProblemSchema), required=True)
    key = _text(nullable=True)
    current = fields.Nested(DraftCurrentSchema, required=True, allow_none=True)
    diff = fields.Nested(VersionDiffSchema, required=True, allow_none=True)


class SimulationSchema(_Answer):
    """A simulated run (``status``, ``path``, ``events``, ``alerts``, ``end``, ``vein_to_vein``) or, when ``runs``
    was asked, a batch's report (``runs``, ``completed_runs``, ``ends``, ``escalations``, ``timers`` and the
    spread of ``vein_to_vein``)."""

    key = _text()
    status = fields.String(metadata={"enum": ["completed", "stuck", "failed", "did_not_finish"]})
    problem = fields.String(allow_none=True)
    end = fields.Dict(allow_none=True)
    path = fields.List(fields.Dict())
    events = fields.List(fields.Dict())
    alerts = fields.List(fields.Dict())
    escalations = fields.List(fields.Dict())
    timers = fields.List(fields.Dict())
    vein_to_vein = fields.Dict(required=True)
    runs = fields.Integer()
    completed_runs = fields.Integer()
    seed = fields.Integer()
    ends = fields.List(fields.Dict())


class DefinitionMessageSchema(_Answer):
    """A message a definition version waits for or starts on, at one catching element."""

    name = _text()
    activity_id = _text()
    activity_name = _text()
    starts_therapy = fields.Boolean(required=True, metadata={"description": "a message start event of the process"})
    schema_file = _text(nullable=True, metadata={"description": "the payloadSchema file the element declares"})
    schema = fields.Dict(
        required=True, allow_none=True, metadata={"description": "the JSON Schema (2020-12) the payload must satisfy"}
    )


class DefinitionMessagesSchema(_Answer):
    """The messages of one definition version, by catching element in document order."""

    key = _text()
    version = fields.Integer(required=True)
    items = fields.List(fields.Nested(DefinitionMessageSchema), required=True)


SlotPageSchema = page_of(SlotSchema, "SlotPageSchema")
BlackoutPageSchema = page_of(BlackoutItemSchema, "BlackoutPageSchema")
BookingPageSchema = page_of(BookingItemSchema, "BookingPageSchema")
IncidentPageSchema = page_of(IncidentSchema, "IncidentPageSchema")
CorrectionPageSchema = page_of(CorrectionRecordSchema, "CorrectionPageSchema")


class VeinToVeinHoursSchema(_Answer):
    """Vein-to-vein hours of the infused therapies of a group: the median and the 90th percentile."""

    p50 = fields.Float(required=True, allow_none=True)
    p90 = fields.Float(required=True, allow_none=True)


class MetricsGroupSchema(_Answer):
    """One group of the metrics (a site, a process or a month)."""

    key = _text(metadata={"description": "the site code, process key or month (YYYY-MM)"})
    started = fields.Integer(required=True)
    completed = fields.Integer(required=True)
    cancelled = fields.Integer(required=True)
    vein_to_vein_hours = fields.Nested(VeinToVeinHoursSchema, required=True)
    on_time_rate = fields.Float(
        required=True, allow_none=True, metadata={"description": "share of judged milestones on time (0..1)"}
    )
    excursions = fields.Integer(required=True)
    escalations = fields.Integer(required=True)
    coi_mismatches = fields.Integer(required=True)


class MetricsSchema(_Answer):
    """GET /metrics."""

    groups = fields.List(fields.Nested(MetricsGroupSchema), required=True)
