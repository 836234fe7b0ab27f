"""The PodDisruptionBudget of a role: at most one pod evicted at a time. Pure.

Only built when it protects something: with one replica (or none) a budget either blocks node
drains or allows everything, so the role gets none. Replicas owned elsewhere (``None``: an HPA)
get one, since they usually run several pods.
"""

from __future__ import annotations

from typing import Any

from ..names import LABEL_VERSION, Role
from ..resource import SmartflowRuntime
from .labels import child_name, role_labels, selector_labels


def wants_disruption_budget(replicas: int | None) -> bool:
    return replicas is None or replicas >= 2


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
