"""The web pages for site staff, designers, coordinators and auditors (server-rendered, served at ``/``).

The pages use a session cookie and CSRF tokens; the JSON API under ``/api/v1`` stays token-based and
is not touched by either. An action builds the same command the API builds and calls its handler
(``server.usecases``), so a page and an integration meet the same rules; reads use the same site scoping.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Flask, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/assets")
csrf = CSRFProtect()


class WebSessionInterface(SecureCookieSessionInterface):
    """Signed cookie sessions whose cookie is marked Secure whenever the page was served over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure when configured so, or when this request came over https."""
        configured = bool(app.config.get("SESSION_COOKIE_SECURE"))
        return configured or (has_request_context() and request.is_secure)


def init_app(app: Flask) -> None:
    """Register the web pages, their session cookie settings and CSRF protection (for the pages only)."""
    # Flask sets its own default (31 days), so the configured lifetime is assigned, not defaulted; the cookie
    # then expires with the server-side session (``server.access.web_sessions``), which is what is enforced.
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=float(app.config["SESSION_HOURS"]))
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # checked by the web blueprint only, never on /api/v1
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the token lives as long as the session
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    app.session_interface = WebSessionInterface()
    csrf.init_app(app)
    app.register_blueprint(bp)
    from .errors import unknown_url

    app.register_error_handler(404, unknown_url)  # a URL no route knows: a page for browsers, JSON for the API


@bp.before_request
def _check_csrf() -> None:
    """Every state-changing request to a page must carry the session's CSRF token."""
    csrf.protect()


from . import (  # noqa: E402,F401  (the routes register themselves on the blueprint)
    booking_pages,
    capacity_pages,
    dashboard,
    designer,
    document_pages,
    errors,
    lifecycle_pages,
    login,
    metrics_pages,
    migration_pages,
    oversight,
    studio,
    task_pages,
    therapy_pages,
    vendor,
)
