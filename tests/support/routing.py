"""Building the app once per test costs little once werkzeug's work on its URL rules is reused.

For every URL rule of an app, werkzeug parses the rule's text into its parts and converters, and writes a small
function that builds the rule's URLs (an ``ast`` tree, compiled with ``compile``): over 150 rules, that was most
of what ``create_app`` cost, and the suite creates an app for almost every test. Both depend only on the rule's
text, its defaults and the converters its map knows (the URL function reaches the rule's converters through its
``self`` argument when called, and converters keep no state of their own). So the tests keep what each distinct
rule parsed into, and each distinct URL function, once per process, and every later app's rule takes them: what
the app matches and what ``url_for`` builds is unchanged (the tests of every page and link would show it), only
the parsing and compiling are saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from werkzeug.routing.rules import Rule

_compiled: dict[tuple, Callable[..., Any]] = {}
_parsed: dict[tuple, tuple[list, list, dict]] = {}


def reuse_url_builders() -> None:
    """Make werkzeug parse each distinct URL rule and compile its URL functions once in this process
    (idempotent)."""
    original_builder, original_compile = Rule._compile_builder, Rule.compile
    if getattr(original_builder, "reused", False):
        return

    def compile_builder(self: Rule, append_unknown: bool = True) -> Callable[..., Any]:
        key = (self.rule, tuple(self._trace), repr(sorted((self.defaults or {}).items())), append_unknown)
        built = _compiled.get(key)
        if built is None:
            built = _compiled[key] = original_builder(self, append_unknown)
        return built

    def compile_rule(self: Rule) -> None:
        url_map = self.map
        assert url_map is not None, "rule not bound"
        domain = (self.host or "") if url_map.host_matching else (self.subdomain or "")
        key = (
            self.rule,
            domain,
            self.merge_slashes,
            repr(sorted((self.defaults or {}).items())),
            tuple(sorted(url_map.converters.items())),
        )
        parsed = _parsed.get(key)
        if parsed is None:
            original_compile(self)
            _parsed[key] = (list(self._parts), list(self._trace), dict(self._converters))
            return
        self._parts, self._trace, self._converters = list(parsed[0]), list(parsed[1]), dict(parsed[2])
        self.arguments.update(self._converters)  # what parsing adds: the rule's variables
        self._build = self._compile_builder(False).__get__(self, None)
        self._build_unknown = self._compile_builder(True).__get__(self, None)

    compile_builder.reused = True  # type: ignore[attr-defined]
    Rule._compile_builder = compile_builder  # type: ignore[method-assign]
    Rule.compile = compile_rule  # type: ignore[method-assign]
