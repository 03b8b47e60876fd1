"""Every setting, declared once, with its default; read from ``TETHER_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Setting:
    """One configuration value: its name (without the prefix), default and description."""

    name: str
    default: object
    help: str


SETTINGS = [
    Setting("DATABASE_URL", None, "SQLAlchemy URL; default a SQLite file under ./instance/"),
    Setting("SECRET_KEY", None, "key for session cookies; generated into instance/secret_key when unset"),
    Setting("FACILITY_FIN", "W1234", "the ISBT 128 facility identification number that issues COIs"),
    Setting("PROCESSES_DIR", None, "folder of bundled BPMN diagrams deployed at start; default ./processes"),
    Setting("FORMS_DIR", None, "folder of bundled JSON Schema forms; default ./forms"),
    Setting("SCHEDULER", True, "run the timer scheduler in this process"),
    Setting("MAX_UPLOAD_BYTES", 5 * 1024 * 1024, "largest accepted request body, in bytes"),
    Setting("SCRIPT_TIME_LIMIT", 1.0, "seconds a diagram's script or expression may run"),
    Setting("TOKEN_TTL_DAYS", 90, "days an API token stays valid"),
]


def _coerce(value: str, default: object) -> object:
    if isinstance(default, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


def from_environment(environ=None) -> dict:
    """The settings as a Flask config mapping (``TETHER_X`` becomes ``X``), defaults filled in."""
    environ = os.environ if environ is None else environ
    config = {}
    for setting in SETTINGS:
        raw = environ.get(f"TETHER_{setting.name}")
        config[setting.name] = _coerce(raw, setting.default) if raw is not None else setting.default
    return config


def project_root() -> Path:
    """The folder that holds processes/ and forms/ (the repository root when run from source)."""
    return Path(__file__).resolve().parent.parent


__all__ = ["SETTINGS", "Setting", "from_environment", "project_root"]
