"""Webhooks go to public addresses only: loopback, private, link-local and metadata addresses are refused at
registration and at delivery (after DNS resolution, and again on connecting), and redirects are not followed.

No test sends anything to a non-loopback address: host names are resolved by a stand-in resolver.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

from .test_webhooks import deliveries, dispatcher, receiver, start, subscribe  # noqa: F401 (fixtures)

PUBLIC = "93.184.216.34"  # documentation-style public address; never connected to


@pytest.fixture
def private_refused(app):
    """The production default: no private destinations."""
    app.config["WEBHOOK_ALLOW_PRIVATE"] = False
    return app


@pytest.fixture
def dns(monkeypatch):
    """A stand-in resolver: ``dns["host"] = ["address", ...]``; other names resolve as usual."""
    from server.integration import webhooks

    answers: dict[str, list[str]] = {}
    real = webhooks.resolve

    def resolve(host, port):
        if host in answers:
            if not answers[host]:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return list(answers[host])
        return real(host, port)

    monkeypatch.setattr(webhooks, "resolve", resolve)
    return answers


def refused(api, world, url):
    """The error of registering ``url`` (asserting it is a 422 naming the field url)."""
    answer = api.as_(world["integrator"]).post("/api/v1/webhooks", json={"url": url, "events": ["*"]})
    assert answer.status_code == 422, (url, answer.get_json())
    error = answer.get_json()["error"]
    assert error["code"] == "invalid_webhook_url" and error["details"]["field"] == "url", (url, error)
    return error


def subscriptions(app):
    from server.store.extensions import db
    from server.store.models import AuditEntry, WebhookSubscription

    with app.app_context():
        rows = db.session.execute(sa.select(WebhookSubscription.url)).scalars().all()
        audited = db.session.execute(
            sa.select(sa.func.count()).select_from(AuditEntry).where(AuditEntry.action == "webhook.subscribed")
        ).scalar()
        return rows, audited


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://127.1/hook",
        "http://2130706433/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "https://10.0.0.5/hook",
        "http://172.16.3.4/hook",
        "http://172.31.255.1/hook",
        "http://192.168.1.10/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
        "http://[fd12:3456::1]/hook",
        "http://[fe80::1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/hook",
        "http://[2002:7f00:1::]/hook",
    ],
)
def test_private_loopback_link_local_and_metadata_urls_are_refused(api, world, private_refused, url):
    error = refused(api, world, url)
    assert "public" in error["message"]
    assert subscriptions(private_refused) == ([], 0)


def test_host_names_are_judged_by_every_address_they_resolve_to(api, world, private_refused, dns):
    dns.update(
        {
            "metadata.test": ["169.254.169.254"],
            "mixed.test": [PUBLIC, "10.1.2.3"],
            "nowhere.test": [],
            "public.test": [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"],
        }
    )
    assert refused(api, world, "https://metadata.test/hook")["details"]["address"] == "169.254.169.254"
    assert refused(api, world, "https://mixed.test/hook")["details"]["address"] == "10.1.2.3"
    assert "cannot be resolved" in refused(api, world, "https://nowhere.test/hook")["message"]
    assert subscriptions(private_refused) == ([], 0)
    subscribe(api, world["integrator"], "https://public.test/hook", ["*"])
    assert subscriptions(private_refused) == (["https://public.test/hook"], 1)


def test_the_allow_private_setting_lets_loopback_through(api, world, app):
    app.config["WEBHOOK_ALLOW_PRIVATE"] = True
    subscribe(api, world["integrator"], "http://127.0.0.1:9/hook", ["*"])


def test_a_host_that_now_resolves_to_a_private_address_gets_nothing(api, world, private_refused, dns, dispatcher):  # noqa: F811
    dns["moved.test"] = [PUBLIC]
    hook = subscribe(api, world["integrator"], "http://moved.test/hook", ["therapy.started"])
    dns["moved.test"] = ["169.254.169.254"]
    start(api, world["coord"])
    assert dispatcher.drain() == 1
    [delivery] = deliveries(api, world["integrator"], hook["id"])
    assert delivery["status"] == "pending" and delivery["attempts"] == 1
    assert delivery["last_error"].startswith("refused:") and "169.254.169.254" in delivery["last_error"]
    assert delivery["last_status_code"] is None


def test_a_name_that_rebinds_to_loopback_between_check_and_connect_gets_nothing(
    api,
    world,
    private_refused,
    dns,
    receiver,  # noqa: F811
    dispatcher,  # noqa: F811
):
    target = receiver()
    dns["localhost"] = [PUBLIC]  # what the check sees; the connection itself resolves to 127.0.0.1
    hook = subscribe(api, world["integrator"], f"http://localhost:{target.port}/hooks/tether", ["therapy.started"])
    start(api, world["coord"])
    assert dispatcher.drain() == 1
    assert target.attempts == 0
    [delivery] = deliveries(api, world["integrator"], hook["id"])
    assert delivery["last_status_code"] is None and "non-public address" in delivery["last_error"]


class Redirector:
    """A loopback endpoint that answers every POST with a redirect to ``location``."""

    def __init__(self, location: str):
        self.posts = 0
        redirector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server naming
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                redirector.posts += 1
                self.send_response(307)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_redirects_are_never_followed(api, world, app, receiver, dispatcher):  # noqa: F811
    inner = receiver()  # stands for an internal service the redirect points at
    redirector = Redirector(inner.url)
    try:
        hook = subscribe(api, world["integrator"], redirector.url, ["therapy.started"])
        start(api, world["coord"])
        assert dispatcher.drain() == 1
        assert redirector.posts == 1 and inner.attempts == 0
        [delivery] = deliveries(api, world["integrator"], hook["id"])
        assert delivery["last_status_code"] == 307 and delivery["status"] == "pending"
    finally:
        redirector.stop()


@pytest.mark.parametrize(
    ("address", "blocked"),
    [
        ("93.184.216.34", False),
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("::ffff:8.8.8.8", False),
        ("64:ff9b::808:808", False),
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("169.254.169.254", True),
        ("::ffff:169.254.169.254", True),
        ("fd00:ec2::254", True),
        ("fe80::1%eth0", True),
        ("100.100.100.200", True),
        ("192.0.0.192", True),
        ("198.18.0.1", True),
        ("224.0.0.1", True),
        ("255.255.255.255", True),
        ("::", True),
        ("ff02::1", True),
        ("not an address", True),
    ],
)
def test_which_addresses_are_public(address, blocked):
    from server.integration.webhooks import blocked_address

    assert blocked_address(address) is blocked


def test_https_connections_are_checked_as_well(app, dns, receiver):  # noqa: F811
    from server.integration.dispatcher import post

    target = receiver()  # plain HTTP: the check comes before any TLS would be spoken
    dns["localhost"] = [PUBLIC]
    with app.app_context():
        answer = post(f"https://localhost:{target.port}/hook", {}, b"{}", 5.0)
    assert answer.status_code is None and "non-public address" in answer.error
    assert target.attempts == 0
