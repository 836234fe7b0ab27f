"""The operator chart's workload: what `helm template` renders for the operator Deployment, its
Service and ServiceMonitor, and how values are validated. No cluster needed.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from smartflow_operator.cli import _parser

from .helm import OPERATOR_CHART, Manifest, helm, of_kind, one, render, render_error

NAMESPACE = "smartflow-system"
CHART = yaml.safe_load((OPERATOR_CHART / "Chart.yaml").read_text())


def _deployment(values: dict[str, Any] | None = None) -> Manifest:
    return one(render(OPERATOR_CHART, namespace=NAMESPACE, values=values), "Deployment")


def _container(values: dict[str, Any] | None = None) -> dict[str, Any]:
    (container,) = _deployment(values)["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_helm_lint_is_clean() -> None:
    for values in ([], ["--set", "watch.allNamespaces=true"], ["--set", "watch.namespaces={a,b}"]):
        result = helm("lint", "--strict", str(OPERATOR_CHART), *values)
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_two_replicas_rolled_one_at_a_time_on_different_nodes_with_a_budget() -> None:
    manifests = render(OPERATOR_CHART, namespace=NAMESPACE)
    spec = one(manifests, "Deployment")["spec"]
    assert spec["replicas"] == 2
    # The new pod starts before an old one stops; the stopped leader releases the Lease.
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    anti = spec["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    budget = one(manifests, "PodDisruptionBudget")
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": spec["selector"]["matchLabels"]},
    }
    assert budget["metadata"]["namespace"] == NAMESPACE


def test_a_given_affinity_replaces_the_default_and_one_replica_has_no_budget() -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    manifests = render(OPERATOR_CHART, namespace=NAMESPACE, values={"replicaCount": 1, "affinity": affinity})
    assert one(manifests, "Deployment")["spec"]["template"]["spec"]["affinity"] == affinity
    assert not of_kind(manifests, "PodDisruptionBudget")


def test_two_replicas_without_leader_election_are_refused() -> None:
    error = render_error(OPERATOR_CHART, values={"replicaCount": 2, "leaderElection": {"enabled": False}})
    assert "needs leaderElection.enabled" in error


def test_the_lease_timings_reach_the_operator_and_the_pod_knows_its_namespace() -> None:
    values = {
        "leaderElection": {"leaseDurationSeconds": 30, "renewDeadlineSeconds": 20, "retryPeriodSeconds": 4}
    }
    container = _container(values)
    assert {
        "--lease-duration-seconds=30",
        "--lease-renew-deadline-seconds=20",
        "--lease-retry-period-seconds=4",
    } <= set(container["args"])
    (env,) = [e for e in container["env"] if e["name"] == "POD_NAMESPACE"]
    assert env["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_restricted_security_context() -> None:
    pod = _deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001, "the image's uid (operator/Dockerfile)"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = _container()["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    mounts = {mount["mountPath"] for mount in _container()["volumeMounts"]}
    assert "/tmp" in mounts, "a writable /tmp on a read-only root filesystem"


def test_probes_hit_the_operators_health_endpoint() -> None:
    container = _container({"operator": {"healthPort": 9441}})
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["health"] == 9441
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # Both replicas Ready (the standby can take over): a readiness that follows leadership would
    # deadlock the rolling update and the PDB (docs/helm.md).
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--health-port=9441" in container["args"]


def test_resources_are_set() -> None:
    resources = _container()["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]


@pytest.mark.parametrize(
    ("values", "namespaces", "all_namespaces"),
    [
        ({}, [NAMESPACE], False),
        ({"watch": {"namespaces": ["a", "b"]}}, ["a", "b"], False),
        ({"watch": {"allNamespaces": True}}, None, True),
    ],
)
def test_args_are_accepted_by_the_operator_cli(
    values: dict[str, Any], namespaces: list[str] | None, all_namespaces: bool
) -> None:
    values = {**values, "operator": {"resyncSeconds": 30, "logLevel": "DEBUG", "metricsPort": 9000}}
    container = _container(values)
    assert "command" not in container, "the image's ENTRYPOINT is smartflow-operator"
    parsed = _parser().parse_args(container["args"])
    assert parsed.command == "run"
    assert parsed.namespaces == namespaces
    assert parsed.all_namespaces is all_namespaces
    assert parsed.resync_seconds == 30
    assert parsed.log_level == "DEBUG"
    assert parsed.metrics_port == 9000
    assert parsed.health_address == "0.0.0.0", "probes and scrapes come from outside the pod"


def test_image_defaults_to_app_version_and_digest_wins() -> None:
    assert _container()["image"] == f"ghcr.io/smartflow/smartflow-operator:{CHART['appVersion']}"
    digest = "sha256:" + "a" * 64
    assert _container({"image": {"repository": "r/op", "digest": digest}})["image"] == f"r/op@{digest}"


def test_every_object_has_the_recommended_labels() -> None:
    for manifest in render(OPERATOR_CHART, namespace=NAMESPACE, release="ops"):
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "smartflow-operator"
        assert labels["app.kubernetes.io/instance"] == "ops"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == CHART["appVersion"]
        assert labels["helm.sh/chart"] == f"smartflow-operator-{CHART['version']}"


def test_the_metrics_service_selects_the_operator_pod() -> None:
    manifests = render(OPERATOR_CHART, namespace=NAMESPACE)
    service = one(manifests, "Service")
    pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert not of_kind(render(OPERATOR_CHART, values={"metrics": {"service": {"enabled": False}}}), "Service")


def test_service_monitor_is_off_by_default_and_scrapes_the_metrics_port_when_on() -> None:
    assert not of_kind(render(OPERATOR_CHART, namespace=NAMESPACE), "ServiceMonitor")
    values = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
    manifests = render(OPERATOR_CHART, namespace=NAMESPACE, values=values)
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service_labels = one(manifests, "Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"watch": {"allNamespaces": True, "namespaces": ["a"]}}, "namespaces"),
        ({"watch": {"namespaces": ["Not_A_Namespace"]}}, "Not_A_Namespace"),
        ({"watchNamespaces": ["a"]}, "watchNamespaces"),
        ({"operator": {"logLevel": "LOUD"}}, "logLevel"),
        ({"operator": {"healthPort": 0}}, "healthPort"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name"),
        ({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}, "service"),
    ],
)
def test_bad_values_are_rejected_with_a_pointer(values: dict[str, Any], message: str) -> None:
    assert message in render_error(OPERATOR_CHART, values=values)
