"""Every object a runtime should own right now, each stamped with the hash of its own manifest.

The reconciler applies an object only when its stamped hash differs from the live one (or the live
object drifted), which is what makes a no-op resync free. Pure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..names import ANNOTATION_APPLIED_HASH, Role
from ..resource import SmartflowRuntime
from .deployment import build_deployment
from .disruption_budget import build_disruption_budget, wants_disruption_budget
from .network_policy import build_network_policy
from .service import build_api_service


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp_applied_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``manifest`` with ``smartflow.io/applied-hash`` set to the hash of the rest.

    A Deployment's ``spec.replicas`` value is left out of the hash (only whether it is set counts:
    leaving the field to an HPA is a change): for an autoscaled role it follows the autoscaler, and
    a new count is one apply of the Deployment, not a changed manifest that would make every later
    pass apply again (``drift.contains`` still compares the value itself)."""
    hashed = manifest
    if manifest.get("kind") == "Deployment" and "replicas" in manifest.get("spec", {}):
        hashed = {**manifest, "spec": {**manifest["spec"], "replicas": "set"}}
    digest = manifest_hash(hashed)
    metadata = dict(manifest["metadata"])
    metadata["annotations"] = {**metadata.get("annotations", {}), ANNOTATION_APPLIED_HASH: digest}
    return {**manifest, "metadata": metadata}


def desired_children(
    runtime: SmartflowRuntime,
    *,
    config_hashes: Mapping[Role, str],
    replicas: Mapping[Role, int | None],
) -> list[dict[str, Any]]:
    """Deployments (one per active role), the API Service, disruption budgets where they help, and
    the NetworkPolicy when the spec asks for one."""
    children: list[dict[str, Any]] = []
    for role in runtime.spec.active_roles():
        children.append(
            build_deployment(runtime, role, replicas=replicas[role], config_hash=config_hashes[role])
        )
        if wants_disruption_budget(runtime.spec.roles.for_role(role)):
            children.append(build_disruption_budget(runtime, role))
    children.append(build_api_service(runtime))
    if runtime.spec.network_policy.enabled:
        children.append(build_network_policy(runtime))
    return [stamp_applied_hash(child) for child in children]
