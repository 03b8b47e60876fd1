"""The OpenAPI 3 document, built from the registered routes and the marshmallow request and response schemas.

Every ``/api/v1`` route is in it (the routes are read from the app, so a new endpoint appears by itself);
``_operations`` declares what a route cannot tell: its success answer and schema, its request body, its query
parameters and its particular errors. The errors every route may give (a malformed request, no token, a role
missing, an unknown id, a concurrent change, a body too large or of the wrong type, an invalid value) are
added by ``_common_errors`` from what the route is: public or not, with roles, with path parameters, writing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema

from engine.values import INT_MAX, INT_MIN
from server.api import schemas
from server.inputs import ID_MAX
from server.oversight.alerts import OLDER_THAN, SEVERITIES
from server.store.models import REASON_KINDS, SLOT_KINDS
from server.workflow import simulation


@dataclass(frozen=True)
class Op:
    """What a route cannot tell about itself: its success answer, request body, query and particular errors."""

    ok: str = "200"  # the usual success status
    answer: Any = None  # a response schema, a ``content`` mapping (PDF, XML, SSE), or None for no body
    body: Any = None  # a JSON request schema, or a ``content`` mapping (the multipart upload)
    body_required: bool = True
    errors: dict[str, str] = field(default_factory=dict)  # statuses beyond the common ones, and their meaning
    also: dict[str, tuple[str, Any]] = field(default_factory=dict)  # further answers with their own bodies
    query: tuple[tuple[str, dict, str], ...] = ()


def _string(**extra) -> dict:
    return {"type": "string", **extra}


INTEGER = {"type": "integer", "format": "int64", "minimum": INT_MIN, "maximum": INT_MAX}
ID = {"type": "integer", "format": "int32", "minimum": 0, "maximum": ID_MAX}  # ids and versions: INTEGER columns
PAGING = (
    ("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size (default 50)"),
    ("cursor", _string(), "next_cursor of the last page"),
)
PDF = {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}
XML = {"application/xml": {"schema": {"type": "string"}}}
DMN = {
    "application/xml": {"schema": {"type": "string", "description": "a DMN 1.2 or 1.3 file holding one decision table"}}
}
JSON_SCHEMA = {"application/json": {"schema": {"type": "object", "description": "a JSON Schema (a task's form)"}}}
SSE = {
    "text/event-stream": {
        "schema": {
            "type": "string",
            "description": (
                "Server-Sent Events: each message has 'id:' (the outbox id, for Last-Event-ID) and 'data:' (one "
                "CloudEvents 1.0 structured JSON event, as webhooks receive); ':' lines are heartbeats."
            ),
        }
    }
}
UPLOAD = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["bpmn"],
            "properties": {
                "bpmn": {"type": "string", "format": "binary", "description": "one BPMN 2.0 XML file"},
                "forms": {
                    "type": "array",
                    "items": {"type": "string", "format": "binary"},
                    "description": "JSON Schema forms the diagram's user tasks reference",
                },
                "decisions": {
                    "type": "array",
                    "items": {"type": "string", "format": "binary"},
                    "description": (
                        "DMN 1.2/1.3 decision tables (one decision per file) the diagram's business rule tasks call "
                        "by <spiffworkflow:calledDecisionId>"
                    ),
                },
            },
        }
    }
}
CONFLICT = "Conflict with the current state (or a concurrent change, or an Idempotency-Key used for another request)"


def _operations() -> dict[tuple[str, str], Op]:
    """Every /api/v1 operation's declaration (request schemas of single endpoints live beside their views)."""
    from server.api import (
        admin,
        alerts,
        capacity,
        conditions,
        corrections,
        custody,
        definitions,
        drafts,
        incidents,
        reason_codes,
        shipments,
        tokens,
    )

    statuses = {
        "therapies": ["active", "on_hold", "completed", "cancelled", "failed"],
        "alerts": ["open", "acknowledged"],
        "incidents": ["retrying", "open", "resolved"],
        "deliveries": ["pending", "delivered", "failed"],
        "tokens": ["active", "expired", "revoked"],
    }

    def status(kind: str) -> tuple[str, dict, str]:
        return ("status", _string(enum=statuses[kind]), "only items in this status")

    readings = {
        "application/json": {
            "schema": {
                "oneOf": [{"$ref": "#/components/schemas/Reading"}, {"$ref": "#/components/schemas/ReadingBatch"}]
            }
        }
    }
    return {
        ("GET", "/api/v1/health"): Op(
            answer=schemas.HealthSchema, also={"503": ("The database or the scheduler is down", schemas.HealthSchema)}
        ),
        ("GET", "/api/v1/openapi.json"): Op(answer=schemas.OpenApiDocumentSchema),
        ("POST", "/api/v1/auth/token"): Op(
            "201",
            schemas.LoginTokenSchema,
            schemas.TokenRequestSchema,
            errors={
                "401": "Wrong username or password, or the account is locked or deactivated (audited)",
                "429": "Too many login attempts from this address; see Retry-After",
            },
        ),
        ("GET", "/api/v1/events"): Op(
            answer=SSE,
            errors={"429": "Too many live streams are open on this server"},
            query=(
                ("types", _string(), "comma-separated event types or patterns, e.g. therapy.*"),
                ("last_event_id", INTEGER, "resume after this event id (as the Last-Event-ID header does)"),
            ),
        ),
        ("POST", "/api/v1/process-definitions"): Op(
            "201",
            schemas.DefinitionVersionSchema,
            UPLOAD,
            also={"200": ("Identical content: the existing version", schemas.DefinitionVersionSchema)},
            errors={
                "422": "Not BPMN, not well-formed, not UTF-8 (nor declared in another encoding), unsafe or not "
                "executable; details name the element and line"
            },
        ),
        ("GET", "/api/v1/process-definitions"): Op(answer=schemas.DefinitionPageSchema, query=PAGING),
        ("GET", "/api/v1/process-definitions/{key}"): Op(answer=schemas.DefinitionDetailSchema),
        ("GET", "/api/v1/process-definitions/{key}/versions/{version}/bpmn"): Op(answer=XML),
        ("GET", "/api/v1/process-definitions/{key}/messages"): Op(
            answer=schemas.DefinitionMessagesSchema,
            errors={"404": "No such process definition, or no such version of it"},
            query=(
                ("version", {"type": "integer", "minimum": 1, "maximum": ID_MAX}, "the version (default: the latest)"),
            ),
        ),
        ("POST", "/api/v1/therapies"): Op("201", schemas.TherapySchema, schemas.StartTherapySchema),
        ("GET", "/api/v1/therapies"): Op(
            answer=schemas.TherapyPageSchema,
            query=(
                status("therapies"),
                ("site", _string(), "the treatment centre's site code"),
                ("apheresis", _string(), "the apheresis party's site code"),
                ("manufacturing", _string(), "the manufacturing party's site code"),
                ("logistics", _string(), "the logistics party's site code"),
                ("process_key", _string(), "process key"),
                ("phase", _string(), "the phase of the journey (such as manufacturing; none: not yet in one)"),
                (
                    "q",
                    _string(),
                    "search: an id, a COI in any written form (or part of one), the code of a site taking part, "
                    "or the beginning of a patient reference where the caller may know the patient",
                ),
                *PAGING,
            ),
        ),
        ("POST", "/api/v1/therapies/{therapy_id}/hold"): Op(
            answer=schemas.TherapySchema,
            body=schemas.HoldSchema,
            errors={"409": "Already held (already_held), or the therapy has ended (not_active)"},
        ),
        ("POST", "/api/v1/therapies/{therapy_id}/resume"): Op(
            answer=schemas.TherapySchema,
            body=schemas.ResumeSchema,
            body_required=False,
            errors={"409": "The therapy is not on hold (not_held)"},
        ),
        ("POST", "/api/v1/therapies/{therapy_id}/reschedule"): Op(
            answer=schemas.TherapySchema,
            body=schemas.RescheduleSchema,
            errors={
                "409": "Held (on_hold), ended (not_active), or its diagram does not allow it at the current step "
                "(not_reschedulable)"
            },
        ),
        ("POST", "/api/v1/therapies/{therapy_id}/parties"): Op(
            answer=schemas.TherapySchema,
            body=schemas.ChangePartiesSchema,
            errors={"403": "Not the treatment centre's coordinator (nor a planner, nor an admin)"},
        ),
        ("POST", "/api/v1/capacity"): Op(
            "201",
            schemas.SlotsOpenedSchema,
            capacity.CapacitySchema,
            errors={"409": "A window overlaps an open slot of the site and kind (overlapping_slot)"},
        ),
        ("GET", "/api/v1/slots"): Op(
            answer=schemas.SlotPageSchema,
            query=(
                ("site", _string(), "site code"),
                ("kind", {"type": "string", "enum": list(SLOT_KINDS)}, "apheresis, manufacturing or infusion"),
                ("from", _string(format="date-time"), "slots ending after"),
                ("to", _string(format="date-time"), "slots starting before"),
                ("available", {"type": "string", "enum": ["true", "false"]}, "only slots with a place left"),
                *PAGING,
            ),
        ),
        ("PATCH", "/api/v1/slots/{slot_id}"): Op(
            answer=schemas.SlotSchema,
            body=capacity.SlotChangeSchema,
            errors={"409": "Below the places booked (below_booked), or the slot is closed"},
        ),
        ("DELETE", "/api/v1/slots/{slot_id}"): Op(
            answer=schemas.SlotSchema, errors={"409": "Places are booked (slot_booked)"}
        ),
        ("POST", "/api/v1/capacity/blackouts"): Op(
            "201",
            schemas.BlackoutItemSchema,
            capacity.BlackoutSchema,
            errors={"409": "A slot that day has bookings (slot_booked), or the day is dark already"},
        ),
        ("GET", "/api/v1/capacity/blackouts"): Op(
            answer=schemas.BlackoutPageSchema, query=(("site", _string(), "site code"), *PAGING)
        ),
        ("POST", "/api/v1/therapies/{therapy_id}/bookings"): Op(
            "201",
            schemas.BookingItemSchema,
            capacity.BookingRequestSchema,
            errors={"409": "No place left (slot_full), the slot closed, already booked there, or the therapy ended"},
        ),
        ("GET", "/api/v1/therapies/{therapy_id}/bookings"): Op(answer=schemas.BookingPageSchema),
        ("POST", "/api/v1/therapies/{therapy_id}/bookings/{booking_id}/cancel"): Op(
            answer=schemas.BookingItemSchema,
            body=capacity.BookingCancelSchema,
            errors={"409": "The booking was moved or cancelled already (not_booked)"},
        ),
        ("POST", "/api/v1/process-definitions/{key}/migrations"): Op(
            answer=schemas.MigrationResultSchema,
            body=definitions.MigrationSchema,
            errors={"404": "A chosen therapy does not run on from_version"},
        ),
        ("GET", "/api/v1/process-definitions/{key}/diff"): Op(
            answer=schemas.VersionDiffSchema,
            query=(
                ("from", {"type": "integer", "minimum": 1}, "the version compared"),
                ("to", {"type": "integer", "minimum": 1}, "the version compared with"),
            ),
        ),
        ("GET", "/api/v1/process-drafts"): Op(answer=schemas.DraftPageSchema),
        ("POST", "/api/v1/process-drafts"): Op(
            "201",
            schemas.DraftSchema,
            drafts.CreateDraftSchema,
            body_required=False,
            errors={"404": "No such process definition or version to start from"},
        ),
        ("GET", "/api/v1/process-drafts/{draft_id}"): Op(answer=schemas.DraftSchema),
        ("PUT", "/api/v1/process-drafts/{draft_id}"): Op(answer=schemas.DraftSchema, body=drafts.SaveDraftSchema),
        ("DELETE", "/api/v1/process-drafts/{draft_id}"): Op("204"),
        ("GET", "/api/v1/process-drafts/{draft_id}/decisions"): Op(answer=schemas.DraftDecisionPageSchema),
        ("GET", "/api/v1/process-drafts/{draft_id}/decisions/{name}"): Op(answer=XML),
        ("PUT", "/api/v1/process-drafts/{draft_id}/decisions/{name}"): Op(
            answer=schemas.DraftSchema,
            body=DMN,
            errors={
                "409": "The draft changed since the If-Match version (draft_changed)",
                "422": "The DMN file fails an upload's check (details name the file and line)",
            },
        ),
        ("DELETE", "/api/v1/process-drafts/{draft_id}/decisions/{name}"): Op(answer=schemas.DraftSchema),
        ("GET", "/api/v1/process-drafts/{draft_id}/forms"): Op(answer=schemas.DraftFormPageSchema),
        ("GET", "/api/v1/process-drafts/{draft_id}/forms/{name}"): Op(answer=JSON_SCHEMA),
        ("PUT", "/api/v1/process-drafts/{draft_id}/forms/{name}"): Op(
            answer=schemas.DraftSchema,
            body=JSON_SCHEMA,
            errors={
                "409": "The draft changed since the If-Match version (draft_changed)",
                "422": "The form is not a valid JSON Schema (details name the file, and the line of a JSON error)",
            },
        ),
        ("DELETE", "/api/v1/process-drafts/{draft_id}/forms/{name}"): Op(answer=schemas.DraftSchema),
        ("POST", "/api/v1/process-drafts/{draft_id}/check"): Op(
            answer=schemas.DraftCheckSchema, body=drafts.CheckDraftSchema, body_required=False
        ),
        ("POST", "/api/v1/process-drafts/{draft_id}/deploy"): Op(
            "201",
            schemas.DefinitionVersionSchema,
            also={"200": ("Identical content: the existing version", schemas.DefinitionVersionSchema)},
            errors={"422": "The draft fails a check (draft_invalid; details.problems lists each on its element)"},
        ),
        ("POST", "/api/v1/process-drafts/{draft_id}/simulate"): Op(
            answer=schemas.SimulationSchema,
            body=simulation.OptionsSchema,
            body_required=False,
            errors={
                "422": "The draft fails a check (draft_invalid), or an option names an element, gateway or flow the "
                "diagram does not have (details.fields)"
            },
        ),
        ("POST", "/api/v1/process-definitions/{key}/versions/{version}/simulate"): Op(
            answer=schemas.SimulationSchema,
            body=simulation.OptionsSchema,
            body_required=False,
            errors={"422": "An option names an element, gateway or flow the diagram does not have (details.fields)"},
        ),
        ("GET", "/api/v1/schedule/options"): Op(
            answer=schemas.ScheduleOptionsSchema,
            errors={"404": "No such therapy (therapy_id), or not visible to the caller"},
            query=(
                ("therapy_id", _string(), "plan for this therapy (its process and parties)"),
                ("process_key", _string(), "or for a planned therapy of this process"),
                ("site", _string(), "its treatment centre"),
                ("apheresis", _string(), "its apheresis site (default: the treatment centre)"),
                ("manufacturing", _string(), "its manufacturing site"),
                ("from", _string(format="date-time"), "chains starting after (default: now)"),
                ("limit", {"type": "integer", "minimum": 1, "maximum": 20}, "how many chains (default 5)"),
            ),
        ),
        ("PATCH", "/api/v1/reason-codes/{kind}/{code}"): Op(
            answer=schemas.ReasonCodeItemSchema, body=reason_codes.ReasonCodeChangeSchema
        ),
        ("GET", "/api/v1/reason-codes"): Op(
            answer=schemas.ReasonCodePageSchema,
            query=(("kind", {"type": "string", "enum": list(REASON_KINDS)}, "cancel, hold, reschedule or reassign"),),
        ),
        ("POST", "/api/v1/reason-codes"): Op(
            "201",
            schemas.ReasonCodeItemSchema,
            schemas.ReasonCodeSchema,
            errors={"409": "The kind has this code already"},
        ),
        ("GET", "/api/v1/therapies/{therapy_id}"): Op(answer=schemas.TherapyDetailSchema),
        ("POST", "/api/v1/therapies/{therapy_id}/cancel"): Op(answer=schemas.TherapySchema, body=schemas.CancelSchema),
        ("GET", "/api/v1/therapies/{therapy_id}/timeline"): Op(answer=schemas.TimelineSchema),
        ("POST", "/api/v1/therapies/{therapy_id}/custody"): Op(
            "201", schemas.HandoffSchema, custody.CustodyTransferSchema
        ),
        ("GET", "/api/v1/therapies/{therapy_id}/custody"): Op(answer=schemas.CustodyChainSchema),
        ("POST", "/api/v1/therapies/{therapy_id}/shipments"): Op(
            "201",
            shipments.ShipmentSchema,
            shipments.ShipmentCreateSchema,
            errors={"409": "The therapy has ended, or the carrier's tracking number is a shipment of it already"},
        ),
        ("GET", "/api/v1/therapies/{therapy_id}/shipments"): Op(answer=shipments.ShipmentListSchema),
        ("GET", "/api/v1/shipments/{shipment_id}"): Op(answer=shipments.ShipmentDetailSchema),
        ("POST", "/api/v1/shipments/{shipment_id}/positions"): Op(
            "201",
            shipments.PositionRecordedSchema,
            shipments.PositionSchema,
            errors={"409": "The shipment is delivered or lost"},
        ),
        ("POST", "/api/v1/shipments/{shipment_id}/readings"): Op(
            "201",
            shipments.ShipmentReadingsResultSchema,
            shipments.ShipmentReadingsSchema,
            errors={"409": "The shipment is delivered or lost"},
        ),
        ("PATCH", "/api/v1/shipments/{shipment_id}"): Op(
            answer=shipments.ShipmentSchema,
            body=shipments.ShipmentChangeSchema,
            errors={"409": "The shipment is delivered or lost"},
        ),
        ("POST", "/api/v1/therapies/{therapy_id}/conditions"): Op("201", schemas.ConditionResultSchema, readings),
        ("GET", "/api/v1/therapies/{therapy_id}/conditions"): Op(
            answer=schemas.ConditionSeriesSchema,
            query=(
                ("from", _string(format="date-time"), "readings at or after"),
                ("to", _string(format="date-time"), "readings before"),
                (
                    "points",
                    {"type": "integer", "minimum": 1, "maximum": conditions.MAX_POINTS},
                    "time buckets for a chart instead of readings",
                ),
                ("limit", {"type": "integer", "minimum": 1, "maximum": conditions.MAX_LIMIT}, "page size"),
                ("cursor", _string(), "next_cursor of the last page"),
            ),
        ),
        ("POST", "/api/v1/therapies/{therapy_id}/corrections"): Op(
            "201", schemas.CorrectionRecordSchema, corrections.CorrectionSchema
        ),
        ("GET", "/api/v1/therapies/{therapy_id}/corrections"): Op(answer=schemas.CorrectionPageSchema),
        ("GET", "/api/v1/therapies/{therapy_id}/labels/{material_id}.pdf"): Op(answer=PDF),
        ("GET", "/api/v1/therapies/{therapy_id}/record.json"): Op(answer=schemas.TherapyRecordSchema),
        ("GET", "/api/v1/therapies/{therapy_id}/record.pdf"): Op(answer=PDF),
        ("GET", "/api/v1/metrics"): Op(
            answer={
                "application/json": {"schema": {"$ref": "#/components/schemas/Metrics"}},
                "text/csv": {"schema": {"type": "string"}},
            },
            query=(
                ("from", _string(format="date-time"), "therapies started at or after"),
                ("to", _string(format="date-time"), "therapies started before"),
                (
                    "group_by",
                    {"type": "string", "enum": ["site", "process", "month"]},
                    "site (default), process or month",
                ),
                ("format", {"type": "string", "enum": ["json", "csv"]}, "json (default) or csv"),
            ),
        ),
        ("GET", "/api/v1/tasks"): Op(
            answer=schemas.TaskPageSchema,
            query=(("therapy_id", _string(), "one therapy's tasks"), ("role", _string(), "one role's"), *PAGING),
        ),
        ("GET", "/api/v1/tasks/{task_id}"): Op(answer=schemas.TaskSchema),
        ("POST", "/api/v1/tasks/{task_id}/complete"): Op(
            answer=schemas.TaskCompletedSchema,
            body=schemas.CompleteTaskSchema,
            errors={
                "401": "No or bad token, or a wrong signature password (signature_failed, audited)",
                "409": "The task is no longer ready (completed by someone else, or cancelled)",
            },
        ),
        ("POST", "/api/v1/messages"): Op(
            answer=schemas.MessageResultSchema,
            body=schemas.MessageSchema,
            also={
                "201": ("The message started a new therapy", schemas.MessageResultSchema),
                "202": (
                    "The therapy is on hold: the message is kept and taken when it resumes",
                    schemas.MessageResultSchema,
                ),
            },
            errors={
                "404": "No such therapy (by id or COI), or not visible to the caller",
                "409": "The therapy waits for no message of that name (audited)",
                "422": "The payload fails the JSON Schema the diagram declares for the message (invalid_payload, "
                "audited; details.errors has one error per field), or the request is invalid",
            },
        ),
        ("GET", "/api/v1/alerts"): Op(
            answer=schemas.AlertPageSchema,
            query=(
                status("alerts"),
                ("therapy_id", _string(), "one therapy's alerts"),
                ("kind", _string(), "one kind (escalation, notification, coi_mismatch, excursion, ...)"),
                ("severity", _string(enum=list(SEVERITIES)), "one severity"),
                (
                    "for_me",
                    {"type": "string", "enum": ["true", "false"]},
                    "true: only those for one of the caller's roles (or for no role in particular)",
                ),
                ("older_than", _string(enum=list(OLDER_THAN)), "raised at least 1 hour, 24 hours or 7 days ago"),
                *PAGING,
            ),
        ),
        ("GET", "/api/v1/alerts/{alert_id}"): Op(answer=schemas.AlertSchema),
        ("POST", "/api/v1/alerts/{alert_id}/acknowledge"): Op(
            answer=schemas.AlertSchema,
            body=alerts.AcknowledgeSchema,
            body_required=False,
            errors={
                "409": "The alert was acknowledged already",
                "422": "A high or critical alert without a note (note_required), or the request is invalid",
            },
        ),
        ("POST", "/api/v1/alerts/acknowledge"): Op(
            answer=alerts.AlertListSchema,
            body=alerts.AcknowledgeManySchema,
            errors={
                "404": "An alert named is unknown or not visible to the caller (nothing acknowledged)",
                "409": "Some were acknowledged already: details.alert_ids names them (nothing acknowledged)",
                "422": "Any of them high or critical without a note (note_required), or the request is invalid",
            },
        ),
        ("GET", "/api/v1/incidents"): Op(
            answer=schemas.IncidentPageSchema,
            query=(status("incidents"), ("therapy_id", _string(), "one therapy's incidents"), *PAGING),
        ),
        ("GET", "/api/v1/incidents/{incident_id}"): Op(answer=schemas.IncidentSchema),
        ("POST", "/api/v1/incidents/{incident_id}/retry"): Op(
            answer=schemas.IncidentOutcomeSchema,
            errors={"409": "The incident is resolved, or its step cannot run again"},
        ),
        ("POST", "/api/v1/incidents/{incident_id}/resolve"): Op(
            answer=schemas.IncidentOutcomeSchema,
            body=incidents.ResolveSchema,
            errors={"409": "The incident is already resolved"},
        ),
        ("GET", "/api/v1/audit"): Op(
            answer=schemas.AuditPageSchema,
            query=(
                ("therapy_id", _string(), "one therapy's entries"),
                ("after_seq", INTEGER, "entries after this seq"),
                *PAGING,
            ),
        ),
        ("GET", "/api/v1/audit/verify"): Op(answer=schemas.AuditVerifySchema),
        ("POST", "/api/v1/webhooks"): Op("201", schemas.WebhookCreatedSchema, schemas.WebhookCreateSchema),
        ("GET", "/api/v1/webhooks"): Op(answer=schemas.WebhookPageSchema, query=PAGING),
        ("GET", "/api/v1/webhooks/{webhook_id}"): Op(answer=schemas.WebhookSchema),
        ("DELETE", "/api/v1/webhooks/{webhook_id}"): Op("204"),
        ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): Op(
            answer=schemas.DeliveryPageSchema,
            query=(status("deliveries"), ("therapy_id", _string(), "one therapy's deliveries"), *PAGING),
        ),
        ("POST", "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): Op(
            "202", schemas.DeliverySchema, errors={"409": "The delivery is being sent right now"}
        ),
        ("GET", "/api/v1/tokens"): Op(
            answer=schemas.TokenPageSchema,
            query=(status("tokens"), ("user_id", ID, "administrators: one user's tokens"), *PAGING),
        ),
        ("POST", "/api/v1/tokens"): Op("201", schemas.TokenCreatedSchema, tokens.NewTokenSchema, body_required=False),
        ("POST", "/api/v1/tokens/{token_id}/revoke"): Op(
            answer=schemas.TokenRevokedSchema, body=tokens.RevokeSchema, body_required=False
        ),
        ("POST", "/api/v1/tokens/{token_id}/expire"): Op(
            answer=schemas.TokenExpiredSchema, body=tokens.ExpireSchema, body_required=False
        ),
        ("GET", "/api/v1/users"): Op(
            answer=schemas.UserPageSchema,
            query=(("active", _string(enum=["true", "false"]), "only active (or deactivated) accounts"), *PAGING),
        ),
        ("POST", "/api/v1/users"): Op(
            "201", schemas.UserSchema, admin.NewUserSchema, errors={"409": "The username is taken"}
        ),
        ("GET", "/api/v1/users/me"): Op(answer=schemas.UserSchema),
        ("GET", "/api/v1/users/{user_id}"): Op(answer=schemas.UserSchema),
        ("PATCH", "/api/v1/users/{user_id}"): Op(
            answer=schemas.UserChangedSchema,
            body=admin.UserChangeSchema,
            errors={"409": "Administrators cannot lock themselves out"},
        ),
        ("POST", "/api/v1/users/{user_id}/password"): Op(answer=schemas.UserSchema, body=admin.PasswordSchema),
        ("POST", "/api/v1/users/{user_id}/unlock"): Op(
            answer=schemas.UserUnlockedSchema, body=admin.ReasonSchema, body_required=False
        ),
    }


