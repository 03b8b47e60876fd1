"""Which values may be stored: the one check for request bodies and for the process data a step writes.

Stored data is JSON in SQLite and PostgreSQL, read back by JavaScript clients. A value passes when it
could be written as strict JSON and read back unchanged everywhere: no NaN or infinity, integers that fit
in 64 bits, strings without NUL characters or lone surrogates, string keys, and a bounded depth, number of
items and length of text. The walk is iterative and stops at the first limit, so a hostile value (deep,
huge, or the same list referenced a million times) costs at most ``max_items`` steps to refuse.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .errors import EngineError

INT_MIN, INT_MAX = -(2**63), 2**63 - 1


class ValueRejected(EngineError):
    """A value that cannot be stored; ``details`` names the path and the reason."""

    code = "invalid_value"


@dataclass(frozen=True)
class ValueLimits:
    """How large a value may be: nesting depth, items (containers and leaves) and characters of text."""

    max_depth: int = 64
    max_items: int = 100_000
    max_chars: int = 10_000_000

    def with_chars(self, max_chars: int) -> ValueLimits:
        """The same limits with another bound on text."""
        return ValueLimits(self.max_depth, self.max_items, max_chars)


DEFAULT_LIMITS = ValueLimits()
# Leaves SpiffWorkflow's serializer stores besides JSON's own (scripts may build dates and durations).
ENGINE_LEAVES = (_dt.datetime, _dt.date, _dt.time, _dt.timedelta, Decimal)


def check_value(
    value: Any, limits: ValueLimits = DEFAULT_LIMITS, *, where: str = "data", extra_leaves: tuple[type, ...] = ()
) -> None:
    """Raise ``ValueRejected`` naming the first part of ``value`` that cannot be stored, else return."""
    items = chars = 0
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        current, path, depth = stack.pop()
        items += 1
        if items > limits.max_items:
            _refuse(path, f"holds more than {limits.max_items} items", "too_many_items")
        if depth > limits.max_depth:
            _refuse(path, f"is nested more than {limits.max_depth} levels deep", "too_deep")
        if current is None or isinstance(current, bool):
            continue
        if isinstance(current, str):
            chars += len(current)
            if chars > limits.max_chars:
                _refuse(path, f"holds more than {limits.max_chars} characters of text", "too_long")
            _check_text(current, path)
        elif isinstance(current, int):
            if not INT_MIN <= current <= INT_MAX:
                _refuse(path, "is an integer outside the 64-bit range", "integer_out_of_range")
        elif isinstance(current, float):
            if not math.isfinite(current):
                _refuse(path, "is not a finite number (NaN and infinity cannot be stored)", "not_finite")
        elif isinstance(current, dict):
            for key, item in current.items():
                if not isinstance(key, str):
                    _refuse(path, f"has a key that is not text: {key!r:.40}", "key_not_text")
                chars += len(key)
                _check_text(key, f"{path}.{key[:40]}")
                stack.append((item, f"{path}.{key[:40]}", depth + 1))
        elif isinstance(current, (list, tuple)):
            if len(current) > limits.max_items:
                _refuse(path, f"holds more than {limits.max_items} items", "too_many_items")
            stack.extend((item, f"{path}[{index}]", depth + 1) for index, item in _reversed(current))
        elif isinstance(current, extra_leaves):
            if isinstance(current, Decimal) and not current.is_finite():
                _refuse(path, "is not a finite number (NaN and infinity cannot be stored)", "not_finite")
        else:
            _refuse(path, f"is a {type(current).__name__}, which cannot be stored", "unsupported_type")


def _reversed(sequence: list | tuple) -> Iterator[tuple[int, Any]]:
    """(index, item) from last to first, so the stack visits items in order."""
    for index in range(len(sequence) - 1, -1, -1):
        yield index, sequence[index]


def _check_text(text: str, path: str) -> None:
    if "\x00" in text:
        _refuse(path, "contains a NUL character (\\u0000)", "nul_character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        _refuse(path, "contains a lone surrogate, which is not valid Unicode text", "invalid_unicode")


def _refuse(path: str, what: str, reason: str) -> None:
    raise ValueRejected(f"{path} {what}.", details={"field": path, "reason": reason})
