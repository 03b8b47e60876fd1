"""A therapy's steps through the REST API, as the tests take them with Flask's test client.

``api`` is the JSON client of ``tests/integration/conftest.py`` and ``world`` its users' tokens. Each helper
that takes a step asserts the answer a working server gives to it, so that a test reads as the scenario it
checks and fails at the step that went wrong.
"""

from __future__ import annotations

# What the coordinator enters on the mini therapy's enrolment form (tests/fixtures/mini.bpmn).
ENROLMENT = {"eligible": True, "patient_initials": "AB"}


def therapy_request(
    process_key: str = "mini_therapy", *, site: str = "SITE-A", reference: str = "PT-1", data: dict | None = None
) -> dict:
    """The body of ``POST /therapies``: a therapy of ``process_key`` at ``site`` for patient ``reference``."""
    body = {"process_key": process_key, "site": site, "patient": {"reference": reference}}
    if data is not None:
        body["data"] = data
    return body


def post_therapy(api, token: str, process_key: str = "mini_therapy", **request):
    """Ask to start a therapy as the token's user; the answer, whatever it is (``request``: see therapy_request)."""
    return api.as_(token).post("/api/v1/therapies", json=therapy_request(process_key, **request))


def start(api, token: str, process_key: str = "mini_therapy", **request) -> dict:
    """Start a therapy as the token's user (201) and return it (``request``: see therapy_request)."""
    created = post_therapy(api, token, process_key, **request)
    assert created.status_code == 201, created.get_json()
    return created.get_json()


def tasks_of(api, token: str, therapy_id: str) -> list[dict]:
    """The therapy's open tasks that the token's user sees."""
    return api.as_(token).get(f"/api/v1/tasks?therapy_id={therapy_id}").get_json()["items"]


def only_task(api, token: str, therapy_id: str) -> dict:
    """The therapy's one open task that the token's user sees."""
    items = tasks_of(api, token, therapy_id)
    assert len(items) == 1, items
    return items[0]


def complete(api, token: str, task_id: str, data: dict, **extra):
    """Ask to complete a task with form ``data`` (and ``extra`` fields such as ``signature``); the answer."""
    return api.as_(token).post(f"/api/v1/tasks/{task_id}/complete", json={"data": data, **extra})


def complete_only_task(api, token: str, therapy_id: str, data: dict, **extra) -> dict:
    """Complete the therapy's one open task as the token's user (200); returns the task as it was listed."""
    task = only_task(api, token, therapy_id)
    done = complete(api, token, task["id"], data, **extra)
    assert done.status_code == 200, done.get_json()
    return task


def enrol(api, world, therapy: dict, **data) -> dict:
    """Complete the mini therapy's enrolment as its coordinator (``data`` changes the form); returns the task.

    Eligible, the therapy then waits for the ``shipment.delivered`` message.
    """
    return complete_only_task(api, world["coord"], therapy["id"], {**ENROLMENT, **data})


def deliver(api, world, therapy: dict, name: str = "shipment.delivered", payload: dict | None = None) -> dict:
    """The integrator sends the therapy the message ``name`` (200); returns the answer's body."""
    body = {"name": name, "therapy_id": therapy["id"], "payload": payload if payload is not None else {}}
    sent = api.as_(world["integrator"]).post("/api/v1/messages", json=body)
    assert sent.status_code == 200, sent.get_json()
    return sent.get_json()


def to_receipt(api, world, therapy: dict, payload: dict | None = None) -> dict:
    """Enrol and deliver (with ``payload``): returns the mini therapy's 'Receive shipment' task (2..8 °C, signed)."""
    enrol(api, world, therapy)
    deliver(api, world, therapy, payload=payload)
    return only_task(api, world["logistics"], therapy["id"])


def fire(app, therapy_id: str) -> bool:
    """Fire what is due of the therapy's timers, as the scheduler does; whether anything was due."""
    from server.workflow.therapies import fire_due_timers

    with app.app_context():
        return fire_due_timers(therapy_id)


def audit_entries(api, world, therapy_id: str) -> list[dict]:
    """The therapy's audit entries in order, as the auditor reads them."""
    return api.as_(world["auditor"]).get(f"/api/v1/audit?therapy_id={therapy_id}&limit=500").get_json()["items"]


def audit_actions(api, world, therapy_id: str) -> list[str]:
    """The actions of the therapy's audit entries, in order."""
    return [e["action"] for e in audit_entries(api, world, therapy_id)]


# -- capacity ------------------------------------------------------------------------------------------------
# The chain an autologous therapy books as the test clock starts (2026-11-23 09:00 UTC): collection on the
# 24th, manufacturing from the 25th.
APHERESIS_WINDOW = ("2026-11-24T08:00:00Z", "2026-11-24T12:00:00Z")
MANUFACTURING_WINDOW = ("2026-11-25T08:00:00Z", "2026-11-26T08:00:00Z")


def free_slot(api, token: str, site: str, kind: str, window: tuple[str, str], places: int = 10) -> str:
    """The id of the slot of ``kind`` at ``site`` over ``window`` (start, end): the open one, or one the token's
    planner or admin opens with ``places`` places."""
    listed = api.as_(token).get(f"/api/v1/slots?site={site}&kind={kind}&available=true").get_json()["items"]
    same = [s["id"] for s in listed if (s["start"], s["end"]) == window]
    if same:
        return same[0]
    body = {"site": site, "kind": kind, "start": window[0], "end": window[1], "capacity": places}
    opened = api.as_(token).post("/api/v1/capacity", json=body)
    assert opened.status_code == 201, opened.get_json()
    return opened.get_json()["slots"][0]["id"]


def free_chain(api, token: str, apheresis_site: str, manufacturing_site: str) -> tuple[str, str]:
    """The apheresis slot at ``apheresis_site`` and the manufacturing slot at ``manufacturing_site`` an
    autologous therapy books (``APHERESIS_WINDOW``, ``MANUFACTURING_WINDOW``), opened as needed."""
    return (
        free_slot(api, token, apheresis_site, "apheresis", APHERESIS_WINDOW),
        free_slot(api, token, manufacturing_site, "manufacturing", MANUFACTURING_WINDOW),
    )


# -- steps of a scripted journey, in the form of tests/scenario_data.py -------------------------------------
def task(activity_id: str, **data) -> tuple:
    """Complete the ready task of ``activity_id``, its form filled in as usual and changed by ``data``."""
    return ("task", activity_id, data)


def message(name: str, **payload) -> tuple:
    """The integrator sends the message ``name`` with ``payload``."""
    return ("message", name, payload)


def advance(**delta) -> tuple:
    """The clock moves on by ``delta`` (``timedelta`` arguments) and the due timers fire."""
    return ("advance", delta)
