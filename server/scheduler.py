"""Event-driven timers: after each commit the therapy's next due time is armed as a one-off job.

At start every waiting timer is re-armed from the database, so a timer that came due while the server
was down fires right away. A slow safety-net sweep catches anything a crash between commit and arming
could have missed; it is not how timers fire on time.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from sqlalchemy import select

from .models import Therapy, utcnow

log = logging.getLogger(__name__)
SWEEP_SECONDS = 60


class TimerScheduler:
    """Arms one APScheduler job per therapy with a pending timer."""

    def __init__(self, app: Flask):
        self.app = app
        self.scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"misfire_grace_time": None,
                                                                           "coalesce": True})

    @property
    def running(self) -> bool:
        """Whether the scheduler thread is alive."""
        return bool(self.scheduler.running)

    def start(self) -> None:
        """Start the thread, re-arm every waiting timer and the safety-net sweep."""
        self.scheduler.start()
        with self.app.app_context():
            self.rearm_all()
        self.scheduler.add_job(self.sweep, "interval", seconds=SWEEP_SECONDS, id="tether-sweep",
                               replace_existing=True)

    def shutdown(self) -> None:
        """Stop the thread without waiting for running jobs."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def rearm_all(self) -> int:
        """Arm every active therapy that has a due time; returns how many."""
        from .extensions import db

        rows = db.session.execute(select(Therapy.id, Therapy.next_due_at).where(
            Therapy.status == "active", Therapy.next_due_at.is_not(None))).all()
        for therapy_id, due in rows:
            self.arm(therapy_id, due)
        log.info("re-armed %d timers", len(rows))
        return len(rows)

    def arm(self, therapy_id: str, due: datetime | None) -> None:
        """Fire ``therapy_id``'s timers at ``due`` (cancel when None)."""
        if not self.scheduler.running:
            return
        job_id = f"timer:{therapy_id}"
        if due is None:
            if self.scheduler.get_job(job_id):
                self.scheduler.remove_job(job_id)
            return
        self.scheduler.add_job(self._fire, "date", run_date=max(due, utcnow()), args=[therapy_id], id=job_id,
                               replace_existing=True)

    def _fire(self, therapy_id: str) -> None:
        from .therapies import fire_due_timers

        with self.app.app_context():
            try:
                fire_due_timers(therapy_id)
            except Exception:
                log.exception("firing timers of therapy %s failed", therapy_id)

    def sweep(self) -> None:
        """Fire anything overdue that no job holds (the safety net)."""
        from .extensions import db

        with self.app.app_context():
            overdue = db.session.execute(select(Therapy.id).where(
                Therapy.status == "active", Therapy.next_due_at <= utcnow() - timedelta(seconds=5))).scalars().all()
            db.session.rollback()
        for therapy_id in overdue:
            self._fire(therapy_id)
