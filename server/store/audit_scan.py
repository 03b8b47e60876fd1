"""One stretch of the audit trail checked chain by chain, for ``server.store.audit.verify``.

``verify`` splits a long trail into contiguous ``seq`` ranges and checks each in a worker process of its own
(``python -I audit_scan.py``: a fresh interpreter, as multiprocessing's spawn starts one, that imports only
this file, the standard library and the database's driver, so it is ready in a fraction of a second); a short
trail is one range checked in the verifying process. Either way ``scan`` checks each entry of its range
against the one before it in its chain, exactly as one pass over the whole trail would, except that a chain's
first entry in the range is left open: what came before it is in another range. For each chain it returns
that first entry, its last intact entry and the first break after the first entry; ``verify`` stitches the
ranges together in order.

The worker reads its job (a pickle) from standard input and writes frames to standard output: ``p`` with the
number of entries read so far after every batch, then ``r`` with the result or ``e`` with an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import pickle
import queue
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from json.encoder import encode_basestring as _encode_string  # the C encoder json.dumps uses
from typing import Any, TypeVar

T = TypeVar("T")

GENESIS = "0" * 64
SYSTEM = "system"  # the chain of entries that belong to no therapy
LAST_SEQ = 2**63 - 1  # the end of the last range: entries appended while it is read are read too

# Every column, in ``server.store.audit.COLUMNS`` order, as the text the chain hashes (the timestamp as
# ``_timestamp`` writes it, data undecoded), of the entries in a ``seq`` range, a batch at a time.
ROWS = {
    "sqlite": "SELECT seq, replace(at, ' ', 'T') || 'Z', actor, action, subject_type, subject_id, therapy_id, "
    "site_id, reason, CAST(data AS TEXT), prev_hash, hash, chain, chain_seq FROM audit_entry "
    "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
    "postgresql": "SELECT seq, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), actor, action, "
    "subject_type, subject_id, therapy_id, site_id, reason, CAST(data AS TEXT), prev_hash, hash, chain, chain_seq "
    "FROM audit_entry WHERE seq > %s AND seq <= %s ORDER BY seq LIMIT %s",
}
# Whether a thread reads the next batch while the current one is checked, by database.
READ_AHEAD = {"sqlite": False, "postgresql": True}

_REMEMBERED = 10_000  # distinct actions, actors and subject types whose quoted form a scan keeps
# A chain's place never reached by an entry: the next place of a chain that broke or was not opened yet.
_NONE = -1


def batches(cursor: Any, statement: str, after: int, upto: int, size: int, ahead: bool) -> Iterator[Sequence[tuple]]:
    """The rows with ``after < seq <= upto`` in ``seq`` order, ``size`` at a time, straight from the driver.

    With ``ahead`` a thread reads the next batch while the caller checks the current one (the driver waits for
    the database without holding Python's lock), so reading and hashing overlap.
    """

    def read() -> Iterator[Sequence[tuple]]:
        last = after
        while True:
            cursor.execute(statement, (last, upto, size))
            rows = cursor.fetchall()
            if not rows:
                return
            yield rows
            last = rows[-1][0]

    return read_ahead(read(), depth=1, name="audit-verify-reader") if ahead else read()


def read_ahead(items: Iterator[T], depth: int = 1, name: str = "read-ahead") -> Iterator[T]:
    """``items``, produced by a thread of their own up to ``depth`` ahead of the caller (for work that waits without
    holding Python's lock, such as a database driver); an error of the producer is raised in the caller. Leaving
    the loop early stops the thread after the item it is producing."""
    pending: queue.Queue = queue.Queue(maxsize=depth)
    done, stop = object(), threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                pending.put(item)
        except BaseException as exc:  # handed to the caller, raised there
            pending.put(exc)
            return
        pending.put(done)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = pending.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # let a producer blocked on a full queue finish
            with contextlib.suppress(queue.Empty):
                pending.get_nowait()
            thread.join(0.01)


def _quoted(value: str | None) -> str:
    return "null" if value is None else _encode_string(value)


def stored_form(row: tuple) -> str:
    """What an entry's hash covers (prev_hash then canonical JSON), put together from its stored text.

    ``row`` holds the columns as ``ROWS`` selects them; entries are stored canonically (``data`` with sorted
    keys and compact separators, the timestamp with microseconds), so nothing needs decoding.
    """
    seq, at, actor, action, subject_type, subject_id, therapy_id, site_id, reason, data, prev_hash = row[:11]
    chain, chain_seq = row[12:14] if len(row) > 12 else (None, None)
    place = "" if chain is None else f'"chain":{_quoted(chain)},"chain_seq":{chain_seq},'
    return (
        f'{prev_hash}{{"action":{_quoted(action)},"actor":{_quoted(actor)},"at":"{at}",{place}"data":{data},'
        f'"prev_hash":"{prev_hash}","reason":{_quoted(reason)},"seq":{seq},'
        f'"site_id":{"null" if site_id is None else site_id},"subject_id":{_quoted(subject_id)},'
        f'"subject_type":{_quoted(subject_type)},"therapy_id":{_quoted(therapy_id)}}}'
    )


def chained_form(row: tuple) -> str:
    """``stored_form`` of an entry with a chain (the common case, spelled out for speed)."""
    seq, at, actor, action, subject_type, subject_id, therapy_id, site_id, reason, data, prev_hash, _h, chain, place = (
        row
    )
    return (
        f'{prev_hash}{{"action":{_encode_string(action)},"actor":{_encode_string(actor)},"at":"{at}",'
        f'"chain":{_encode_string(chain)},"chain_seq":{place},"data":{data},"prev_hash":"{prev_hash}",'
        f'"reason":{"null" if reason is None else _encode_string(reason)},"seq":{seq},'
        f'"site_id":{"null" if site_id is None else site_id},"subject_id":{_encode_string(subject_id)},'
        f'"subject_type":{_encode_string(subject_type)},'
        f'"therapy_id":{"null" if therapy_id is None else _encode_string(therapy_id)}}}'
    )


class Run:
    """One chain within a range: its first entry (open: checked against nothing before it), how far it is intact
    and its first break after that first entry.

    ``first`` is (place, seq, prev_hash, legacy, ok) of the chain's first entry within its bound (``ok``: hashed
    right and, at its last seal's place, the entry the seal names); ``place``, ``seq``, ``hash``, ``legacy`` its
    last intact entry (only when the first is ok); ``broken`` the first break after it: (seq of the entry that
    showed it, ``"gap"``, the last intact seq, that entry's seq, the first missing place) when entries are
    missing, else (that seq, ``"at"``, its seq, its place); ``beyond`` the (place, seq) of entries past the
    chain's bound. ``next`` is the place the quick path accepts next and ``limit`` the first place it leaves
    to ``Scan.slow`` (the last sealed place, past the bound, or the entry after one of the old form).
    """

    __slots__ = (
        "beyond",
        "bound",
        "broken",
        "first",
        "hash",
        "legacy",
        "limit",
        "next",
        "place",
        "quoted",
        "seal_place",
        "sealed",
        "seq",
    )

    def __init__(self, chain: str, bound: int, sealed: tuple[int, int, str] | None) -> None:
        self.quoted = _encode_string(chain)  # the chain's name as its entries' canonical JSON writes it
        self.next, self.limit, self.place, self.seq, self.hash, self.legacy = _NONE, 0, 0, 0, GENESIS, True
        self.bound, self.sealed, self.seal_place = bound, sealed, sealed[0] if sealed else 0
        self.first: tuple[int, int, str, bool, bool] | None = None
        self.broken: tuple[int, str, int, int, int] | None = None
        self.beyond: list[tuple[int, int]] = []

    def advance(self, place: int, seq: int, digest: str, legacy: bool) -> None:
        self.place, self.seq, self.hash, self.legacy, self.next = place, seq, digest, legacy, place + 1
        if legacy:  # the next entry must be checked against an entry of the old form: the slow way
            self.limit = place + 1
        elif self.seal_place > place:
            self.limit = self.seal_place
        else:
            self.limit = self.bound + 1

    def result(self) -> tuple:
        """What ``verify`` stitches: (first, last intact, first break, beyond)."""
        last = (self.place, self.seq, self.hash, self.legacy) if self.first and self.first[4] else None
        return self.first, last, self.broken, self.beyond


class Scan:
    """The chains of one range as its entries are read in ``seq`` order.

    ``bounds`` gives each chain's bound (its head as first read, or its last seal's place when further: entries
    past it were appended meanwhile or behind the server's back) and last sealed head (place, seq, hash);
    ``exact`` decides, the slow way, whether an entry that does not hash right in its stored form is intact.
    """

    def __init__(
        self,
        bounds: dict[str, tuple[int, tuple[int, int, str] | None]],
        exact: Callable[[tuple], bool],
    ) -> None:
        self.bounds, self.exact = bounds, exact
        self.runs: dict[str, Run] = {}
        self.quoted: dict[str, str] = {}  # actions, actors, subject types: few, each quoted once

    def quote(self, value: str) -> str:
        """``value`` as a JSON string, remembered (up to ``_REMEMBERED`` values)."""
        found = self.quoted.get(value)
        if found is None:
            found = _encode_string(value)
            if len(self.quoted) < _REMEMBERED:
                self.quoted[value] = found
        return found

    def rows(self, rows: Iterable[tuple]) -> None:
        """Check ``rows``, the next entries of the range in ``seq`` order."""
        sha256, runs, slow, quote, remembered = hashlib.sha256, self.runs.get, self.slow, self.quote, self.quoted.get
        for row in rows:
            # The quick path: an entry with a chain, next in it, linked and hashed right, not a sealed head.
            run, place = runs(row[12]), row[13]
            if run is not None and place == run.next and place < run.limit and row[10] == run.hash:
                seq, at, actor, action, subject_type, subject_id, therapy_id, site_id, reason, data, prev, digest = row[
                    :12
                ]
                chain = run.quoted  # a therapy's entries name it as their chain and as their therapy
                if therapy_id == row[12]:
                    therapy = chain
                else:
                    therapy = "null" if therapy_id is None else _encode_string(therapy_id)
                form = (
                    f'{prev}{{"action":{remembered(action) or quote(action)},'
                    f'"actor":{remembered(actor) or quote(actor)},"at":"{at}",'
                    f'"chain":{chain},"chain_seq":{place},"data":{data},"prev_hash":"{prev}",'
                    f'"reason":{"null" if reason is None else _encode_string(reason)},"seq":{seq},'
                    f'"site_id":{"null" if site_id is None else site_id},"subject_id":{_encode_string(subject_id)},'
                    f'"subject_type":{remembered(subject_type) or quote(subject_type)},"therapy_id":{therapy}}}'
                )
                if sha256(form.encode()).hexdigest() == digest:
                    run.place, run.seq, run.hash, run.next = place, seq, digest, place + 1
                    continue
            slow(row)

    def intact(self, row: tuple) -> bool:
        """Whether the row's hash is SHA-256 over its stored form, or else over its canonical fields."""
        return hashlib.sha256(stored_form(row).encode()).hexdigest() == row[11] or self.exact(row)

    def slow(self, row: tuple) -> None:
        """Check one entry against the one before it in its chain, every case spelled out (entries of the old
        form, a chain's first entry in the range, and any entry the quick path did not pass)."""
        seq, legacy = row[0], row[12] is None
        chain, place = (SYSTEM, seq) if legacy else (row[12], row[13])
        run = self.runs.get(chain)
        if run is None:
            bound, sealed = self.bounds.get(chain, (0, None))
            run = self.runs[chain] = Run(chain, bound, sealed)
        if run.broken is not None or (run.first is not None and not run.first[4]):
            return
        if place > run.bound:  # appended after the heads were read, or behind the server's back (checked at the end)
            run.beyond.append((place, seq))
            return
        at_seal = run.sealed is not None and place == run.seal_place and (seq, row[11]) != run.sealed[1:]
        if run.first is None:  # the chain's first entry in the range: what came before it is stitched on later
            ok = not at_seal and self.intact(row)
            run.first = (place, seq, row[10], legacy, ok)
            if ok:
                run.advance(place, seq, row[11], legacy)
            else:
                run.next = _NONE
            return
        if place > run.place + 1:  # entries of the chain are missing before this one
            run.broken = (seq, "gap", run.seq, seq, run.place + 1)
        elif (
            place < run.place + 1
            or (legacy and not run.legacy)
            or row[10] != run.hash
            or at_seal
            or not self.intact(row)
        ):
            run.broken = (seq, "at", seq, place, 0)
        else:
            run.advance(place, seq, row[11], legacy)
            return
        run.next = _NONE

    def result(self) -> dict[str, tuple]:
        return {chain: run.result() for chain, run in self.runs.items()}


# -- the worker process -------------------------------------------------------------------------------------
def _frame(out: Any, kind: bytes, payload: bytes = b"", number: int = 0) -> None:
    out.write(struct.pack("!cQI", kind, number, len(payload)) + payload)
    out.flush()


def read_frame(read: Callable[[int], bytes]) -> tuple[bytes, int, bytes] | None:
    """The next frame a worker wrote, (kind, number, payload), from ``read(n)`` (exactly n bytes or fewer at
    the end); None at the end of its output."""
    header = read(13)
    if len(header) < 13:
        return None
    kind, number, length = struct.unpack("!cQI", header)
    payload = read(length) if length else b""
    if len(payload) < length:
        return None
    return kind, number, payload


def _exact(name: str, paths: list[str]) -> Callable[[tuple], bool]:
    """The verifying process's slow check, named ``module:function`` (decode, hash exactly as appending does),
    imported when first needed: only entries stored in another form than the canonical one, or changed, come
    to it, so a worker over an intact trail of today's entries never imports it."""
    check: list[Callable[[tuple], bool]] = []

    def exact(row: tuple) -> bool:
        if not check:
            sys.path[:0] = [path for path in paths if path not in sys.path]
            module, function = name.split(":")
            check.append(getattr(importlib.import_module(module), function))
        return check[0](row)

    return exact


def _connect(dialect: str, args: list, kwargs: dict) -> Any:
    if dialect == "sqlite":
        import sqlite3

        return sqlite3.connect(*args, **kwargs)
    import psycopg

    return psycopg.connect(*args, **kwargs)


def work(job: dict[str, Any], out: Any) -> None:
    """Check the job's range on a connection of its own, reporting progress and then the result on ``out``."""
    connection = _connect(job["dialect"], job["args"], job["kwargs"])
    try:
        cursor = connection.cursor()
        scan = Scan(job["bounds"], _exact(job["exact"], job["paths"]))
        read = 0
        statement = ROWS[job["dialect"]]
        for rows in batches(cursor, statement, job["after"], job["upto"], job["batch"], READ_AHEAD[job["dialect"]]):
            scan.rows(rows)
            read += len(rows)
            _frame(out, b"p", number=read)
        cursor.close()
    finally:
        connection.close()
    _frame(out, b"r", pickle.dumps(scan.result(), protocol=pickle.HIGHEST_PROTOCOL), read)


def main() -> None:
    out = sys.stdout.buffer
    try:
        work(pickle.load(sys.stdin.buffer), out)  # noqa: S301 (the verifying process's job)
    except BaseException as exc:  # told to the verifying process, which raises it
        _frame(out, b"e", f"{type(exc).__name__}: {exc}".encode())
        raise


if __name__ == "__main__":
    main()
