"""Request schemas (marshmallow): what each POST accepts, with one clear message per bad field."""

from __future__ import annotations

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from .errors import BadRequest, Invalid


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
    version = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1))
    site = fields.String(required=True, validate=validate.Length(min=1, max=32))
    patient = fields.Nested(PatientSchema, required=True)
    data = fields.Dict(keys=fields.String(), load_default=dict)


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
    """POST /messages: by therapy id or by COI."""

    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    therapy_id = fields.String(load_default=None, allow_none=True)
    coi = fields.String(load_default=None, allow_none=True)
    payload = fields.Raw(load_default=dict)


class CancelSchema(Schema):
    """POST /therapies/{id}/cancel."""

    class Meta:
        unknown = EXCLUDE

    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class TokenRequestSchema(Schema):
    """POST /auth/token."""

    class Meta:
        unknown = RAISE

    username = fields.String(required=True)
    password = fields.String(required=True, load_only=True)
    label = fields.String(load_default="api")


def load_json(schema: Schema) -> dict:
    """Parse the request's JSON body with ``schema``; 400/415 for a bad body, 422 per field."""
    from flask import request

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
        raise Invalid("The request is not valid; see the fields.", code="invalid_request",
                      details={"fields": exc.messages}) from None
