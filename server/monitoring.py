"""What operators watch: a Prometheus endpoint (``GET /metrics``, text exposition format, prometheus-client).

Measured as it happens, in each server process:

- ``tether_http_requests_total`` and ``tether_http_request_seconds``: requests by method, route and status class;
- ``tether_engine_step_seconds``: each engine command (a task completion, a message, a timer firing, a retry);
- ``tether_timer_lateness_seconds``: how long after its due time a timer (or retry) fired.

Read from the database at each scrape (the same for every process, so any process may answer):

- ``tether_webhook_deliveries{status}``: pending (the outbox's backlog to webhooks) and failed deliveries;
- ``tether_broker_events_pending``: events waiting for the message broker;
- ``tether_incidents_open``, ``tether_alerts_open{severity}``, ``tether_therapies{status}``.

With several gunicorn workers, point ``PROMETHEUS_MULTIPROC_DIR`` at an empty folder before ``tether serve`` starts
(prometheus-client's multiprocess mode) and every worker's measurements are summed in each answer; without it each
answer holds the measurements of the worker that served it. ``TETHER_METRICS=false`` turns the endpoint off. The
figures are counts and durations: no patient data, no identifiers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from flask import Flask, Response, abort, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from server.store.extensions import db
from server.store.models import Alert, Incident, OutboxEvent, Therapy, WebhookDelivery

REGISTRY = CollectorRegistry(auto_describe=True)
DURATIONS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENESS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

REQUESTS = Counter(
    "tether_http_requests_total", "HTTP requests served", ("method", "route", "status"), registry=REGISTRY
)
REQUEST_SECONDS = Histogram(
    "tether_http_request_seconds",
    "Time to answer an HTTP request",
    ("method", "route"),
    buckets=DURATIONS,
    registry=REGISTRY,
)
STEP_SECONDS = Histogram(
    "tether_engine_step_seconds",
    "Time of one engine command (its steps up to the next wait)",
    buckets=DURATIONS,
    registry=REGISTRY,
)
TIMER_LATENESS = Histogram(
    "tether_timer_lateness_seconds",
    "How long after its due time a timer or retry fired",
    buckets=LATENESS,
    registry=REGISTRY,
)


class DatabaseGauges(Collector):
    """The backlog and the open work, read from the database at each scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One query per family; nothing when there is no app context (a scrape always has one)."""
        if not current_app:
            return
        deliveries = GaugeMetricFamily(
            "tether_webhook_deliveries", "Webhook deliveries waiting (pending) or given up (failed)", labels=["status"]
        )
        counts = dict(
            db.session.execute(
                select(WebhookDelivery.status, func.count())
                .where(WebhookDelivery.status.in_(("pending", "failed")))
                .group_by(WebhookDelivery.status)
            ).all()
        )
        for status in ("pending", "failed"):
            deliveries.add_metric([status], counts.get(status, 0))
        yield deliveries
        pending = db.session.execute(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.broker_state == "pending")
        ).scalar_one()
        yield GaugeMetricFamily("tether_broker_events_pending", "Events waiting for the message broker", value=pending)
        incidents = db.session.execute(
            select(func.count()).select_from(Incident).where(Incident.status != "resolved")
        ).scalar_one()
        yield GaugeMetricFamily("tether_incidents_open", "Incidents not resolved", value=incidents)
        alerts = GaugeMetricFamily("tether_alerts_open", "Open alerts", labels=["severity"])
        for severity, count in db.session.execute(
            select(Alert.severity, func.count()).where(Alert.status == "open").group_by(Alert.severity)
        ).all():
            alerts.add_metric([severity], count)
        yield alerts
        therapies = GaugeMetricFamily("tether_therapies", "Therapies by status", labels=["status"])
        for status, count in db.session.execute(select(Therapy.status, func.count()).group_by(Therapy.status)).all():
            therapies.add_metric([status], count)
        yield therapies
        db.session.rollback()  # a read: leave nothing open


def _scrape_registry() -> CollectorRegistry:
    """What one answer holds: this process's measurements (all workers' in multiprocess mode) and the gauges."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(DatabaseGauges())
    return registry


class _Forward(Collector):
    """The process's own registry, collected into an answer's registry."""

    def __init__(self, source: CollectorRegistry):
        self.source = source

    def collect(self):
        return self.source.collect()


def observe_step(seconds: float) -> None:
    """Record one engine command's time."""
    STEP_SECONDS.observe(seconds)


def observe_timer_lateness(seconds: float) -> None:
    """Record how late a timer fired (0 when on time)."""
    TIMER_LATENESS.observe(max(0.0, seconds))


def init_app(app: Flask) -> None:
    """Time every request and serve ``GET /metrics`` (unless ``TETHER_METRICS`` is off)."""

    @app.before_request
    def _start_clock() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _count(response: Response) -> Response:
        started = g.pop("request_started", None)
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"
            REQUESTS.labels(request.method, route, f"{response.status_code // 100}xx").inc()
            REQUEST_SECONDS.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def prometheus_metrics():
        """The Prometheus text exposition of this server's measurements and the database's gauges."""
        if not app.config.get("METRICS", True):
            abort(404)
        return Response(generate_latest(_scrape_registry()), mimetype=CONTENT_TYPE_LATEST)
