"""Shared fixtures: paths to the bundled diagrams and test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Cheap password hashes in tests and in the servers they start (full cost takes ~0.45 s a hash).
os.environ.setdefault("TETHER_PASSWORD_HASH_TIME_COST", "1")
os.environ.setdefault("TETHER_PASSWORD_HASH_MEMORY_KIB", "64")
# The test receivers of webhooks listen on loopback; tests of the private-address refusal turn this off.
os.environ.setdefault("TETHER_WEBHOOK_ALLOW_PRIVATE", "1")

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
