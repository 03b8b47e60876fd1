"""A real ``tether serve`` process on a free port: migrate, deploy, serve, and run a therapy over HTTP."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import requests

from ..conftest import ROOT
from ..support.demo import demo_copy
from ..support.served import cli_user, serving, tether_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tmp_path):
    """A running server on SQLite in a temporary folder, with a coordinator and an integrator."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TETHER_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "TETHER_PROCESSES_DIR": str(tmp_path / "processes"),
        "TETHER_FORMS_DIR": str(ROOT / "tests/fixtures"),
    }
    (tmp_path / "processes").mkdir()
    shutil.copy(ROOT / "tests/fixtures/mini.bpmn", tmp_path / "processes" / "mini.bpmn")
    assert tether_cli("db", "upgrade", env=env, cwd=tmp_path).returncode == 0
    assert tether_cli("site", "add", "SITE-A", "--name", "Centre A", env=env, cwd=tmp_path).returncode == 0
    tokens = {
        name: cli_user(
            name, role, None if role == "integrator" else "SITE-A", "long-enough-pw-1", env=env, cwd=tmp_path
        )
        for name, role in (("coord", "coordinator"), ("courier", "integrator"), ("logi", "logistics"))
    }
    with serving(env, tmp_path) as (base, _proc, _log):
        yield base, tokens


def test_served_process_runs_a_therapy(served):
    base, tokens = served

    def call(method, path, token, **kw):
        return requests.request(
            method, base + path, headers={"Authorization": f"Bearer {tokens[token]}"}, timeout=10, **kw
        )

    assert requests.get(f"{base}/health", timeout=5).json() == {
        "status": "ok",
        "database": "ok",
        "writes": "ok",
        "scheduler": "running",
        "broker": "off",
    }
    assert [d["key"] for d in call("GET", "/process-definitions", "coord").json()["items"]] == ["mini_therapy"]
    therapy = call(
        "POST",
        "/therapies",
        "coord",
        json={"process_key": "mini_therapy", "site": "SITE-A", "patient": {"reference": "PT-9"}},
    ).json()
    [task] = call("GET", f"/tasks?therapy_id={therapy['id']}", "coord").json()["items"]
    done = call(
        "POST", f"/tasks/{task['id']}/complete", "coord", json={"data": {"eligible": True, "patient_initials": "ZZ"}}
    )
    assert done.status_code == 200, done.text
    delivered = call(
        "POST",
        "/messages",
        "courier",
        json={"name": "shipment.delivered", "therapy_id": therapy["id"], "payload": {"at": "dock 3"}},
    )
    assert delivered.json()["delivered"] is True
    [receive] = call("GET", f"/tasks?therapy_id={therapy['id']}", "logi").json()["items"]
    assert receive["name"] == "Receive shipment"
    refused = call("POST", "/messages", "courier", json={"name": "shipment.delivered", "therapy_id": therapy["id"]})
    assert refused.status_code == 409


def test_demo_then_readme_walkthrough_with_curl(tmp_path, tmp_path_factory):
    """`tether demo` seeds users and tokens; scripts/walkthrough (the curl session of docs/api.md) runs a therapy."""
    demo = demo_copy("sqlite", tmp_path_factory, tmp_path)  # the run's one `tether demo`, copied
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TETHER_DATABASE_URL": demo.url}
    assert "completed  Completed" in demo.stdout and "Release batch (QA)" in demo.stdout
    tokens, password = demo.tokens, demo.password
    assert {"coordinator", "coordinator-b", "apheresis", "manufacturing", "manufacturing-2", "logistics"} <= set(tokens)
    with serving(env, tmp_path) as (base, _proc, _log):
        walk_env = {
            **env,
            "API": base,
            "COORD": tokens["coordinator"],
            "MFG": tokens["manufacturing"],
            "QA": tokens["qa"],
            "QA_PASSWORD": password,
            "INTEGRATOR": tokens["integrator"],
            "AUDITOR": tokens["auditor"],
        }
        walk = subprocess.run(
            ["bash", str(ROOT / "scripts" / "walkthrough")],
            env=walk_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert walk.returncode == 0, walk.stdout + walk.stderr
    assert "completed: Release batch (QA)" in walk.stdout
    assert "Now: Waiting: Day 28" in walk.stdout or "Now: Waiting" in walk.stdout
    assert '"ok": true' in walk.stdout.replace('"ok":true', '"ok": true')
