"""When the autoscaler's status needs a write: nulls vs omitted fields, and the decision history
(written only when a restart would otherwise decide differently), all pure."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from smartflow_operator.autoscaling.decision import decide
from smartflow_operator.autoscaling.history import ScalingHistory
from smartflow_operator.autoscaling.lag import Reading
from smartflow_operator.autoscaling.report import autoscaling_changed, autoscaling_status, without_nulls
from smartflow_operator.names import Role

from .conftest import NOW, history, spec


def merge_patched(live: dict[str, Any] | None, patch: dict[str, Any]) -> dict[str, Any]:
    """What the apiserver stores after a JSON merge patch (RFC 7386), through JSON like it."""
    result = dict(live or {})
    for key, value in json.loads(json.dumps(patch)).items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = merge_patched(result.get(key) if isinstance(result.get(key), dict) else {}, value)
        else:
            result[key] = value
    return result


def steady_polls(count: int, *, metric: int, current: int, seconds: float = 5.0) -> list[dict[str, Any]]:
    """The status fragment of ``count`` polls of an unchanging lag, ``seconds`` apart."""
    fragments, state, previous = [], ScalingHistory(), None
    for i in range(count):
        now = NOW + timedelta(seconds=seconds * i)
        d = decide(
            spec=spec(), reading=Reading(metric=metric, cap=8), current=current, history=state, now=now
        )
        state = d.history
        previous = autoscaling_status(
            Role.RELAY, d, reading=Reading(metric=metric, cap=8), error=None, previous=previous, now=now
        )
        fragments.append(previous)
    return fragments


def test_a_null_field_and_an_omitted_one_are_the_same() -> None:
    assert without_nulls({"a": None, "b": 1, "c": {"d": None, "e": 2}}) == {"b": 1, "c": {"e": 2}}
    stored = {"reason": "Steady", "history": {}}
    assert not autoscaling_changed(stored, {"reason": "Steady", "probeError": None, "history": {}})
    assert not autoscaling_changed({**stored, "probeError": None}, {"reason": "Steady", "history": {}})
    assert autoscaling_changed(stored, {"reason": "Steady", "probeError": {"reason": "X"}, "history": {}})
    assert autoscaling_changed(None, {"reason": "Steady", "history": {}})


def test_the_status_holds_no_nulls_so_what_is_stored_equals_what_is_computed() -> None:
    first = steady_polls(1, metric=0, current=1)[0]
    assert None not in first.values()
    assert "lastScaleTime" not in first and "probeError" not in first
    assert not autoscaling_changed(merge_patched(None, first), first)


def writes_over(fragments: list[dict[str, Any]]) -> list[str]:
    """The reasons of the polls after the first that needed a write (the first always does)."""
    stored, written = merge_patched(None, fragments[0]), []
    for fragment in fragments[1:]:
        if autoscaling_changed(stored, fragment):
            written.append(fragment["reason"])
            stored = merge_patched(stored, fragment)
    return written


def test_an_idle_runtime_writes_only_when_its_decision_changes() -> None:
    # 1000 s of polls every 5 s with no lag, past the 300 s scale-down window: the new autoscaler
    # holds its count for one window (Stabilizing), then sits at its minimum. One write for that.
    assert writes_over(steady_polls(200, metric=0, current=1)) == ["AtMinimum"]
    # A steady backlog at the current count: nothing to write at all.
    assert writes_over(steady_polls(200, metric=400, current=4)) == []


def test_a_new_standing_recommendation_or_scale_event_is_worth_a_write() -> None:
    stored = history(recommendations=[(2, 60), (3, 30)])
    # The standing value (3) repeated now: nothing a restart would miss.
    assert not history(recommendations=[(2, 60), (3, 0)]).worth_persisting_over(stored)
    # A new standing value: the previous one's last time and the new value both matter.
    assert history(recommendations=[(2, 60), (3, 5), (4, 0)]).worth_persisting_over(stored)
    # A value pruned from memory (out of every window) needs no write.
    assert not history(recommendations=[(3, 0)]).worth_persisting_over(stored)
    assert history(recommendations=[(3, 0)], up_events=[(0, 1)]).worth_persisting_over(stored)
    assert history(recommendations=[(3, 0)], consecutive_failures=1).worth_persisting_over(stored)
    assert not history(recommendations=[(3, 0)], committed_offsets={0: 7}).worth_persisting_over(stored)


def test_a_restart_takes_the_standing_recommendation_as_standing_until_now() -> None:
    stored = history(recommendations=[(5, 900), (4, 600)])  # 4 standing since written 600 s ago
    resumed = stored.resumed(NOW)
    assert [(r.replicas, r.at) for r in resumed.recommendations] == [
        (5, NOW - timedelta(seconds=900)),
        (4, NOW),
    ]
    # So the scale-down window still holds 4 after the restart, as the stopped process would have.
    d = decide(spec=spec(), reading=Reading(metric=0, cap=8), current=4, history=resumed, now=NOW)
    assert d.desired == 4
    assert d.history.worth_persisting_over(stored)  # the new standing recommendation (0)
    # And a steady lag after the restart writes no history.
    steady = decide(spec=spec(), reading=Reading(metric=400, cap=8), current=4, history=resumed, now=NOW)
    assert steady.desired == 4
    assert not steady.history.worth_persisting_over(stored)
