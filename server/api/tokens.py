"""Logging in for a token (the one endpoint that needs no token)."""

from __future__ import annotations

from sqlalchemy import select

from .. import audit
from ..auth import create_token, verify_password
from ..errors import Unauthorized
from ..extensions import db
from ..models import User
from ..schemas import TokenRequestSchema, load_json
from ..uow import unit_of_work
from . import bp
from .views import iso


@bp.post("/auth/token")
def login_for_token():
    """Exchange a username and password for an API token."""
    body = load_json(TokenRequestSchema())
    user = db.session.execute(select(User).where(User.username == body["username"])).scalar_one_or_none()
    ok = user is not None and user.active and not user.locked and verify_password(user, body["password"])
    with unit_of_work():
        audit.append(body["username"], "login.succeeded" if ok else "login.failed", "user",
                     str(user.id) if user else body["username"], data={"channel": "api"})
        if ok:
            token, record = create_token(user, body["label"])
    if not ok:
        raise Unauthorized("The username or password is wrong, or the account is locked.", code="login_failed")
    return {"token": token, "expires_at": iso(record.expires_at), "user": user.username}, 201
