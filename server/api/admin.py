"""User administration (admin): users, their roles and sites, deactivation, unlocking, passwords.

There is no way to delete a user: an account is deactivated instead, so user ids and the names in the audit
trail are never reused. Every change is audited with the old and the new value.
"""

from __future__ import annotations

from flask import g, request
from marshmallow import RAISE, Schema, fields, validate
from sqlalchemy import select

from server.access.auth import require
from server.api.idempotency import idempotent
from server.api.schemas import load_json
from server.clock import iso
from server.store.models import User
from server.usecases import handle
from server.usecases.account_commands import (
    AddUser,
    ChangeUser,
    ResetPassword,
    UnlockUser,
    existing_user,
    is_admin,
)

from ..errors import BadRequest, NotFound
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
@require(*AddUser.ROLES)
@idempotent
def create_user():
    """Create a user with roles, sites (for site staff) and a password that meets the policy."""
    body = load_json(NewUserSchema())
    user = handle(
        AddUser(
            body["username"],
            tuple(body["roles"]),
            tuple(body["sites"]),
            body["display_name"],
            body["password"],
            by=g.user,
        )
    )
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
    if not is_admin(g.user) and g.user.id != user_id:
        raise NotFound("No such user.", details={"user_id": user_id})
    return user_view(existing_user(user_id))


@bp.patch("/users/<int:user_id>")
@require(*ChangeUser.ROLES)
def change_user(user_id: int):
    """Change a user's printed name, roles, sites or active flag (audited with old and new values)."""
    body = load_json(UserChangeSchema())
    user, changed = handle(
        ChangeUser(
            user_id,
            by=g.user,
            display_name=body.get("display_name"),
            roles=tuple(body["roles"]) if "roles" in body else None,
            sites=tuple(body["sites"]) if "sites" in body else None,
            active=body.get("active"),
            reason=body.get("reason"),
        )
    )
    return {**user_view(user), "changes": changed}, 200


@bp.post("/users/<int:user_id>/unlock")
@require(*UnlockUser.ROLES)
@idempotent
def unlock_user(user_id: int):
    """Unlock an account locked after failed signatures (audited)."""
    body = load_json(ReasonSchema())
    user, unlocked = handle(UnlockUser(user_id, by=g.user, reason=body["reason"]))
    return {**user_view(user), "unlocked": unlocked}, 200


@bp.post("/users/<int:user_id>/password")
@require(*ResetPassword.ROLES)
def reset_password(user_id: int):
    """Set a new password for a user (it must meet the policy; audited without the password)."""
    body = load_json(PasswordSchema())
    return user_view(handle(ResetPassword(user_id, body["password"], by=g.user))), 200
