"""E-mail for `notify`: one message per recipient, sent after the commit on a background thread.

``TETHER_SMTP_URL`` is ``smtp://[user:password@]host[:port]`` (plain, STARTTLS when the server offers it),
``smtps://...`` (TLS from the start). A failed send is logged; the alert it accompanies is already recorded.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Mail:
    """What to send, and to whom."""

    subject: str
    body: str
    to: list[str]


def address_of(username: str, domain: str) -> str:
    """A user's e-mail address: the user name at the configured domain."""
    return f"{username}@{domain}"


def body_for(message: str, role: str, site: str, coi: str, therapy_id: str) -> str:
    """The plain-text e-mail body."""
    return (
        f"{message}\n\nFor: the {role} role at {site}\nTherapy: {therapy_id}\nCOI: {coi}\n\n"
        "The alert is also in Tether's alert list.\n"
    )


def send(url: str, sender: str, mail: Mail) -> int:
    """Send ``mail`` through the server at ``url``; returns how many recipients the server accepted."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError(f"TETHER_SMTP_URL must look like smtp://host:port, got '{url}'")
    port = parts.port or (465 if parts.scheme == "smtps" else 25)
    client_class = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    accepted = 0
    with client_class(parts.hostname, port, timeout=TIMEOUT_SECONDS) as client:
        client.ehlo()
        if parts.scheme == "smtp" and client.has_extn("starttls"):
            client.starttls(context=ssl.create_default_context())
            client.ehlo()
        if parts.username:
            client.login(unquote(parts.username), unquote(parts.password or ""))
        for recipient in mail.to:
            message = EmailMessage()
            message["From"], message["To"], message["Subject"] = sender, recipient, mail.subject
            message.set_content(mail.body)
            refused = client.send_message(message)
            accepted += 0 if refused else 1
    return accepted


def send_in_background(url: str, sender: str, mail: Mail) -> threading.Thread:
    """Send on a daemon thread so that the request that committed the step does not wait for the mail server."""

    def work() -> None:
        """Send, logging instead of raising."""
        try:
            send(url, sender, mail)
        except Exception:  # the alert is recorded either way; a mail problem must not surface as a failed step
            log.exception("sending the notify e-mail to %s failed", ", ".join(mail.to))

    thread = threading.Thread(target=work, name="tether-notify-mail", daemon=True)
    thread.start()
    return thread
