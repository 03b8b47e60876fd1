"""The worker side of ``engine.isolation``: ``python -m engine.script_worker MEMORY_MB`` answers requests.

The process caps its own address space, then reads frames from standard input, runs each script or expression
in the sandbox (with its step and time budget), checks what it would send back with ``check_value`` and
writes the answer as one frame to standard output, until its input closes.
"""

from __future__ import annotations

import json
import os
import sys

from .errors import ScriptFailed
from .isolation import HEADER
from .sandbox import SandboxEnvironment
from .serialization import _SERIALIZER
from .values import ENGINE_LEAVES, ValueLimits, ValueRejected, check_value


def _limit_memory(memory_limit_mb: int) -> None:
    """Cap this process's address space at what it uses now plus ``memory_limit_mb``."""
    import resource

    if memory_limit_mb <= 0:
        return
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[0])
    limit = pages * os.sysconf("SC_PAGE_SIZE") + memory_limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _answer(request: dict) -> dict:
    """Run one request in this (worker) process."""
    registry = _SERIALIZER.registry
    limits = ValueLimits(*request["limits"])
    environment = SandboxEnvironment(time_limit=request["time_limit"], max_steps=request["max_steps"])
    context, external = registry.restore(request["context"]), registry.restore(request["external"])
    try:
        if request["mode"] == "eval":
            value = environment.evaluate(request["source"], context, external)
        else:
            environment.execute(request["source"], context, external)
            value = context
        check_value(value, limits, where="result" if request["mode"] == "eval" else "data", extra_leaves=ENGINE_LEAVES)
        return {"ok": True, "value": registry.convert(value)}
    except ScriptFailed as exc:
        return {"ok": False, "message": exc.message, "line": exc.line}
    except ValueRejected as exc:
        return {"ok": False, "message": f"{request['what']} left a value that cannot be stored: {exc.message}"}
    except MemoryError:
        return {"ok": False, "message": f"{request['what']} ran out of memory"}


def _read_exactly(stream, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(memory_limit_mb: int) -> None:
    """The worker's loop: answer requests from standard input until it closes."""
    _limit_memory(memory_limit_mb)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(HEADER.pack(0))  # ready: the deadline of the first request starts now, not before the imports
    stdout.flush()
    while True:
        header = _read_exactly(stdin, HEADER.size)
        if header is None:
            return
        body = _read_exactly(stdin, HEADER.unpack(header)[0])
        if body is None:
            return
        try:
            answer = json.dumps(_answer(json.loads(body)), separators=(",", ":")).encode()
        except MemoryError:
            answer = json.dumps({"ok": False, "message": "the script ran out of memory"}).encode()
        stdout.write(HEADER.pack(len(answer)) + answer)
        stdout.flush()


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
