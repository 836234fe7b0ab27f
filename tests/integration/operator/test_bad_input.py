"""Bad input: what the schema/CEL can see is refused at admission naming the field; what only the
operator sees (missing Secret or key) becomes Degraded + one Warning Event, workloads untouched."""

from __future__ import annotations

import base64
import json

import pytest
from kubernetes import client

from smartflow_operator.errors import ConfigurationError
from smartflow_operator.kube import KubeClient
from smartflow_operator.reconcile import reconcile

from .conftest import Kubectl, condition, example, settled, versions

RUNTIME = """
apiVersion: smartflow.io/v1alpha1
kind: SmartflowRuntime
metadata:
  name: {name}
spec:
  image: {image}
  mode: {mode}
  database:
    dsnSecretRef: {{name: {secret}, key: {key}}}
  kafka:
    bootstrapServers: kafka:9092
  roles:
    api:
      replicas: {replicas}
    relay:
      autoscaling: {{enabled: true, minReplicas: {min}, maxReplicas: {max}}}
  migrations: {{enabled: false}}  # about bad input: the Job runs on the node in test_migrations
"""


def runtime(**overrides: object) -> str:
    values: dict[str, object] = {
        "name": "bad",
        "image": "ghcr.io/smartflow/runtime:0.1.0",
        "mode": "split",
        "secret": "smartflow-database",
        "key": "dsn",
        "replicas": 1,
        "min": 1,
        "max": 3,
    }
    values.update(overrides)
    return RUNTIME.format(**values)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"min": 5, "max": 2},
            ["spec.roles.relay.autoscaling", "minReplicas must be less than or equal to maxReplicas"],
        ),
        ({"image": '"Not An Image!"'}, ["spec.image", "must be an image reference"]),
        ({"mode": "both"}, ["spec.mode", 'Unsupported value: "both"']),
        ({"replicas": -1}, ["spec.roles.api.replicas", "greater than or equal to 0"]),
        ({"secret": "Bad_Name"}, ["spec.database.dsnSecretRef.name"]),
        ({"name": "x" * 60}, ["metadata.name must be at most 49 characters"]),
    ],
    ids=["min-above-max", "bad-image", "unknown-mode", "negative-replicas", "bad-secret-name", "long-name"],
)
def test_admission_refuses_naming_the_field(
    kubectl: Kubectl, namespace: str, overrides: dict[str, object], expected: list[str]
) -> None:
    result = kubectl("-n", namespace, "apply", "-f", "-", stdin=runtime(**overrides), check=False)
    assert result.returncode != 0, result.stdout
    for fragment in expected:
        assert fragment in result.stderr, result.stderr


def test_unknown_fields_are_refused(kubectl: Kubectl, namespace: str) -> None:
    manifest = runtime().replace("replicas: 1", "replicaz: 1")
    result = kubectl("-n", namespace, "apply", "-f", "-", stdin=manifest, check=False)
    assert result.returncode != 0 and 'unknown field "spec.roles.api.replicaz"' in result.stderr


def _warnings(kubectl: Kubectl, namespace: str, name: str) -> list[dict[str, object]]:
    events = kubectl.json("-n", namespace, "get", "events", "--field-selector", f"involvedObject.name={name}")
    return [event for event in events["items"] if event["type"] == "Warning"]


async def test_missing_secret_is_degraded_with_one_event_until_it_appears(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    kubectl.apply(namespace, runtime(secret="nowhere"))
    with pytest.raises(ConfigurationError) as raised:
        await reconcile(namespace, "bad", kube=kube)
    assert raised.value.reason == "SecretNotFound"

    status = kubectl.json("-n", namespace, "get", "sfr", "bad")
    degraded = condition(status, "Degraded")
    assert degraded is not None and degraded["status"] == "True" and degraded["reason"] == "SecretNotFound"
    assert (
        f"Secret {namespace}/nowhere (from spec.database.dsnSecretRef) does not exist" == degraded["message"]
    )
    assert condition(status, "Ready")["status"] == "False"  # type: ignore[index]
    assert versions(kubectl, namespace) == {}  # nothing was created half-configured
    assert [event["reason"] for event in _warnings(kubectl, namespace, "bad")] == ["SecretNotFound"]

    # Retrying the same problem is silent: no new Event, no status write.
    writes = kube.writes
    with pytest.raises(ConfigurationError):
        await reconcile(namespace, "bad", kube=kube)
    assert kube.writes == writes
    assert len(_warnings(kubectl, namespace, "bad")) == 1

    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "nowhere"},
        "data": {"dsn": base64.b64encode(b"postgresql://u:p@db/x").decode()},
    }
    kubectl.apply(namespace, json.dumps(secret))
    await reconcile(namespace, "bad", kube=kube)
    status = kubectl.json("-n", namespace, "get", "sfr", "bad")
    assert condition(status, "Degraded")["status"] == "False"  # type: ignore[index]
    assert "Deployment/bad-api" in versions(kubectl, namespace)
    reasons = [e["reason"] for e in kubectl.json("-n", namespace, "get", "events")["items"]]
    assert "Recovered" in reasons


async def test_missing_key_leaves_running_workloads_untouched(
    kubectl: Kubectl, namespace: str, kube: KubeClient, admin_api: client.ApiClient
) -> None:
    kubectl.apply(namespace, example("runtime-split.yaml"))
    await reconcile(namespace, "demo", kube=kube)
    await settled(kubectl, namespace, "demo", kube=kube, api=admin_api)
    before = versions(kubectl, namespace)
    patch = {
        "spec": {"image": "ghcr.io/smartflow/runtime:0.3.0", "database": {"dsnSecretRef": {"key": "nope"}}}
    }
    kubectl("-n", namespace, "patch", "sfr", "demo", "--type=merge", "-p", json.dumps(patch))
    with pytest.raises(ConfigurationError) as raised:
        await reconcile(namespace, "demo", kube=kube)
    assert raised.value.reason == "SecretKeyNotFound"
    assert versions(kubectl, namespace) == before  # the image change waits with the rest
    status = kubectl.json("-n", namespace, "get", "sfr", "demo")
    degraded = condition(status, "Degraded")
    assert degraded is not None and "has no key 'nope'" in degraded["message"]
    assert condition(status, "Progressing")["reason"] == "ReconcileBlocked"  # type: ignore[index]
    assert status["status"]["observedGeneration"] == 2


async def test_a_child_the_apiserver_refuses_is_degraded(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    # Affinity is passed through loosely; the apiserver validates it on the Deployment.
    kubectl.apply(namespace, example("runtime-all.yaml"))
    kubectl(
        "-n", namespace, "patch", "sfr", "monolith", "--type=merge",
        "-p", '{"spec":{"roles":{"all":{"affinity":{"nodeAffinity":{"bogus":1}}}}}}',
    )  # fmt: skip
    with pytest.raises(ConfigurationError) as raised:
        await reconcile(namespace, "monolith", kube=kube)
    assert raised.value.reason == "ChildRejected"
    degraded = condition(kubectl.json("-n", namespace, "get", "sfr", "monolith"), "Degraded")
    assert degraded is not None and "bogus" in degraded["message"]