PUBLIC = {"/api/v1/health", "/api/v1/openapi.json", "/api/v1/auth/token"}
ERROR = {"$ref": "#/components/schemas/Error"}


WRITES = {"POST", "PATCH", "PUT", "DELETE"}
# Answered by the HTTP server (gunicorn) before the request reaches the API, so as a plain HTML page.
URI_TOO_LONG = {
    "description": "The request line (the URL with its query string) is longer than the HTTP server reads (4094 bytes)",
    "content": {"text/html": {"schema": {"type": "string"}}},
}
# Answers every operation may give besides its own; which apply depends on the route (see ``_common_errors``).
COMMON = {
    "400": "Malformed: the body is not JSON, or a query parameter or header is not what it must be",
    "401": "No token, or an unknown, expired or revoked one",
    "403": "The caller lacks the role (or the site), or is read-only",
    "404": "No such resource (or not visible to the caller)",
    "409": CONFLICT,
    "413": "The request body is too large",
    "415": "The body is not of the media type this operation takes",
    "422": "Well-formed but invalid; details name the field (a query parameter with a NUL character, an "
    "integer outside 64 bits, NaN, a lone surrogate, a value the schema refuses)",
}


def _is_schema(thing: Any) -> bool:
    return isinstance(thing, type) and issubclass(thing, Schema)


