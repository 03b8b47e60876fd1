"""The studio's drafts: start one (from an empty canvas or a deployed version), save it, check it, try it on a
simulated clock, delete it and deploy it. Designers and administrators only: for anyone else a draft does not exist
to act on (403)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from server.access.auth import check_roles
from server.store.models import ProcessDefinition, ProcessDraft, User
from server.workflow import drafts, simulation

from .checks import audits_refusals

DRAFTERS = ("designer", "admin")


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
    return drafts.save(drafts.find(command.draft_id), command.bpmn, command.by.username, command.name)


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
def deploy_draft(command: DeployDraft) -> tuple[ProcessDefinition, bool]:
    """The deployed version and whether it is new; 422 with every problem when the draft fails a check."""
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
