"""Uploads are parsed safely, validated and checked; every refusal names the element and line."""

from __future__ import annotations

import pytest

from engine.definition import load_definition, normalise_timer_expression, parse_form
from engine.errors import DefinitionInvalid, UnsafeCode

from .engine_helpers import FIXTURES, OPERATORS, load_fixture

MINI = (FIXTURES / "mini.bpmn").read_text()
FORMS = {p.name: parse_form(p.name, p.read_bytes()) for p in FIXTURES.glob("*.json")}


def load(text: str, forms=FORMS, operators=OPERATORS):
    return load_definition(text.encode(), forms, operators)


def test_fixture_loads_with_roles_forms_and_properties():
    info = load_fixture().info
    assert info.key == "mini_therapy" and info.name == "Mini therapy"
    assert info.user_tasks["Task_Enrol"].role == "coordinator"
    assert info.user_tasks["Task_Receive"].signature == "approval"
    assert info.messages == ["shipment.delivered"]
    assert info.operators == ["notify"]
    assert info.forms == ["mini-enrol.schema.json", "mini-receive.schema.json"]


def test_xxe_is_refused_without_reading_the_file(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    doc = f'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file://{secret}">]>' + MINI.split("?>", 1)[1].replace(
        'name="Mini therapy"', 'name="&x;"'
    )
    with pytest.raises(DefinitionInvalid) as caught:
        load(doc)
    assert "DOCTYPE" in str(caught.value)
    assert "TOP-SECRET" not in str(caught.value)


def test_billion_laughs_is_refused():
    lol = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i else "&lol;" * 10}">' for i in range(9))
        + ']><bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL">&lol8;'
        "</bpmn:definitions>"
    )
    with pytest.raises(DefinitionInvalid):
        load(lol)


def test_script_task_importing_os_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    script = f"import os\nos.system('touch {marker}')"
    doc = MINI.replace(
        '<bpmn:intermediateCatchEvent id="Timer_Wait"',
        f'<bpmn:scriptTask id="Script_Evil" name="Evil"><bpmn:script>{script}</bpmn:script></bpmn:scriptTask>'
        '<bpmn:intermediateCatchEvent id="Timer_Wait"',
    )
    with pytest.raises(UnsafeCode) as caught:
        load(doc)
    assert caught.value.element_id == "Script_Evil"
    assert caught.value.line is not None
    assert not marker.exists()


def test_subclass_walk_in_a_condition_is_refused():
    doc = MINI.replace("eligible == True", "().__class__.__base__.__subclasses__()")
    with pytest.raises(UnsafeCode) as caught:
        load(doc)
    assert caught.value.element_id == "Flow_yes"
    assert caught.value.line == MINI[: MINI.index("eligible == True")].count("\n") + 1


def test_an_unsafe_operator_parameter_names_its_service_task_not_the_parameter():
    doc = MINI.replace("value=\"'logistics'\"", "value=\"__import__('os')\"")
    assert doc != MINI
    with pytest.raises(UnsafeCode) as caught:
        load(doc)
    assert caught.value.element_id == "Service_Notify"
    assert "parameter 'role' of Service_Notify" in caught.value.message
    assert caught.value.line == MINI[: MINI.index("value=\"'logistics'\"")].count("\n") + 1


def test_unknown_service_operator_is_refused():
    with pytest.raises(DefinitionInvalid) as caught:
        load(MINI.replace('serviceTaskOperator id="notify"', 'serviceTaskOperator id="launch.rocket"'))
    assert caught.value.element_id == "Service_Notify"
    assert "launch.rocket" in caught.value.message and "notify" in caught.value.message


def test_missing_form_is_refused():
    with pytest.raises(DefinitionInvalid) as caught:
        load(MINI, forms={k: v for k, v in FORMS.items() if k != "mini-receive.schema.json"})
    assert caught.value.element_id == "Task_Receive"
    assert "mini-receive.schema.json" in caught.value.message


def test_user_task_outside_a_known_role_lane_is_refused():
    with pytest.raises(DefinitionInvalid) as caught:
        load(MINI.replace('name="Logistics"', 'name="Janitors"'))
    assert caught.value.element_id == "Task_Receive"


