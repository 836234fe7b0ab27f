"""Prometheus metrics of the autoscaler, in the operator's registry (passed in, no globals).

Per-runtime gauges carry ``namespace``, ``name`` (the runtime) and ``role``, like the status
series of :mod:`..runtime_metrics`, and are removed when the runtime's loop stops (deleted).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LABELS = ("namespace", "name", "role")
PARTITION_LABELS = ("namespace", "name", "partition")


class AutoscalingMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.lag = Gauge(
            "smartflow_operator_autoscaling_lag",
            "Last measured lag: due outbox rows (relay, counted up to the decision bound) or "
            "consumer-group lag (consumer).",
            LABELS,
            registry=self.registry,
        )
        self.oldest_due_age = Gauge(
            "smartflow_operator_autoscaling_oldest_due_age_seconds",
            "Age of the oldest due outbox row (relay).",
            LABELS,
            registry=self.registry,
        )
        self.desired_replicas = Gauge(
            "smartflow_operator_autoscaling_desired_replicas",
            "Replicas the autoscaler decided on.",
            LABELS,
            registry=self.registry,
        )
        self.partition_lag = Gauge(
            "smartflow_operator_autoscaling_partition_lag",
            "Consumer-group lag of one partition of the runtime's topic, as last measured.",
            PARTITION_LABELS,
            registry=self.registry,
        )
        self._partitions: dict[tuple[str, str], set[str]] = {}
        self.decisions = Counter(
            "smartflow_operator_autoscaling_decisions_total",
            "Scaling decisions by role and reason.",
            ["role", "reason"],
            registry=self.registry,
        )
        self.scale_events = Counter(
            "smartflow_operator_autoscaling_scale_events_total",
            "Replica changes written, by role and direction (up, down).",
            ["role", "direction"],
            registry=self.registry,
        )
        self.probe_errors = Counter(
            "smartflow_operator_autoscaling_probe_errors_total",
            "Failed lag probes by role and reason.",
            ["role", "reason"],
            registry=self.registry,
        )
        self.probe_duration = Histogram(
            "smartflow_operator_autoscaling_probe_duration_seconds",
            "Wall time of one lag probe.",
            ["role"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )

    def observe_partitions(self, namespace: str, runtime: str, lags: Iterable[tuple[int, int]]) -> None:
        """Set the per-partition lag from one consumer reading ((partition, lag) pairs); partitions
        no longer reported are removed."""
        seen = {str(partition): lag for partition, lag in lags}
        for gone in self._partitions.get((namespace, runtime), set()) - seen.keys():
            with contextlib.suppress(KeyError):
                self.partition_lag.remove(namespace, runtime, gone)
        for partition, lag in seen.items():
            self.partition_lag.labels(namespace, runtime, partition).set(lag)
        self._partitions[(namespace, runtime)] = set(seen)

    def forget(self, namespace: str, runtime: str, role: str) -> None:
        """Drop a runtime's gauges when it is deleted (or its autoscaling disabled)."""
        for gauge in (self.lag, self.oldest_due_age, self.desired_replicas):
            with contextlib.suppress(KeyError):
                gauge.remove(namespace, runtime, role)
        if role == "consumer":
            self.observe_partitions(namespace, runtime, ())
            self._partitions.pop((namespace, runtime), None)
