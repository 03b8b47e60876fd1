"""The programme's metrics (vein-to-vein, on-time rate, excursions, escalations, COI mismatches), as JSON or CSV."""

from __future__ import annotations

from flask import Response, g, request

from server.access.auth import require
from server.errors import Invalid
from server.usecases.metrics import ReadMetrics, as_csv, read_metrics

from . import bp
from .filters import moment_arg


@bp.get("/metrics")
@require(*ReadMetrics.ROLES)
def metrics():
    """Therapies started, completed and cancelled, vein-to-vein p50/p90, on-time rate, excursions, escalations
    and COI mismatches, by ``group_by`` (site, process, month) over the therapies started from ``from`` to ``to``;
    ``format=csv`` for a spreadsheet."""
    wanted = request.args.get("format", "json")
    if wanted not in ("json", "csv"):
        raise Invalid("format is json or csv.", code="invalid_request", details={"field": "format"})
    groups = read_metrics(
        ReadMetrics(
            by=g.user,
            start=moment_arg("from"),
            end=moment_arg("to"),
            group_by=request.args.get("group_by", "site"),
        )
    )
    if wanted == "csv":
        response = Response(as_csv(groups), mimetype="text/csv")
        response.headers["Content-Disposition"] = 'attachment; filename="tether-metrics.csv"'
        return response
    return {"groups": groups}
