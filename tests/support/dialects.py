"""Statements compiled once per test process, not once per test.

SQLAlchemy keeps the statements it has compiled (the SQL text, its parameters' order and converters) in a cache of
each engine, keyed by the engine's dialect object, so a new engine starts with nothing compiled. The suite creates
an app, and with it an engine, for almost every test: each test compiled again every statement it ran, about a
quarter of the time of an integration test. Here the engines of a test process for the same database server and
options share one cache of compiled statements and the dialect object of the first of them (once that one has
connected, so the dialect has read the server's version): the compiled statements are then found again by every
later test. The statements are the same (same dialect class, same server, same options); only the compiling is
saved.
"""

from __future__ import annotations

from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.util import LRUCache

_dialects: dict[tuple, Any] = {}
_caches: dict[tuple, LRUCache] = {}


def _key(options: dict[str, Any]) -> tuple:
    url = make_url(options["url"])
    same = sorted((name, repr(value)) for name, value in options.items() if name not in ("url", "execution_options"))
    return (url.get_backend_name(), url.get_driver_name(), url.host, url.port, repr(same))


def share_dialects() -> None:
    """Make the engines Flask-SQLAlchemy creates in this process share one statement cache and one dialect object
    per kind (idempotent)."""
    original = SQLAlchemy._make_engine
    if getattr(original, "shared", False):
        return

    def make_engine(self: SQLAlchemy, bind_key: str | None, options: dict[str, Any], app: Any) -> Engine:
        key = _key(options)
        cache = _caches.setdefault(key, LRUCache(5000))
        executing = {"compiled_cache": cache, **options.get("execution_options", {})}
        engine = original(self, bind_key, {**options, "execution_options": executing}, app)
        shared = _dialects.get(key)
        if shared is not None:
            engine.dialect = shared
            return engine
        try:  # the first engine's dialect learns the server's version and features on its first connection
            with engine.connect():
                pass
        except Exception:  # noqa: BLE001 - a database that is not there yet; a later engine will be the first
            return engine
        finally:  # the app adds its own connection settings after this: no connection made before may be kept
            engine.dispose()
        _dialects[key] = engine.dialect
        return engine

    make_engine.shared = True  # type: ignore[attr-defined]
    SQLAlchemy._make_engine = make_engine  # type: ignore[method-assign]
