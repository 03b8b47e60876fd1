"""Scripts in worker processes: hard deadlines, memory caps, checked results, and a pool that heals itself."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time

import pytest

from engine import isolation
from engine.errors import ScriptFailed
from engine.sandbox import IsolatedSandboxEnvironment, is_read_only
from engine.values import ValueLimits, ValueRejected, check_value

from ..support import hostile


@pytest.fixture
def sandbox():
    return IsolatedSandboxEnvironment(time_limit=0.5)


def test_a_script_runs_in_a_worker_and_leaves_its_variables(sandbox):
    context = {"dose": 2, "_private": "kept here"}
    sandbox.execute("total = dose * 3\nwhen = datetime(2026, 12, 1, 8, 0)", context)
    assert context == {"dose": 2, "total": 6, "when": dt.datetime(2026, 12, 1, 8, 0), "_private": "kept here"}


def test_one_long_builtin_call_is_killed_at_the_deadline_and_the_next_script_runs(sandbox):
    began = time.monotonic()
    with pytest.raises(ScriptFailed, match="time limit of 0.5 s"):
        sandbox.execute(hostile.SLOW_CALL, {})  # unbounded, this comparison runs for hours
    assert time.monotonic() - began < (0.5 + isolation.GRACE_SECONDS) * isolation.WALL_FACTOR
    context: dict = {}
    sandbox.execute("after = 1", context)
    assert context == {"after": 1}


def test_the_deadline_counts_the_time_a_script_runs_not_the_time_it_waits_for_a_core(sandbox):
    sandbox.execute("warm = 1", {})
    worker = isolation._POOL.idle[-1].process.pid
    os.kill(worker, signal.SIGSTOP)  # as if a busy machine gave the worker no core for 2 s
    resume = threading.Timer(2.0, os.kill, (worker, signal.SIGCONT))
    resume.start()
    began, context = time.monotonic(), {"n": 3}
    sandbox.execute("total = sum(range(n))", context)
    assert context["total"] == 3 and time.monotonic() - began >= 2.0
    assert isolation._POOL.idle[-1].process.pid == worker, "the paused worker answered and was kept"


@pytest.mark.parametrize("script", sorted(hostile.HUGE_TEXT.values()))
def test_text_built_by_one_call_runs_out_of_memory(sandbox, script):
    with pytest.raises(ScriptFailed, match="out of memory|cannot be stored"):
        sandbox.execute(script, {})


def test_what_a_script_leaves_is_checked_before_it_comes_back():
    small = IsolatedSandboxEnvironment(data_limits=ValueLimits(max_chars=1000))
    with pytest.raises(ScriptFailed, match="more than 1000 characters"):
        small.execute("s = 'x' * 5000", {})
    with pytest.raises(ScriptFailed, match="not a finite number"):
        small.execute("n = float('inf')", {})
    with pytest.raises(ScriptFailed, match="is a set"):
        small.execute("s = {1, 2}", {})


def test_protected_keys_cannot_be_changed_or_removed():
    guarded = IsolatedSandboxEnvironment(protected_keys=("coi",))
    for script in ("coi = 'other'", "del coi"):
        context = {"coi": "W123426000001"}
        with pytest.raises(ScriptFailed, match="may not change coi"):
            guarded.execute(script, context)
        assert context == {"coi": "W123426000001"}, "a refused script changes nothing"
    guarded.execute("note = coi", context := {"coi": "W123426000001"})
    assert context["note"] == "W123426000001"


def test_read_only_expressions_stay_in_process_the_rest_go_to_a_worker(sandbox, monkeypatch):
    assert is_read_only("decision == 'release' and not hold") and is_read_only("'PT24H'")
    assert not is_read_only("len(items) > 2") and not is_read_only("'x' * 3")
    calls = []
    monkeypatch.setattr(isolation, "run", lambda *args, **kw: calls.append(args) or True)
    assert sandbox.evaluate("decision == 'release'", {"decision": "release"}) is True
    assert calls == []
    assert sandbox.evaluate("len(items) > 2", {"items": [1, 2, 3]}) is True
    assert len(calls) == 1


def test_workers_are_reused():
    environment = IsolatedSandboxEnvironment()
    environment.execute("a = 1", {})
    first = list(isolation._POOL.idle)
    environment.execute("b = 2", {})
    assert [w.process.pid for w in isolation._POOL.idle] == [w.process.pid for w in first]


def test_the_stored_value_check_names_the_field():
    with pytest.raises(ValueRejected) as info:
        check_value({"batch": {"volume_ml": float("nan")}})
    assert info.value.details == {"field": "data.batch.volume_ml", "reason": "not_finite"}
    shared = [[1] * 1000] * 1000  # a million items through shared references, refused without expanding them
    began = time.thread_time()  # the CPU time spent: a busy machine does not count against it
    with pytest.raises(ValueRejected, match="more than 100000 items"):
        check_value({"rows": shared})
    assert time.thread_time() - began < 1
    check_value({"ok": [1, "two", 3.0, None, True, {"nested": "text"}]})
