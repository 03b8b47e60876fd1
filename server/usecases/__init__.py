"""The use cases: the only way in. What a person or a system asks Tether to do is a command, a frozen
dataclass naming who asks (``by``) and with what; each command has one handler.

A handler holds every check of its use case (what the caller may see and do, whether the thing can still
happen, what the data must be), audits a refusal before the error is answered (``checks.audits_refusals``),
and runs the change in one transaction through the capability packages below it. The API, the web pages and
the command line build commands and call handlers; they hold no rule of their own. (The scheduler fires due
timers and retries: the engine's clock, not a caller's request, see ``server.workflow.scheduler``.)

``HANDLERS`` lists every command with its handler; ``handle`` calls the one a command names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .account_commands import (
    AddSite,
    AddUser,
    ChangeUser,
    ExpireToken,
    IssueToken,
    ResetPassword,
    RevokeToken,
    UnlockUser,
    add_site,
    add_user,
    change_user,
    expire_token,
    issue_token,
    reset_password,
    revoke_token,
    unlock_user,
)
from .alert_commands import AcknowledgeAlert, AcknowledgeAlerts, acknowledge_alert, acknowledge_alerts
from .capacity_commands import (
    AddBlackout,
    BookSlot,
    CancelBooking,
    ChangeSlotCapacity,
    CloseSlot,
    OpenCapacity,
    add_blackout,
    book_slot,
    cancel_booking,
    change_slot_capacity,
    close_slot,
    open_capacity,
)
from .definition_commands import DeployDefinition, MigrateTherapies, deploy_definition, migrate_therapies
from .draft_commands import (
    CheckDraft,
    CreateDraft,
    DeleteDraft,
    DeleteDraftFile,
    DeployDraft,
    PutDraftFile,
    SaveDraft,
    SimulateDraft,
    SimulateVersion,
    check_draft,
    create_draft,
    delete_draft,
    delete_draft_file,
    deploy_draft,
    put_draft_file,
    save_draft,
    simulate_draft,
    simulate_version,
)
from .incident_commands import ResolveIncident, RetryIncident, resolve_incident, retry_incident
from .material_commands import RecordCustody, RecordReadings, record_custody, record_readings
from .network_commands import (
    AddReasonCode,
    ChangeParties,
    ChangeReasonCode,
    add_reason_code,
    change_parties,
    change_reason_code,
)
from .shipment_commands import (
    AddShipmentPosition,
    CreateShipment,
    RecordShipmentReadings,
    UpdateShipment,
    add_shipment_position,
    create_shipment,
    record_shipment_readings,
    update_shipment,
)
from .task_commands import CompleteTask, complete_task
from .therapy_commands import (
    CancelTherapy,
    CorrectValue,
    DeliverMessage,
    HoldTherapy,
    RescheduleTherapy,
    ResumeTherapy,
    StartTherapy,
    StartTherapyByMessage,
    cancel_therapy,
    correct_value,
    deliver_message,
    hold_therapy,
    reschedule_therapy,
    resume_therapy,
    start_therapy,
    start_therapy_by_message,
)
from .webhook_commands import Redeliver, Subscribe, Unsubscribe, redeliver, subscribe, unsubscribe

HANDLERS: dict[type, Callable[[Any], Any]] = {
    StartTherapy: start_therapy,
    StartTherapyByMessage: start_therapy_by_message,
    CompleteTask: complete_task,
    DeliverMessage: deliver_message,
    CorrectValue: correct_value,
    CancelTherapy: cancel_therapy,
    RecordCustody: record_custody,
    RecordReadings: record_readings,
    AcknowledgeAlert: acknowledge_alert,
    AcknowledgeAlerts: acknowledge_alerts,
    RetryIncident: retry_incident,
    ResolveIncident: resolve_incident,
    DeployDefinition: deploy_definition,
    AddSite: add_site,
    AddUser: add_user,
    ChangeUser: change_user,
    UnlockUser: unlock_user,
    ResetPassword: reset_password,
    IssueToken: issue_token,
    RevokeToken: revoke_token,
    ExpireToken: expire_token,
    Subscribe: subscribe,
    Unsubscribe: unsubscribe,
    Redeliver: redeliver,
    ChangeParties: change_parties,
    AddReasonCode: add_reason_code,
    ChangeReasonCode: change_reason_code,
    OpenCapacity: open_capacity,
    ChangeSlotCapacity: change_slot_capacity,
    CloseSlot: close_slot,
    AddBlackout: add_blackout,
    BookSlot: book_slot,
    CancelBooking: cancel_booking,
    HoldTherapy: hold_therapy,
    ResumeTherapy: resume_therapy,
    RescheduleTherapy: reschedule_therapy,
    MigrateTherapies: migrate_therapies,
    CreateDraft: create_draft,
    SaveDraft: save_draft,
    CheckDraft: check_draft,
    DeleteDraft: delete_draft,
    DeployDraft: deploy_draft,
    PutDraftFile: put_draft_file,
    DeleteDraftFile: delete_draft_file,
    SimulateDraft: simulate_draft,
    SimulateVersion: simulate_version,
    CreateShipment: create_shipment,
    AddShipmentPosition: add_shipment_position,
    RecordShipmentReadings: record_shipment_readings,
    UpdateShipment: update_shipment,
}


def handle(command: Any) -> Any:
    """Run the handler of ``command``."""
    return HANDLERS[type(command)](command)
