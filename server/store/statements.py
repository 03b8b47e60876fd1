"""Counting the SQL statements a piece of work sends to the database, and saying what each one was.

``counted(engine)`` listens to the engine's ``before_cursor_execute`` event while the block runs and collects one
``Statement`` per execution (a batched ``executemany`` counts once, as it is one round trip's worth of work for
the driver), and one ``COMMIT`` per commit. What it cannot see: PostgreSQL's BEGIN, which the driver sends by
itself before a transaction's first statement, and the pool's ping when a connection is taken from it. The
benchmarks print the count per completion and the list by kind and table; a test pins the count so that it
cannot silently grow.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.engine import Engine

_WITH_TOKENS = re.compile(r"[()]|\b(SELECT|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE|JOIN)\s+"?([A-Za-z_][A-Za-z0-9_]*)"?', re.IGNORECASE)


@dataclass(frozen=True)
class Statement:
    """One execution: its kind (SELECT, INSERT, UPDATE, DELETE, SAVEPOINT, ...), the first table it names, and
    whether it was a batch (``executemany``)."""

    kind: str
    table: str
    batch: bool = False

    def __str__(self) -> str:
        return f"{self.kind} {self.table}".strip() + (" (batch)" if self.batch else "")


def describe(sql: str, executemany: bool = False) -> Statement:
    """What ``sql`` is, in two words: its kind and the first table it names."""
    words = sql.lstrip().split(None, 2)
    kind = words[0].upper() if words else ""
    main = 0
    if kind == "WITH":  # the statement after the common table expressions (outside their parentheses) says what it is
        depth = 0
        for token in _WITH_TOKENS.finditer(sql):
            depth += {"(": 1, ")": -1}.get(token.group(0), 0)
            if token.group(1) and depth == 0:
                kind, main = token.group(1).upper(), token.start(1)
                break
    if kind in ("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT", "PRAGMA", "SET"):
        two = kind in ("RELEASE", "BEGIN") and len(words) > 1 and words[1].upper() in ("SAVEPOINT", "IMMEDIATE")
        return Statement(" ".join(words[:2]).upper() if two else kind, "", executemany)
    outer = sql[main:]
    while True:  # subqueries and expressions in parentheses name other tables: leave them out
        flat = re.sub(r"\([^()]*\)", "", outer)
        if flat == outer:
            break
        outer = flat
    table = _TABLE.search(outer)
    return Statement(kind, table.group(1) if table else "", executemany)


@contextlib.contextmanager
def counted(engine: Engine) -> Iterator[list[Statement]]:
    """Collect every statement ``engine`` executes while the block runs (from any thread, in order)."""
    seen: list[Statement] = []

    def before(_conn, _cursor, statement, _parameters, _context, executemany) -> None:
        seen.append(describe(statement, executemany))

    def commit(_conn) -> None:  # a round trip too, though no cursor executes it
        seen.append(Statement("COMMIT", ""))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "commit", commit)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "commit", commit)


def summary(statements: list[Statement]) -> str:
    """``n statements: 3 x SELECT task, 1 x UPDATE therapy, ...`` in the order each first appeared."""
    counts = Counter(str(s) for s in statements)
    parts = [f"{n} x {name}" if n > 1 else name for name, n in counts.items()]
    return f"{len(statements)} statements: " + ", ".join(parts)
