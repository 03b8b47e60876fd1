"""The metrics page in a browser: Chart.js (served from node_modules) draws its four charts from the demo's
therapies, and the table beside them carries the same groups."""

from __future__ import annotations

from playwright.sync_api import expect

from .people import log_in


def test_the_metrics_page_draws_its_charts(page, served):
    log_in(page, "admin", served.password)
    page.goto("/reports?group_by=site")
    rows = page.get_by_test_id("metrics-table").locator("tbody tr")
    expect(rows.first).to_be_visible()
    keys = rows.evaluate_all("rows => rows.map(r => r.dataset.key)")
    assert keys and all(keys)
    page.wait_for_function("() => typeof Chart !== 'undefined' && Object.keys(Chart.instances).length === 4")
    drawn = page.evaluate(
        "() => Object.values(Chart.instances).map(c => [c.canvas.id, c.data.labels.length, c.width > 0])"
    )
    assert sorted(drawn) == sorted(
        [[name, len(keys), True] for name in ("chart-v2v", "chart-counts", "chart-on-time", "chart-events")]
    )
