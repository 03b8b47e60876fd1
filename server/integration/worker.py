"""A loop that a server process runs beside its requests, in a daemon thread: the webhook dispatcher, the message
broker's publisher and consumer. ``start`` runs ``_loop`` until ``stop``; ``_loop`` waits on ``_stop`` (or on a
bell that ``wake`` rings) so that stopping takes effect at once."""

from __future__ import annotations

import threading


class Worker:
    """A background loop: ``start``, ``running``, ``stop``; subclasses write ``_loop`` (and ``wake`` when they wait
    on something other than ``_stop``)."""

    thread_name = "tether-worker"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Run ``_loop`` in a daemon thread until ``stop``."""
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to end, wake it, and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def wake(self) -> None:
        """Wake the loop from its wait (nothing to do when it waits on ``_stop`` only)."""

    def _loop(self) -> None:  # pragma: no cover - every worker writes its own
        raise NotImplementedError
