"""API tokens: logging in for one (the one endpoint that needs no token), listing, creating, expiring, revoking.

Everyone manages their own tokens; administrators manage anyone's. Secrets are shown once, at creation, and
never listed: only their SHA-256 is stored.
"""

from __future__ import annotations

from flask import g, request
from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy import select

from server.access import accounts
from server.access.auth import check_login, require
from server.api.idempotency import idempotent
from server.api.schemas import TokenRequestSchema, in_utc_years, load_json
from server.clock import iso
from server.store.models import ApiToken, User, utcnow
from server.usecases import handle
from server.usecases.account_commands import ExpireToken, IssueToken, RevokeToken, is_admin

from ..errors import BadRequest, Invalid
from ..inputs import ID_MAX
from ..ratelimit import login_limited
from . import bp
from .filters import whole_number
from .paging import page

TOKEN_STATUSES = ("active", "expired", "revoked")


class NewTokenSchema(Schema):
    """POST /tokens: a label, an optional lifetime in days, and (administrators only) another user's id."""

    class Meta:
        unknown = RAISE

    label = fields.String(load_default="api", validate=validate.Length(min=1, max=100))
    ttl_days = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1, max=36500))
    user_id = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0, max=ID_MAX))


class ExpireSchema(Schema):
    """POST /tokens/{id}/expire: when (default now) and why."""

    class Meta:
        unknown = RAISE

    at = fields.AwareDateTime(load_default=None, allow_none=True, validate=in_utc_years)
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class RevokeSchema(Schema):
    """POST /tokens/{id}/revoke."""

    class Meta:
        unknown = RAISE

    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


def token_view(record: ApiToken) -> dict:
    """A token without its secret."""
    return {
        "id": record.id,
        "user_id": record.user_id,
        "username": record.user.username,
        "label": record.label,
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
        "revoked_at": iso(record.revoked_at),
        "status": accounts.token_status(record),
    }


@bp.post("/auth/token")
@login_limited
def login_for_token():
    """Exchange a username and password for an API token (every attempt audited; rate limited)."""
    body = load_json(TokenRequestSchema())
    if len(body["label"]) > 100:
        raise Invalid(
            "The label has at most 100 characters.",
            code="invalid_request",
            details={"fields": {"label": "at most 100 characters"}},
        )
    user = check_login(body["username"], body["password"], channel="api")
    token, record = accounts.issue_token_for(user, body["label"], actor=user.username)
    return {"token": token, "expires_at": iso(record.expires_at), "user": user.username, "id": record.id}, 201


@bp.get("/tokens")
@require()
def list_tokens():
    """The caller's tokens (administrators: everyone's, ``user_id=`` to narrow), newest first."""
    query = select(ApiToken).join(User).order_by(ApiToken.id.desc())
    if not is_admin(g.user):
        query = query.where(ApiToken.user_id == g.user.id)
    elif (user_id := whole_number("user_id", 0, ID_MAX)) is not None:
        query = query.where(ApiToken.user_id == user_id)
    status = request.args.get("status")
    if status:
        if status not in TOKEN_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(TOKEN_STATUSES)}.", code="invalid_filter")
        now = utcnow()
        if status == "revoked":
            query = query.where(ApiToken.revoked_at.is_not(None))
        elif status == "expired":
            query = query.where(ApiToken.revoked_at.is_(None), ApiToken.expires_at <= now)
        else:
            query = query.where(
                ApiToken.revoked_at.is_(None), (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now)
            )
    return page(query, token_view)


@bp.post("/tokens")
@require(*IssueToken.ROLES)
def create_token():
    """A new token for the caller (or, for an administrator, for ``user_id``); the secret is shown once.

    ``Idempotency-Key`` is not honoured here on purpose: replaying the answer would mean storing the secret.
    """
    body = load_json(NewTokenSchema())
    token, record = handle(IssueToken(g.user, label=body["label"], ttl_days=body["ttl_days"], user_id=body["user_id"]))
    return {**token_view(record), "token": token}, 201


@bp.post("/tokens/<int:token_id>/revoke")
@require(*RevokeToken.ROLES)
@idempotent
def revoke_token(token_id: int):
    """Revoke a token at once (audited)."""
    body = load_json(RevokeSchema())
    record, revoked = handle(RevokeToken(token_id, g.user, reason=body["reason"]))
    return {**token_view(record), "revoked_now": revoked}, 200


@bp.post("/tokens/<int:token_id>/expire")
@require(*ExpireToken.ROLES)
@idempotent
def expire_token(token_id: int):
    """Bring a token's expiry forward, to now unless ``at`` is given (audited; never extends a token)."""
    body = load_json(ExpireSchema())
    record, changed = handle(ExpireToken(token_id, g.user, at=body["at"], reason=body["reason"]))
    return {**token_view(record), "expired_now": changed}, 200
