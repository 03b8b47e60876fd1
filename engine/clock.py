"""An injectable clock for the engine, and the one place SpiffWorkflow's timers are made to read it.

SpiffWorkflow's timer event definitions call ``datetime.now(timezone.utc)`` directly;
``engine.spiff_patches`` points them at ``ClockedDatetime``, whose ``now()`` reads the clock of the
command being run. Tests move a fake clock instead of sleeping.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]

_current: contextvars.ContextVar[Clock | None] = contextvars.ContextVar("tether_engine_clock", default=None)


def system_clock() -> datetime:
    """The real time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime | None = None):
        self.now = start or datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        """Move the clock forward by a ``timedelta(**kwargs)`` and return the new time."""
        self.now = self.now + timedelta(**kwargs)
        return self.now


class ClockedDatetime(datetime):
    """``datetime`` whose ``now()`` follows the clock of the command being run."""

    @classmethod
    def now(cls, tz=None):  # type: ignore[override]
        clock = _current.get()
        moment = clock() if clock is not None else datetime.now(UTC)
        return moment.astimezone(tz) if tz is not None else moment.astimezone(UTC).replace(tzinfo=None)


@contextlib.contextmanager
def using(clock: Clock) -> Iterator[None]:
    """Run the enclosed engine steps with ``clock`` as the time source."""
    token = _current.set(clock)
    try:
        yield
    finally:
        _current.reset(token)
