"""Who is calling: password hashing, logins, bearer tokens, the current user, role and site checks.

Access rules that hold for every endpoint live here: a locked or deactivated account cannot log in or use
its tokens, ``auditor`` is read-only (any state-changing request is refused), and a refused state-changing
request (403 or 409) is written to the audit trail unless the endpoint already recorded it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import secrets
from collections.abc import Collection, Iterable
from datetime import timedelta
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app, g, has_request_context, request
from sqlalchemy import bindparam, select
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state, set_committed_value
from sqlalchemy.orm.instrumentation import manager_of_class

from server.errors import ApiError, Forbidden, Invalid, Unauthorized
from server.store import audit, freshness
from server.store.extensions import db
from server.store.models import PATIENT_PARTIES, ApiToken, Site, TaskRecord, Therapy, User, table_of, user_sites, utcnow

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 10
READ_ONLY_ROLES = ("auditor",)
# Roles that see every therapy's patient reference (the others: only at the sites that meet the patient).
NEED_TO_KNOW_ROLES = ("admin", "auditor")
# The fields that hold a patient reference wherever they appear in data (process data, events, the record).
PATIENT_FIELDS = ("patient", "patient_reference")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_dummy_hash: dict[tuple[int, int], str] = {}
_hashers: dict[tuple[int, int], PasswordHasher] = {}


def _cost() -> tuple[int, int]:
    """The Argon2id cost in force: (time cost, memory in KiB), from the app's settings."""
    config = current_app.config
    return int(config["PASSWORD_HASH_TIME_COST"]), int(config["PASSWORD_HASH_MEMORY_KIB"])


def _hasher() -> PasswordHasher:
    """The Argon2id hasher at the configured cost (verification reads the cost from each stored hash)."""
    cost = _cost()
    if cost not in _hashers:
        _hashers[cost] = PasswordHasher(time_cost=cost[0], memory_cost=cost[1])
    return _hashers[cost]


def hash_password(password: str) -> str:
    """Hash a password with Argon2id, refusing one that fails the minimum policy."""
    check_password_policy(password)
    return _hasher().hash(password)


def check_password_policy(password: str) -> None:
    """At least 10 characters, with letters and at least one digit or symbol."""
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise Invalid(
            f"A password needs at least {MIN_PASSWORD_LENGTH} characters.",
            code="weak_password",
            details={"field": "password"},
        )
    if password.isalpha() or password.isdigit():
        raise Invalid(
            "A password needs letters and at least one digit or symbol.",
            code="weak_password",
            details={"field": "password"},
        )


def verify_password(user: User, password: str) -> bool:
    """Whether ``password`` is the user's password (constant time)."""
    if not user.password_hash or not password:
        return False
    try:
        return _hasher().verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _spend_equal_time(password: str) -> None:
    """Verify against a throwaway hash so an unknown user name takes as long as a wrong password."""
    cost = _cost()
    if cost not in _dummy_hash:
        _dummy_hash[cost] = _hasher().hash("not-a-real-password-0")
    try:
        _hasher().verify(_dummy_hash[cost], password or "-")
    except (VerificationError, InvalidHashError):
        pass


def check_login(username: str, password: str, channel: str) -> User:
    """The user who logs in with ``username`` and ``password``; every attempt, good or bad, is audited.

    A wrong password, an unknown user, a deactivated or a locked account all answer the same 401
    ``login_failed`` (the audit entry records which it was). ``channel`` says where the login came from
    (``api``, ``web``). The audit entry is committed in its own transaction.
    """
    from server.store.uow import unit_of_work

    name = (username or "").strip()
    user = None
    reason: str | None
    if 0 < len(name) <= 64:
        user = db.session.execute(select(User).where(User.username == name)).scalar_one_or_none()
    if user is None:
        _spend_equal_time(password)
        reason = "unknown_user"
    else:
        password_ok = verify_password(user, password)
        reason = (
            "inactive" if not user.active else "locked" if user.locked else None if password_ok else "wrong_password"
        )
    with unit_of_work():
        data = {"channel": channel, **({"reason": reason} if reason else {})}
        audit.append(
            name[:64] or "(none)",
            "login.failed" if reason else "login.succeeded",
            "user",
            str(user.id) if user is not None else name[:64] or "(none)",
            data=data,
        )
    if reason:
        raise Unauthorized(
            "The username or password is wrong, or the account is locked or deactivated.", code="login_failed"
        )
    assert user is not None, "an unknown user name always has a reason to refuse"
    return user


