"""What a request learns with its first statement, so that a process cache can trust itself for one transaction.

Every API request reads its token first (``server.access.auth.token_owner``); on PostgreSQL that statement also
reads ``webhook_changes()``, a number that grows at every change of the webhook subscriptions, whichever process
made it. The number is remembered for the transaction that read it (``remember``) and nowhere else
(``known``): a later transaction, a SQLite write transaction after the read one included, reads the
subscriptions again. The fan-out (``server.integration.webhooks``) keeps the subscriptions it read with the
number it read them at, and reads them again only when the request's number differs. So a request that
begins after a subscription was created or ended, in any process, fans out to the subscriptions as they are
then, and a completion on PostgreSQL (one transaction from its token to its commit) sends no statement for
them.
"""

from __future__ import annotations

from sqlalchemy import case, func, select

from server.store.extensions import db
from server.store.models import WebhookSubscription

_KEY = "tether_webhook_changes"  # in session.info: (the transaction that read it, the number)


def webhook_changes():
    """A scalar subquery: the subscriptions ever created plus those ended. Subscriptions are never deleted nor
    made active again, so the number grows by one at every change and never comes back to an earlier value."""
    ended = func.coalesce(func.sum(case((WebhookSubscription.active.is_(False), 1), else_=0)), 0)
    return select(func.count() + ended).select_from(WebhookSubscription).scalar_subquery()


def remember(changes: int) -> None:
    """Note the number read in the current transaction."""
    session = db.session()
    session.info[_KEY] = (session.get_transaction(), changes)


def known() -> int | None:
    """The number the current transaction read, if it read one (None otherwise)."""
    session = db.session()
    noted = session.info.get(_KEY)
    current = session.get_transaction()
    if noted is None or current is None or noted[0] is not current:
        return None
    return noted[1]
