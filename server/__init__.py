"""Tether's server: the Flask app factory that wires database, API, engine and scheduler."""

from __future__ import annotations

import secrets
from pathlib import Path

from flask import Flask
from flask.json.provider import DefaultJSONProvider


def _default_database_url(app: Flask) -> str:
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(app.instance_path) / 'tether.sqlite3'}"


def _secret_key(app: Flask) -> str:
    path = Path(app.instance_path) / "secret_key"
    if path.exists():
        return path.read_text().strip()
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    path.write_text(key)
    path.chmod(0o600)
    return key


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings from TETHER_* variables, then ``test_config``; nothing starts by itself."""
    from server.store.extensions import compact_json, db, migrate
    from server.store.uow import configure_postgresql, configure_sqlite

    from . import config, errors
    from .api import bp as api_bp

    app = Flask(__name__, instance_path=str(Path.cwd() / "instance"), instance_relative_config=True)
    settings = config.from_environment()
    if test_config:
        settings.update(test_config)
    app.config.update(settings)
    if not app.config.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = _default_database_url(app)
    app.config["SQLALCHEMY_DATABASE_URI"] = app.config["DATABASE_URL"]
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
        "pool_pre_ping": True,
        "json_serializer": compact_json,
        **app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}),
    }
    app.config["SECRET_KEY"] = app.config.get("SECRET_KEY") or _secret_key(app)
    app.config["MAX_CONTENT_LENGTH"] = int(app.config["MAX_UPLOAD_BYTES"])
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    # The app keeps Flask's default provider; responses keep the order their fields are built in.
    assert isinstance(app.json, DefaultJSONProvider), "the app uses Flask's default JSON provider"
    app.json.sort_keys = False

    db.init_app(app)
    migrations = Path(__file__).resolve().parent.parent / "migrations"
    migrate.init_app(app, db, directory=str(migrations))
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            configure_sqlite(db.engine)
        elif db.engine.dialect.name == "postgresql":
            configure_postgresql(db.engine)
    errors.register(app)
    from . import inputs

    inputs.init_app(app)  # strict JSON in and out, bounded path and query values; before any blueprint
    app.register_blueprint(api_bp)
    from server.integration import webhooks
    from server.store import audit, uow

    from .api.docs import docs_bp

    # What every unit of work runs before it commits, in this order (server/store/uow.py): the staged outbox
    # events fan out to webhook deliveries, then the staged audit entries are chained (it locks the chain's head).
    uow.init_app(app, (webhooks.fan_out_staged, audit.chain_staged))
    app.register_blueprint(docs_bp)  # /api/docs: the OpenAPI document as a page
    from . import logs, monitoring, web

    logs.init_app(app)  # request ids (X-Request-ID) and the log lines' format
    monitoring.init_app(app)  # request timing and GET /metrics (Prometheus)
    web.init_app(app)  # the pages at /: session cookie and CSRF; /api/v1 stays token-based and CSRF-free
    from . import ratelimit

    ratelimit.init_app(app)  # login rate limit and body size limits; after every blueprint is registered
    _trust_proxies(app)
    _check_outbound_networks(app)
    return app


def _check_outbound_networks(app: Flask) -> None:
    """Refuse to start with a ``TETHER_HTTP_OPERATOR_NETWORKS`` entry that is not a network, naming it."""
    from server.integration.outbound import Destinations

    try:
        Destinations.parse(app.config.get("HTTP_OPERATOR_NETWORKS"), purpose="http service tasks")
    except ValueError as exc:
        raise ValueError(f"TETHER_HTTP_OPERATOR_NETWORKS: {exc}") from None


def _trust_proxies(app: Flask) -> None:
    """Behind ``TETHER_TRUSTED_PROXIES`` proxies, take the client's address, scheme, host and path prefix from the
    X-Forwarded-* headers they add (werkzeug's ProxyFix, one value per proxy): the login limit then counts the
    client rather than the proxy, a page served over https marks its session cookie Secure, and links keep the
    public host and prefix. Without trusted proxies the headers are ignored, since any client could send them."""
    hops = int(app.config.get("TRUSTED_PROXIES") or 0)
    if hops < 0:
        raise ValueError("TETHER_TRUSTED_PROXIES is a number of proxies: 0 or more")
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]  # the documented way to wrap a Flask app
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops
        )


def start_scheduler(app: Flask):
    """Start the timer scheduler for ``app`` (``tether serve`` does; tests drive timers themselves)."""
    from server.workflow.scheduler import TimerScheduler

    scheduler = TimerScheduler(app)
    app.extensions["tether_scheduler"] = scheduler
    scheduler.start()
    return scheduler


def start_broker(app: Flask) -> None:
    """Publish events to the message broker and take messages from it (``tether serve`` does when
    ``TETHER_BROKER_URL`` is set)."""
    from server import broker

    broker.start(app)


def start_dispatcher(app: Flask):
    """Start the webhook dispatcher for ``app`` (``tether serve`` does; tests drive deliveries themselves)."""
    from server.integration.dispatcher import Dispatcher

    dispatcher = Dispatcher(app)
    app.extensions["tether_dispatcher"] = dispatcher
    dispatcher.start()
    return dispatcher