def check_account_usable(user: User) -> None:
    """401 for a deactivated or locked account (its tokens and sessions stop working too)."""
    if not user.active:
        raise Unauthorized("This account is deactivated.", code="account_deactivated")
    if user.locked:
        raise Unauthorized(
            "This account is locked after repeated failed signatures; ask an administrator to unlock it.",
            code="account_locked",
        )


def check_writable(user: User) -> None:
    """403 ``read_only`` when a read-only user (``auditor``) sends a state-changing request."""
    if request.method not in SAFE_METHODS and any(r in READ_ONLY_ROLES for r in user.roles):
        raise Forbidden(
            "Auditors have read-only access; nothing was changed.",
            code="read_only",
            details={"roles": list(user.roles)},
        )


def token_digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(user: User, label: str = "", ttl_days: int | None = None) -> tuple[str, ApiToken]:
    """A new bearer token for ``user``; the plain token is returned once and never stored."""
    token = "tth_" + secrets.token_urlsafe(32)
    days = ttl_days if ttl_days is not None else current_app.config["TOKEN_TTL_DAYS"]
    record = ApiToken(
        user_id=user.id,
        token_hash=token_digest(token),
        label=label,
        expires_at=utcnow() + timedelta(days=days) if days else None,
    )
    db.session.add(record)
    return token, record


def token_owner(token: str) -> User | None:
    """The user a valid, unexpired, unrevoked token belongs to, whatever the state of the account."""
    # The token, its user and the user's sites in one Core query (a row per site), no ORM loading: the user is put
    # into the session as read. On PostgreSQL also the webhook subscriptions' change count
    # (server.store.freshness): a completion there goes on in this transaction and can trust its cache with it.
    # On SQLite every write begins a transaction of its own, which could not use the count: it is not read.
    session = db.session()
    counted = session.get_bind().dialect.name == "postgresql"
    rows = session.connection().execute(_token_query(counted), {"digest": token_digest(token)}).all()
    if not rows:
        return None
    first = rows[0]._mapping
    if counted:
        freshness.remember(rows[0][-1])
    if first["revoked_at"] is not None:
        return None
    if first["expires_at"] is not None and first["expires_at"] <= utcnow():
        return None
    sites = [
        _as_read(session, Site, {key: row._mapping[f"site_{key}"] for key in _SITE_KEYS})
        for row in rows
        if row._mapping["site_id"] is not None
    ]
    return _as_read(session, User, {key: first[key] for key in _USER_KEYS}, sites)


# The columns the token's query reads of the user and of each site: all of them, as loading the objects would.
_USER_KEYS = tuple(column.key for column in table_of(User).columns)
_SITE_KEYS = tuple(column.key for column in table_of(Site).columns)


@functools.cache
def _token_query(counted: bool):
    """The token's query, built once per process (its compiled form is cached by the statement itself): the user's
    columns first, then the token's, then each site's (``site_<column>``), and on PostgreSQL the webhook
    subscriptions' change count last."""
    users, tokens, sites = table_of(User), table_of(ApiToken), table_of(Site)
    columns: list[Any] = [users.c[key] for key in _USER_KEYS] + [tokens.c.revoked_at, tokens.c.expires_at]
    columns += [sites.c[key].label(f"site_{key}") for key in _SITE_KEYS]
    return (
        select(*columns, *((freshness.webhook_changes(),) if counted else ()))
        .select_from(
            tokens.join(users, users.c.id == tokens.c.user_id)
            .outerjoin(user_sites, user_sites.c.user_id == users.c.id)
            .outerjoin(sites, sites.c.id == user_sites.c.site_id)
        )
        .where(tokens.c.token_hash == bindparam("digest"))
        .order_by(sites.c.id)
    )


