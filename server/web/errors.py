"""Error pages and the header every page shares (who is logged in, their roles and sites, the menu)."""

from __future__ import annotations

from flask import jsonify, render_template, request
from flask_limiter import RateLimitExceeded
from flask_wtf.csrf import CSRFError, generate_csrf
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from server.oversight.alerts import SEVERITIES, open_counts

from ..errors import ApiError, error_body
from . import bp, network, present
from .session import AUDIT_READERS, DESIGNERS, PLANNERS, has_role, session_user
from .vendor import viewer_installed

present.register(bp)
network.register(bp)

TITLES = {
    400: "Bad request",
    401: "Please log in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Changed meanwhile",
    413: "Too large",
    422: "Not valid",
    429: "Too many attempts",
}


def menu(user) -> list[tuple[str, str]]:
    """The menu entries (endpoint, label) for ``user``'s roles."""
    if user is None:
        return []
    items = [("web.inbox", "Tasks"), ("web.dashboard", "Control tower"), ("web.alerts", "Alerts")]
    if has_role(user, *DESIGNERS, "auditor", "coordinator", "qa"):
        items.append(("web.definitions", "Processes"))
    if has_role(user, *DESIGNERS):
        items.append(("web.studio", "Studio"))
    if has_role(user, *AUDIT_READERS):
        items.append(("web.audit", "Audit trail"))
    if has_role(user, *PLANNERS):
        items.append(("web.capacity", "Capacity"))
    if has_role(user, "coordinator", "planner", "qa", "auditor", "admin"):
        items.append(("web.metrics_page", "Metrics"))
    return items


@bp.app_context_processor
def _page_context() -> dict:
    """What the shared header needs on every page of the web blueprint."""
    if request.blueprint != "web":
        return {}
    user = session_user()
    return {
        "viewer": user,
        "menu": menu(user),
        "csrf_token": generate_csrf,
        "diagram_viewer": viewer_installed(),
        "alert_counts": _alert_counts(user),
    }


def _alert_counts(user) -> list[tuple[str, int]]:
    """The open alerts meant for ``user``, by severity from critical down (one grouped query); none when nobody
    is logged in or the database cannot answer (an error page must still render)."""
    if user is None:
        return []
    try:
        counts = open_counts(user)
    except SQLAlchemyError:
        return []
    return [(severity, counts[severity]) for severity in reversed(SEVERITIES) if counts.get(severity)]


def error_page(status: int, message: str):
    """An error as a page (the API's JSON errors stay JSON)."""
    return render_template(
        "web/error.html", status=status, title=TITLES.get(status, "Something went wrong"), message=message
    ), status


@bp.errorhandler(CSRFError)
def _csrf_failed(exc: CSRFError):
    return error_page(
        400,
        "The form had expired or did not come from this site. Go back, reload the page and "
        "try again; nothing was changed.",
    )


@bp.errorhandler(RateLimitExceeded)
def _too_many_logins(exc: RateLimitExceeded):
    response = render_template(
        "web/login.html",
        next_url=None,
        username="",
        error="Too many login attempts from this address; wait a minute and try again.",
    )
    return response, 429


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return error_page(exc.status, exc.message)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    messages = {
        403: "Your roles do not give access to this page.",
        404: "There is no such page, or it is not visible to you.",
        413: "The upload is too large.",
    }
    return error_page(exc.code or 500, messages.get(exc.code or 0, exc.description or exc.name))


def unknown_url(exc: HTTPException):
    """A URL that no route knows (or a 404 outside the pages): the error page for a browser, the API's JSON error
    for the API and for clients that do not ask for HTML."""
    wants_page = not request.path.startswith("/api/") and request.accept_mimetypes.accept_html
    if wants_page and request.accept_mimetypes["text/html"] >= request.accept_mimetypes["application/json"]:
        return error_page(404, "There is no such page. Check the address, or start from the control tower.")
    return jsonify(error_body("not_found", "No such resource; check the URL.")), 404
