"""Shared fixtures: paths to the bundled diagrams and test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .support.dialects import share_dialects
from .support.routing import reuse_url_builders
from .support.templates import share_template_code

# Cheap password hashes in tests and in the servers they start (full cost takes ~0.45 s a hash).
os.environ.setdefault("TETHER_PASSWORD_HASH_TIME_COST", "1")
os.environ.setdefault("TETHER_PASSWORD_HASH_MEMORY_KIB", "64")
# The test receivers of webhooks listen on loopback; tests of the private-address refusal turn this off.
os.environ.setdefault("TETHER_WEBHOOK_ALLOW_PRIVATE", "1")
# Nearly every test builds an app of its own: compile each URL builder, each SQL statement and each page template
# once per process.
reuse_url_builders()
share_dialects()
share_template_code()

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    """The folder of test diagrams and forms."""
    return FIXTURES


def pytest_report_header(config):
    """Say which databases the run uses."""
    url = os.environ.get("TETHER_TEST_POSTGRES_URL")
    return f"databases: sqlite{' + postgresql' if url else ''}"


# The parts of the suite that take far longer than the rest (real servers, a browser, the fuzzer), with a rough
# weight in seconds; a part is a module, the whole browser folder (its tests share one server and browser), or
# one test (each fuzzing run has a server of its own, so the runs can go side by side).
LONG_PARTS = {
    "tests/e2e/test_api_fuzz.py::test_fuzzing_finds_no_server_error_and_no_undocumented_answer[admin-0-2]": 100,
    "tests/e2e/test_api_fuzz.py::test_fuzzing_finds_no_server_error_and_no_undocumented_answer[admin-1-2]": 100,
    "tests/e2e/test_api_fuzz.py::test_fuzzing_finds_no_server_error_and_no_undocumented_answer[coordinator-0-1]": 80,
    "tests/e2e/test_hostile_served.py": 90,
    "tests/e2e/test_events_stream.py": 60,
    "tests/integration/test_two_servers.py": 60,
    "tests/e2e/test_served.py": 50,
    "tests/browser": 50,
    "tests/e2e/test_lifecycle_paths.py": 40,
    "tests/e2e/test_wheel.py": 30,
    "tests/e2e/test_bundled_deviations.py": 30,
    "tests/e2e/test_crash_consistency.py": 25,
}


def _part(item) -> str:
    if item.nodeid in LONG_PARTS:
        return item.nodeid
    path = Path(str(item.path)).relative_to(ROOT).as_posix()
    return "tests/browser" if path.startswith("tests/browser/") else path


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """With several test processes, start the long parts first and spread them over the processes.

    pytest-xdist's worksteal hands each process an equal share of the tests in collection order and lets an idle
    process take the tail of another's share. Each share here starts with long parts (the longest first, each
    to the share with the least so far) and is filled up with the other tests in their order, so that no long
    part is left for the end, when only one process would be running it.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers < 2 or not items:
        return
    parts: dict[str, list] = {}
    for item in items:
        parts.setdefault(_part(item), []).append(item)
    long = sorted((p for p in parts if p in LONG_PARTS), key=lambda p: -LONG_PARTS[p])
    shares: list[list] = [[] for _ in range(workers)]
    loads = [0] * workers
    for part in long:
        share = loads.index(min(loads))
        shares[share].extend(parts[part])
        loads[share] += LONG_PARTS[part]
    rest = [item for item in items if _part(item) not in LONG_PARTS]
    sizes, left = [], len(items)
    for share in range(workers):  # the sizes worksteal gives out: what is left, shared by the processes left
        sizes.append(left // (workers - share))
        left -= sizes[-1]
    for share in range(workers):
        room = max(0, sizes[share] - len(shares[share]))
        shares[share].extend(rest[:room])
        rest = rest[room:]
    shares[-1].extend(rest)
    items[:] = [item for share in shares for item in share]


def pytest_sessionfinish(session):
    """At the very end of the run (in the process that started the test processes), drop the PostgreSQL
    templates of the demo that the tests served copies of (tests/support/demo.py)."""
    if hasattr(session.config, "workerinput") or not os.environ.get("TETHER_TEST_POSTGRES_URL"):
        return
    from .support.demo import drop_templates

    drop_templates(session.config._tmp_path_factory.getbasetemp())