def test_a_user_task_belongs_to_its_own_party_else_its_lanes_else_the_treatment_centre():
    network = load((FIXTURES / "network.bpmn").read_text()).info.user_tasks
    assert network["Task_Enrol"].party == "treatment"  # a lane without a party
    assert network["Task_Manufacture"].party == "manufacturing"  # its lane's
    assert network["Task_Ship"].party == "logistics"  # its own property, in a lane without one
    assert load_fixture().info.user_tasks["Task_Receive"].party == "treatment"


def test_a_party_that_is_none_of_a_therapys_is_refused_naming_the_task():
    text = (FIXTURES / "network.bpmn").read_text().replace('value="manufacturing"', 'value="laboratory"')
    with pytest.raises(DefinitionInvalid) as caught:
        load(text)
    assert caught.value.element_id == "Task_Manufacture"
    assert "party 'laboratory'" in caught.value.message and "treatment, apheresis" in caught.value.message


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("not xml at all", "not well-formed"),
        ('<?xml version="1.0"?><html/>', "not a BPMN 2.0 document"),
        ("", "empty"),
    ],
)
def test_non_bpmn_files_are_refused(text, fragment):
    with pytest.raises(DefinitionInvalid) as caught:
        load(text)
    assert fragment in caught.value.message


def test_schema_violation_names_the_line():
    doc = MINI.replace('<bpmn:endEvent id="End_Done"', '<bpmn:bogusElement id="X"/><bpmn:endEvent id="End_Done"')
    with pytest.raises(DefinitionInvalid) as caught:
        load(doc)
    assert "schema" in caught.value.message
    assert caught.value.line == MINI[: MINI.index('<bpmn:endEvent id="End_Done"')].count("\n") + 1


def test_broken_reference_is_a_validation_error_not_a_crash():
    doc = MINI.replace('targetRef="Task_Receive"', 'targetRef="Nowhere"')
    with pytest.raises(DefinitionInvalid):
        load(doc)
    doc = MINI.replace('attachedToRef="Task_Enrol"', 'attachedToRef="Nowhere"')
    with pytest.raises(DefinitionInvalid):
        load(doc)


def test_no_executable_process_is_refused():
    with pytest.raises(DefinitionInvalid) as caught:
        load(MINI.replace('isExecutable="true"', 'isExecutable="false"'))
    assert "executable" in caught.value.message


def test_bad_condition_range_is_refused():
    with pytest.raises(DefinitionInvalid) as caught:
        load(MINI.replace('value="2..8"', 'value="8..2"'))
    assert caught.value.element_id == "Task_Receive"


@pytest.mark.parametrize(
    "plain, expected",
    [
        ("PT24H", "'PT24H'"),
        ("p1d", "'P1D'"),
        ("R3/PT1H", "'R3/PT1H'"),
        ("2026-12-01T08:00:00Z", "'2026-12-01T08:00:00Z'"),
        ('"PT24H"', '"PT24H"'),
        ("timedelta_iso", "timedelta_iso"),
    ],
)
def test_timer_values_are_accepted_plain_or_as_expressions(plain, expected):
    assert normalise_timer_expression(plain) == expected


def test_invalid_form_file_is_refused():
    with pytest.raises(DefinitionInvalid):
        parse_form("x.schema.json", b"{not json")
    with pytest.raises(DefinitionInvalid):
        parse_form("x.schema.json", b'{"type": "no-such-type"}')


def test_lead_times_are_read_from_the_process_and_checked():
    network = (FIXTURES / "network.bpmn").read_text()
    assert load(network).info.lead_times == {
        "apheresisToManufacturing": (7200.0, 172800.0),
        "manufacturingToInfusion": (86400.0, 864000.0),
    }
    for wrong in ('value="P10D/P1D"/>', 'value="P1D/soon"/>'):  # the longest first; not a duration
        with pytest.raises(DefinitionInvalid) as caught:
            load(network.replace('value="P1D/P10D"/>', wrong))
        assert (
            caught.value.element_id == "network_therapy" and "leadTime.manufacturingToInfusion" in caught.value.message
        )
    with pytest.raises(DefinitionInvalid) as caught:
        load(network.replace("leadTime.apheresisToManufacturing", "leadTime.whenever"))
    assert "names no lead time" in caught.value.message


# -- typed messages: payloadSchema on the element that catches a message --------------------------------------
DELIVERY_SCHEMA = {"type": "object", "properties": {"tracking": {"type": "string"}}, "required": ["tracking"]}
TYPED_FORMS = {**FORMS, "delivery.message.json": DELIVERY_SCHEMA, "other.message.json": {"type": "object"}}
CATCH = '<bpmn:intermediateCatchEvent id="Event_Delivered" name="Shipment delivered">'


