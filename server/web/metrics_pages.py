"""The programme's metrics as a page: a filter, charts (Chart.js from node_modules) and the table they are drawn
from, with a CSV export; the same numbers as ``GET /api/v1/metrics`` (``usecases.metrics``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Response, render_template, request

from server.clock import clock
from server.errors import ApiError
from server.usecases.metrics import GROUPINGS, ReadMetrics, as_csv, read_metrics

from . import bp
from .session import login_required, page_user
from .therapy_pages import refusal
from .vendor import vendor_dir

GROUP_NAMES = {"site": "treatment site", "process": "process", "month": "month started"}


def _day(name: str) -> datetime | None:
    """The form's date ``name`` (YYYY-MM-DD) as midnight UTC, None when empty or not a date."""
    value = (request.args.get(name) or "").strip()
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC) if value else None
    except ValueError:
        return None


def _query() -> ReadMetrics:
    end = _day("to")
    return ReadMetrics(
        by=page_user(),
        start=_day("from"),
        end=end + timedelta(days=1) if end else None,  # the "to" day itself is included
        group_by=wanted if (wanted := request.args.get("group_by") or "site") in GROUPINGS else "site",
    )


@bp.get("/reports")
@login_required(*ReadMetrics.ROLES)
def metrics_page():
    """Vein-to-vein, on-time rate, excursions and escalations by site, process or month, as charts and a table."""
    query = _query()
    error, groups = None, []
    try:
        groups = read_metrics(query)
    except ApiError as exc:
        error = refusal(exc)
    return render_template(
        "web/metrics.html",
        groups=groups,
        error=error,
        group_by=query.group_by,
        groupings=[(g, GROUP_NAMES[g]) for g in GROUPINGS],
        start=request.args.get("from", ""),
        end=request.args.get("to", ""),
        today=clock()().date().isoformat(),
        charts=vendor_dir("chart.js") is not None,
    )


@bp.get("/reports.csv")
@login_required(*ReadMetrics.ROLES)
def metrics_csv():
    """The page's numbers as CSV, for a spreadsheet."""
    try:
        groups = read_metrics(_query())
    except ApiError as exc:
        return Response(refusal(exc), status=exc.status, mimetype="text/plain")
    response = Response(as_csv(groups), mimetype="text/csv")
    response.headers["Content-Disposition"] = 'attachment; filename="tether-metrics.csv"'
    return response
