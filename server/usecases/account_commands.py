"""Administering who may do what: sites, users (roles, sites, active flag, lock, password) and API tokens.

Sites and users are an administrator's (or the operator's at the console, ``console.OPERATOR``). Tokens are
everyone's own: a caller issues, revokes and expires their own, an administrator anyone's. A refused change
is the API's error: 409 when it clashes with what exists, 422 when the input breaks a rule of accounts
(``server.access.accounts``); the reason's own words stay on the error's cause for the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from flask import current_app

from server.access import accounts
from server.access.auth import check_roles
from server.errors import ApiError, Conflict, Invalid, NotFound
from server.store.extensions import db
from server.store.models import ApiToken, Site, User

from .checks import audits_refusals

ADMIN = ("admin",)


@dataclass(frozen=True)
class AddSite:
    """``by`` registers a site with a short unique ``code`` (SITE-A, MFG-1), its ``name`` and ``kind``."""

    ROLES: ClassVar[tuple[str, ...]] = ADMIN

    code: str
    name: str
    kind: str
    by: User


@dataclass(frozen=True)
class AddUser:
    """``by`` creates the user ``username`` with ``roles``, ``sites`` (site codes, for site staff), the printed
    ``display_name`` of their signatures and a ``password`` (none for a system account)."""

    ROLES: ClassVar[tuple[str, ...]] = ADMIN

    username: str
    roles: tuple[str, ...]
    sites: tuple[str, ...]
    display_name: str
    password: str | None
    by: User


@dataclass(frozen=True)
class ChangeUser:
    """``by`` changes any of a user's printed name, roles, sites (codes) and active flag, for ``reason``."""

    ROLES: ClassVar[tuple[str, ...]] = ADMIN

    user_id: int
    by: User
    display_name: str | None = None
    roles: tuple[str, ...] | None = None
    sites: tuple[str, ...] | None = None
    active: bool | None = None
    reason: str | None = None


@dataclass(frozen=True)
class UnlockUser:
    """``by`` unlocks an account locked after failed signatures, for ``reason``."""

    ROLES: ClassVar[tuple[str, ...]] = ADMIN

    user_id: int
    by: User
    reason: str | None = None


@dataclass(frozen=True)
class ResetPassword:
    """``by`` gives a user a new ``password``."""

    ROLES: ClassVar[tuple[str, ...]] = ADMIN

    user_id: int
    password: str
    by: User


@dataclass(frozen=True)
class IssueToken:
    """``by`` issues an API token labelled ``label``, living ``ttl_days`` (the server's default when None), for
    themselves or, an administrator, for the user ``user_id``."""

    ROLES: ClassVar[tuple[str, ...]] = ()  # anyone signed in, for themselves

    by: User
    label: str = "api"
    ttl_days: int | None = None
    user_id: int | None = None


@dataclass(frozen=True)
class RevokeToken:
    """``by`` revokes the token ``token_id`` at once, for ``reason``."""

    ROLES: ClassVar[tuple[str, ...]] = ()  # anyone signed in, their own tokens

    token_id: int
    by: User
    reason: str | None = None


@dataclass(frozen=True)
class ExpireToken:
    """``by`` brings the expiry of the token ``token_id`` forward to ``at`` (now when None), for ``reason``."""

    ROLES: ClassVar[tuple[str, ...]] = ()  # anyone signed in, their own tokens

    token_id: int
    by: User
    at: datetime | None = None
    reason: str | None = None


def account_error(exc: accounts.AccountError) -> ApiError:
    """The API error for a refused account change: 409 when it clashes with what exists, else 422."""
    details = {"field": exc.field} if exc.field else {}
    if exc.conflict:
        return Conflict(str(exc).capitalize() + ".", code="account_conflict", details=details)
    return Invalid(str(exc).capitalize() + ".", code=exc.code or "invalid_account_change", details=details)


def existing_user(user_id: int) -> User:
    """The user with this id; 404 otherwise."""
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.", details={"user_id": user_id})
    return user


def is_admin(user: User) -> bool:
    """Whether ``user`` administers accounts (and so manages everyone's tokens)."""
    return "admin" in user.roles


def visible_token(user: User, token_id: int) -> ApiToken:
    """A token ``user`` may manage (their own, any for an administrator); 404 otherwise."""
    record = db.session.get(ApiToken, token_id)
    if record is None or (record.user_id != user.id and not is_admin(user)):
        raise NotFound("No such token.", details={"token_id": token_id})
    return record


