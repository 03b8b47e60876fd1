"""Sites, users and tokens: created and changed with an audit entry each (who granted what to whom)."""

from __future__ import annotations

import re

from sqlalchemy import select

from . import audit
from .auth import create_token, hash_password
from .errors import ApiError
from .extensions import db
from .models import ROLES, SITE_KINDS, UNSCOPED_ROLES, Site, User
from .uow import unit_of_work

_CODE = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,31}$")
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


class AccountError(Exception):
    """A site, user or token request that cannot be carried out, with the reason."""


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


def add_user(username: str, roles: list[str], site_codes: list[str], display_name: str, password: str | None,
             actor: str) -> User:
    """Create a user with roles and sites; the password (optional for system accounts) must meet the policy."""
    if not _USERNAME.match(username):
        raise AccountError(f"user name '{username}' must be 2-64 lower-case letters, digits, dots, dashes")
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise AccountError(f"unknown role(s) {', '.join(unknown) or '(none given)'}; use {', '.join(ROLES)}")
    if site_codes and any(r in UNSCOPED_ROLES for r in roles):
        raise AccountError(f"roles {', '.join(UNSCOPED_ROLES)} are never site-scoped; drop --site")
    sites = []
    for code in site_codes:
        site = db.session.execute(select(Site).where(Site.code == code.upper())).scalar_one_or_none()
        if site is None:
            raise AccountError(f"site {code} does not exist; add it first with 'tether site add {code}'")
        sites.append(site)
    if db.session.execute(select(User).where(User.username == username)).scalar_one_or_none():
        raise AccountError(f"user {username} already exists")
    try:
        password_hash = hash_password(password) if password else None
    except ApiError as exc:
        raise AccountError(exc.message) from None
    with unit_of_work():
        user = User(username=username, display_name=display_name, roles=sorted(set(roles)), sites=sites,
                    password_hash=password_hash)
        db.session.add(user)
        db.session.flush()
        audit.append(actor, "user.created", "user", str(user.id), data={
            "username": username, "display_name": display_name, "roles": user.roles,
            "sites": [s.code for s in sites]})
    return user


def issue_token(username: str, label: str, actor: str) -> str:
    """Create an API token for ``username`` and return it (shown once)."""
    user = db.session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    if user is None:
        raise AccountError(f"user {username} does not exist")
    with unit_of_work():
        value, record = create_token(user, label)
        db.session.flush()
        audit.append(actor, "token.created", "user", str(user.id), data={"token_id": record.id, "label": label})
    return value