M = TypeVar("M", User, Site)


def _as_read(session, model: type[M], values: dict[str, Any], sites: list[Site] | None = None) -> M:
    """The session's instance of ``model`` with ``values`` (its columns as just read), as a query would have given
    it: the one the session holds already (its expired columns filled in), else a new one, persistent, with nothing
    to write; a user's ``sites`` are set as loaded (unless the session's user has them already)."""
    key = session.identity_key(model, values["id"])
    found = session.identity_map.get(key)
    if found is None:
        found = manager_of_class(model).new_instance()  # instrumented, with nothing set
        found.__dict__.update(values)
        make_transient_to_detached(found)
        if sites is not None:
            set_committed_value(found, "sites", sites)
        session.add(found)
        return found
    state = instance_state(found)
    for name in state.expired_attributes & values.keys():
        set_committed_value(found, name, values[name])
    if sites is not None and "sites" in state.unloaded:
        set_committed_value(found, "sites", sites)
    return found


def user_for_token(token: str) -> User | None:
    """The active user a valid, unexpired, unrevoked token belongs to (locked accounts included)."""
    user = token_owner(token)
    return user if user is not None and user.active else None


def authenticate() -> User:
    """The caller of this request, from its bearer token; 401 otherwise."""
    if getattr(g, "user", None) is not None:
        check_writable(g.user)
        return g.user
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "Send an API token as 'Authorization: Bearer <token>' (create one with 'tether token create USER').",
            code="unauthorized",
        )
    user = token_owner(token.strip())
    if user is None:
        raise Unauthorized("The API token is unknown, expired or revoked.", code="unauthorized")
    check_account_usable(user)
    g.user = user
    check_writable(user)
    return user


def check_roles(user: User, roles: tuple[str, ...]) -> None:
    """403 unless ``user`` holds one of ``roles`` (no roles: anyone signed in)."""
    if roles and not any(r in user.roles for r in roles):
        raise Forbidden(
            f"This needs one of the roles: {', '.join(roles)}.",
            code="forbidden",
            details={"required_roles": list(roles)},
        )


