"""Saving and restoring instance state without the spec inside it.

SpiffWorkflow's serializer embeds the whole spec in every saved workflow. Tether stores the spec once
per definition version (``spec_to_dict``) and the instance state without it (``state_to_dict``); restoring
joins the two again. Every saved state carries ``STATE_VERSION``; ``UPGRADES`` holds the named functions
that bring an older saved state up to date.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter
from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG

from .errors import StateCorrupt

STATE_VERSION = 1
UPGRADES: dict[int, Callable[[dict], dict]] = {}


class _SharedSpecWorkflowConverter(BpmnWorkflowConverter):
    """Converts a top-level workflow without its spec, and restores one onto a spec already in memory."""

    def to_dict(self, workflow):
        dct = super().to_dict(workflow)
        dct.pop("spec", None)
        dct.pop("subprocess_specs", None)
        return dct

    def from_dict(self, dct):
        from uuid import UUID

        workflow = self.target_class(dct.pop("spec"), dct.pop("subprocess_specs"), deserializing=True)
        workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(UUID(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
        return workflow


def _make_serializer() -> BpmnWorkflowSerializer:
    config = dict(SPIFF_CONFIG)
    config[BpmnWorkflow] = _SharedSpecWorkflowConverter
    return BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(config))


_SERIALIZER = _make_serializer()


def spec_to_dict(spec, subprocess_specs: Mapping[str, Any]) -> dict:
    """The spec and its subprocess specs as one JSON-ready document."""
    registry = _SERIALIZER.registry
    return {
        "serializer_version": _SERIALIZER.VERSION,
        "spec": registry.convert(spec),
        "subprocess_specs": {name: registry.convert(sub) for name, sub in subprocess_specs.items()},
    }


def spec_from_dict(document: Mapping[str, Any]):
    """Restore ``(spec, subprocess_specs)`` from ``spec_to_dict`` output."""
    registry = _SERIALIZER.registry
    spec = registry.restore(dict(document["spec"]))
    subprocess_specs = {name: registry.restore(dict(sub)) for name, sub in document["subprocess_specs"].items()}
    return spec, subprocess_specs


def spec_registry():
    """The serializer's registry (SpiffWorkflow's spec diff compares specs through it)."""
    return _SERIALIZER.registry


def state_to_dict(workflow) -> dict:
    """The instance state of ``workflow``, JSON-ready, without the spec."""
    dct = _SERIALIZER.to_dict(workflow)
    dct["tether_state_version"] = STATE_VERSION
    return dct


def state_from_dict(state: Mapping[str, Any], spec, subprocess_specs: Mapping[str, Any], script_engine):
    """Restore a workflow saved with ``state_to_dict`` onto ``spec``."""
    import copy

    dct = copy.deepcopy(dict(state))
    version = dct.pop("tether_state_version", None)
    if version is None:
        raise StateCorrupt("The saved instance state has no version; it was not written by Tether.")
    while version < STATE_VERSION:
        dct = UPGRADES[version](dct)
        version += 1
    if version > STATE_VERSION:
        raise StateCorrupt(f"The saved instance state is version {version}, newer than this server knows.")
    dct["spec"] = spec
    dct["subprocess_specs"] = dict(subprocess_specs)
    try:
        workflow = _SERIALIZER.from_dict(dct)
    except Exception as exc:  # a damaged document can fail anywhere inside SpiffWorkflow
        raise StateCorrupt(f"The saved instance state cannot be restored: {type(exc).__name__}: {exc}") from exc
    workflow.script_engine = script_engine
    return workflow
