"""The audit spool: a local file where audit entries wait while the database cannot take them.

When the audit entry of a refused request cannot be written (the database stays busy or is unreachable),
it is kept here, one JSON line per entry, and appended to the chain as soon as the database accepts writes
again (``audit.replay_spool``). The file lives in ``TETHER_AUDIT_SPOOL_DIR`` (default the instance folder)
and is named after the database it belongs to, so entries never land in another database's chain. Writers
and the replay take an exclusive ``flock`` on a companion ``.lock`` file, so several server processes on
one host share a spool safely.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)


def spool_path(app: Flask | None = None) -> Path:
    """The spool file of ``app``'s database (computed once per app)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    cached = app.extensions.get("tether_audit_spool")
    if cached is None:
        url = make_url(app.config["SQLALCHEMY_DATABASE_URI"]).render_as_string(hide_password=True)
        folder = Path(app.config.get("AUDIT_SPOOL_DIR") or app.instance_path)
        cached = folder / f"audit-spool-{hashlib.sha256(url.encode()).hexdigest()[:16]}.jsonl"
        app.extensions["tether_audit_spool"] = cached
    return cached


def waiting(path: Path) -> bool:
    """Whether entries wait in the spool (a cheap check: the file exists and is not empty)."""
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the spool's exclusive lock (across processes and threads) for the enclosed block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def keep(path: Path, fields: dict[str, Any]) -> None:
    """Append one entry's fields to the spool, durably (flushed to disk before returning)."""
    line = json.dumps({**fields, "at": fields["at"].isoformat()}, sort_keys=True, default=str) + "\n"
    with locked(path):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(descriptor, line.encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def read(path: Path) -> list[dict[str, Any]]:
    """The spooled entries in the order they were kept; call while holding ``locked``.

    A line that cannot be read (cut short by a crash while it was written) is logged and skipped.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
            fields["at"] = datetime.fromisoformat(fields["at"])
        except (ValueError, KeyError, TypeError):
            log.error("audit spool %s line %d cannot be read and is skipped: %r", path, number, line[:200])
            continue
        entries.append(fields)
    return entries


def clear(path: Path) -> None:
    """Empty the spool (its entries are in the chain); call while holding ``locked``."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.flush()
        os.fsync(handle.fileno())
