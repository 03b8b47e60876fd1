"""The OpenAPI 3 document, built from the registered routes and the marshmallow request and response schemas.

Every ``/api/v1`` route is in it (the routes are read from the app, so a new endpoint appears by itself);
the tables below add what a route cannot tell: its request body, its answers and its query parameters.
"""

from __future__ import annotations

import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask

from . import schemas

REQUEST_SCHEMAS = {
    ("POST", "/api/v1/therapies"): schemas.StartTherapySchema,
    ("POST", "/api/v1/tasks/{task_id}/complete"): schemas.CompleteTaskSchema,
    ("POST", "/api/v1/messages"): schemas.MessageSchema,
    ("POST", "/api/v1/therapies/{therapy_id}/cancel"): schemas.CancelSchema,
    ("POST", "/api/v1/auth/token"): schemas.TokenRequestSchema,
    ("POST", "/api/v1/webhooks"): schemas.WebhookCreateSchema,
}

# (method, path) -> (success status, response schema); a status with None has no body.
RESPONSES = {
    ("GET", "/api/v1/health"): ("200", schemas.HealthSchema),
    ("POST", "/api/v1/auth/token"): ("201", schemas.LoginTokenSchema),
    ("POST", "/api/v1/process-definitions"): ("201", schemas.DefinitionVersionSchema),
    ("GET", "/api/v1/process-definitions"): ("200", schemas.DefinitionPageSchema),
    ("GET", "/api/v1/process-definitions/{key}"): ("200", schemas.DefinitionDetailSchema),
    ("POST", "/api/v1/therapies"): ("201", schemas.TherapySchema),
    ("GET", "/api/v1/therapies"): ("200", schemas.TherapyPageSchema),
    ("GET", "/api/v1/therapies/{therapy_id}"): ("200", schemas.TherapyDetailSchema),
    ("POST", "/api/v1/therapies/{therapy_id}/cancel"): ("200", schemas.TherapySchema),
    ("GET", "/api/v1/therapies/{therapy_id}/timeline"): ("200", schemas.TimelineSchema),
    ("GET", "/api/v1/tasks"): ("200", schemas.TaskPageSchema),
    ("GET", "/api/v1/tasks/{task_id}"): ("200", schemas.TaskSchema),
    ("POST", "/api/v1/tasks/{task_id}/complete"): ("200", schemas.TaskCompletedSchema),
    ("POST", "/api/v1/messages"): ("200", schemas.MessageResultSchema),
    ("GET", "/api/v1/audit"): ("200", schemas.AuditPageSchema),
    ("GET", "/api/v1/audit/verify"): ("200", schemas.AuditVerifySchema),
    ("POST", "/api/v1/webhooks"): ("201", schemas.WebhookCreatedSchema),
    ("GET", "/api/v1/webhooks"): ("200", schemas.WebhookPageSchema),
    ("GET", "/api/v1/webhooks/{webhook_id}"): ("200", schemas.WebhookSchema),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): ("204", None),
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): ("200", schemas.DeliveryPageSchema),
    ("POST", "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): ("202", schemas.DeliverySchema),
}
EXTRA_RESPONSES = {
    ("POST", "/api/v1/messages"): {"201": ("The message started a new therapy", schemas.MessageResultSchema),
                                   "409": ("The therapy waits for no message of that name (audited)", None)},
    ("POST", "/api/v1/tasks/{task_id}/complete"): {"409": ("The task is no longer ready", None)},
    ("GET", "/api/v1/health"): {"503": ("The database or the scheduler is down", schemas.HealthSchema)},
    ("POST", "/api/v1/process-definitions"): {
        "200": ("Identical content: the existing version", schemas.DefinitionVersionSchema),
        "415": ("Not multipart/form-data", None),
        "422": ("Not BPMN, not well-formed, unsafe or not executable; details name the element and line", None)},
    ("GET", "/api/v1/events"): {"429": ("Too many live streams are open on this server", None)},
}
UPLOAD = {"multipart/form-data": {"schema": {"type": "object", "required": ["bpmn"], "properties": {
    "bpmn": {"type": "string", "format": "binary", "description": "one BPMN 2.0 XML file"},
    "forms": {"type": "array", "items": {"type": "string", "format": "binary"},
              "description": "JSON Schema forms the diagram's user tasks reference"}}}}}
