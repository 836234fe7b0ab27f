"""The Deployment status the local runner writes (smartflow_devstack.runner.status)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from smartflow_devstack.runner.rollout import ReplicaView
from smartflow_devstack.runner.spec import DeploymentFacts
from smartflow_devstack.runner.status import ReplicaFailure, build_status, status_changed

T0 = datetime(2026, 5, 9, 12, 0, 0, tzinfo=UTC)
FACTS = DeploymentFacts(
    namespace="shop",
    name="shop-api",
    uid="u",
    generation=3,
    replicas=2,
    template_hash="abc",
    grace_seconds=30,
    min_ready_seconds=0,
    progress_deadline_seconds=600,
    strategy="RollingUpdate",
    max_surge=1,
    max_unavailable=0,
    wants_http_port=True,
)


def view(name: str, *, current: bool = True, ready: bool = True) -> ReplicaView:
    return ReplicaView(name=name, seq=0, current=current, ready=ready, available=ready)


def conditions(status: dict[str, object]) -> dict[str, tuple[object, object]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}  # type: ignore[attr-defined,index]


def test_a_rolled_out_deployment_is_available_and_complete() -> None:
    status = build_status(FACTS, [view("a"), view("b")], now=T0, last_progress=T0)
    assert {k: status[k] for k in ("observedGeneration", "replicas", "updatedReplicas")} == {
        "observedGeneration": 3,
        "replicas": 2,
        "updatedReplicas": 2,
    }
    assert (status["readyReplicas"], status["availableReplicas"], status["unavailableReplicas"]) == (2, 2, 0)
    assert conditions(status) == {
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("True", "NewReplicaSetAvailable"),
    }


def test_a_rollout_in_progress_counts_old_and_new_replicas() -> None:
    replicas = [
        view("old", current=False),
        view("new", ready=False),
        view("old2", current=False, ready=False),
    ]
    status = build_status(FACTS, replicas, now=T0, last_progress=T0)
    assert (status["replicas"], status["updatedReplicas"], status["readyReplicas"]) == (3, 1, 1)
    assert status["unavailableReplicas"] == 1
    assert conditions(status) == {
        "Available": ("False", "MinimumReplicasUnavailable"),
        "Progressing": ("True", "ReplicaSetUpdated"),
    }


def test_no_progress_past_the_deadline_is_reported() -> None:
    facts = replace(FACTS, progress_deadline_seconds=60)
    status = build_status(facts, [view("a", ready=False)], now=T0 + timedelta(seconds=61), last_progress=T0)
    assert conditions(status)["Progressing"] == ("False", "ProgressDeadlineExceeded")


def test_a_replica_that_cannot_start_shows_as_a_replica_failure() -> None:
    failure = ReplicaFailure("CreateContainerConfigError", 'shop-api-abc-0: secret "db" not found')
    status = build_status(FACTS, [view("a", ready=False)], now=T0, last_progress=T0, failure=failure)
    failed = next(c for c in status["conditions"] if c["type"] == "ReplicaFailure")
    assert (failed["status"], failed["reason"]) == ("True", "CreateContainerConfigError")
    assert 'secret "db" not found' in failed["message"]


def test_unchanged_state_gives_an_unchanged_status_so_nothing_is_patched() -> None:
    first = build_status(FACTS, [view("a"), view("b")], now=T0, last_progress=T0)
    later = build_status(
        FACTS, [view("a"), view("b")], now=T0 + timedelta(minutes=5), last_progress=T0, previous=first
    )
    assert not status_changed(first, later)
    assert later["conditions"] == first["conditions"]


def test_transition_times_move_only_when_a_condition_flips() -> None:
    first = build_status(FACTS, [view("a"), view("b")], now=T0, last_progress=T0)
    t1 = T0 + timedelta(seconds=30)
    later = build_status(FACTS, [view("a"), view("b", ready=False)], now=t1, last_progress=t1, previous=first)
    available = next(c for c in later["conditions"] if c["type"] == "Available")
    progressing = next(c for c in later["conditions"] if c["type"] == "Progressing")
    assert available["lastTransitionTime"] == "2026-05-09T12:00:30Z"
    assert progressing["lastTransitionTime"] == "2026-05-09T12:00:00Z"  # still True
    assert progressing["lastUpdateTime"] == "2026-05-09T12:00:30Z"  # but its reason changed
    assert status_changed(first, later)


def test_zero_counts_the_apiserver_dropped_are_not_a_change() -> None:
    desired = build_status(replace(FACTS, replicas=0), [], now=T0, last_progress=T0)
    stored = {k: v for k, v in desired.items() if v != 0}
    assert not status_changed(stored, desired)
    assert status_changed({**stored, "observedGeneration": 2}, desired)
    assert status_changed(None, desired)
