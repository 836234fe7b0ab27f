"""The Deployment of one role: the one image, `run --role <role>`, env from the spec and the DSN
Secret, probes on the admin port and a security context the `restricted` Pod Security Standard
admits. Pure.
"""

from __future__ import annotations

from typing import Any

from ..names import (
    ADMIN_PORT,
    ADMIN_PORT_NAME,
    ANNOTATION_CONFIG_HASH,
    CONTAINER_NAME,
    HTTP_PORT,
    HTTP_PORT_NAME,
    RUN_AS_USER,
    SERVING_ROLES,
    Role,
)
from ..resource import SmartflowRuntime
from ..spec import EnvVar
from .labels import child_name, role_labels, selector_labels
from .security import security_env, security_mounts, security_volumes

TMP_VOLUME = "tmp"
# The runtime drains within SMARTFLOW_SHUTDOWN_GRACE_SECONDS (25 s); the kubelet waits a bit longer.
TERMINATION_GRACE_SECONDS = 30


def build_env(runtime: SmartflowRuntime, role: Role | None) -> list[dict[str, Any]]:
    """Operator-set variables, then spec.env, then the role's env; a later entry with the same name
    replaces an earlier one in place (duplicates would make the apiserver warn). ``role`` None: the
    environment every role shares (the migration Job's)."""
    spec = runtime.spec
    dsn = spec.database.dsn_secret_ref
    entries: list[dict[str, Any]] = [
        {"name": "SMARTFLOW_DATABASE_DSN", "valueFrom": {"secretKeyRef": {"name": dsn.name, "key": dsn.key}}},
        {"name": "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS", "value": spec.kafka.bootstrap_servers},
        {"name": "SMARTFLOW_KAFKA_TOPIC", "value": spec.kafka.topic},
        {"name": "SMARTFLOW_KAFKA_CONSUMER_GROUP", "value": spec.kafka.consumer_group},
        {"name": "SMARTFLOW_ADMIN_PORT", "value": str(ADMIN_PORT)},
        *security_env(spec),
    ]
    if role in SERVING_ROLES:
        entries.append({"name": "SMARTFLOW_HTTP_PORT", "value": str(HTTP_PORT)})
    entries.append({"name": "SMARTFLOW_LOG_FORMAT", "value": "json"})
    role_env = spec.roles.for_role(role).env if role is not None else None
    user_env: list[EnvVar] = [*(spec.env or []), *(role_env or [])]
    entries += [var.dump() for var in user_env]
    merged: dict[str, dict[str, Any]] = {}
    for entry in entries:
        merged[entry["name"]] = entry  # dicts keep the first position, take the last value
    return list(merged.values())


def _ports(role: Role) -> list[dict[str, Any]]:
    ports = [{"name": ADMIN_PORT_NAME, "containerPort": ADMIN_PORT, "protocol": "TCP"}]
    if role in SERVING_ROLES:
        ports.insert(0, {"name": HTTP_PORT_NAME, "containerPort": HTTP_PORT, "protocol": "TCP"})
    return ports


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": ADMIN_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def build_mounts(runtime: SmartflowRuntime) -> list[dict[str, Any]]:
    """The writable /tmp and the read-only TLS certificate volumes (``security``)."""
    return [{"name": TMP_VOLUME, "mountPath": "/tmp"}, *security_mounts(runtime.spec)]


def build_container(runtime: SmartflowRuntime, role: Role) -> dict[str, Any]:
    spec = runtime.spec
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy.value,
        "args": ["run", "--role", role.value],
        "env": build_env(runtime, role),
        "ports": _ports(role),
        # Startup gives a slow first start 60 s before liveness may restart the container.
        "startupProbe": _probe("/healthz", period=2, failures=30),
        "livenessProbe": _probe("/healthz", period=10, failures=3),
        "readinessProbe": _probe("/readyz", period=5, failures=3),
        "resources": spec.roles.for_role(role).resources.dump(),
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "volumeMounts": build_mounts(runtime),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.env_from:
        container["envFrom"] = [source.dump() for source in spec.env_from]
    return container


def build_placement(runtime: SmartflowRuntime, role: Role) -> dict[str, Any]:
    """The role's nodeSelector, tolerations and affinity (pod spec fields), as the spec sets them."""
    workload = runtime.spec.roles.for_role(role)
    placement: dict[str, Any] = {}
    if workload.node_selector:
        placement["nodeSelector"] = dict(workload.node_selector)
    if workload.tolerations:
        placement["tolerations"] = [toleration.dump() for toleration in workload.tolerations]
    if workload.affinity:
        placement["affinity"] = workload.affinity
    return placement


def build_pod_basics(runtime: SmartflowRuntime) -> dict[str, Any]:
    """The pod spec fields every pod of a runtime shares: the restricted security context, no API
    token, the writable /tmp and the TLS certificate volumes, the image pull Secrets."""
    basics: dict[str, Any] = {
        "securityContext": POD_SECURITY_CONTEXT,
        # The runtime never talks to the Kubernetes API: no token in its pods.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "volumes": [
            {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}},
            *security_volumes(runtime.spec),
        ],
    }
    if runtime.spec.image_pull_secrets:
        basics["imagePullSecrets"] = [secret.dump() for secret in runtime.spec.image_pull_secrets]
    return basics


def _scheduling(runtime: SmartflowRuntime, role: Role) -> dict[str, Any]:
    workload = runtime.spec.roles.for_role(role)
    scheduling = build_placement(runtime, role)
    # Spread a role's pods over nodes unless the user said how; ScheduleAnyway never blocks scheduling.
    scheduling["topologySpreadConstraints"] = workload.topology_spread_constraints or [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector_labels(runtime, role)},
        }
    ]
    return scheduling


def build_deployment(
    runtime: SmartflowRuntime, role: Role, *, replicas: int | None, config_hash: str
) -> dict[str, Any]:
    """The role's Deployment. ``replicas`` None leaves the field out, so whoever else owns it (an HPA,
    KEDA) is never overwritten; ``config_hash`` rolls the pods when referenced config changes."""
    labels = role_labels(runtime, role)
    pod_spec: dict[str, Any] = {
        "containers": [build_container(runtime, role)],
        **build_pod_basics(runtime),
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        **_scheduling(runtime, role),
    }
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(runtime, role)},
        "revisionHistoryLimit": 5,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": {
                "labels": labels,
                "annotations": {
                    ANNOTATION_CONFIG_HASH: config_hash,
                    "kubectl.kubernetes.io/default-container": CONTAINER_NAME,
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(ADMIN_PORT),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": pod_spec,
        },
    }
    if replicas is not None:
        deployment_spec = {"replicas": replicas, **deployment_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": child_name(runtime, role),
            "namespace": runtime.namespace,
            "labels": labels,
            "ownerReferences": [runtime.owner_reference()],
        },
        "spec": deployment_spec,
    }
