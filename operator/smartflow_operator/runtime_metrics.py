"""Per-runtime series of what the operator knows about each runtime, read from its status.

``handlers`` feeds every watch event of a ``SmartflowRuntime`` to :meth:`RuntimeStatusMetrics.observe`:
the reconciler and the autoscaler both write the status, so the series show what
``kubectl get sfr`` shows: per role the Deployment's desired and ready replicas, the last
scaling decision's reason, and every condition with its status and reason (the alerts in the
chart are written on these). A runtime that is deleted (or marked for deletion) is forgotten at
once, so the series stay bounded by the runtimes that exist.

The series are kept as plain values per runtime and produced at scrape time by a custom collector,
so forgetting a runtime is one dictionary pop: no label combination is left behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .names import Role

RuntimeKey = tuple[str, str]  # (namespace, name)

DESIRED_REPLICAS = "smartflow_operator_runtime_desired_replicas"
READY_REPLICAS = "smartflow_operator_runtime_ready_replicas"
SCALING_REASON = "smartflow_operator_runtime_scaling_reason"
CONDITION = "smartflow_operator_runtime_condition"


@dataclass(frozen=True)
class RuntimeSamples:
    """One runtime's values, taken from its status (pure: see :func:`samples_of`)."""

    desired: dict[str, int] = field(default_factory=dict)  # role -> replicas
    ready: dict[str, int] = field(default_factory=dict)
    scaling_reason: dict[str, str] = field(default_factory=dict)  # role -> last decision reason
    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (status, reason)


def samples_of(status: Mapping[str, Any] | None) -> RuntimeSamples:
    """What a runtime's status says, tolerant of missing or malformed parts (never raises)."""
    status = status if isinstance(status, Mapping) else {}
    roles = status.get("roles")
    roles = roles if isinstance(roles, Mapping) else {}
    samples = RuntimeSamples()
    for role in Role:
        role_status = roles.get(role.spec_key)
        if not isinstance(role_status, Mapping):
            continue
        desired = role_status.get("desiredReplicas")
        if isinstance(desired, int):
            samples.desired[role.value] = desired
        ready = role_status.get("readyReplicas")
        if isinstance(ready, int):
            samples.ready[role.value] = ready
        autoscaling = role_status.get("autoscaling")
        if isinstance(autoscaling, Mapping) and isinstance(autoscaling.get("reason"), str):
            samples.scaling_reason[role.value] = autoscaling["reason"]
    for condition in status.get("conditions") or []:
        if isinstance(condition, Mapping) and isinstance(condition.get("type"), str):
            samples.conditions[condition["type"]] = (
                str(condition.get("status", "Unknown")),
                str(condition.get("reason", "")),
            )
    return samples


class RuntimeStatusMetrics(Collector):
    """The per-runtime series, registered in the operator's registry (passed in, no globals)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._runtimes: dict[RuntimeKey, RuntimeSamples] = {}
        self.registry = registry or CollectorRegistry()
        self.registry.register(self)

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """One watch event of a runtime: refresh its series, or forget it when it goes."""
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace")), str(metadata.get("name")))
        if event_type == "DELETED" or metadata.get("deletionTimestamp"):
            self.forget(*key)
            return
        self._runtimes[key] = samples_of(body.get("status"))

    def forget(self, namespace: str, name: str) -> None:
        self._runtimes.pop((namespace, name), None)

    def runtimes(self) -> set[RuntimeKey]:
        return set(self._runtimes)

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        desired = GaugeMetricFamily(
            DESIRED_REPLICAS,
            "Replicas the role's Deployment asks for (status.roles.<role>.desiredReplicas).",
            labels=("namespace", "name", "role"),
        )
        ready = GaugeMetricFamily(
            READY_REPLICAS,
            "Ready pods of the role (status.roles.<role>.readyReplicas).",
            labels=("namespace", "name", "role"),
        )
        reason = GaugeMetricFamily(
            SCALING_REASON,
            "1 for the reason of the role's last scaling decision (status.roles.<role>.autoscaling.reason).",
            labels=("namespace", "name", "role", "reason"),
        )
        condition = GaugeMetricFamily(
            CONDITION,
            "1 per condition of the runtime, with its status and reason (status.conditions).",
            labels=("namespace", "name", "type", "status", "reason"),
        )
        for (namespace, name), samples in sorted(self._runtimes.items()):
            for role, value in samples.desired.items():
                desired.add_metric((namespace, name, role), value)
            for role, value in samples.ready.items():
                ready.add_metric((namespace, name, role), value)
            for role, why in samples.scaling_reason.items():
                reason.add_metric((namespace, name, role, why), 1)
            for type_, (status, why) in samples.conditions.items():
                condition.add_metric((namespace, name, type_, status, why), 1)
        yield from (desired, ready, reason, condition)
