"""The metrics page: the same figures as the API in a table, charts drawn from them, a CSV export, and the menu
entry only for those who may read metrics."""

from __future__ import annotations

import csv
import io
import json
import re

from ..support.journeys import start
from ..support.pages import signed_in
from .test_web_network import _text


def test_the_metrics_page_shows_the_table_and_the_chart_data(app, api, world):
    for _ in range(2):
        start(api, world["coord"])
    start(api, world["coordb"], site="SITE-B")
    page = _text(signed_in(app, "admin"), "/reports?group_by=site")
    rows = re.findall(r'<tr data-key="([^"]+)"><th scope="row">[^<]+</th><td>(\d+)</td>', page)
    assert rows == [("SITE-A", "2"), ("SITE-B", "1")]
    data = json.loads(
        re.search(r'<script type="application/json" id="metrics-data">(.*?)</script>', page, re.S).group(1)
    )
    assert [(g["key"], g["started"]) for g in data] == [("SITE-A", 2), ("SITE-B", 1)]
    assert 'id="chart-v2v"' in page and "chart.umd.min.js" in page
    assert '<a href="/reports"' in page, "the menu offers it"


def test_a_site_coordinator_sees_their_site_and_downloads_it(app, api, world):
    start(api, world["coord"])
    start(api, world["coordb"], site="SITE-B")
    coordinator = signed_in(app, "coordb")
    page = _text(coordinator, "/reports")
    assert re.findall(r'<tr data-key="([^"]+)">', page) == ["SITE-B"]
    exported = coordinator.get("/reports.csv?group_by=process")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    assert [r["key"] for r in csv.DictReader(io.StringIO(exported.get_data(as_text=True)))] == ["mini_therapy"]


def test_the_page_is_for_metrics_readers_only(app, api, world):
    assert signed_in(app, "logistics").get("/reports").status_code == 403
    assert '<a href="/reports"' not in _text(signed_in(app, "logistics"), "/tasks")
    empty = _text(signed_in(app, "auditor"), "/reports?from=2030-01-01")
    assert "No therapies started in this period." in empty
