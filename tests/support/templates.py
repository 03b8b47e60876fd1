"""Each test's app compiles its page templates once per process instead of once per app.

Jinja turns a template's source into Python code (lexing, parsing, generating and compiling it) the first time an
environment loads it, and every app has an environment of its own: a test that opens three pages paid for three
compilations, most of what rendering them cost. Jinja's bytecode cache is the hook for keeping that code: each
bucket is keyed by the template's name and file and checked against a checksum of its source, so an edited
template is compiled again. The tests give every app's environment one cache kept in this process's memory;
what a page renders is unchanged (the tests of every page would show it), only the compiling is saved.
"""

from __future__ import annotations

from flask import Flask
from jinja2.bccache import Bucket, BytecodeCache


class _InMemory(BytecodeCache):
    """Compiled templates by bucket key, for the life of the process."""

    def __init__(self) -> None:
        self.code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        if bucket.key in self.code:
            bucket.bytecode_from_string(self.code[bucket.key])

    def dump_bytecode(self, bucket: Bucket) -> None:
        self.code[bucket.key] = bucket.bytecode_to_string()


def share_template_code() -> None:
    """Give every Flask app made from now on in this process one in-memory cache of compiled templates
    (idempotent)."""
    if "bytecode_cache" not in Flask.jinja_options:
        Flask.jinja_options = {**Flask.jinja_options, "bytecode_cache": _InMemory()}
