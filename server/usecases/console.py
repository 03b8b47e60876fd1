"""Who asks when the command line asks: the server's operator at the console.

``tether site add``, ``tether user ...``, ``tether token ...`` and ``tether deploy`` run with no one logged in;
whoever can run them on the server's machine administers it. They build the same commands as the API, with
``OPERATOR`` as ``by``: user name ``cli`` (the name the audit trail gives their changes), the admin role,
unscoped and at no site, and no account of its own (no id: nothing is ever "their own").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from server.store.models import Site, User


@dataclass(frozen=True)
class Operator:
    """The operator at the console, with what the handlers read of a caller: the name the audit trail shows,
    the roles ``check_roles`` reads, and the sites ``can_see_site`` and ``visible_site_ids`` read (none, and
    never scoped: the operator sees every site)."""

    username: str = "cli"
    display_name: str = "the operator at the console"
    roles: tuple[str, ...] = ("admin",)
    sites: tuple[Site, ...] = ()
    id: int | None = None
    active: bool = True
    locked: bool = False

    @property
    def scoped(self) -> bool:
        """Never: the operator administers every site."""
        return False

    @property
    def site_codes(self) -> list[str]:
        """No sites of its own."""
        return []


# The handlers type their caller as a User and read only the attributes above of it.
OPERATOR = cast(User, Operator())
