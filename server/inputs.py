"""What a request may carry, checked in one place for every endpoint: JSON bodies, path segments, query strings.

- A JSON body is parsed strictly and then passed through ``engine.values.check_value`` (the one check of what
  may be stored): NaN, Infinity and numbers too large for a float (``1e400``) are refused, as are integers
  outside 64 bits, NUL characters, lone surrogates and nesting deeper than the limit, with a 422 whose
  ``details`` name the field (``body.data.dose``) and the reason. Nesting so deep that the parser itself gives
  up is refused the same way instead of failing with a ``RecursionError``.
- Path segments never hold a NUL character and ``<int:...>`` segments are never larger than ``ID_MAX`` (ids
  and versions are 32-bit INTEGER columns): such a URL matches no route, so it is a 404 (PostgreSQL cannot
  even compare a column with a value its type does not hold, or text with a NUL in it).
- A query string or a form (the web pages' posts) with a NUL character is a 422 naming the parameter or
  field; integer query parameters are read with ``server.api.filters.whole_number``, which bounds them.
- Every JSON answer is strict JSON (``allow_nan=False``): a JavaScript client can always parse it.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Request, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.routing import IntegerConverter, PathConverter, UnicodeConverter

from engine.values import DEFAULT_LIMITS, ValueRejected, check_value

from .errors import Invalid

BODY = "body"  # how the checks name the request body's root in ``details.field``
ID_MAX = 2**31 - 1  # the largest id or version number: those columns are 32-bit INTEGERs


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, writing only strict JSON (no NaN or Infinity) and keeping the key order."""

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """Serialize ``obj``; a non-finite number is a ``ValueError`` rather than invalid JSON on the wire."""
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


def _non_finite(name: str) -> float:
    """``NaN``, ``Infinity`` and ``-Infinity`` parse to floats only so that ``check_value`` refuses them by field."""
    return float(name)


def loads_request_body(data: str | bytes) -> Any:
    """Parse a request body and check every value in it; raises ``ValueRejected`` (422) naming the field.

    Malformed JSON stays a ``ValueError`` (the caller's 400 ``malformed_json``).
    """
    try:
        value = json.loads(data, parse_constant=_non_finite)
    except RecursionError:
        raise ValueRejected(
            f"The request body is nested more than {DEFAULT_LIMITS.max_depth} levels deep.",
            details={"field": BODY, "reason": "too_deep"},
        ) from None
    check_value(value, DEFAULT_LIMITS, where=BODY)
    return value


class _RequestJSON:
    """The ``json_module`` of ``CheckedRequest``: ``loads`` parses and checks, ``dumps`` writes strict JSON."""

    loads = staticmethod(loads_request_body)

    @staticmethod
    def dumps(obj: Any, **kwargs: Any) -> str:
        """Serialize ``obj`` as strict JSON."""
        return json.dumps(obj, allow_nan=False, **kwargs)


class CheckedRequest(Request):
    """Flask's request whose ``get_json`` gives only values that may be stored (else a 422 naming the field)."""

    @property  # type: ignore[override]  # werkzeug declares a module; only its loads/dumps are read
    def json_module(self) -> type[_RequestJSON]:
        """The checking parser, always (Flask assigns the app's provider to every request it sets up)."""
        return _RequestJSON

    @json_module.setter
    def json_module(self, _provider: Any) -> None:
        """Ignored: the app's provider writes answers; request bodies are read by the checking parser."""


class SegmentConverter(UnicodeConverter):
    """The default ``<name>`` converter, refusing a NUL character (no such resource: 404)."""

    def __init__(self, map, minlength: int = 1, maxlength: int | None = None, length: int | None = None) -> None:
        super().__init__(map, minlength, maxlength, length)
        self.regex = self.regex.replace("[^/]", "[^/\\x00]", 1)


class FilePathConverter(PathConverter):
    """``<path:...>`` without NUL characters (a file name with one is no file: 404)."""

    regex = "[^/\\x00][^\\x00]*?"


def _at_most(limit: int) -> str:
    """A regular expression for the whole numbers from 0 to ``limit`` in ASCII digits (leading zeros allowed
    below its width)."""
    digits = str(limit)
    shorter = f"[0-9]{{1,{len(digits) - 1}}}" if len(digits) > 1 else ""
    alternatives = [shorter] if shorter else []
    alternatives.append(digits)
    for i, digit in enumerate(digits):  # the same leading digits, then a smaller one, then any
        rest = len(digits) - i - 1
        if digit != "0":
            alternatives.append(f"{digits[:i]}[0-{int(digit) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    return "(?:" + "|".join(alternatives) + ")"


class IdConverter(IntegerConverter):
    """``<int:...>`` that matches only ids an INTEGER column can hold, 0 to ``ID_MAX`` (else no route: 404).

    The bound is in the pattern, not only in ``to_python``: a value that fails conversion would otherwise let
    another method's rule for the same path answer 405.
    """

    regex = _at_most(ID_MAX)

    def __init__(
        self, map, fixed_digits: int = 0, min: int | None = None, max: int | None = None, signed: bool = False
    ) -> None:
        super().__init__(map, fixed_digits, 0 if min is None else min, ID_MAX if max is None else max, signed)


def refuse_nul_characters() -> None:
    """422 for a query parameter or form field (name or value) with a NUL character, before any view reads it.

    A form's text is decoded leniently (an invalid byte becomes U+FFFD), so NUL is the one character a web form
    or a query string can carry that no database column takes (PostgreSQL refuses it even in a comparison).
    """
    fields = [("query parameter", request.args)]
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        fields.append(("form field", request.form))
    for kind, values in fields:
        for name, value in values.items(multi=True):
            if "\x00" in name or "\x00" in value:
                shown = name.replace("\x00", "\\u0000")[:40]
                raise Invalid(
                    f"The {kind} '{shown}' contains a NUL character (\\u0000).",
                    code="invalid_query" if kind == "query parameter" else "invalid_form",
                    details={"field": shown, "reason": "nul_character"},
                )


def init_app(app: Flask) -> None:
    """Install the strict JSON provider, the checked request class, the bounded converters and the query check.

    Call before any blueprint is registered: a route's converters are chosen when it is added.
    """
    app.json = StrictJSONProvider(app)
    app.request_class = CheckedRequest
    app.url_map.converters.update(
        default=SegmentConverter, string=SegmentConverter, path=FilePathConverter, int=IdConverter
    )
    app.before_request(refuse_nul_characters)
