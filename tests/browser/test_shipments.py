"""A shipment's map on the therapy page: Leaflet draws each reported position as a marker, without map tiles."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from .people import log_in


def test_the_shipment_map_shows_one_marker_per_position(page, served):
    patient = f"PT-M-{uuid.uuid4().hex[:6]}"
    started = served.api(
        "coordinator",
        "POST",
        "/therapies",
        json={
            "process_key": "autologous_car_t",
            "site": "SITE-A",
            "patient": {"reference": patient},
            "parties": {"manufacturing": "MFG-1", "logistics": "COURIER-1"},
        },
    )
    assert started.status_code == 201, started.text
    therapy = started.json()
    created = served.api(
        "logistics",
        "POST",
        f"/therapies/{therapy['id']}/shipments",
        json={
            "carrier": "ColdChain",
            "tracking_number": f"CC-{patient}",
            "from_party": "apheresis",
            "to_party": "MFG-1",
        },
    )
    assert created.status_code == 201, created.text
    shipment = created.json()
    route = [(48.137, 11.575), (48.40, 10.90), (48.60, 10.00), (48.775, 9.182)]
    for lat, lng in route:
        moved = served.api(
            "logistics", "POST", f"/shipments/{shipment['id']}/positions", json={"latitude": lat, "longitude": lng}
        )
        assert moved.status_code == 201, moved.text

    log_in(page, "coordinator", served.password)
    page.goto(f"/therapies/{therapy['id']}")
    article = page.locator(f"[data-shipment-id='{shipment['id']}']")
    expect(article).to_contain_text("ColdChain")
    map_box = article.locator("[data-shipment-map]")
    expect(map_box).to_have_attribute("data-rendered", "true")
    expect(map_box.locator(".shipment-marker")).to_have_count(len(route))
    expect(map_box.locator(".shipment-route")).to_have_count(1)
    expect(map_box.locator(".leaflet-tile")).to_have_count(0)  # no tiles: nothing fetched from elsewhere
    expect(map_box.locator(".shipment-label")).to_have_count(2)  # the origin and the last position
    expect(map_box.locator(".shipment-label").first).to_contain_text("Origin: SITE-A")
    expect(article.get_by_test_id("shipment-timeline").locator("li")).to_have_count(len(route))
