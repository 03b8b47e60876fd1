"""Deploying a therapy's process: a BPMN diagram with its JSON Schema forms, as a new version."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from server.access.auth import check_roles
from server.store.models import ProcessDefinition, User
from server.workflow import definitions

from .checks import audits_refusals


@dataclass(frozen=True)
class DeployDefinition:
    """``by`` deploys the diagram ``bpmn`` with ``forms`` (file name to content)."""

    ROLES: ClassVar[tuple[str, ...]] = ("designer", "admin")

    bpmn: bytes
    by: User
    forms: Mapping[str, bytes] = field(default_factory=dict)


@audits_refusals
def deploy_definition(command: DeployDefinition) -> tuple[ProcessDefinition, bool]:
    """Check and deploy; returns the version and whether it is new (identical content deploys nothing new).
    422 naming the element and line of what is wrong with the diagram or a form."""
    check_roles(command.by, command.ROLES)
    return definitions.deploy(command.bpmn, command.forms, command.by.username)
