"""A real ``tether serve`` on the demo data, probed with hostile input: schemathesis over the whole OpenAPI
document (no 5xx, every answer's status, media type and body as documented), and a client that sends a whole
oversized body before it reads the answer (it must get the 413, not a broken connection).

The schemathesis runs are bounded (a fixed seed; every case of schemathesis's coverage phase, then 20 generated
examples per operation, or TETHER_FUZZ_EXAMPLES of them for a deeper run). Two callers probe the API: a
site-scoped coordinator and an administrator, each over the operations its roles may call (an operation a caller
may not call answers 403 whatever it is sent, so fuzzing it as that caller tests nothing; the refusals themselves
are tested in tests/integration). The administrator's share, nearly every operation, is fuzzed in two halves side
by side, so that no one run holds up the suite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from server.demo import USERS

from ..conftest import ROOT
from ..integration.conftest import BACKENDS
from ..support.demo import demo_copy, drop_copy
from ..support.served import serving

pytestmark = pytest.mark.slow
pytest.importorskip("schemathesis", reason="schemathesis is in the test extras: pip install -e '.[test]'")

SEED = 20261207
# The generated examples per operation, beside the coverage phase's cases (the boundary values, missing and
# mistyped fields of every operation, whatever this number): 20 in the suite, more for a deeper run
# (TETHER_FUZZ_EXAMPLES=200 make test PYTEST_ARGS='tests/e2e/test_api_fuzz.py'). Half as many would save little:
# the coverage phase and the runs' start cost most of a run.
MAX_EXAMPLES = int(os.environ.get("TETHER_FUZZ_EXAMPLES") or 20)
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# Left out of the fuzzing, and why:
EXCLUDED = [
    # A Server-Sent Events stream stays open for minutes by design; there is no answer to check.
    "/api/v1/events",
    # Revoking or expiring a token can hit the caller's own token (ids are small integers); every later call
    # of the run would then be a 401 and test nothing. Their bad input is covered in test_bad_input.py.
    "/api/v1/tokens/{token_id}/revoke",
    "/api/v1/tokens/{token_id}/expire",
]


# One backend: PostgreSQL when the suite has one (the stricter of the two about what a query may hold), else
# SQLite. The fuzzing probes the HTTP contract; the integration suite runs every query on both databases.
BACKEND = BACKENDS[-1]


@contextmanager
def _demo_served(tmp_path_factory, name: str) -> Iterator[tuple[str, dict[str, str], Path, str]]:
    """A copy of ``tether demo``'s data served by ``tether serve``: (API base URL, tokens by demo user name,
    access log, database URL)."""
    folder = tmp_path_factory.mktemp(name)
    demo = demo_copy(BACKEND, tmp_path_factory, folder)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TETHER_DATABASE_URL": demo.url,
        "TETHER_DISPATCHER": "0",
    }  # fuzzed webhooks must not be sent anywhere
    try:
        with serving(env, folder) as (base, _proc, log_path):
            yield base, demo.tokens, log_path, demo.url
    finally:
        drop_copy(demo)


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    """The demo served for the tests of oversized bodies (each fuzzing run has a server of its own)."""
    with _demo_served(tmp_path_factory, "bodies") as served:
        yield served


# Values the demo data holds, offered to the fuzzer for these parameters half of the time (the other half
# stays random), so that calls reach past "no such therapy" into the code that handles a real one.
KNOWN = {
    "path.therapy_id": "SELECT id FROM therapy",
    "body.therapy_id": "SELECT id FROM therapy",
    "query.therapy_id": "SELECT id FROM therapy",
    "body.coi": "SELECT coi FROM therapy",
    "path.task_id": "SELECT id FROM task",
    "path.alert_id": "SELECT id FROM alert",
    "path.incident_id": "SELECT id FROM incident",
    "path.key": "SELECT key FROM process_definition",
    "body.process_key": "SELECT key FROM process_definition",
    "body.site": "SELECT code FROM site",
    "query.site": "SELECT code FROM site",
}
LITERALS = {
    "body.name": [
        "shipment.delivered",
        "courier.picked_up",
        "return.picked_up",
        "return.delivered",
        "shipment.picked_up",
        "condition.excursion",
    ],
    "path.material_id": ["LEUKOPAK-1", "CAR-T-1", "LOT-1"],
    "body.material_id": ["LEUKOPAK-1", "CAR-T-1", "LOT-1"],
    "body.scanned_coi": [],  # filled with the demo's COIs
}


def _config(database: str, workdir: Path) -> Path:
    """A schemathesis configuration whose dictionaries hold the demo's identifiers."""
    engine = sa.create_engine(database)
    with engine.connect() as connection:
        values = {key: list(connection.execute(sa.text(query)).scalars()) for key, query in KNOWN.items()}
        values["body.scanned_coi"] = list(connection.execute(sa.text("SELECT coi FROM therapy")).scalars())
    engine.dispose()
    values.update({key: literal for key, literal in LITERALS.items() if literal})
    lines = []
    for number, (_key, found) in enumerate(sorted(values.items())):
        if found:
            lines += [f"[dictionaries.d{number}]", f"values = {json.dumps(found)}", ""]
    lines.append("[parameters]")
    for number, (key, found) in enumerate(sorted(values.items())):
        if found:
            lines.append(f'"{key}" = {{ dictionary = "d{number}", probability = 0.5 }}')
    path = workdir / "schemathesis.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _roles(operation: dict) -> list[str]:
    """The roles an operation of the OpenAPI document needs ("Roles: a, b" in its description; none: anyone)."""
    found = re.match(r"Roles: (.+)", operation.get("description", ""))
    return found.group(1).split(", ") if found else []


