"""Valid form data for every bundled form, and the journeys through the bundled diagrams.

The demo seeds therapies with the same data, so it lives in the server package; tests import it here."""

from __future__ import annotations

COI = "CHW12342600A1B7"

FORM_DATA = {
    "enrolment.schema.json": {
        "consent_obtained": True, "consent_date": "2026-11-02", "eligibility_confirmed": True,
        "indication": "Relapsed/refractory DLBCL", "treating_physician": "Dr A. Example",
        "payer_authorisation_status": "approved", "payer_authorisation_reference": "PA-2026-0042"},
    "scheduling.schema.json": {
        "apheresis_date": "2026-11-16", "apheresis_unit": "Site A apheresis unit",
        "manufacturing_site": "MFG-1", "manufacturing_slot_reference": "SLOT-2026-118",
        "manufacturing_slot_date": "2026-11-17"},
    "apheresis.schema.json": {
        "din": "G123498654321", "collection_started_at": "2026-11-16T08:10:00Z",
        "collection_completed_at": "2026-11-16T12:40:00Z", "collection_volume_ml": 212.5, "bag_count": 1,
        "coi_label_applied": True},
    "manufacturing-receipt.schema.json": {
        "scanned_coi": "&/" + COI, "material_received_at": "2026-11-17T07:55:00Z",
        "arrival_temperature_c": 4.6, "bags_intact": True, "receipt_decision": "accepted"},
    "qa-release.schema.json": {
        "batch_number": "B-26-0413", "batch_record_reviewed": True, "qc_results_reviewed": True,
        "release_decision": "released"},
    "oos-decision.schema.json": {
        "oos_result_reviewed": True, "physician_decision": "remanufacture",
        "physician_decision_rationale": "Retained material is sufficient; the patient can wait."},
    "quarantine.schema.json": {
        "scanned_coi": COI + " C", "quarantined_at": "2026-12-18T10:00:00Z",
        "quarantine_location": "Shipper, bay 2",
        "logger_max_temperature_c": -131.0, "time_above_limit_min": 22},
    "excursion-assessment.schema.json": {
        "excursion_impact_assessment": "22 min at up to -131 C exceeds the validated excursion budget.",
        "excursion_disposition": "discard"},
    "centre-receipt.schema.json": {
        "scanned_coi": "&/" + COI, "product_received_at": "2026-12-18T10:00:00Z",
        "shipper_temperature_ok": True,
        "storage_location": "LN2 freezer 3, rack B, box 4", "storage_temperature_c": -185},
    "product-availability.schema.json": {
        "product_availability_confirmed": True, "availability_confirmed_at": "2026-12-18T11:00:00Z",
        "planned_lymphodepletion_date": "2026-12-21"},
    "lymphodepletion.schema.json": {
        "lymphodepletion_started_on": "2026-12-21", "lymphodepletion_regimen": "flu_cy",
        "planned_infusion_date": "2026-12-26"},
    "bedside-check.schema.json": {
        "scanned_coi": "&/" + COI, "patient_identity_verified": True, "second_verifier": "Nurse B. Example",
        "thaw_completed_at": "2026-12-26T09:12:00Z"},
    "infusion.schema.json": {
        "infusion_started_at": "2026-12-26T09:25:00Z", "infusion_completed_at": "2026-12-26T09:41:00Z",
        "bags_infused": 1, "infusion_reaction": False},
    "follow-up.schema.json": {
        "follow_up_date": "2027-01-23", "patient_status": "alive", "response_assessment": "complete_response",
        "crs_max_grade": 1, "icans_max_grade": 0},
    "allogeneic-order.schema.json": {
        "product_code": "ALLO-CAR-01", "indication": "Relapsed/refractory B-ALL",
        "treating_physician": "Dr A. Example", "requested_dose_cells_e6": 120,
        "required_by_date": "2026-12-01"},
    "allogeneic-allocation.schema.json": {
        "lot_number": "L-26-0099", "lot_release_confirmed": True, "lot_expiry_date": "2027-06-30",
        "allocated_bags": 2, "allocated_at": "2026-11-20T14:00:00Z"},
}


def form_data(form: str, coi: str = COI) -> dict:
    """Valid data for ``form``, with its scans set to ``coi`` (barcode or eye-readable, as the form has it)."""
    data = dict(FORM_DATA[form])
    if "scanned_coi" in data:
        data["scanned_coi"] = data["scanned_coi"].replace(COI, coi)
        if data["scanned_coi"].endswith(" C"):
            from engine.coi import parse_coi
            data["scanned_coi"] = parse_coi(coi).eye_readable
    return data


# The autologous happy path: user tasks (by activity id), messages (name, payload) and clock moves.
AUTOLOGOUS_HAPPY_PATH = [
    ("task", "Task_Enrolment"), ("task", "Task_Scheduling"), ("task", "Task_Apheresis"),
    ("message", "courier.picked_up", {"courier": "ColdChain", "tracking": "CC-1"}),
    ("message", "shipment.delivered", {"delivered_to": "MFG-1"}),
    ("task", "Task_ReceiveAtManufacturing"),
    ("message", "mes.manufacturing_started", {"batch": "B-26-0413"}),
    ("message", "mes.manufacturing_completed", {"batch": "B-26-0413"}),
    ("message", "qc.results", {"result": "pass", "report": "QC-0413"}),
    ("task", "Task_QaRelease"),
    ("message", "return.picked_up", {"courier": "ColdChain"}),
    ("message", "return.delivered", {"delivered_to": "SITE-A"}),
    ("task", "Task_ReceiveAtCentre"), ("task", "Task_ConfirmAvailability"), ("task", "Task_StartLymphodepletion"),
    ("task", "Task_BedsideCheck"), ("task", "Task_RecordInfusion"),
    ("advance", {"days": 29}),
    ("task", "Task_Day28FollowUp"),
]

ALLOGENEIC_HAPPY_PATH = [
    ("task", "Task_OrderFromInventory"), ("task", "Task_AllocateLot"),
    ("message", "shipment.picked_up", {"courier": "ColdChain"}),
    ("message", "shipment.delivered", {"delivered_to": "SITE-A"}),
    ("task", "Task_ReceiveAtSite"), ("task", "Task_BedsideCheck"), ("task", "Task_RecordInfusion"),
]
