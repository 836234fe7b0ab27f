"""Hand the Deployment's ``replicas`` field over before the operator stops applying it.

Server-side apply *removes* a field its manager applied before and now omits, unless another
manager also owns it; for ``spec.replicas`` that means a reset to the default of 1. So when
autoscaling is paused or handed to an external HPA/KEDA, the reconciler calls
:func:`hand_over_replicas` right before applying the Deployment without ``replicas``: it first
applies ``replicas`` alone, at its current value, under a separate field manager (the procedure
the Kubernetes docs give for handing ``replicas`` to an HPA). The count stays as it is; the HPA
(or a later resume of the operator, which applies with force) takes it from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..kube import KubeClient
from ..names import FIELD_MANAGER

HANDOVER_FIELD_MANAGER = f"{FIELD_MANAGER}-replicas-handover"


def owns_replicas(live: Mapping[str, Any], manager: str = FIELD_MANAGER) -> bool:
    """Whether ``manager`` holds ``spec.replicas`` of ``live`` through an apply."""
    for entry in live.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        if "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {}):
            return True
    return False


def needs_handover(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    return (
        live is not None
        and desired.get("kind") == "Deployment"
        and "replicas" not in desired.get("spec", {})
        and owns_replicas(live)
    )


async def hand_over_replicas(
    desired: Mapping[str, Any], live: Mapping[str, Any] | None, kube: KubeClient
) -> bool:
    """Make the current replica count survive an apply of ``desired`` (which omits it)."""
    if live is None or not needs_handover(desired, live):
        return False
    metadata = live["metadata"]
    await kube.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": metadata["name"], "namespace": metadata["namespace"]},
            "spec": {"replicas": live.get("spec", {}).get("replicas", 1)},
        },
        force=False,
        field_manager=HANDOVER_FIELD_MANAGER,
    )
    return True