def _operations(base: str, who: str, part: int, parts: int) -> list[str]:
    """The operations (``METHOD /path``) the demo user ``who`` fuzzes: those its roles may call, but the excluded
    ones, in the document's order; with ``parts`` > 1, every ``parts``-th of them from the ``part``-th."""
    held = next(set(roles) for name, _printed, roles, _sites in USERS if name == who)
    document = requests.get(f"{base}/openapi.json", timeout=30).json()
    names = [
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        if path not in EXCLUDED
        for method, operation in item.items()
        if not _roles(operation) or held & set(_roles(operation))
    ]
    return names[part::parts]


def _fuzz(base: str, token: str, workdir: Path, config: Path, operations: list[str]) -> subprocess.CompletedProcess:
    """One bounded schemathesis run over ``operations``.

    One worker: with several threads, Python 3.11's ``ast.parse`` (which hypothesis uses to explain a case) can
    fail with "AST constructor recursion depth mismatch", an error of the tool rather than of the API.
    """
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{base}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--no-color",
    ]
    for name in operations:
        command += ["--include-name", name]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600, check=False)


# Each run fuzzes a server and a copy of the demo of its own (the administrator's run may deactivate other
# users), so the runs can go to test processes side by side: (caller, which part, of how many parts).
@pytest.mark.parametrize("who, part, parts", [("coordinator", 0, 1), ("admin", 0, 2), ("admin", 1, 2)])
def test_fuzzing_finds_no_server_error_and_no_undocumented_answer(who, part, parts, tmp_path_factory, tmp_path):
    with _demo_served(tmp_path_factory, f"fuzz-{who}-{part}") as (base, tokens, log_path, database):
        config = _config(database, tmp_path)
        operations = _operations(base, who, part, parts)
        assert len(operations) >= 30, operations  # the filter keeps what the caller may call, not nothing
        run = _fuzz(base, tokens[who], tmp_path, config, operations)
        assert run.returncode == 0, f"as {who}:\n{run.stdout[-20000:]}\n{run.stderr[-3000:]}"
        assert f"{len(operations)} selected" in run.stdout, run.stdout[-3000:]
        assert "Tested: " in run.stdout, run.stdout[-3000:]
        assert not re.search(r'HTTP/1\.[01]" 5\d\d ', log_path.read_text())  # nor does the access log show a 5xx


def _post(url: str, body: bytes, token: str, content_type: str = "application/json"):
    """urllib's POST: the whole body is written before the answer is read."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Authorization": f"Bearer {token}", "Content-Type": content_type}
    )
    return urllib.request.urlopen(request, timeout=30)


@pytest.mark.parametrize("megabytes, content_type", [(8, "application/json"), (24, "multipart/form-data; b=x")])
def test_a_client_that_sends_an_oversized_body_first_reads_the_413(demo_server, megabytes, content_type):
    base, tokens, _log, _database = demo_server
    body = b"[" + b"0," * (megabytes * 512 * 1024) + b"0]"
    path = "/therapies" if content_type == "application/json" else "/process-definitions"
    with pytest.raises(urllib.error.HTTPError) as answer:
        _post(base + path, body, tokens["coordinator" if path == "/therapies" else "designer"], content_type)
    assert answer.value.code == 413
    error = json.loads(answer.value.read())["error"]
    assert error["code"] == "too_large" and error["details"]["content_length"] == len(body)
    assert requests.get(f"{base}/health", timeout=5).status_code == 200  # and the server serves on
