"""Every Kubernetes permission ``smartflow-operator run`` needs, in one place.

The Helm chart's (Cluster)Role must grant at least these (a test checks the chart against this
list); nothing in the operator may need more. Scope: a ClusterRole bound cluster-wide for
``--all-namespaces``, or a Role per watched namespace for ``--namespace``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Permission:
    api_group: str  # "" is the core group
    resource: str
    verbs: tuple[str, ...]
    why: str


PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        "smartflow.io",
        "smartflowruntimes",
        ("get", "list", "watch", "patch"),
        "watch runtimes; kopf records handler progress in annotations",
    ),
    Permission("smartflow.io", "smartflowruntimes/status", ("patch",), "report conditions and roles"),
    Permission(
        "smartflow.io",
        "smartflowruntimes/finalizers",
        ("update",),
        "set blockOwnerDeletion on children (OwnerReferencesPermissionEnforcement)",
    ),
    Permission(
        "apps",
        "deployments",
        ("get", "list", "watch", "create", "patch", "delete"),
        "one Deployment per role: server-side apply (a patch, never a PUT), prune, watch readiness",
    ),
    Permission(
        "apps",
        "deployments/scale",
        ("patch",),
        "the autoscaler's decision: replicas set through the scale subresource, as the HPA does",
    ),
    Permission(
        "",
        "services",
        ("list", "create", "patch"),
        "the API Service: listed by label, server-side applied; wanted in every mode, so never pruned",
    ),
    Permission(
        "policy",
        "poddisruptionbudgets",
        ("list", "create", "patch", "delete"),
        "a disruption budget per role: listed by label, server-side applied, pruned",
    ),
    Permission("", "secrets", ("get",), "check and hash the referenced Secrets (DSN, env)"),
    Permission("", "configmaps", ("get",), "check and hash the referenced ConfigMaps (env)"),
    Permission("", "events", ("create",), "Events about applied changes and problems (always created)"),
)


def as_policy_rules() -> list[dict[str, list[str]]]:
    """The permissions as RBAC ``rules`` (what a ClusterRole/Role manifest holds)."""
    return [
        {
            "apiGroups": [permission.api_group],
            "resources": [permission.resource],
            "verbs": list(permission.verbs),
        }
        for permission in PERMISSIONS
    ]
