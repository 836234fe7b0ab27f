"""The operator's per-runtime series: taken from the status, dropped when the runtime goes."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from smartflow_operator.autoscaling.metrics import AutoscalingMetrics
from smartflow_operator.runtime_metrics import RuntimeStatusMetrics, samples_of


def runtime(name: str = "demo", namespace: str = "shop", **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, **metadata},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "RolesNotReady"},
                {"type": "Degraded", "status": "False", "reason": "AsExpected"},
                {"type": "ConsumerAutoscaling", "status": "False", "reason": "LagProbeFailed"},
            ],
            "roles": {
                "api": {"desiredReplicas": 2, "readyReplicas": 1},
                "consumer": {
                    "desiredReplicas": 4,
                    "readyReplicas": 4,
                    "lag": 80,
                    "autoscaling": {"reason": "ScaledUp", "desiredReplicas": 4},
                },
                "memoryWorker": {"desiredReplicas": 1, "readyReplicas": 0},
            },
        },
    }


def series(registry: CollectorRegistry, prefix: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in registry.collect()
        for sample in family.samples
        if sample.name.startswith(prefix)
    ]


class TestSamplesOf:
    def test_reads_replicas_reason_and_conditions_per_role(self) -> None:
        samples = samples_of(runtime()["status"])
        assert samples.desired == {"api": 2, "consumer": 4, "memory-worker": 1}
        assert samples.ready == {"api": 1, "consumer": 4, "memory-worker": 0}
        assert samples.scaling_reason == {"consumer": "ScaledUp"}
        assert samples.conditions["Ready"] == ("False", "RolesNotReady")
        assert samples.conditions["ConsumerAutoscaling"] == ("False", "LagProbeFailed")

    def test_a_missing_or_malformed_status_gives_no_series(self) -> None:
        for status in (None, {}, {"roles": "x", "conditions": ["x", {"status": "True"}]}):
            samples = samples_of(status)
            assert (samples.desired, samples.conditions) == ({}, {})


class TestRuntimeMetrics:
    def test_exports_the_status_with_namespace_name_and_role(self) -> None:
        registry = CollectorRegistry()
        RuntimeStatusMetrics(registry).observe("ADDED", runtime())
        get = registry.get_sample_value
        labels = {"namespace": "shop", "name": "demo"}
        assert get("smartflow_operator_runtime_desired_replicas", {**labels, "role": "consumer"}) == 4
        assert get("smartflow_operator_runtime_ready_replicas", {**labels, "role": "memory-worker"}) == 0
        assert (
            get(
                "smartflow_operator_runtime_scaling_reason",
                {**labels, "role": "consumer", "reason": "ScaledUp"},
            )
            == 1
        )
        ready = {**labels, "type": "Ready", "status": "False", "reason": "RolesNotReady"}
        assert get("smartflow_operator_runtime_condition", ready) == 1

    def test_a_new_status_replaces_the_old_series(self) -> None:
        registry = CollectorRegistry()
        metrics = RuntimeStatusMetrics(registry)
        metrics.observe("ADDED", runtime())
        body = runtime()
        body["status"]["conditions"][0] = {"type": "Ready", "status": "True", "reason": "AllRolesReady"}
        metrics.observe("MODIFIED", body)
        conditions = [labels for name, labels, _ in series(registry, "smartflow_operator_runtime_condition")]
        ready = [labels for labels in conditions if labels["type"] == "Ready"]
        assert [(labels["status"], labels["reason"]) for labels in ready] == [("True", "AllRolesReady")]

    def test_a_deleted_runtime_leaves_no_series_and_others_stay(self) -> None:
        registry = CollectorRegistry()
        metrics = RuntimeStatusMetrics(registry)
        metrics.observe("ADDED", runtime("a"))
        metrics.observe("ADDED", runtime("b"))
        metrics.observe("DELETED", runtime("a"))
        names = {labels["name"] for _, labels, _ in series(registry, "smartflow_operator_runtime_")}
        assert names == {"b"}
        metrics.observe("MODIFIED", runtime("b", deletionTimestamp="2026-01-01T00:00:00Z"))
        assert series(registry, "smartflow_operator_runtime_") == []
        assert metrics.runtimes() == set()


class TestAutoscalingSeries:
    def test_partition_lag_follows_the_reading_and_is_forgotten(self) -> None:
        metrics = AutoscalingMetrics()
        metrics.observe_partitions("shop", "demo", [(0, 5), (1, 7)])
        metrics.observe_partitions("shop", "demo", [(1, 3)])
        lags = {
            labels["partition"]: value
            for _, labels, value in series(metrics.registry, "smartflow_operator_autoscaling_partition_lag")
        }
        assert lags == {"1": 3}
        metrics.lag.labels("shop", "demo", "consumer").set(3)
        metrics.forget("shop", "demo", "consumer")
        assert series(metrics.registry, "smartflow_operator_autoscaling_partition_lag") == []
        assert series(metrics.registry, "smartflow_operator_autoscaling_lag") == []
