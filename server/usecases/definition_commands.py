"""Deploying a therapy's process: a BPMN diagram with its JSON Schema forms, as a new version."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from server.access.auth import check_roles
from server.store.models import ProcessDefinition, User
from server.workflow import definitions, migrations

from .checks import audits_refusals


@dataclass(frozen=True)
class DeployDefinition:
    """``by`` deploys the diagram ``bpmn`` with ``forms`` and ``decisions`` (DMN files; file name to content)."""

    ROLES: ClassVar[tuple[str, ...]] = ("designer", "admin")

    bpmn: bytes
    by: User
    forms: Mapping[str, bytes] = field(default_factory=dict)
    decisions: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class MigrateTherapies:
    """``by`` moves the therapies of process ``key`` running on ``from_version`` (all, or ``therapy_ids``) to
    ``to_version``, renamed activities mapped by ``activity_map``; with ``dry_run`` only says which could move."""

    ROLES: ClassVar[tuple[str, ...]] = ("designer", "admin")

    key: str
    from_version: int
    to_version: int
    by: User
    therapy_ids: list[str] | None = None
    activity_map: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = False


@audits_refusals
def deploy_definition(command: DeployDefinition) -> tuple[ProcessDefinition, bool]:
    """Check and deploy; returns the version and whether it is new (identical content deploys nothing new).
    422 naming the element and line of what is wrong with the diagram, a form or a decision."""
    check_roles(command.by, command.ROLES)
    return definitions.deploy(command.bpmn, command.forms, command.by.username, command.decisions)


@audits_refusals
def migrate_therapies(command: MigrateTherapies) -> list[dict]:
    """Move (or try) each therapy; one result ``{"therapy_id", "ok", "reason"?}`` per therapy. 422 for an unknown
    or the same version, or a map naming an activity either version does not have; 404 for a chosen therapy
    that does not run on ``from_version``."""
    check_roles(command.by, command.ROLES)
    old = migrations.version(command.key, command.from_version, "from_version")
    new = migrations.version(command.key, command.to_version, "to_version")
    mapping = migrations.check_map(old, new, command.activity_map)
    return migrations.migrate(old, new, command.therapy_ids, mapping, command.dry_run, command.by.username)
