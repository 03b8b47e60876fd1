"""The OpenAPI 3 document, built from the registered routes and the marshmallow request schemas."""

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
}
PUBLIC = {"/api/v1/health", "/api/v1/openapi.json", "/api/v1/auth/token"}
ERROR = {"$ref": "#/components/schemas/Error"}


def build_document(app: Flask) -> dict:
    """Every /api/v1 route with its summary, parameters, request body and error responses."""
    spec = APISpec(title="Tether API", version="1.0.0", openapi_version="3.0.3", plugins=[MarshmallowPlugin()],
                   info={"description": "Orchestration of cell and gene therapy supply chains."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "details": {"type": "object"}}}}})
    for schema in set(REQUEST_SCHEMAS.values()):
        spec.components.schema(schema.__name__.removesuffix("Schema"), schema=schema)
    paths: dict[str, dict] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        view = app.view_functions[rule.endpoint]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            doc = (view.__doc__ or "").strip().splitlines()
            operation: dict = {
                "summary": doc[0] if doc else rule.endpoint, "operationId": rule.endpoint,
                "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                               for name in rule.arguments],
                "responses": {"200": {"description": "OK"}, "400": {"description": "Bad request", "content": {
                    "application/json": {"schema": ERROR}}}},
            }
            roles = getattr(view, "required_roles", None)
            if path not in PUBLIC:
                operation["security"] = [{"bearer": []}]
                operation["responses"]["401"] = {"description": "No or bad token",
                                                 "content": {"application/json": {"schema": ERROR}}}
                if roles:
                    operation["description"] = "Roles: " + ", ".join(roles)
            schema = REQUEST_SCHEMAS.get((method, path))
            if schema is not None:
                operation["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{schema.__name__.removesuffix('Schema')}"}}}}
                operation["responses"]["422"] = {"description": "Invalid", "content": {
                    "application/json": {"schema": ERROR}}}
            paths.setdefault(path, {})[method.lower()] = operation
    for path, operations in sorted(paths.items()):
        spec.path(path=path, operations=operations)
    return spec.to_dict()
