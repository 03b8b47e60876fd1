"""Outbound HTTP that cannot be turned against the server's own network.

Webhook deliveries and the `http` service operator both send requests whose destination someone other than the
operator of the server chose (an integrator's subscription, a process designer's diagram). Both go through a
``requests`` session from ``guarded_session``: before connecting, the host must resolve to addresses the policy
allows, and once connected the peer address is checked again, so a host whose DNS changes after the check
(rebinding) still reaches nothing it should not. By default only public addresses are allowed: never loopback,
private, link-local (cloud metadata) or other non-global ones (``webhooks.blocked_address``). A policy may add
networks (an MES on the site's own network) or allow everything (development, tests).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from server.integration import webhooks

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Destinations:
    """Where outbound requests may go: public addresses, plus ``networks``; anywhere with ``anywhere``."""

    networks: tuple[Network, ...] = field(default=())
    anywhere: bool = False
    purpose: str = "requests"

    @classmethod
    def parse(cls, text: str | None, purpose: str) -> Destinations:
        """A policy from a setting's text: comma-separated networks (``10.20.0.0/16``, ``192.0.2.7``) or ``*``.

        ValueError naming the entry when one is not a network."""
        entries = [entry.strip() for entry in (text or "").split(",") if entry.strip()]
        if "*" in entries:
            return cls(anywhere=True, purpose=purpose)
        networks = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"'{entry}' is not a network such as 10.20.0.0/16 or an address") from None
        return cls(tuple(networks), purpose=purpose)

    def refuses(self, address: str) -> bool:
        """Whether ``address`` (an IP address as text) may not be reached."""
        if self.anywhere or not webhooks.blocked_address(address):
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return True
        return not any(ip in net for net in self.networks if net.version == ip.version)

    def check_host(self, host: str, port: int) -> None:
        """Raise ``webhooks.PrivateDestination`` unless every address ``host`` resolves to may be reached."""
        if not self.anywhere:
            allowed = f"{self.purpose} go to public hosts and the networks the server allows"
            webhooks.check_public_host(host, port, refuses=self.refuses, allowed=allowed)

    def check_url(self, url: str) -> None:
        """``check_host`` for the host and port of ``url``."""
        parts = urlsplit(url)
        self.check_host(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))


def guarded_session(destinations: Destinations) -> requests.Session:
    """A session whose connections refuse, once connected, a peer that ``destinations`` does not allow."""
    session = requests.Session()
    if not destinations.anywhere:
        adapter = _adapter(destinations)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


def _adapter(destinations: Destinations) -> HTTPAdapter:
    class PeerCheck:
        def _new_conn(self):
            sock = super()._new_conn()  # type: ignore[misc]
            try:
                peer = str(sock.getpeername()[0])
            except OSError:
                peer = "(unknown)"
            if destinations.refuses(peer):
                sock.close()
                message = f"refused to send {destinations.purpose} to {peer}, a non-public address"
                raise NewConnectionError(self, message)
            return sock

    class CheckedHTTPConnection(PeerCheck, HTTPConnection):
        pass

    class CheckedHTTPSConnection(PeerCheck, HTTPSConnection):
        pass

    class CheckedHTTPPool(HTTPConnectionPool):
        ConnectionCls = CheckedHTTPConnection

    class CheckedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = CheckedHTTPSConnection

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": CheckedHTTPPool, "https": CheckedHTTPSPool}

    return Adapter()