def require(*roles: str):
    """Decorator: the caller must be authenticated and hold one of ``roles`` (any role when empty)."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            try:
                check_roles(authenticate(), roles)
                g.refusal_audited_on_answer = True  # by this wrapper, after the view (and its idempotency) ended
                return view(*args, **kwargs)
            except ApiError as exc:
                caller = getattr(g, "user", None)
                if caller is not None and exc.status in (403, 409) and request.method not in SAFE_METHODS:
                    audit_refused_request(caller, exc)
                raise

        wrapper.required_roles = roles  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _refused_subject() -> tuple[str, str, Therapy | None]:
    """What a refused request was about: a task, a therapy (from the URL or the body), else the endpoint."""
    args = request.view_args or {}
    if args.get("task_id"):
        task = db.session.get(TaskRecord, str(args["task_id"]))
        return "task", str(args["task_id"]), task.therapy if task else None
    therapy_id = args.get("therapy_id")
    body = request.get_json(silent=True) if request.is_json else None
    if not therapy_id and isinstance(body, dict):
        therapy_id = body.get("therapy_id") if isinstance(body.get("therapy_id"), str) else None
        if not therapy_id and isinstance(body.get("coi"), str):
            therapy_id = db.session.execute(
                select(Therapy.id).where(Therapy.coi == body["coi"].replace("&/", "").replace(" ", "")[:15])
            ).scalar_one_or_none()
    if therapy_id:
        return "therapy", str(therapy_id), db.session.get(Therapy, str(therapy_id))
    return "endpoint", request.endpoint or request.path, None


def refusal_audited_on_answer() -> bool:
    """Whether this request's refusal is audited as it is answered (an API endpoint's ``require`` does it)."""
    return has_request_context() and bool(g.get("refusal_audited_on_answer"))


def audit_refused_request(user: User, exc: ApiError) -> None:
    """Audit a refused (403/409) state-changing request unless its endpoint already did; never masks ``exc``."""
    if audit.refusal_recorded():
        return
    try:
        db.session.rollback()
        subject_type, subject_id, therapy = _refused_subject()
    except Exception:  # the database cannot be read right now: the refusal is recorded against its endpoint
        db.session.rollback()
        subject_type, subject_id, therapy = "endpoint", request.endpoint or request.path, None
    try:
        action = (
            "message.refused"
            if request.endpoint == "api.post_message"
            else (f"{subject_type}.refused" if subject_type in ("task", "therapy") else "request.refused")
        )
        # Written in its own transaction, retried, and kept in the audit spool when the database is busy.
        audit.audit_refusal(
            user.username,
            action,
            subject_type,
            subject_id,
            status=exc.status,
            code=exc.code,
            message=exc.message,
            therapy_id=therapy.id if therapy else None,
            site_id=therapy.site_id if therapy else None,
            data={"method": request.method, "path": request.path[:500], "endpoint": request.endpoint},
        )
    except Exception:  # the refusal stands even when it cannot be recorded; the log says why
        db.session.rollback()
        log.exception("could not audit a refused request")


def visible_site_ids(user: User) -> set[int] | None:
    """The site ids a scoped user may see, or None when the user sees every site."""
    return {s.id for s in user.sites} if user.scoped else None


def can_see_site(user: User, site_id: int | None) -> bool:
    """Whether ``user`` may see what belongs to ``site_id`` (a site-scoped user: one of their sites)."""
    sites = visible_site_ids(user)
    return sites is None or site_id in sites


def can_see_therapy(user: User, therapy: Therapy) -> bool:
    """Whether ``user`` may see ``therapy``: one of their sites takes part in it (any party), or they are not
    scoped to sites."""
    sites = visible_site_ids(user)
    return sites is None or not sites.isdisjoint(therapy.party_site_ids.values()) or therapy.site_id in sites


def patient_site_ids(therapy: Therapy) -> set[int]:
    """The sites that meet the therapy's patient (its treatment and apheresis parties): their users need to know
    the patient reference."""
    return {site_id for party, site_id in therapy.party_site_ids.items() if party in PATIENT_PARTIES}


def knows_patient(roles: Iterable[str], site_ids: Iterable[int], meeting: Collection[int]) -> bool:
    """Whether someone with ``roles`` at ``site_ids`` may know the patient of a therapy whose sites that meet the
    patient are ``meeting``: admin and auditor always, anyone else only as a user of one of those sites."""
    return any(role in NEED_TO_KNOW_ROLES for role in roles) or any(site_id in meeting for site_id in site_ids)


def sees_patient(user: User, therapy: Therapy) -> bool:
    """Whether ``user`` needs to know the therapy's patient reference: admin and auditor, and the users of the
    sites that meet the patient (the treatment and apheresis parties)."""
    return knows_patient(user.roles, (s.id for s in user.sites), patient_site_ids(therapy))


WITHHELD = "[withheld]"


def withhold_patient(value: Any, reference: str) -> Any:
    """``value`` (JSON-like data) as someone who may not know the patient ``reference`` may read it: a
    ``patient`` or ``patient_reference`` field, and any value that is the reference, become null, and a text
    that quotes it has it replaced by ``[withheld]``; everything else is unchanged (a copy, never the original)."""
    quoted = re.compile(rf"(?<![A-Za-z0-9]){re.escape(reference)}(?![A-Za-z0-9])") if reference else None

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            return {key: None if key in PATIENT_FIELDS else walk(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple):
            return [walk(inner) for inner in item]
        if isinstance(item, str) and quoted is not None:
            return None if item == reference else quoted.sub(WITHHELD, item)
        return item

    return walk(value)


def as_known_to(user: User, therapy: Therapy, value: Any) -> Any:
    """``value`` (data of ``therapy``) as ``user`` may read it: whole when they may know the patient
    (``sees_patient``), else with the patient reference withheld (``withhold_patient``)."""
    return value if sees_patient(user, therapy) else withhold_patient(value, therapy.patient_reference)
