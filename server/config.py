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
    Setting("SQLITE_BUSY_TIMEOUT_MS", 30000, "ms a SQLite writer waits for another writer's lock (then 409 busy)"),
    Setting("PG_LOCK_TIMEOUT_MS", 30000, "ms a PostgreSQL writer waits for a row another one holds (then 409 busy)"),
    Setting("SECRET_KEY", None, "key for session cookies; generated into instance/secret_key when unset"),
    Setting("FACILITY_FIN", "W1234", "the ISBT 128 facility identification number that issues COIs"),
    Setting("PROCESSES_DIR", None, "folder of bundled BPMN diagrams deployed at start; default ./processes"),
    Setting("FORMS_DIR", None, "folder of bundled JSON Schema forms; default ./forms"),
    Setting("SCHEDULER", True, "run the timer scheduler in this process"),
    Setting("MAX_UPLOAD_BYTES", 5 * 1024 * 1024, "largest accepted request body, in bytes"),
    Setting("SCRIPT_TIME_LIMIT", 1.0, "seconds a diagram's script or expression may run"),
    Setting("SCRIPT_MEMORY_MB", 256, "memory (MB) one script may take in its worker process"),
    Setting("ENGINE_MAX_STEPS", 1_000, "elements one engine command may complete before it is stopped and undone"),
    Setting(
        "ENGINE_TIME_BUDGET",
        5.0,
        "seconds of CPU time one engine command may take before it is stopped and undone (3 times that in wall"
        " time as a backstop)",
    ),
    Setting("MAX_PROCESS_DATA_CHARS", 1_000_000, "characters of text a therapy's process data may hold"),
    Setting("HEALTH_WRITE_TIMEOUT", 2.0, "seconds the health check waits for the write lock (longer: writes stuck)"),
    Setting("PASSWORD_HASH_TIME_COST", 3, "Argon2id passes per password hash (tests use 1)"),
    Setting("PASSWORD_HASH_MEMORY_KIB", 65536, "Argon2id memory per password hash, in KiB (tests use 64)"),
    Setting("TOKEN_TTL_DAYS", 90, "days an API token stays valid"),
    Setting("MAX_JSON_BYTES", 1024 * 1024, "largest accepted JSON (non-upload) request body, in bytes"),
    Setting(
        "DISCARD_BODY_BYTES",
        64 * 1024 * 1024,
        "bytes of a refused (413) body read and dropped so the client can read the answer; a longer body is cut off",
    ),
    Setting(
        "TRUSTED_PROXIES",
        0,
        "proxies in front of the server whose X-Forwarded-* headers are believed (0: none)",
    ),
    Setting("LOGIN_RATE_LIMIT", "10 per minute", "login attempts one client address may make (API and web)"),
    Setting("DISPATCHER", True, "run the webhook dispatcher in this process"),
    Setting("EVENT_SOURCE", "urn:tether", "the CloudEvents 'source' of every event this server publishes"),
    Setting("WEBHOOK_TIMEOUT", 10.0, "seconds one webhook delivery attempt may take"),
    Setting("WEBHOOK_MAX_ATTEMPTS", 10, "attempts before a webhook delivery is marked failed (at least 8)"),
    Setting("WEBHOOK_RETRY_BASE_SECONDS", 30.0, "delay before the first retry; doubled for each further one"),
    Setting("WEBHOOK_RETRY_CAP_SECONDS", 7200.0, "longest delay between two attempts of one delivery"),
    Setting("WEBHOOK_POLL_SECONDS", 2.0, "how often the dispatcher looks for deliveries written by other processes"),
    Setting("WEBHOOK_CONCURRENCY", 4, "webhook deliveries one process sends at the same time"),
    Setting("EVENTS_HEARTBEAT_SECONDS", 15.0, "seconds between keep-alive comments on a live event stream"),
    Setting("EVENTS_POLL_SECONDS", 1.0, "how often a live event stream looks for events written by other processes"),
    Setting("EVENTS_STREAM_SECONDS", 300.0, "seconds a live event stream stays open before the client reconnects"),
    Setting("EVENTS_MAX_STREAMS", 4, "live event streams one server process holds open at once (429 beyond)"),
    Setting("SESSION_HOURS", 8.0, "hours a web login lasts at most, however active (then log in again)"),
    Setting("SESSION_IDLE_MINUTES", 0.0, "minutes without a page request that end a web session (0: no idle limit)"),
    Setting("WEBHOOK_ALLOW_PRIVATE", False, "allow webhook URLs on loopback, private, link-local, metadata addresses"),
    Setting(
        "HTTP_OPERATOR_NETWORKS",
        "",
        "networks besides public ones that http service tasks may reach, e.g. 10.20.0.0/16, 192.0.2.7 (* for any)",
    ),
    Setting("AUDIT_REFUSAL_ATTEMPTS", 2, "tries to write a refused request's audit entry before it is spooled"),
    Setting("AUDIT_SEAL_SECONDS", 60.0, "how often tether serve seals the audit chains' heads that moved (0: never)"),
    Setting("AUDIT_SPOOL_DIR", None, "folder of audit entries waiting for a busy database; default ./instance"),
    Setting("AUDIT_VERIFY_WORKERS", 0, "processes that verify a long audit trail side by side (0: one per CPU)"),
    Setting(
        "AUDIT_VERIFY_PARALLEL_FROM",
        100_000,
        "audit entries from which verification splits the trail over its worker processes (fewer: one pass)",
    ),
    Setting("SMTP_URL", None, "mail server for notify e-mails, e.g. smtp://mail.example:25 (none: no e-mail)"),
    Setting("SMTP_FROM", "tether@localhost", "sender address of notify e-mails"),
    Setting("SMTP_RECIPIENT_DOMAIN", "localhost", "a user's e-mail address is USERNAME@this domain"),
    Setting("CAPACITY_MAX_OCCURRENCES", 500, "slots one capacity request (a recurrence) may create at most"),
    Setting("LOG_FORMAT", "text", "log lines as text or json (one object a line, with the request id)"),
    Setting("LOG_LEVEL", "INFO", "the lowest level logged: DEBUG, INFO, WARNING, ERROR"),
    Setting("METRICS", True, "serve GET /metrics, the Prometheus text exposition (counts and durations only)"),
    Setting(
        "BROKER_URL", None, "RabbitMQ to publish events to and take messages from, amqp://user:pass@host:5672/vhost"
    ),
    Setting("BROKER_USER", "broker", "the user whose roles and sites apply to messages taken from the broker"),
    Setting("BROKER_CONSUME", True, "take messages from the broker's queue tether.messages in this process"),
    Setting("BROKER_RETRY_SECONDS", 5.0, "wait before reconnecting to an unreachable broker (doubled up to 60 s)"),
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
