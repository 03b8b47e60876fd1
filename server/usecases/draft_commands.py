"""The studio's drafts: start one (from an empty canvas or a deployed version), save it, keep its forms and decision
tables, check it, try it on a simulated clock, delete it and deploy it. Designers and administrators only: for anyone
else a draft does not exist to act on (403). A change that names the draft's version it was made to (``if_match``,
its etag) is refused with 409 ``draft_changed`` when someone changed the draft since."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from server.access.auth import check_roles
from server.errors import ApiError
from server.store.models import ProcessDefinition, ProcessDraft, User
from server.workflow import drafts, simulation

from .checks import audits_refusals

DRAFTERS = ("designer", "admin")


DraftFileKind = Literal["decision", "form"]  # the files a draft keeps besides its diagram


@dataclass(frozen=True)
class CreateDraft:
    """``by`` starts a draft called ``name``: an empty canvas, or a copy of ``version`` (default the latest) of
    the deployed process ``key``."""

    ROLES: ClassVar[tuple[str, ...]] = DRAFTERS

    name: str
    by: User
    key: str | None = None
    version: int | None = None


@dataclass(frozen=True)
class SaveDraft:
    """``by`` stores ``bpmn`` (the diagram as drawn) in draft ``draft_id``, renamed ``name`` when given."""

    ROLES: ClassVar[tuple[str, ...]] = DRAFTERS

    draft_id: str
    bpmn: str
    by: User
    name: str | None = None
    if_match: str | None = None


@dataclass(frozen=True)
class CheckDraft:
    """``by`` runs the checks of a deployment on draft ``draft_id`` (or on ``bpmn``, the diagram as drawn)."""

    ROLES: ClassVar[tuple[str, ...]] = DRAFTERS

    draft_id: str
    by: User
    bpmn: str | None = None


@dataclass(frozen=True)
class DeleteDraft:
    """``by`` removes draft ``draft_id``."""

    ROLES: ClassVar[tuple[str, ...]] = DRAFTERS

    draft_id: str
    by: User


MAX_FILE_BYTES = 1024 * 1024  # a draft's decision table or form file


@dataclass(frozen=True)
class PutDraftFile:
    """``by`` keeps the file ``name`` (``content``: a DMN decision table, or a JSON Schema form) with draft
    ``draft_id``, replacing one of that name."""

    ROLES: ClassVar[tuple[str, ...]] = DRAFTERS

    draft_id: str
    kind: DraftFileKind
    name: str
    content: bytes
    by: User
    if_match: str | None = None


@dataclass(frozen=True)
class DeleteDraftFile:
    """``by`` removes the decision table or form ``name`` from draft ``draft_id``."""

    ROLES: ClassVar[tuple[str, ...]] = DRAFTERS

    draft_id: str
    kind: DraftFileKind
    name: str
    by: User
    if_match: str | None = None


@dataclass(frozen=True)
class DeployDraft:
    """``by`` deploys draft ``draft_id`` as the next version of its process."""

    ROLES: ClassVar[tuple[str, ...]] = DRAFTERS

    draft_id: str
    by: User


@audits_refusals
def create_draft(command: CreateDraft) -> ProcessDraft:
    """The new draft (audited); 404 for an unknown process or version."""
    check_roles(command.by, command.ROLES)
    return drafts.create(command.name, command.by.username, command.key, command.version)


@audits_refusals
def save_draft(command: SaveDraft) -> ProcessDraft:
    """The saved draft (audited); 404 for an unknown draft. An unfinished diagram may be saved."""
    check_roles(command.by, command.ROLES)
    draft = drafts.find(command.draft_id)
    return drafts.save(draft, command.bpmn, command.by.username, command.name, command.if_match)


@audits_refusals
def put_draft_file(command: PutDraftFile) -> ProcessDraft:
    """The draft with the file kept (audited); 404 for an unknown draft, 409 when it changed since ``if_match``,
    413 above ``MAX_FILE_BYTES``, 422 naming the file and line when the file would not pass an upload's check
    (nothing is changed)."""
    check_roles(command.by, command.ROLES)
    if len(command.content) > MAX_FILE_BYTES:
        raise ApiError(
            f"A {command.kind} file may be at most {MAX_FILE_BYTES} bytes; this one has {len(command.content)}.",
            code="too_large",
            status=413,
            details={"limit_bytes": MAX_FILE_BYTES, "size_bytes": len(command.content)},
        )
    draft = drafts.find(command.draft_id)
    put = drafts.put_decision if command.kind == "decision" else drafts.put_form
    return put(draft, command.name, command.content, command.by.username, command.if_match)


@audits_refusals
def delete_draft_file(command: DeleteDraftFile) -> ProcessDraft:
    """The draft without the file (audited); 404 for an unknown draft or file, 409 when it changed since
    ``if_match``."""
    check_roles(command.by, command.ROLES)
    draft = drafts.find(command.draft_id)
    remove = drafts.delete_decision if command.kind == "decision" else drafts.delete_form
    return remove(draft, command.name, command.by.username, command.if_match)


@audits_refusals
def check_draft(command: CheckDraft) -> dict[str, Any]:
    """``{"problems", "key", "current", "diff"}``: what is wrong, each problem on its element; stores nothing."""
    check_roles(command.by, command.ROLES)
    return drafts.check(drafts.find(command.draft_id), command.bpmn)


@audits_refusals
def delete_draft(command: DeleteDraft) -> None:
    """Remove the draft (audited); 404 for an unknown draft."""
    check_roles(command.by, command.ROLES)
    drafts.delete(drafts.find(command.draft_id), command.by.username)


@audits_refusals
def deploy_draft(command: DeployDraft) -> tuple[ProcessDefinition, bool, dict | None]:
    """The deployed version, whether it is new, and the version it follows with its active therapies (None for a
    new process); 422 with every problem when the draft fails a check."""
    check_roles(command.by, command.ROLES)
    return drafts.deploy(drafts.find(command.draft_id), command.by.username)


@dataclass(frozen=True)
class SimulateDraft:
    """``by`` tries draft ``draft_id`` on a simulated clock (one run, or a batch when ``options.runs`` is set)."""

    ROLES: ClassVar[tuple[str, ...]] = DRAFTERS

    draft_id: str
    by: User
    options: simulation.Options


@dataclass(frozen=True)
class SimulateVersion:
    """``by`` tries deployed ``version`` of process ``key`` on a simulated clock."""

    ROLES: ClassVar[tuple[str, ...]] = DRAFTERS

    key: str
    version: int
    by: User
    options: simulation.Options


@audits_refusals
def simulate_draft(command: SimulateDraft) -> dict[str, Any]:
    """The simulated run (or batch report) of the draft; nothing is stored. 404 for an unknown draft, 422 when
    the draft fails a check or an option names what the diagram does not have."""
    check_roles(command.by, command.ROLES)
    return simulation.simulate_draft(drafts.find(command.draft_id), command.options)


@audits_refusals
def simulate_version(command: SimulateVersion) -> dict[str, Any]:
    """The simulated run (or batch report) of a deployed version; nothing is stored. 404 for an unknown version."""
    check_roles(command.by, command.ROLES)
    return simulation.simulate_version(drafts.deployed(command.key, command.version), command.options)
