"""Multi-instance and loop tasks through the API: each instance of a "per bag" task is its own task in QA's
inbox with its bag, a sequential "per sample" task offers one sample at a time and stops once one passes, and the
therapy goes on with what the instances collected."""

from __future__ import annotations

import io

from ..conftest import FIXTURES
from ..support.journeys import complete, deliver, start, tasks_of

DIAGRAM = (FIXTURES / "multi-instance.bpmn").read_bytes()
FORMS = ("bag-inspection.schema.json", "sample-test.schema.json")


def _deploy(api, token):
    forms = [(io.BytesIO((FIXTURES / name).read_bytes()), name) for name in FORMS]
    data = {"bpmn": (io.BytesIO(DIAGRAM), "multi-instance.bpmn"), "forms": forms}
    answer = api.as_(token).post("/api/v1/process-definitions", content_type="multipart/form-data", data=data)
    assert answer.status_code == 201, answer.get_json()


def test_each_bag_is_its_own_task_and_the_therapy_goes_on_with_what_they_collected(api, world):
    _deploy(api, world["designer"])
    therapy = start(api, world["coord"], "bag_release", data={"bags": ["BAG-1", "BAG-2", "BAG-3"], "checks": 0})

    inbox = tasks_of(api, world["qa"], therapy["id"])
    assert [t["activity_id"] for t in inbox] == ["Task_InspectBag"] * 3
    assert sorted((t["instance"]["index"], t["instance"]["item"]) for t in inbox) == [
        (0, "BAG-1"),
        (1, "BAG-2"),
        (2, "BAG-3"),
    ]
    assert {t["instance"]["count"] for t in inbox} == {3} and {t["instance"]["variable"] for t in inbox} == {"bag"}
    assert all(t["form"]["name"] == "bag-inspection.schema.json" for t in inbox)

    by_bag = {t["instance"]["item"]: t for t in inbox}
    for bag in ("BAG-2", "BAG-1"):
        assert complete(api, world["qa"], by_bag[bag]["id"], {"intact": bag != "BAG-2"}).status_code == 200
    [left] = tasks_of(api, world["qa"], therapy["id"])
    assert left["instance"]["item"] == "BAG-3"
    assert complete(api, world["qa"], left["id"], {"intact": True}).status_code == 200

    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["data"]["inspections"] == [  # in the order of the bags, whatever order QA took them in
        {"bag": "BAG-1", "intact": True},
        {"bag": "BAG-2", "intact": False},
        {"bag": "BAG-3", "intact": True},
    ]

    for expected, passed in ((0, False), (1, True)):
        [sample] = tasks_of(api, world["qa"], therapy["id"])
        assert sample["activity_id"] == "Task_TestSample"
        assert sample["instance"] == {"index": expected, "count": 3, "variable": "sample", "item": expected}
        assert complete(api, world["qa"], sample["id"], {"passed": passed}).status_code == 200

    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["status"] == "completed", detail
    data = detail["data"]
    assert data["sample_results"] == [False, True], "the completion condition stops the samples once one passes"
    assert data["labels"] == ["LBL-BAG-1", "LBL-BAG-2", "LBL-BAG-3"] and data["checks"] == 3
    assert len(data["notices"]) == 3


def test_an_instance_refuses_data_its_form_does_not_allow(api, world):
    _deploy(api, world["designer"])
    therapy = start(api, world["coord"], "bag_release", data={"bags": ["BAG-1"], "checks": 0})
    [task] = tasks_of(api, world["qa"], therapy["id"])
    assert complete(api, world["qa"], task["id"], {"intact": "yes"}).status_code == 422
    [still] = tasks_of(api, world["qa"], therapy["id"])
    assert still["id"] == task["id"] and still["instance"]["item"] == "BAG-1"


def test_the_inbox_and_the_task_page_show_each_instance_item(app, api, world):
    from ..support.pages import signed_in

    _deploy(api, world["designer"])
    therapy = start(api, world["coord"], "bag_release", data={"bags": ["BAG-7", "BAG-8"], "checks": 0})
    client = signed_in(app, "qa")
    inbox = client.get("/tasks").get_data(as_text=True)
    assert 'data-testid="inbox-instance">BAG-7<' in inbox and 'data-testid="inbox-instance">BAG-8<' in inbox
    first = next(t for t in tasks_of(api, world["qa"], therapy["id"]) if t["instance"]["item"] == "BAG-7")
    page = client.get(f"/tasks/{first['id']}").get_data(as_text=True)
    assert "1 of 2: bag" in page and '<span class="mono">BAG-7</span>' in page


def test_a_recall_cancels_every_open_instance_and_its_inbox_rows(api, world):
    _deploy(api, world["designer"])
    therapy = start(api, world["coord"], "bag_release", data={"bags": ["BAG-1", "BAG-2"], "checks": 0})
    first, second = tasks_of(api, world["qa"], therapy["id"])
    assert complete(api, world["qa"], first["id"], {"intact": True}).status_code == 200
    deliver(api, world, therapy, "lot.recalled", {"lot": "L1"})
    assert tasks_of(api, world["qa"], therapy["id"]) == []
    assert api.as_(world["qa"]).get(f"/api/v1/tasks/{second['id']}").get_json()["status"] == "cancelled"
    detail = api.as_(world["coord"]).get(f"/api/v1/therapies/{therapy['id']}").get_json()
    assert detail["status"] == "completed" and detail["data"]["lot.recalled"] == {"lot": "L1"}


def test_a_therapy_without_the_collection_is_refused_naming_the_task(app, api, world):
    from .test_bad_input import counts, refused

    _deploy(api, world["designer"])
    before = counts(app)
    answer = api.as_(world["coord"]).post(
        "/api/v1/therapies",
        json={"process_key": "bag_release", "site": "SITE-A", "patient": {"reference": "PT-9"}, "data": {"checks": 0}},
    )
    error = refused(answer, 422)
    assert error["details"]["element_id"] == "Task_InspectBag" and "'bags'" in error["message"]
    assert counts(app) == before
