"""Serving with gunicorn (threads per worker), each worker running its own timer scheduler and webhook dispatcher
(and, with a message broker configured, its own broker publisher and consumer)."""

from __future__ import annotations

import gc

from gunicorn.app.base import BaseApplication


class _Server(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from . import create_app, start_broker, start_dispatcher, start_scheduler

        app = create_app()
        if app.config.get("SCHEDULER"):
            start_scheduler(app)
        if app.config.get("DISPATCHER"):
            start_dispatcher(app)
        if app.config.get("BROKER_URL"):
            start_broker(app)
        # What the app loaded stays for the life of the worker: out of the collector's way, a full collection
        # (every few requests) walks only what requests allocate.
        gc.collect()
        gc.freeze()
        return app


def run(host: str, port: int, workers: int, threads: int) -> None:
    """Serve until interrupted."""
    _Server(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "accesslog": "-",
            "timeout": 60,
            "graceful_timeout": 5,
            # gunicorn's control socket has one default path for every server of a user: servers side by side
            # (several environments on one machine, the tests) would fight over it. Tether does not use it.
            "control_socket_disable": True,
        }
    ).run()