def with_payload_schema(text: str, schema: str, element: str = CATCH) -> str:
    """``text`` with ``element`` declaring ``payloadSchema`` ``schema``."""
    declared = (
        "<bpmn:extensionElements><spiffworkflow:properties>"
        f'<spiffworkflow:property name="payloadSchema" value="{schema}"/>'
        "</spiffworkflow:properties></bpmn:extensionElements>"
    )
    assert element in text
    return text.replace(element, element + declared, 1)


def test_a_payload_schema_is_recorded_for_the_message_and_stored_with_the_forms():
    info = load(with_payload_schema(MINI, "delivery.message.json"), forms=TYPED_FORMS).info
    assert info.message_schemas == {"shipment.delivered": "delivery.message.json"}
    assert info.activities["Event_Delivered"].payload_schema == "delivery.message.json"
    assert "delivery.message.json" in info.forms
    assert load(MINI).info.message_schemas == {}, "a message without one is accepted as it comes"


def test_an_unknown_payload_schema_file_is_refused_naming_the_element_and_line():
    text = with_payload_schema(MINI, "nowhere.message.json")
    with pytest.raises(DefinitionInvalid) as caught:
        load(text, forms=TYPED_FORMS)
    assert caught.value.element_id == "Event_Delivered" and "nowhere.message.json" in caught.value.message
    assert caught.value.line == next(n for n, line in enumerate(text.splitlines(), 1) if CATCH in line)


def test_a_payload_schema_on_an_element_that_catches_no_message_is_refused():
    timer = '<bpmn:intermediateCatchEvent id="Timer_Wait" name="Wait a day">'
    with pytest.raises(DefinitionInvalid) as caught:
        load(with_payload_schema(MINI, "delivery.message.json", timer), forms=TYPED_FORMS)
    assert caught.value.element_id == "Timer_Wait" and "catches no message" in caught.value.message


RECEIVE_AGAIN = (
    '<bpmn:receiveTask id="Task_DeliveredAgain" name="Delivered again" messageRef="Message_delivered">'
    "<bpmn:incoming>Flow_6</bpmn:incoming><bpmn:outgoing>Flow_7</bpmn:outgoing></bpmn:receiveTask>"
)


def twice_caught(first: str | None, second: str | None) -> str:
    """The mini diagram with a second element catching ``shipment.delivered`` (a receive task in the Logistics
    lane after the timer), each declaring the given payloadSchema (or none)."""
    text = MINI.replace(
        '<bpmn:sequenceFlow id="Flow_6" sourceRef="Timer_Wait" targetRef="End_Done"/>',
        '<bpmn:sequenceFlow id="Flow_6" sourceRef="Timer_Wait" targetRef="Task_DeliveredAgain"/>'
        '<bpmn:sequenceFlow id="Flow_7" sourceRef="Task_DeliveredAgain" targetRef="End_Done"/>',
    ).replace('<bpmn:endEvent id="End_Done"', RECEIVE_AGAIN + '<bpmn:endEvent id="End_Done"')
    text = text.replace("<bpmn:incoming>Flow_6</bpmn:incoming>\n", "<bpmn:incoming>Flow_7</bpmn:incoming>\n")
    if first:
        text = with_payload_schema(text, first)
    if second:
        text = with_payload_schema(
            text,
            second,
            '<bpmn:receiveTask id="Task_DeliveredAgain" name="Delivered again" messageRef="Message_delivered">',
        )
    return text


def test_the_elements_catching_one_message_declare_one_schema():
    same = load(twice_caught("delivery.message.json", "delivery.message.json"), forms=TYPED_FORMS).info
    assert same.message_schemas == {"shipment.delivered": "delivery.message.json"}
    assert load(twice_caught(None, None), forms=TYPED_FORMS).info.message_schemas == {}
    for first, second in (("delivery.message.json", "other.message.json"), ("delivery.message.json", None)):
        text = twice_caught(first, second)
        with pytest.raises(DefinitionInvalid) as caught:
            load(text, forms=TYPED_FORMS)
        assert caught.value.element_id == "Task_DeliveredAgain", caught.value.message
        assert "Event_Delivered" in caught.value.message and "declares the same payloadSchema" in caught.value.message
        assert caught.value.line == next(
            n for n, line in enumerate(text.splitlines(), 1) if "Task_DeliveredAgain" in line
        )
