"""Building the app once per test costs little once werkzeug's URL builders are reused.

For every URL rule of an app, werkzeug writes a small function that builds the rule's URLs (an ``ast`` tree,
compiled with ``compile``): over 150 rules, that was most of what ``create_app`` cost, and the suite creates an
app for almost every test. The function depends only on the rule's parts (its trace, defaults and whether unknown
arguments are appended); it reaches the rule's converters through its ``self`` argument when called. So the tests
keep each function once, by those parts, and every later app's rule gets the same function bound to itself: what
``url_for`` builds is unchanged (the tests of every page and link would show it), only the compiling is saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from werkzeug.routing.rules import Rule

_compiled: dict[tuple, Callable[..., Any]] = {}


def reuse_url_builders() -> None:
    """Make werkzeug compile each distinct URL builder once in this process (idempotent)."""
    original = Rule._compile_builder
    if getattr(original, "reused", False):
        return

    def compile_builder(self: Rule, append_unknown: bool = True) -> Callable[..., Any]:
        key = (self.rule, tuple(self._trace), repr(sorted((self.defaults or {}).items())), append_unknown)
        built = _compiled.get(key)
        if built is None:
            built = _compiled[key] = original(self, append_unknown)
        return built

    compile_builder.reused = True  # type: ignore[attr-defined]
    Rule._compile_builder = compile_builder  # type: ignore[method-assign]
