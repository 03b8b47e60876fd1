"""Service operators that a diagram's service tasks call, registered in one place.

An operator is a function ``(context, params) -> JSON-ready result``; it runs inside the transaction of
the command that reached the service task, so what it records commits with the step, or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.definition import OperatorSignature
from server.workflow.operators import coi_assign, http, notify, publish, slot_book


@dataclass
class OperatorContext:
    """What an operator may know about the call: the therapy and who caused the step."""

    therapy: Any
    actor: str
    notes: list[dict] = field(default_factory=list)


Operator = Callable[[OperatorContext, dict], Any]

# Each operator's module: its ``run``, its documentation (the module's docstring), its ``PARAMETERS`` (each with
# a hint) and which of them it ``REQUIRED``.
_MODULES = {"coi.assign": coi_assign, "http": http, "notify": notify, "publish": publish, "slot.book": slot_book}

OPERATORS: dict[str, tuple[Operator, str]] = {
    name: (module.run, module.__doc__ or "") for name, module in _MODULES.items()
}


def operator_names() -> set[str]:
    """The names a service task may use."""
    return set(OPERATORS)


def parameters(name: str) -> dict[str, str]:
    """The parameters operator ``name`` takes, each with a hint, the required ones first."""
    module = _MODULES[name]
    return dict(sorted(module.PARAMETERS.items(), key=lambda item: item[0] not in module.REQUIRED))


def required_parameters(name: str) -> set[str]:
    """The parameters operator ``name`` cannot do without."""
    return set(_MODULES[name].REQUIRED)


def signatures() -> dict[str, OperatorSignature]:
    """Each operator's parameters, as the upload check wants them (a task's parameters are checked against them)."""
    out = {}
    for name, module in _MODULES.items():
        required = frozenset(module.REQUIRED)
        out[name] = OperatorSignature(requires=required, optional=frozenset(module.PARAMETERS) - required)
    return out


def call(name: str, context: OperatorContext, params: dict) -> Any:
    """Run operator ``name``; its errors propagate with their own message."""
    operator, _doc = OPERATORS[name]
    return operator(context, params)
