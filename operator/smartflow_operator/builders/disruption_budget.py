"""The PodDisruptionBudget of a role: at most one pod evicted at a time. Pure.

Decided from the spec, never from the live count (as CloudNativePG does): a role gets a budget when
it can run two pods or more, i.e. fixed ``replicas >= 2`` or autoscaling with ``maxReplicas >= 2``
(also when an HPA owns the count, ``mode: External``). An autoscaled role crossing 1 <-> 2 then
neither creates nor deletes a budget; at one pod ``maxUnavailable: 1`` simply allows its eviction.
With at most one replica possible a budget either blocks node drains or protects nothing.
"""

from __future__ import annotations

from typing import Any

from ..names import LABEL_VERSION, Role
from ..resource import SmartflowRuntime
from ..spec import ScalableWorkloadSpec, WorkloadSpec
from .labels import child_name, role_labels, selector_labels


def wants_disruption_budget(workload: WorkloadSpec) -> bool:
    if isinstance(workload, ScalableWorkloadSpec) and workload.autoscaling.enabled:
        return workload.autoscaling.max_replicas >= 2
    return workload.replicas >= 2


def build_disruption_budget(runtime: SmartflowRuntime, role: Role) -> dict[str, Any]:
    labels = {key: value for key, value in role_labels(runtime, role).items() if key != LABEL_VERSION}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": child_name(runtime, role),
            "namespace": runtime.namespace,
            "labels": labels,
            "ownerReferences": [runtime.owner_reference()],
        },
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(runtime, role)},
            # A crash-looping pod must not block a node drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
