"""Every Kubernetes permission ``smartflow-operator run`` needs, in one place.

The Helm chart's (Cluster)Role must grant at least these (a test checks the chart against this
list); nothing in the operator may need more. Scope: a ClusterRole bound cluster-wide for
``--all-namespaces``, or a Role per watched namespace for ``--namespace``; plus the leader
election Role in the operator's own namespace (:func:`leader_election_permissions`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .names import LEASE_NAME


@dataclass(frozen=True)
class Permission:
    api_group: str  # "" is the core group
    resource: str
    verbs: tuple[str, ...]
    why: str
    resource_names: tuple[str, ...] = ()  # empty: every object of the resource


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
        ("list", "watch", "create", "patch", "delete"),
        "one Deployment per role: server-side apply (a patch, never a PUT), prune, watch readiness and"
        " replicas (the autoscaler reads them from the watch, never by GET)",
    ),
    Permission(
        "",
        "services",
        ("list", "watch", "create", "patch"),
        "the API Service: watched (the passes read children from the watch), server-side applied;"
        " wanted in every mode, so never pruned",
    ),
    Permission(
        "policy",
        "poddisruptionbudgets",
        ("list", "watch", "create", "patch", "delete"),
        "a disruption budget per role: watched, server-side applied, pruned",
    ),
    Permission(
        "networking.k8s.io",
        "networkpolicies",
        ("list", "watch", "create", "patch", "delete"),
        "the optional NetworkPolicy (spec.networkPolicy): watched, server-side applied, pruned",
    ),
    Permission(
        "batch",
        "jobs",
        ("get", "list", "watch", "create"),
        "the schema migration Job: read by name, watched for completion, created once per spec "
        "(never updated or deleted: finished Jobs go by their TTL or with the runtime)",
    ),
    Permission("", "pods", ("list",), "find the pod of a failed migration Job (by its Job's uid)"),
    Permission("", "pods/log", ("get",), "quote the failed migration pod's last log lines"),
    Permission(
        "",
        "secrets",
        ("get",),
        "check and hash the referenced Secrets (DSN, TLS, SASL, env); the probes' credentials",
    ),
    Permission("", "configmaps", ("get",), "check and hash the referenced ConfigMaps (CA bundles, env)"),
    Permission("", "events", ("create",), "Events about applied changes and problems (always created)"),
)


def leader_election_permissions(lease_name: str = LEASE_NAME) -> tuple[Permission, ...]:
    """The Lease rights, granted by a Role in the operator's own namespace only (the chart's
    ``<release>-leader-election``). RBAC cannot narrow ``create`` to a name (the object does not
    exist yet when it is checked), so ``get``/``update`` name the one Lease and ``create`` does not."""
    return (
        Permission(
            "coordination.k8s.io",
            "leases",
            ("create",),
            "create the leader Lease the first time any replica starts",
        ),
        Permission(
            "coordination.k8s.io",
            "leases",
            ("get", "update"),
            "read, renew and release the leader Lease (update with resourceVersion: one leader)",
            resource_names=(lease_name,),
        ),
    )


def as_policy_rules(permissions: tuple[Permission, ...] = PERMISSIONS) -> list[dict[str, list[str]]]:
    """The permissions as RBAC ``rules`` (what a ClusterRole/Role manifest holds)."""
    rules: list[dict[str, list[str]]] = []
    for permission in permissions:
        rule = {
            "apiGroups": [permission.api_group],
            "resources": [permission.resource],
            "verbs": list(permission.verbs),
        }
        if permission.resource_names:
            rule["resourceNames"] = list(permission.resource_names)
        rules.append(rule)
    return rules
