"""Sites, users and tokens: created and changed with an audit entry each (who granted what to whom).

Users are never deleted, only deactivated, and their ids are never reused. Role, site, name and status
changes are audited with the old and the new value; token creation, expiry and revocation are audited.
A new password, a lock or a deactivation ends the user's web sessions (``server.access.web_sessions``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select

from server.access import web_sessions
from server.access.auth import create_token, hash_password
from server.errors import ApiError
from server.store import audit
from server.store.extensions import db
from server.store.models import ROLES, SITE_KINDS, UNSCOPED_ROLES, ApiToken, Site, User, utcnow
from server.store.uow import unit_of_work

READ_ONLY_ROLE = "auditor"

_CODE = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,31}$")
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


class AccountError(Exception):
    """A site, user or token request that cannot be carried out, with the reason.

    ``field`` names the offending input; ``conflict`` is set when the request clashes with what exists.
    """

    def __init__(self, message: str, *, field: str | None = None, conflict: bool = False, code: str | None = None):
        super().__init__(message)
        self.field = field
        self.conflict = conflict
        self.code = code


def add_site(code: str, name: str, kind: str, actor: str) -> Site:
    """Register a site with a short unique code."""
    code = code.strip().upper()
    if not _CODE.match(code):
        raise AccountError(f"site code '{code}' must be up to 32 letters, digits and dashes (e.g. SITE-A, MFG-1)")
    if kind not in SITE_KINDS:
        raise AccountError(f"site kind must be one of {', '.join(SITE_KINDS)}")
    if db.session.execute(select(Site).where(Site.code == code)).scalar_one_or_none():
        raise AccountError(f"site {code} already exists")
    with unit_of_work():
        site = Site(code=code, name=name, kind=kind)
        db.session.add(site)
        db.session.flush()
        audit.append(actor, "site.created", "site", str(site.id), data={"code": code, "name": name, "kind": kind})
    return site


def add_user(
    username: str, roles: list[str], site_codes: list[str], display_name: str, password: str | None, actor: str
) -> User:
    """Create a user with roles and sites; the password (optional for system accounts) must meet the policy."""
    if not _USERNAME.match(username or ""):
        raise AccountError(
            f"user name '{username}' must be 2-64 lower-case letters, digits, dots, dashes", field="username"
        )
    _check_roles(roles, site_codes)
    sites = _sites(site_codes)
    if not (display_name or "").strip() or len(display_name) > 200:
        raise AccountError(
            "the display name (the printed name on signatures) needs 1-200 characters", field="display_name"
        )
    if db.session.execute(select(User).where(User.username == username)).scalar_one_or_none():
        raise AccountError(f"user {username} already exists", field="username", conflict=True)
    try:
        password_hash = hash_password(password) if password else None
    except ApiError as exc:
        raise AccountError(exc.message, field="password", code=exc.code) from None
    with unit_of_work():
        user = User(
            username=username,
            display_name=display_name,
            roles=sorted(set(roles)),
            sites=sites,
            password_hash=password_hash,
        )
        db.session.add(user)
        db.session.flush()
        audit.append(
            actor,
            "user.created",
            "user",
            str(user.id),
            data={
                "username": username,
                "display_name": display_name,
                "roles": user.roles,
                "sites": [s.code for s in sites],
            },
        )
    return user


def _check_roles(roles: list[str], site_codes: list[str]) -> None:
    """Roles must be known; unscoped roles take no sites; the read-only auditor takes no other role."""
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise AccountError(
            f"unknown role(s) {', '.join(unknown) or '(none given)'}; use {', '.join(ROLES)}", field="roles"
        )
    if site_codes and any(r in UNSCOPED_ROLES for r in roles):
        raise AccountError(f"roles {', '.join(UNSCOPED_ROLES)} are never site-scoped; drop --site", field="sites")
    if READ_ONLY_ROLE in roles and len(set(roles)) > 1:
        raise AccountError("auditor is read-only and cannot be combined with other roles", field="roles")


def _sites(site_codes: list[str]) -> list[Site]:
    """The registered sites with these codes; an unknown code is an error."""
    sites = []
    for code in site_codes:
        site = db.session.execute(select(Site).where(Site.code == code.upper())).scalar_one_or_none()
        if site is None:
            raise AccountError(f"site {code} does not exist; add it first with 'tether site add {code}'", field="sites")
        if site not in sites:
            sites.append(site)
    return sites


def find_user(username: str) -> User:
    """The user with this name; AccountError when there is none."""
    user = db.session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        raise AccountError(f"user {username} does not exist", field="username")
    return user


def update_user(
    user: User,
    actor: str,
    *,
    display_name: str | None = None,
    roles: list[str] | None = None,
    site_codes: list[str] | None = None,
    active: bool | None = None,
    reason: str | None = None,
) -> list[str]:
    """Change a user's printed name, roles, sites or active flag; one audit entry per change, old and new.

    Returns the audit actions written (empty when nothing changed). Deactivating is how an account is
    retired: users are never deleted, so their ids and their names in the audit trail stay unique.
    """
    new_roles = sorted(set(roles)) if roles is not None else list(user.roles)
    new_codes = sorted({c.upper() for c in site_codes}) if site_codes is not None else user.site_codes
    _check_roles(new_roles, new_codes)
    new_sites = _sites(new_codes) if site_codes is not None else []  # read only when the sites change
    if display_name is not None and (not display_name.strip() or len(display_name) > 200):
        raise AccountError(
            "the display name (the printed name on signatures) needs 1-200 characters", field="display_name"
        )
    # (audit action, field, old value, new value); the values are the field's JSON: a text, a list, a flag.
    changes: list[tuple[str, str, Any, Any]] = []
    if display_name is not None and display_name != user.display_name:
        changes.append(("user.renamed", "display_name", user.display_name, display_name))
    if roles is not None and new_roles != sorted(user.roles):
        changes.append(("user.roles_changed", "roles", sorted(user.roles), new_roles))
    if site_codes is not None and new_codes != user.site_codes:
        changes.append(("user.sites_changed", "sites", user.site_codes, new_codes))
    if active is not None and active != user.active:
        changes.append(("user.reactivated" if active else "user.deactivated", "active", user.active, active))
    if not changes:
        return []
    with unit_of_work():
        for action, field, old, new in changes:
            data = {"username": user.username, "field": field, "old": old, "new": new}
            if field == "active" and not new:  # a deactivated account's web sessions end at once
                data["sessions_ended"] = web_sessions.end_user_sessions(user.id, web_sessions.ACCOUNT_DEACTIVATED)
            if field == "display_name":
                user.display_name = new
            elif field == "roles":
                user.roles = new
            elif field == "sites":
                user.sites = new_sites
            else:
                user.active = new
            audit.append(actor, action, "user", str(user.id), reason=reason, data=data)
    return [action for action, *_ in changes]


def unlock_user(user: User, actor: str, reason: str | None = None) -> bool:
    """Unlock an account locked after failed signatures and reset its count; False when it was not locked."""
    if not user.locked and not user.failed_signatures:
        return False
    with unit_of_work():
        old = {"locked": user.locked, "failed_signatures": user.failed_signatures}
        user.locked, user.failed_signatures = False, 0
        audit.append(
            actor,
            "user.unlocked",
            "user",
            str(user.id),
            reason=reason,
            data={"username": user.username, "old": old, "new": {"locked": False, "failed_signatures": 0}},
        )
    return True


def set_password(user: User, password: str, actor: str) -> None:
    """Give ``user`` a new password that meets the policy (audited, never the password itself).

    Every open web session of the user ends with it: a session started with the old password (or a copy of
    its cookie) opens nothing any more.
    """
    try:
        password_hash = hash_password(password)
    except ApiError as exc:
        raise AccountError(exc.message, field="password", code=exc.code) from None
    with unit_of_work():
        ended = web_sessions.end_user_sessions(user.id, web_sessions.PASSWORD_CHANGED)
        user.password_hash = password_hash
        audit.append(
            actor,
            "user.password_changed",
            "user",
            str(user.id),
            data={"username": user.username, "sessions_ended": ended},
        )


def issue_token(username: str, label: str, actor: str, ttl_days: int | None = None) -> str:
    """Create an API token for ``username`` and return it (shown once)."""
    return issue_token_for(find_user(username), label, actor, ttl_days)[0]


def issue_token_for(user: User, label: str, actor: str, ttl_days: int | None = None) -> tuple[str, ApiToken]:
    """Create an API token for ``user``; the plain token is returned once, with its record."""
    if not user.active:
        raise AccountError(f"user {user.username} is deactivated", field="user")
    with unit_of_work():
        value, record = create_token(user, label, ttl_days)
        db.session.flush()
        audit.append(
            actor,
            "token.created",
            "user",
            str(user.id),
            data={
                "token_id": record.id,
                "label": label,
                "username": user.username,
                "expires_at": record.expires_at.isoformat() if record.expires_at else None,
            },
        )
    return value, record


def token_status(record: ApiToken, now: datetime | None = None) -> str:
    """``active``, ``expired`` or ``revoked``."""
    now = now or utcnow()
    if record.revoked_at is not None:
        return "revoked"
    if record.expires_at is not None and record.expires_at <= now:
        return "expired"
    return "active"


def revoke_token(record: ApiToken, actor: str, reason: str | None = None) -> bool:
    """Revoke a token at once; False when it was already revoked."""
    if record.revoked_at is not None:
        return False
    with unit_of_work():
        record.revoked_at = utcnow()
        audit.append(
            actor,
            "token.revoked",
            "user",
            str(record.user_id),
            reason=reason,
            data={"token_id": record.id, "label": record.label, "username": record.user.username},
        )
    return True


def expire_token(record: ApiToken, actor: str, at: datetime | None = None, reason: str | None = None) -> bool:
    """Bring a token's expiry forward to ``at`` (default now); a token's life is never extended."""
    at = at or utcnow()
    if record.revoked_at is not None:
        raise AccountError("the token is revoked already", field="token", conflict=True)
    if record.expires_at is not None and record.expires_at <= at:
        return False
    with unit_of_work():
        old = record.expires_at
        record.expires_at = at
        audit.append(
            actor,
            "token.expired",
            "user",
            str(record.user_id),
            reason=reason,
            data={
                "token_id": record.id,
                "label": record.label,
                "username": record.user.username,
                "old": old.isoformat() if old else None,
                "new": at.isoformat(),
            },
        )
    return True
