"""Scripts in a separate process, so that a hard deadline and a memory cap hold for any single call.

The sandbox's step and time budget is checked between Python lines: one long built-in call (comparing two
huge lists, ``'x'.ljust(10**9)``) runs to its end before the budget is looked at again. So every script, and
every expression that could call or build something, runs in a worker process (``python -m
engine.script_worker``) whose address space is capped (``RLIMIT_AS``) and which is killed when a request overruns
its deadline; a fresh worker takes its place. The deadline counts the worker's CPU time (read from ``/proc``), so a
busy machine does not fail scripts that merely waited for a core; a wall-time bound ``WALL_FACTOR`` times longer
stays as a backstop. Workers are kept in a small per-process pool and reused.

Parent and worker exchange frames over the worker's standard input and output: a 4-byte big-endian length,
then one JSON document. Values travel in SpiffWorkflow's own data encoding (dates and durations tagged), and
a worker checks what it sends back with ``engine.values.check_value``: the parent never receives a value
larger than the limits, nor any object it did not ask for.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .errors import ScriptFailed
from .values import ValueLimits

HEADER = struct.Struct(">I")  # each frame: its length, then one JSON document
GRACE_SECONDS = 1.0  # CPU time beyond the script's own time limit: decoding the request, encoding the answer
WALL_FACTOR = 10  # a request is also cut after this many times its CPU allowance in wall time (a busy machine)
STARTUP_SECONDS = 60.0  # a fresh worker must be ready within this (its imports; a busy machine is slow)
POLL_SECONDS = 0.05  # how often the worker's CPU time is read while waiting for its answer
MAX_IDLE = 4  # workers kept for reuse in one process
_ROOT = str(Path(__file__).resolve().parent.parent)


class WorkerGone(ScriptFailed):
    """The worker died or was killed while running a script (deadline passed, memory exhausted)."""


class _Worker:
    """One worker process and the pipe to it."""

    def __init__(self, memory_limit_mb: int):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
        self.memory_limit_mb = memory_limit_mb
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
            [sys.executable, "-m", "engine.script_worker", str(memory_limit_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        try:  # the worker says it is ready (an empty frame) once its imports are done
            self._read(HEADER.size, _Deadline(self.process.pid, cpu=None, wall=STARTUP_SECONDS))
        except (OSError, EOFError) as exc:
            self.kill()
            raise WorkerGone(f"the script process did not start: {exc}") from None

    def call(self, body: bytes, cpu_limit: float) -> dict:
        """Send one encoded request and wait for the answer; raise ``WorkerGone``.

        The worker is killed once the request has used ``cpu_limit`` seconds of its CPU time, or ``WALL_FACTOR``
        times that in wall time: a script is held to the time it runs, not to the time a busy machine makes it wait.
        """
        deadline = _Deadline(self.process.pid, cpu=cpu_limit, wall=cpu_limit * WALL_FACTOR)
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(HEADER.pack(len(body)) + body)
            self.process.stdin.flush()
            length = HEADER.unpack(self._read(HEADER.size, deadline))[0]
            return json.loads(self._read(length, deadline))
        except (OSError, ValueError, EOFError) as exc:
            self.kill()
            raise WorkerGone(f"the script process failed: {exc}") from None

    def _read(self, size: int, deadline: _Deadline) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        chunks, left = [], size
        while left:
            if deadline.passed() or not select.select([fd], [], [], POLL_SECONDS)[0]:
                if not deadline.passed():
                    continue
                self.kill()
                raise TimeoutError("deadline passed")
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                self.kill()
                raise EOFError("the script process ended")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None

    def kill(self) -> None:
        """End the process now."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


class _Deadline:
    """When a request to worker ``pid`` is over: ``cpu`` seconds of its CPU time, or ``wall`` seconds of waiting."""

    def __init__(self, pid: int, *, cpu: float | None, wall: float):
        self.pid, self.cpu = pid, cpu
        self.wall_end = time.monotonic() + wall
        self.cpu_start = cpu_seconds(pid) if cpu is not None else None

    def passed(self) -> bool:
        if time.monotonic() > self.wall_end:
            return True
        if self.cpu is None or self.cpu_start is None:
            return False
        used = cpu_seconds(self.pid)
        return used is not None and used - self.cpu_start > self.cpu


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds process ``pid`` has used (Linux /proc), or None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime and stime, fields 14 and 15 of stat(5)


class _Pool:
    """Idle workers of this process, by memory limit; reset after a fork (pipes are not shared)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []
        self.pid = os.getpid()

    def take(self, memory_limit_mb: int) -> _Worker:
        with self.lock:
            if self.pid != os.getpid():
                self.idle, self.pid = [], os.getpid()
            for index, worker in enumerate(self.idle):
                if worker.memory_limit_mb == memory_limit_mb and worker.alive():
                    return self.idle.pop(index)
        return _Worker(memory_limit_mb)

    def give_back(self, worker: _Worker) -> None:
        with self.lock:
            if worker.alive() and len(self.idle) < MAX_IDLE and self.pid == os.getpid():
                self.idle.append(worker)
                return
        worker.kill()

    def close(self) -> None:
        with self.lock:
            workers, self.idle = self.idle, []
        for worker in workers:
            worker.kill()


_POOL = _Pool()
atexit.register(_POOL.close)


def run(
    mode: str,
    source: str,
    context: dict,
    external: dict,
    *,
    time_limit: float,
    max_steps: int,
    memory_limit_mb: int,
    limits: ValueLimits,
    what: str,
) -> Any:
    """Evaluate (``mode`` "eval") or execute ("exec") ``source`` in a worker.

    Returns the expression's value, or for a script the task data it leaves. A failure in the script, an
    overrun deadline or exhausted memory raise ``ScriptFailed``.
    """
    from .serialization import _SERIALIZER

    registry = _SERIALIZER.registry
    request = {
        "mode": mode,
        "source": source,
        "context": registry.convert(context),
        "external": registry.convert(external),
        "time_limit": time_limit,
        "max_steps": max_steps,
        "limits": [limits.max_depth, limits.max_items, limits.max_chars],
        "what": what,
    }
    try:
        body = json.dumps(request, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ScriptFailed(f"{what} cannot be given its task data: {exc}") from None
    worker = _POOL.take(memory_limit_mb)
    try:
        answer = worker.call(body, time_limit + GRACE_SECONDS)
    except WorkerGone:
        if worker.process.returncode not in (None, -9):
            raise ScriptFailed(f"{what} ran out of memory (limit {memory_limit_mb} MB) or crashed") from None
        raise ScriptFailed(f"{what} stopped after the time limit of {time_limit:g} s") from None
    _POOL.give_back(worker)
    if not answer.get("ok"):
        raise ScriptFailed(answer["message"], line=answer.get("line"))
    return registry.restore(answer["value"])