def _name(schema) -> str:
    """A schema's component name: its class name without ``Schema``."""
    return schema.__name__.removesuffix("Schema")


def _ref(schema) -> dict:
    """A reference to a schema's component."""
    return {"$ref": f"#/components/schemas/{_name(schema)}"}


def _content(thing: Any) -> dict:
    """The ``content`` of a body: JSON with a schema component, or a ready ``content`` mapping."""
    return {"application/json": {"schema": _ref(thing)}} if _is_schema(thing) else thing


def _error(description: str) -> dict:
    """An error answer with the Error body."""
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _common_errors(method: str, op: Op, has_params: bool, secured: bool, roles) -> list[str]:
    """The common error statuses that apply to one operation."""
    statuses = ["400", "422"]
    if secured:
        statuses.append("401")
    if secured and (roles or method in WRITES):
        statuses.append("403")
    if has_params:
        statuses.append("404")
    if secured and method in WRITES:
        statuses.append("409")
    if op.body is not None:
        statuses += ["413", "415"]
    return statuses


def _responses(method: str, op: Op, has_params: bool, secured: bool, roles) -> dict:
    """The documented answers of one operation: success, the errors that apply, and its particular ones."""
    success: dict = {"description": {"201": "Created", "202": "Accepted", "204": "No content"}.get(op.ok, "OK")}
    if op.answer is not None:
        success["content"] = _content(op.answer)
    out = {op.ok: success}
    for status, (description, schema) in op.also.items():
        out[status] = {"description": description, "content": _content(schema)}
    for status in _common_errors(method, op, has_params, secured, roles):
        out[status] = _error(COMMON[status])
    for status, description in op.errors.items():
        out[status] = _error(description)
    out["414"] = URI_TOO_LONG
    return dict(sorted(out.items()))