@audits_refusals
def add_site(command: AddSite) -> Site:
    """Register the site (audited); 422 for a malformed code, an unknown kind or a code taken."""
    check_roles(command.by, command.ROLES)
    try:
        return accounts.add_site(command.code, command.name, command.kind, command.by.username)
    except accounts.AccountError as exc:
        raise account_error(exc) from exc


@audits_refusals
def add_user(command: AddUser) -> User:
    """Create the user (audited); 409 for a name taken, 422 for unknown roles or sites or a weak password."""
    check_roles(command.by, command.ROLES)
    try:
        return accounts.add_user(
            command.username,
            list(command.roles),
            list(command.sites),
            command.display_name,
            command.password,
            command.by.username,
        )
    except accounts.AccountError as exc:
        raise account_error(exc) from exc


@audits_refusals
def change_user(command: ChangeUser) -> tuple[User, list[str]]:
    """Change the user (one audit entry per change, old and new value); returns the user and the audit actions
    written. 409 ``self_lockout`` when administrators would deactivate themselves or drop their own admin role."""
    check_roles(command.by, command.ROLES)
    user = existing_user(command.user_id)
    if user.id == command.by.id and (
        command.active is False or (command.roles is not None and "admin" not in command.roles)
    ):
        raise Conflict("Administrators cannot deactivate themselves or drop their own admin role.", code="self_lockout")
    try:
        changed = accounts.update_user(
            user,
            command.by.username,
            display_name=command.display_name,
            roles=list(command.roles) if command.roles is not None else None,
            site_codes=list(command.sites) if command.sites is not None else None,
            active=command.active,
            reason=command.reason,
        )
    except accounts.AccountError as exc:
        raise account_error(exc) from exc
    return user, changed


@audits_refusals
def unlock_user(command: UnlockUser) -> tuple[User, bool]:
    """Unlock the account (audited); returns the user and whether it was locked."""
    check_roles(command.by, command.ROLES)
    user = existing_user(command.user_id)
    return user, accounts.unlock_user(user, command.by.username, command.reason)


@audits_refusals
def reset_password(command: ResetPassword) -> User:
    """Set the password (audited without it; the user's web sessions end); 422 when it breaks the policy."""
    check_roles(command.by, command.ROLES)
    user = existing_user(command.user_id)
    try:
        accounts.set_password(user, command.password, command.by.username)
    except accounts.AccountError as exc:
        raise account_error(exc) from exc
    return user


@audits_refusals
def issue_token(command: IssueToken) -> tuple[str, ApiToken]:
    """Issue the token (audited); returns its secret, shown once, and its record.

    Only an administrator may issue one for someone else: for anyone else another user does not exist (422
    ``unknown_user``, as for an id no user has). 422 for a life longer than the server allows
    (``TOKEN_TTL_DAYS``) or a deactivated owner.
    """
    check_roles(command.by, command.ROLES)
    owner = command.by
    if command.user_id is not None and command.user_id != command.by.id:
        other = db.session.get(User, command.user_id) if is_admin(command.by) else None
        if other is None:
            raise Invalid("No such user.", code="unknown_user", details={"field": "user_id"})
        owner = other
    limit = current_app.config["TOKEN_TTL_DAYS"]
    if command.ttl_days is not None and limit and command.ttl_days > limit:
        raise Invalid(
            f"A token lives at most {limit} days.",
            code="invalid_request",
            details={"fields": {"ttl_days": f"at most {limit}"}},
        )
    try:
        return accounts.issue_token_for(owner, command.label, command.by.username, command.ttl_days)
    except accounts.AccountError as exc:
        raise account_error(exc) from exc


@audits_refusals
def revoke_token(command: RevokeToken) -> tuple[ApiToken, bool]:
    """Revoke the token (audited); returns it and whether it was not revoked yet."""
    check_roles(command.by, command.ROLES)
    record = visible_token(command.by, command.token_id)
    return record, accounts.revoke_token(record, command.by.username, command.reason)


@audits_refusals
def expire_token(command: ExpireToken) -> tuple[ApiToken, bool]:
    """Bring the token's expiry forward (audited; never extends it); returns it and whether its expiry changed.
    409 ``account_conflict`` for a revoked token."""
    check_roles(command.by, command.ROLES)
    record = visible_token(command.by, command.token_id)
    try:
        return record, accounts.expire_token(record, command.by.username, command.at, command.reason)
    except accounts.AccountError as exc:
        raise account_error(exc) from exc
