"""User administration (admin): users, their roles and sites, deactivation, unlocking, passwords.

There is no way to delete a user: an account is deactivated instead, so user ids and the names in the audit
trail are never reused. Every change is audited with the old and the new value.
"""

from __future__ import annotations

from flask import g, request
from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy import select

from server.access import accounts
from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import load_json
from server.clock import iso
from server.store.extensions import db
from server.store.models import User

from ..errors import ApiError, BadRequest, Conflict, Invalid, NotFound
from . import bp
from .paging import page


class NewUserSchema(Schema):
    """POST /users."""

    class Meta:
        unknown = RAISE

    username = fields.String(required=True, validate=validate.Length(min=2, max=64))
    display_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    roles = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    sites = fields.List(fields.String(), load_default=list)
    password = fields.String(required=True, load_only=True)


class UserChangeSchema(Schema):
    """PATCH /users/{id}: any of the printed name, roles, sites and active flag, with an optional reason."""

    class Meta:
        unknown = RAISE

    display_name = fields.String(validate=validate.Length(min=1, max=200))
    roles = fields.List(fields.String(), validate=validate.Length(min=1))
    sites = fields.List(fields.String())
    active = fields.Boolean()
    reason = fields.String(validate=validate.Length(max=2000))


class ReasonSchema(Schema):
    """A body carrying only an optional reason."""

    class Meta:
        unknown = RAISE

    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class PasswordSchema(Schema):
    """POST /users/{id}/password."""

    class Meta:
        unknown = RAISE

    password = fields.String(required=True, load_only=True)


def user_view(user: User) -> dict:
    """A user as administrators see it (never the password hash)."""
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "roles": list(user.roles),
        "sites": user.site_codes,
        "active": user.active,
        "locked": user.locked,
        "failed_signatures": user.failed_signatures,
        "created_at": iso(user.created_at),
    }


def account_error(exc: accounts.AccountError) -> ApiError:
    """The API error for a refused account change: 409 when it clashes with what exists, else 422."""
    details = {"field": exc.field} if exc.field else {}
    if exc.conflict:
        return Conflict(str(exc).capitalize() + ".", code="account_conflict", details=details)
    return Invalid(str(exc).capitalize() + ".", code=exc.code or "invalid_account_change", details=details)


def _user(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.", details={"user_id": user_id})
    return user


@bp.get("/users")
@require("admin")
def list_users():
    """Every user, oldest first; ``active=true|false`` filters."""
    query = select(User).order_by(User.id)
    active = request.args.get("active")
    if active is not None:
        if active not in ("true", "false"):
            raise BadRequest("active must be true or false.", code="invalid_filter")
        query = query.where(User.active.is_(active == "true"))
    return page(query, user_view)


@bp.post("/users")
@require("admin")
@idempotent
def create_user():
    """Create a user with roles, sites (for site staff) and a password that meets the policy."""
    body = load_json(NewUserSchema())
    try:
        user = accounts.add_user(
            body["username"],
            body["roles"],
            body["sites"],
            body["display_name"],
            body["password"],
            actor=g.user.username,
        )
    except accounts.AccountError as exc:
        raise account_error(exc) from None
    return user_view(user), 201


@bp.get("/users/me")
@require()
def current_user():
    """The caller's own account."""
    return user_view(g.user)


@bp.get("/users/<int:user_id>")
@require()
def get_user(user_id: int):
    """One user: administrators see anyone, everyone else only themselves."""
    if "admin" not in g.user.roles and g.user.id != user_id:
        raise NotFound("No such user.", details={"user_id": user_id})
    return user_view(_user(user_id))


@bp.patch("/users/<int:user_id>")
@require("admin")
def change_user(user_id: int):
    """Change a user's printed name, roles, sites or active flag (audited with old and new values)."""
    user = _user(user_id)
    body = load_json(UserChangeSchema())
    if user.id == g.user.id and (body.get("active") is False or ("roles" in body and "admin" not in body["roles"])):
        raise Conflict("Administrators cannot deactivate themselves or drop their own admin role.", code="self_lockout")
    try:
        changed = accounts.update_user(
            user,
            g.user.username,
            display_name=body.get("display_name"),
            roles=body.get("roles"),
            site_codes=body.get("sites"),
            active=body.get("active"),
            reason=body.get("reason"),
        )
    except accounts.AccountError as exc:
        raise account_error(exc) from None
    return {**user_view(user), "changes": changed}, 200


@bp.post("/users/<int:user_id>/unlock")
@require("admin")
@idempotent
def unlock_user(user_id: int):
    """Unlock an account locked after failed signatures (audited)."""
    user = _user(user_id)
    body = load_json(ReasonSchema())
    unlocked = accounts.unlock_user(user, g.user.username, body["reason"])
    return {**user_view(user), "unlocked": unlocked}, 200


@bp.post("/users/<int:user_id>/password")
@require("admin")
def reset_password(user_id: int):
    """Set a new password for a user (it must meet the policy; audited without the password)."""
    user = _user(user_id)
    body = load_json(PasswordSchema())
    try:
        accounts.set_password(user, body["password"], g.user.username)
    except accounts.AccountError as exc:
        raise account_error(exc) from None
    return user_view(user), 200