PAGING = [("limit", "integer", "page size, 1-500 (default 50)"), ("cursor", "string", "next_cursor of the last page")]
QUERY = {
    ("GET", "/api/v1/therapies"): [("status", "string", "active, completed, cancelled or failed"),
                                   ("site", "string", "site code"), ("process_key", "string", "process key"), *PAGING],
    ("GET", "/api/v1/tasks"): [("therapy_id", "string", "one therapy's tasks"), ("role", "string", "one role's"),
                               *PAGING],
    ("GET", "/api/v1/audit"): [("therapy_id", "string", "one therapy's entries"),
                               ("after_seq", "integer", "entries after this seq"), *PAGING],
    ("GET", "/api/v1/process-definitions"): PAGING,
    ("GET", "/api/v1/webhooks"): PAGING,
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): [("status", "string", "pending, delivered or failed"),
                                                          ("therapy_id", "string", "one therapy's deliveries"),
                                                          *PAGING],
    ("GET", "/api/v1/events"): [("types", "string", "comma-separated event types or patterns, e.g. therapy.*"),
                                ("last_event_id", "integer", "resume after this event id (as the Last-Event-ID "
                                                             "header does)")],
}
PUBLIC = {"/api/v1/health", "/api/v1/openapi.json", "/api/v1/auth/token"}
ERROR = {"$ref": "#/components/schemas/Error"}
SSE = {"text/event-stream": {"schema": {"type": "string", "description": (
    "Server-Sent Events: each message has 'id:' (the outbox id, for Last-Event-ID) and 'data:' (one "
    "CloudEvents 1.0 structured JSON event, as webhooks receive); ':' lines are heartbeats.")}}}


def _name(schema) -> str:
    """A schema's component name: its class name without ``Schema``."""
    return schema.__name__.removesuffix("Schema")


def _ref(schema) -> dict:
    """A reference to a schema's component."""
    return {"$ref": f"#/components/schemas/{_name(schema)}"}


def _error(description: str) -> dict:
    """An error answer with the Error body."""
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _responses(method: str, path: str, has_params: bool, secured: bool, roles) -> dict:
    """The documented answers of one operation: success, the usual errors, and any extra ones."""
    status, schema = RESPONSES.get((method, path), ("200", None))
    success: dict = {"description": {"201": "Created", "202": "Accepted", "204": "No content"}.get(status, "OK")}
    if schema is not None:
        success["content"] = {"application/json": {"schema": _ref(schema)}}
    elif path == "/api/v1/events":
        success["content"] = SSE
    out = {status: success, "400": _error("Bad request")}
    if secured:
        out["401"] = _error("No or bad token")
    if roles:
        out["403"] = _error("The caller lacks the role (or the site)")
    if has_params:
        out["404"] = _error("No such resource (or not visible to the caller)")
    if (method, path) in REQUEST_SCHEMAS:
        out["422"] = _error("Invalid; details name the field")
    for extra_status, (description, extra_schema) in EXTRA_RESPONSES.get((method, path), {}).items():
        if extra_schema is None:
            out[extra_status] = _error(description)
        else:
            out[extra_status] = {"description": description,
                                 "content": {"application/json": {"schema": _ref(extra_schema)}}}
    return out


def build_document(app: Flask) -> dict:
    """Every /api/v1 route with its summary, parameters, request body and responses."""
    spec = APISpec(title="Tether API", version="1.0.0", openapi_version="3.0.3", plugins=[MarshmallowPlugin()],
                   info={"description": "Orchestration of cell and gene therapy supply chains."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "details"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}}}}})
    documented = set(REQUEST_SCHEMAS.values()) | {s for _status, s in RESPONSES.values() if s is not None}
    for extras in EXTRA_RESPONSES.values():
        documented |= {s for _description, s in extras.values() if s is not None}
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
            doc = (view.__doc__ or "").strip().splitlines()
            roles = getattr(view, "required_roles", None)
            secured = path not in PUBLIC
            parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                          for name in sorted(rule.arguments)]
            parameters += [{"name": name, "in": "query", "required": False, "schema": {"type": kind},
                            "description": description} for name, kind, description in QUERY.get((method, path), [])]
            if path == "/api/v1/events":
                parameters.append({"name": "Last-Event-ID", "in": "header", "required": False,
                                   "schema": {"type": "integer"}, "description": "resume after this event id"})
            if method == "POST" and secured:
                parameters.append({"name": "Idempotency-Key", "in": "header", "required": False,
                                   "schema": {"type": "string", "maxLength": 200},
                                   "description": "a repeat with the same key returns the first answer"})
            operation: dict = {
                "summary": doc[0] if doc else rule.endpoint, "operationId": rule.endpoint,
                "parameters": parameters,
                "responses": _responses(method, path, bool(rule.arguments), secured, roles),
            }
            if secured:
                operation["security"] = [{"bearer": []}]
                if roles:
                    operation["description"] = "Roles: " + ", ".join(roles)
            schema = REQUEST_SCHEMAS.get((method, path))
            if schema is not None:
                operation["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": _ref(schema)}}}
            elif (method, path) == ("POST", "/api/v1/process-definitions"):
                operation["requestBody"] = {"required": True, "content": UPLOAD}
            paths.setdefault(path, {})[method.lower()] = operation
    for path, operations in sorted(paths.items()):
        spec.path(path=path, operations=operations)
    return spec.to_dict()
