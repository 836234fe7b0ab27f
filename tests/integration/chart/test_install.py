"""The operator chart against the real kube-apiserver: server-side dry runs for every watch scope,
then install, upgrade (rolls the operator, moves RBAC with the scope) and uninstall (the CRD and the
runtimes stay: the documented CRD policy).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.chart.helm import OPERATOR_CHART, RUNTIME_CHART, helm, template_args

from .conftest import CRD_NAME, Namespaces, Releases, get_json, kubectl, manifests_of


def _scopes(unique: str) -> dict[str, tuple[dict[str, Any], list[str]]]:
    """scope -> (values, namespaces that must exist besides the release namespace)."""
    return {
        "release-namespace": ({}, []),
        "one-namespace": ({"watch": {"namespaces": [f"w1-{unique}"]}}, [f"w1-{unique}"]),
        "namespace-list": (
            {"watch": {"namespaces": [f"w1-{unique}", f"w2-{unique}"]}},
            [f"w1-{unique}", f"w2-{unique}"],
        ),
        "cluster": ({"watch": {"allNamespaces": True}}, []),
    }


@pytest.mark.parametrize("scope", ["release-namespace", "one-namespace", "namespace-list", "cluster"])
def test_rendered_chart_is_accepted_by_the_apiserver(
    scope: str, kubeconfig: str, chart_crd: str, namespaces: Namespaces, unique_name: str
) -> None:
    values, watched = _scopes(unique_name)[scope]
    release_namespace = namespaces.create(f"op-{unique_name}")
    for name in watched:
        namespaces.create(name)
    args = template_args(OPERATOR_CHART, release="sfo", namespace=release_namespace, include_crds=True)
    rendered = helm(*args, "-f", "-", stdin=json.dumps(values)).stdout
    kinds = {doc["kind"] for doc in manifests_of(rendered)}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount", "Service"} <= kinds
    result = kubectl(kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=rendered, check=False)
    assert result.returncode == 0, result.stderr
    applied = result.stdout.splitlines()
    assert any(line.startswith("deployment.apps/sfo-smartflow-operator") for line in applied), applied
    expected_role = "clusterrole" if scope == "cluster" else "role"
    expected_count = 1 if scope == "cluster" else max(len(watched), 1)
    roles = [
        line
        for line in applied
        if line.startswith(f"{expected_role}.rbac.authorization.k8s.io/") and "-leader-election " not in line
    ]
    assert len(roles) == expected_count, applied
    # The Lease grants live in a Role of their own in the release namespace, whatever the scope.
    assert any(
        line.startswith("role.rbac.authorization.k8s.io/") and "-leader-election " in line for line in applied
    ), applied


def test_rendered_runtime_is_accepted_by_the_crd_and_bad_values_are_rejected(
    kubeconfig: str, chart_crd: str, namespaces: Namespaces, unique_name: str
) -> None:
    namespace = namespaces.create(f"rt-{unique_name}")
    values: dict[str, Any] = {
        "kafka": {"bootstrapServers": "kafka:9092"},
        "database": {"createSecret": {"enabled": True, "dsn": "postgresql://u:p@db/orders"}},
        "env": [{"name": "SMARTFLOW_LOG_LEVEL", "value": "DEBUG"}],
        "roles": {
            "api": {"replicas": 2},
            "relay": {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 6}},
        },
    }
    args = template_args(RUNTIME_CHART, release="orders", namespace=namespace)
    rendered = helm(*args, "-f", "-", stdin=json.dumps(values)).stdout
    result = kubectl(kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=rendered, check=False)
    assert result.returncode == 0, result.stderr
    assert "smartflowruntime.smartflow.io/orders created (server dry run)" in result.stdout

    # What only the CRD can check (CEL: minReplicas <= maxReplicas) is rejected at admission too.
    values["roles"]["relay"]["autoscaling"] = {"enabled": True, "minReplicas": 5, "maxReplicas": 2}
    rendered = helm(*args, "-f", "-", stdin=json.dumps(values)).stdout
    result = kubectl(kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=rendered, check=False)
    assert result.returncode != 0
    assert "SmartflowRuntime" in result.stderr and "invalid" in result.stderr.lower(), result.stderr


def _deployment(kubeconfig: str, namespace: str, name: str) -> dict[str, Any]:
    deployment = get_json(kubeconfig, "deployment", name, "-n", namespace)
    assert deployment is not None, f"deployment {namespace}/{name} is missing"
    return deployment


def _args(deployment: dict[str, Any]) -> list[str]:
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def _assert_pod_passes_restricted(kubeconfig: str, namespace: str, deployment: dict[str, Any]) -> None:
    """Pod Security admits Pods, not Deployments: create the operator pod from its template (dry run)
    in the release namespace, which enforces `restricted`; the same pod without the chart's security
    contexts is refused, so the namespace does enforce."""
    spec = deployment["spec"]["template"]["spec"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator-probe"}, "spec": spec}
    admitted = kubectl(
        kubeconfig, "-n", namespace, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod)
    )
    assert "Warning" not in admitted.stderr, admitted.stderr
    insecure = {**spec, "securityContext": {}}
    insecure["containers"] = [{**c, "securityContext": {}} for c in spec["containers"]]
    refused = kubectl(
        kubeconfig, "-n", namespace, "create", "--dry-run=server", "-f", "-",
        stdin=json.dumps({**pod, "spec": insecure}), check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "restricted" in refused.stderr, refused.stderr


def test_install_upgrade_uninstall(
    kubeconfig: str, releases: Releases, namespaces: Namespaces, unique_name: str
) -> None:
    operator_ns = namespaces.create(f"op-{unique_name}")
    team_a = namespaces.create(f"a-{unique_name}")
    team_b = namespaces.create(f"b-{unique_name}")
    release = f"sfo-{unique_name}"
    name = f"{release}-smartflow-operator"

    # install: one watched namespace
    installed = releases.install(release, operator_ns, {"watch": {"namespaces": [team_a]}})
    assert f"Watching: {team_a}" in installed.stdout, "NOTES.txt names the watch scope"
    first = _deployment(kubeconfig, operator_ns, name)
    assert f"--namespace={team_a}" in _args(first)
    # Two replicas behind a Lease: rolled one at a time, the new pod up before an old one goes.
    assert first["spec"]["replicas"] == 2
    assert first["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert get_json(kubeconfig, "serviceaccount", name, "-n", operator_ns) is not None
    assert get_json(kubeconfig, "service", f"{name}-metrics", "-n", operator_ns) is not None
    assert get_json(kubeconfig, "role", name, "-n", team_a) is not None
    assert get_json(kubeconfig, "rolebinding", name, "-n", team_a) is not None
    assert get_json(kubeconfig, "role", name, "-n", team_b) is None
    assert get_json(kubeconfig, "crd", CRD_NAME) is not None
    can_i = kubectl(
        kubeconfig, "auth", "can-i", "patch", "deployments", "-n", team_a,
        f"--as=system:serviceaccount:{operator_ns}:{name}", check=False,
    )  # fmt: skip
    assert can_i.stdout.strip() == "yes"

    _assert_pod_passes_restricted(kubeconfig, operator_ns, first)

    # upgrade with changed values: the pod template changes (the operator is rolled) and RBAC
    # follows the new scope.
    releases.upgrade(release, {"watch": {"namespaces": [team_a, team_b]}, "operator": {"logLevel": "DEBUG"}})
    second = _deployment(kubeconfig, operator_ns, name)
    assert second["metadata"]["generation"] > first["metadata"]["generation"]
    assert second["spec"]["template"] != first["spec"]["template"]
    assert {f"--namespace={team_a}", f"--namespace={team_b}", "--log-level=DEBUG"} <= set(_args(second))
    assert get_json(kubeconfig, "role", name, "-n", team_b) is not None

    # An upgrade that changes no pod-facing value does not roll the operator.
    releases.upgrade(
        release, {"metrics": {"service": {"annotations": {"team": "platform"}}}}, extra=["--reuse-values"]
    )
    third = _deployment(kubeconfig, operator_ns, name)
    assert third["spec"]["template"] == second["spec"]["template"]
    assert third["metadata"]["generation"] == second["metadata"]["generation"]

    # Cluster scope: the namespaced Roles go, a ClusterRole comes.
    releases.upgrade(release, {"watch": {"allNamespaces": True}})
    assert "--all-namespaces" in _args(_deployment(kubeconfig, operator_ns, name))
    assert get_json(kubeconfig, "role", name, "-n", team_a) is None
    assert get_json(kubeconfig, "clusterrole", name) is not None
    assert get_json(kubeconfig, "clusterrolebinding", name) is not None

    # A runtime created meanwhile must outlive the operator's uninstall.
    runtime = {
        "apiVersion": "smartflow.io/v1alpha1",
        "kind": "SmartflowRuntime",
        "metadata": {"name": "keep-me", "namespace": team_a},
        "spec": {
            "image": "ghcr.io/smartflow/runtime:0.1.0",
            "database": {"dsnSecretRef": {"name": "db", "key": "dsn"}},
            "kafka": {"bootstrapServers": "kafka:9092"},
        },
    }
    kubectl(kubeconfig, "create", "-f", "-", stdin=json.dumps(runtime))

    releases.uninstall(release)
    assert get_json(kubeconfig, "deployment", name, "-n", operator_ns) is None
    assert get_json(kubeconfig, "serviceaccount", name, "-n", operator_ns) is None
    assert get_json(kubeconfig, "clusterrole", name) is None
    assert get_json(kubeconfig, "clusterrolebinding", name) is None
    assert get_json(kubeconfig, "role", name, "-n", team_b) is None
    # The documented policy: the CRD (and with it every runtime) survives helm uninstall.
    assert get_json(kubeconfig, "crd", CRD_NAME) is not None
    assert get_json(kubeconfig, "smartflowruntime", "keep-me", "-n", team_a) is not None
