"""The Prometheus endpoint: request and engine-step timings, timer lateness, and the backlog and open work read
from the database, in the text exposition format; off with TETHER_METRICS=false."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ..support.journeys import enrol, fire, start


def _samples(app) -> dict[tuple[str, tuple], float]:
    answer = app.test_client().get("/metrics")
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    out = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_the_metrics_count_requests_steps_timers_and_open_work(app, api, world, clock):
    before = _samples(app)
    therapy = start(api, world["coord"])
    enrol(api, world, therapy)
    late = start(api, world["coord"])
    clock.advance(hours=24, minutes=30)
    assert fire(app, late["id"])  # the enrolment window's escalation, 30 min after it came due
    after = _samples(app)

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("tether_http_requests_total", method="POST", route="/api/v1/therapies", status="2xx") == 2
    assert grew("tether_http_request_seconds_count", method="POST", route="/api/v1/therapies") == 2
    assert grew("tether_engine_step_seconds_count") >= 4  # two starts, a completion, a timer
    assert grew("tether_timer_lateness_seconds_count") == 1
    assert grew("tether_timer_lateness_seconds_bucket", le="1800.0") == 1 and grew(
        "tether_timer_lateness_seconds_bucket", le="1200.0"
    ) in (0, None)
    assert after[("tether_therapies", (("status", "active"),))] == 2
    assert (
        after[("tether_alerts_open", (("severity", "high"),))]
        + after.get(("tether_alerts_open", (("severity", "medium"),)), 0)
        >= 1
    )
    assert after[("tether_incidents_open", ())] == 0
    assert after[("tether_broker_events_pending", ())] == 0
    assert ("tether_webhook_deliveries", (("status", "pending"),)) in after


def test_the_endpoint_can_be_turned_off(app):
    app.config["METRICS"] = False
    assert app.test_client().get("/metrics").status_code == 404
