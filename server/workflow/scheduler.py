"""Event-driven timers: after each commit the therapy's next due time is armed as a one-off job.

A therapy is due when one of its timers is (a catch event, a boundary event, a cycle's next occurrence) or
when a failed service task's retry is (see ``incidents``): ``Therapy.next_due_at`` holds the earliest. The
use cases arm (or re-arm, or cancel) the therapy's job after they commit; at start every active therapy with a
due time is re-armed from the database, so a timer that came due while the server was down fires right away.
A job claims its therapy (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL) and re-checks that it is still
due, so several server processes on one database fire each timer once. A slow sweep arms what is overdue but
has no job here (a crash between commit and arming, a therapy another process changed): a safety net, not
how timers fire.

Delays are measured on the app's clock (``app.config['CLOCK']``, the real one in production), so a test that
moves a fake clock past a due time sees the job run at once.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import datetime, timedelta

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_SUBMITTED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from sqlalchemy import select

from server.store.models import Therapy, utcnow

log = logging.getLogger(__name__)
SWEEP_SECONDS = 60
SWEEP_GRACE = timedelta(seconds=5)  # a job normally fires within this; older due times are the sweep's
# Threads that fire due therapies, one transaction each. SQLite has one writer at a time and its lock
# waits back off in steps of up to 100 ms, so there one thread fires fastest.
WORKERS = {"sqlite": 1}
DEFAULT_WORKERS = 4
CONFLICT_RETRY = timedelta(seconds=1)


class TimerScheduler:
    """Arms one APScheduler job per therapy that has something due."""

    def __init__(self, app: Flask, workers: int | None = None):
        self.app = app
        if workers is None:
            from sqlalchemy.engine import make_url

            dialect = make_url(app.config["SQLALCHEMY_DATABASE_URI"]).get_backend_name()
            workers = WORKERS.get(dialect, DEFAULT_WORKERS)
        self.scheduler = BackgroundScheduler(
            timezone="UTC",
            executors={"default": ThreadPoolExecutor(workers)},
            # A firing re-arms its own therapy after it commits, while its job is still running: let the new
            # job start even then (the claim in ``fire_due_timers`` keeps two from stepping one therapy).
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 4},
        )
        # Jobs handed to the thread pool have left the job store: count them, so the sweep leaves them be.
        self._in_flight: Counter[str] = Counter()
        self._in_flight_lock = threading.Lock()
        self.scheduler.add_listener(self._track, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)

    @property
    def running(self) -> bool:
        """Whether the scheduler thread is alive."""
        return bool(self.scheduler.running)

    def start(self) -> int:
        """Start the thread, re-arm every waiting therapy and the safety-net sweep; returns how many were armed."""
        self.scheduler.start()
        with self.app.app_context():
            armed = self.rearm_all()
        self.scheduler.add_job(self.sweep, "interval", seconds=SWEEP_SECONDS, id="tether-sweep", replace_existing=True)
        every = float(self.app.config.get("AUDIT_SEAL_SECONDS") or 0)
        if every > 0:
            self.scheduler.add_job(
                self.seal_audit, "interval", seconds=every, id="tether-audit-seal", replace_existing=True
            )
        return armed

    def seal_audit(self) -> dict | None:
        """Seal the audit chains' heads that moved since the last seal (``server.store.audit.seal``)."""
        from server.store import audit
        from server.store.extensions import db

        with self.app.app_context():
            try:
                return audit.seal()
            except Exception:  # the next interval tries again
                log.exception("could not seal the audit chains")
                return None
            finally:
                db.session.remove()

    def shutdown(self) -> None:
        """Stop the thread without waiting for running jobs."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def now(self) -> datetime:
        """The app's time (a test's fake clock, else the real one)."""
        clock = self.app.config.get("CLOCK")
        return clock() if clock else utcnow()

    def rearm_all(self) -> int:
        """Arm every active therapy that has a due time; returns how many."""
        from server.store.extensions import db

        rows = db.session.execute(
            select(Therapy.id, Therapy.next_due_at).where(Therapy.status == "active", Therapy.next_due_at.is_not(None))
        ).all()
        db.session.rollback()
        now, real_now = self.now(), utcnow()
        for therapy_id, due in rows:
            assert due is not None, "only therapies with a due time are selected"
            self._add(therapy_id, real_now + max(due - now, timedelta(0)))
        log.info("re-armed %d timers", len(rows))
        return len(rows)

    def arm(self, therapy_id: str, due: datetime | None) -> None:
        """Fire ``therapy_id``'s due work at ``due`` (app time); cancel its job when None."""
        if not self.scheduler.running:
            return
        if due is None:
            self.disarm(therapy_id)
            return
        self._add(therapy_id, utcnow() + max(due - self.now(), timedelta(0)))

    def disarm(self, therapy_id: str) -> None:
        """Drop the therapy's job, if it has one."""
        try:
            self.scheduler.remove_job(_job_id(therapy_id))
        except JobLookupError:
            pass

    def armed(self) -> int:
        """How many therapy jobs are armed."""
        return sum(1 for job in self.scheduler.get_jobs() if job.id.startswith("timer:"))

    def _track(self, event: JobEvent) -> None:
        """Count a job in when the pool takes it and out when it has run."""
        with self._in_flight_lock:
            if event.code == EVENT_JOB_SUBMITTED:
                self._in_flight[event.job_id] += 1
            else:
                self._in_flight[event.job_id] -= 1
                if self._in_flight[event.job_id] <= 0:
                    del self._in_flight[event.job_id]

    def _held(self, therapy_id: str) -> bool:
        """Whether a job of this therapy is armed, queued in the pool or running."""
        job_id = _job_id(therapy_id)
        with self._in_flight_lock:
            if job_id in self._in_flight:
                return True
        return self.scheduler.get_job(job_id) is not None

    def _add(self, therapy_id: str, run_at: datetime) -> None:
        self.scheduler.add_job(
            self.fire, "date", run_date=run_at, args=[therapy_id], id=_job_id(therapy_id), replace_existing=True
        )

    def fire(self, therapy_id: str) -> bool:
        """Fire the therapy's due timers (or retry) in one transaction; a conflict re-arms it a moment later."""
        from server.errors import Conflict
        from server.workflow.therapies import fire_due_timers

        with self.app.app_context():
            try:
                return fire_due_timers(therapy_id)
            except Conflict:  # another process or request changed it at the same moment: look again shortly
                if self.scheduler.running:
                    self._add(therapy_id, utcnow() + CONFLICT_RETRY)
            except Exception:
                log.exception("firing timers of therapy %s failed", therapy_id)
        return False

    def sweep(self) -> int:
        """Arm what is overdue but has no job here (the safety net); returns how many were armed.

        Overdue work that has a job (armed, queued in the pool or running) is only behind other firings: it is
        left to its job.
        """
        from server.store.extensions import db

        with self.app.app_context():
            overdue = (
                db.session.execute(
                    select(Therapy.id).where(
                        Therapy.status == "active", Therapy.next_due_at <= self.now() - SWEEP_GRACE
                    )
                )
                .scalars()
                .all()
            )
            db.session.rollback()
        missing = [therapy_id for therapy_id in overdue if not self._held(therapy_id)]
        for therapy_id in missing:
            self._add(therapy_id, utcnow())
        if missing:
            log.warning("the sweep found %d overdue therapies without a job and armed them", len(missing))
        return len(missing)


def _job_id(therapy_id: str) -> str:
    return f"timer:{therapy_id}"
