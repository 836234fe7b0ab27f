"""replicas_for (what the reconciler applies), the SSA handover check, and the status report."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from smartflow_operator.autoscaling.behavior import ResolvedBehavior, stabilize
from smartflow_operator.autoscaling.decision import decide
from smartflow_operator.autoscaling.errors import KafkaUnavailable
from smartflow_operator.autoscaling.handover import needs_handover
from smartflow_operator.autoscaling.history import Recommendation, ScalingHistory
from smartflow_operator.autoscaling.lag import Reading
from smartflow_operator.autoscaling.replicas import replicas_for
from smartflow_operator.autoscaling.report import autoscaling_status, condition
from smartflow_operator.names import Role
from smartflow_operator.spec import SmartflowRuntimeSpec

from .conftest import NOW, spec

BASE = {
    "image": "ghcr.io/smartflow/runtime:0.1.0",
    "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
    "kafka": {"bootstrapServers": "127.0.0.1:9092"},
}


def runtime_spec(relay: dict[str, object]) -> SmartflowRuntimeSpec:
    return SmartflowRuntimeSpec.model_validate({**BASE, "roles": {"relay": relay}})


@pytest.mark.parametrize(
    ("relay", "live", "expected"),
    [
        ({"replicas": 3}, 7, 3),  # autoscaling off: the spec's count, whatever runs now
        ({"replicas": 3, "autoscaling": {"enabled": True, "maxReplicas": 10}}, 7, 7),  # kept as scaled
        ({"replicas": 3, "autoscaling": {"enabled": True, "maxReplicas": 5}}, 7, 5),  # max lowered since
        ({"replicas": 3, "autoscaling": {"enabled": True, "minReplicas": 2}}, None, 3),  # no Deployment yet
        ({"replicas": 0, "autoscaling": {"enabled": True, "minReplicas": 2}}, None, 2),
        ({"replicas": 3, "autoscaling": {"enabled": True, "paused": True}}, 7, None),  # write nothing
        ({"replicas": 3, "autoscaling": {"enabled": True, "mode": "External"}}, 7, None),
    ],
)
def test_replicas_for(relay: dict[str, object], live: int | None, expected: int | None) -> None:
    assert replicas_for(runtime_spec(relay), Role.RELAY, live) == expected


def _deployment(manager: str, fields: dict[str, object]) -> dict[str, object]:
    return {
        "kind": "Deployment",
        "metadata": {"managedFields": [{"manager": manager, "operation": "Apply", "fieldsV1": fields}]},
        "spec": {"replicas": 4},
    }


@pytest.mark.parametrize(
    ("desired_spec", "live", "expected"),
    [
        ({}, _deployment("smartflow-operator", {"f:spec": {"f:replicas": {}}}), True),
        ({"replicas": 4}, _deployment("smartflow-operator", {"f:spec": {"f:replicas": {}}}), False),
        ({}, _deployment("kube-controller-manager", {"f:spec": {"f:replicas": {}}}), False),
        ({}, _deployment("smartflow-operator", {"f:spec": {"f:template": {}}}), False),
        ({}, None, False),
    ],
)
def test_handover_only_when_we_own_replicas_and_stop_applying_them(
    desired_spec: dict[str, object], live: dict[str, object] | None, expected: bool
) -> None:
    assert needs_handover({"kind": "Deployment", "spec": desired_spec}, live) is expected


def test_status_and_condition_of_a_scale_up() -> None:
    d = decide(
        spec=spec(maxReplicas=10),
        reading=Reading(metric=300, cap=32),
        current=1,
        history=ScalingHistory(),
        now=NOW,
    )
    status = autoscaling_status(
        Role.RELAY, d, reading=Reading(metric=300, cap=32), error=None, previous=None, now=NOW
    )
    assert (status["desiredReplicas"], status["currentReplicas"], status["metric"], status["cap"]) == (
        3,
        1,
        300,
        32,
    )
    assert status["lastScaleTime"] == "2025-06-01T12:00:00Z" and status["lastScaleReason"] == "ScaledUp"
    assert (
        status["message"]
        == "due outbox rows 300: 1 -> 3 replicas (ScaledUp, bounds [1, 10], cap 32 outbox shards)"
    )
    assert ScalingHistory.from_status(status["history"]) == d.history
    cond = condition(Role.RELAY, d, error=None)
    assert (cond.type, cond.status, cond.reason) == ("RelayAutoscaling", "True", "ScaledUp")


def test_status_and_condition_of_a_probe_failure_keep_the_last_metric() -> None:
    d = decide(spec=spec(), reading=None, current=3, history=ScalingHistory(), now=NOW)
    error = KafkaUnavailable("broker down")
    previous = {"metric": 42, "lastScaleTime": "2025-06-01T11:00:00Z", "lastScaleReason": "ScaledUp"}
    status = autoscaling_status(Role.CONSUMER, d, reading=None, error=error, previous=previous, now=NOW)
    assert (status["desiredReplicas"], status["metric"], status["lastScaleTime"]) == (
        3,
        42,
        "2025-06-01T11:00:00Z",
    )
    assert status["probeError"] == {"reason": "KafkaUnavailable", "message": "broker down"}
    cond = condition(Role.CONSUMER, d, error=error)
    assert (cond.type, cond.status, cond.reason) == ("ConsumerAutoscaling", "False", "LagProbeFailed")
    assert "holding 3 replicas" in cond.message and "KafkaUnavailable" in cond.message


def test_compacting_the_history_never_changes_stabilization() -> None:
    """The stored history keeps one (latest) entry per value; windows see the same min and max."""
    rng = random.Random(5)
    behavior = ResolvedBehavior.of(spec(behavior={"scaleUp": {"stabilizationWindowSeconds": 40}}).behavior)
    for _ in range(300):
        full = ScalingHistory(
            recommendations=tuple(
                Recommendation(at=NOW - timedelta(seconds=s), replicas=rng.randint(0, 6))
                for s in sorted(rng.sample(range(1, 400), 25), reverse=True)
            )
        )
        compact = full.pruned(NOW, keep_recommendations=300)
        assert len(compact.recommendations) <= 7
        for desired in range(0, 8):
            for current in range(0, 8):
                args = {"current": current, "behavior": behavior, "now": NOW}
                assert stabilize(desired, history=full, **args) == stabilize(desired, history=compact, **args)