def _path_parameter(rule, name: str) -> dict:
    """A path parameter: an integer for ``<int:...>`` segments, else one path segment of text."""
    converter = rule._converters.get(name)
    if converter is not None and converter.regex == r"\d+":
        schema = dict(ID)
    else:
        schema = {"type": "string", "minLength": 1}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def build_document(app: Flask) -> dict:
    """Every /api/v1 route with its summary, parameters, request body and responses."""
    spec = APISpec(
        title="Tether API",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Orchestration of cell and gene therapy supply chains."},
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema(
        "Error",
        {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "object"},
                    },
                }
            },
        },
    )
    declared = _operations()
    documented: set[type[Schema]] = set()
    for op in declared.values():
        documented |= {thing for thing in (op.answer, op.body) if _is_schema(thing)}
        documented |= {schema for _description, schema in op.also.values() if _is_schema(schema)}
    from server.api.conditions import ReadingBatchSchema, ReadingSchema

    documented |= {ReadingSchema, ReadingBatchSchema}  # the oneOf of the conditions body refers to them
    documented |= {schemas.MetricsSchema}  # the metrics' JSON answer (beside its CSV)
    for schema in sorted(documented, key=_name):
        if _name(schema) not in spec.components.schemas:  # a nested schema may have registered it already
            spec.components.schema(_name(schema), schema=schema)
    paths: dict[str, dict] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        view = app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op = declared.get((method, path), Op())
            doc = (view.__doc__ or "").strip().splitlines()
            roles = getattr(view, "required_roles", None)
            secured = path not in PUBLIC
            parameters = [_path_parameter(rule, name) for name in sorted(rule.arguments)]
            parameters += [
                {"name": name, "in": "query", "required": False, "schema": schema, "description": description}
                for name, schema, description in op.query
            ]
            if path == "/api/v1/events":
                parameters.append(
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": INTEGER,
                        "description": "resume after this event id",
                    }
                )
            if method == "POST" and secured and _honours_idempotency_key(view):
                parameters.append(
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                        "description": "a repeat with the same key returns the first answer",
                    }
                )
            operation: dict = {
                "summary": doc[0] if doc else rule.endpoint,
                "operationId": rule.endpoint,
                "parameters": parameters,
                "responses": _responses(method, op, bool(rule.arguments), secured, roles),
            }
            if secured:
                operation["security"] = [{"bearer": []}]
                if roles:
                    operation["description"] = "Roles: " + ", ".join(roles)
            if op.body is not None:
                operation["requestBody"] = {"required": op.body_required, "content": _content(op.body)}
            paths.setdefault(path, {})[method.lower()] = operation
    for path, operations in sorted(paths.items()):
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _honours_idempotency_key(view) -> bool:
    """Whether ``view`` is wrapped by ``@idempotent`` (every wrapper it makes shares one code object)."""
    from server.api.idempotency import idempotent

    marker = idempotent(lambda: None).__code__
    while view is not None:
        if getattr(view, "__code__", None) is marker:
            return True
        view = getattr(view, "__wrapped__", None)
    return False
