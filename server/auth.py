"""Who is calling: password hashing, bearer tokens, the current user, role and site checks."""

from __future__ import annotations

import functools
import hashlib
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, g, request
from sqlalchemy import select

from .errors import Forbidden, Invalid, Unauthorized
from .extensions import db
from .models import ApiToken, User, utcnow

_hasher = PasswordHasher()
MIN_PASSWORD_LENGTH = 10


def hash_password(password: str) -> str:
    """Hash a password with Argon2id, refusing one that fails the minimum policy."""
    check_password_policy(password)
    return _hasher.hash(password)


def check_password_policy(password: str) -> None:
    """At least 10 characters, with letters and at least one digit or symbol."""
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise Invalid(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.", code="weak_password",
                      details={"field": "password"})
    if password.isalpha() or password.isdigit():
        raise Invalid("A password needs letters and at least one digit or symbol.", code="weak_password",
                      details={"field": "password"})


def verify_password(user: User, password: str) -> bool:
    """Whether ``password`` is the user's password (constant time)."""
    if not user.password_hash or not password:
        return False
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def token_digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(user: User, label: str = "", ttl_days: int | None = None) -> tuple[str, ApiToken]:
    """A new bearer token for ``user``; the plain token is returned once and never stored."""
    token = "tth_" + secrets.token_urlsafe(32)
    days = ttl_days if ttl_days is not None else current_app.config["TOKEN_TTL_DAYS"]
    record = ApiToken(user_id=user.id, token_hash=token_digest(token), label=label,
                      expires_at=utcnow() + timedelta(days=days) if days else None)
    db.session.add(record)
    return token, record


def user_for_token(token: str) -> User | None:
    """The active user a valid, unexpired, unrevoked token belongs to."""
    record = db.session.execute(
        select(ApiToken).where(ApiToken.token_hash == token_digest(token))).scalar_one_or_none()
    if record is None or record.revoked_at is not None:
        return None
    if record.expires_at is not None and record.expires_at <= utcnow():
        return None
    user = record.user
    return user if user.active else None


def authenticate() -> User:
    """The caller of this request, from its bearer token; 401 otherwise."""
    if getattr(g, "user", None) is not None:
        return g.user
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send an API token as 'Authorization: Bearer <token>' (create one with "
                           "'tether token create USER').", code="unauthorized")
    user = user_for_token(token.strip())
    if user is None:
        raise Unauthorized("The API token is unknown, expired or revoked.", code="unauthorized")
    g.user = user
    return user


def require(*roles: str):
    """Decorator: the caller must be authenticated and hold one of ``roles`` (any role when empty)."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            user = authenticate()
            if roles and not any(r in user.roles for r in roles):
                raise Forbidden(f"This needs one of the roles: {', '.join(roles)}.", code="forbidden",
                                details={"required_roles": list(roles)})
            return view(*args, **kwargs)

        wrapper.required_roles = roles  # type: ignore[attr-defined]
        return wrapper

    return decorate


def visible_site_ids(user: User) -> set[int] | None:
    """The site ids a scoped user may see, or None when the user sees every site."""
    return {s.id for s in user.sites} if user.scoped else None


def can_see_site(user: User, site_id: int) -> bool:
    """Whether ``user`` may see therapies of ``site_id``."""
    sites = visible_site_ids(user)
    return sites is None or site_id in sites
