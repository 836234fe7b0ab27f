"""reconcile() against the real kube-apiserver: children, idempotence, rollouts, pruning, GC."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import yaml
from kubernetes import client

from smartflow_devstack import kafka
from smartflow_operator.kube import KubeClient
from smartflow_operator.names import ANNOTATION_CONFIG_HASH
from smartflow_operator.reconcile import reconcile
from tests.integration.realpods import runnable, wait_deployments_ready, wait_job

from .conftest import EXAMPLES, Kubectl, children, example, settled, versions, wait_for

SPLIT_CHILDREN = {
    "Deployment/demo-api",
    "Deployment/demo-relay",
    "Deployment/demo-consumer",
    "Deployment/demo-memory-worker",
    "Service/demo-api",
    "PodDisruptionBudget/demo-api",  # replicas 2
    "PodDisruptionBudget/demo-relay",  # autoscaled, maxReplicas 8: from the spec, not the count (1)
    "PodDisruptionBudget/demo-consumer",
}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in _container(deployment)["env"]}


async def test_split_example_yields_exactly_the_role_children(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    kubectl.apply(namespace, example("runtime-split.yaml"))
    result = await reconcile(namespace, "demo", kube=kube)
    assert len(result.applied) == len(SPLIT_CHILDREN)

    found = children(kubectl, namespace)
    assert set(found) == SPLIT_CHILDREN
    runtime = kubectl.json("-n", namespace, "get", "sfr", "demo")
    owner = {"apiVersion": "smartflow.io/v1alpha1", "kind": "SmartflowRuntime", "name": "demo"}
    for key, obj in found.items():
        references = obj["metadata"]["ownerReferences"]
        assert [{k: r[k] for k in owner} for r in references] == [owner], key
        assert references[0]["uid"] == runtime["metadata"]["uid"] and references[0]["controller"] is True
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "smartflow"
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/managed-by"] == "smartflow-operator"

    for role in ("api", "relay", "consumer", "memory-worker"):
        deployment = found[f"Deployment/demo-{role}"]
        container = _container(deployment)
        assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == role
        assert deployment["metadata"]["labels"]["app.kubernetes.io/version"] == "0.1.0"
        assert container["image"] == "ghcr.io/smartflow/runtime:0.1.0"
        assert container["args"] == ["run", "--role", role]
        env = _env(deployment)
        assert env["SMARTFLOW_DATABASE_DSN"] == {"secretKeyRef": {"name": "smartflow-database", "key": "dsn"}}
        assert env["SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS"] == "kafka.smartflow.svc:9092"
        assert env["SMARTFLOW_KAFKA_CONSUMER_GROUP"] == "smartflow-agent-outbox-consumer"
        assert env["SMARTFLOW_LOG_LEVEL"] == "INFO"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"] == {
            "path": "/readyz",
            "port": "admin",
            "scheme": "HTTP",
        }
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert found["Deployment/demo-api"]["spec"]["replicas"] == 2
    assert found["Deployment/demo-consumer"]["spec"]["replicas"] == 2
    service_ports = {p["name"]: p["port"] for p in found["Service/demo-api"]["spec"]["ports"]}
    assert service_ports == {"http": 8080, "admin": 9090}
    # The namespace warns on anything `restricted` would refuse: the apiserver said nothing.
    assert list(kube.warnings) == []


async def test_all_example_yields_one_deployment_and_the_api_service(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    kubectl.apply(namespace, example("runtime-all.yaml"))
    await reconcile(namespace, "monolith", kube=kube)
    found = children(kubectl, namespace)
    assert set(found) == {"Deployment/monolith-all", "Service/monolith-api"}
    assert _container(found["Deployment/monolith-all"])["args"] == ["run", "--role", "all"]
    assert found["Service/monolith-api"]["spec"]["selector"]["app.kubernetes.io/component"] == "all"
    assert list(kube.warnings) == []


async def test_a_second_reconcile_writes_nothing(
    kubectl: Kubectl, namespace: str, kube: KubeClient, admin_api: client.ApiClient
) -> None:
    kubectl.apply(namespace, example("runtime-split.yaml"))
    await reconcile(namespace, "demo", kube=kube)
    await settled(kubectl, namespace, "demo", kube=kube, api=admin_api)
    before, writes, reads = versions(kubectl, namespace), kube.writes, kube.calls["GET"]
    runtime_version = kubectl.json("-n", namespace, "get", "sfr", "demo")["metadata"]["resourceVersion"]

    result = await reconcile(namespace, "demo", kube=kube)

    assert not result.changed
    assert kube.writes == writes, f"a no-op resync wrote: {kube.calls}"
    assert kube.calls["GET"] > reads  # it did look
    assert versions(kubectl, namespace) == before
    assert (
        kubectl.json("-n", namespace, "get", "sfr", "demo")["metadata"]["resourceVersion"] == runtime_version
    )


async def test_editing_the_image_rolls_every_role(kubectl: Kubectl, namespace: str, kube: KubeClient) -> None:
    kubectl.apply(namespace, example("runtime-split.yaml"))
    await reconcile(namespace, "demo", kube=kube)
    kubectl(
        "-n",
        namespace,
        "patch",
        "sfr",
        "demo",
        "--type=merge",
        "-p",
        '{"spec":{"image":"ghcr.io/smartflow/runtime:0.2.0"}}',
    )
    await reconcile(namespace, "demo", kube=kube)
    found = children(kubectl, namespace)
    for role in ("api", "relay", "consumer", "memory-worker"):
        deployment = found[f"Deployment/demo-{role}"]
        assert _container(deployment)["image"] == "ghcr.io/smartflow/runtime:0.2.0"
        assert deployment["metadata"]["generation"] == 2
        assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == "0.2.0"


async def test_editing_one_role_touches_only_its_deployment(
    kubectl: Kubectl, namespace: str, kube: KubeClient, admin_api: client.ApiClient
) -> None:
    kubectl.apply(namespace, example("runtime-split.yaml"))
    await reconcile(namespace, "demo", kube=kube)
    await settled(kubectl, namespace, "demo", kube=kube, api=admin_api)
    before = versions(kubectl, namespace)
    kubectl(
        "-n", namespace, "patch", "sfr", "demo", "--type=merge",
        "-p", '{"spec":{"roles":{"relay":{"nodeSelector":{"pool":"relays"}}}}}',
    )  # fmt: skip
    result = await reconcile(namespace, "demo", kube=kube)
    after = versions(kubectl, namespace)
    assert result.applied == ["Deployment/demo-relay (updated)"]
    assert [key for key in before if before[key] != after[key]] == ["Deployment/demo-relay"]
    relay = children(kubectl, namespace)["Deployment/demo-relay"]
    assert relay["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "relays"}


async def test_changing_the_secret_changes_the_pod_template_hash(
    kubectl: Kubectl, namespace: str, kube: KubeClient, admin_api: client.ApiClient
) -> None:
    kubectl.apply(namespace, example("runtime-split.yaml"))
    await reconcile(namespace, "demo", kube=kube)
    await settled(kubectl, namespace, "demo", kube=kube, api=admin_api)

    def hashes() -> dict[str, str]:
        return {
            key: obj["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH]
            for key, obj in children(kubectl, namespace).items()
            if key.startswith("Deployment/")
        }

    before = hashes()
    unrelated = base64.b64encode(b"not read by the runtime").decode()
    kubectl(
        "-n",
        namespace,
        "patch",
        "secret",
        "smartflow-database",
        "-p",
        f'{{"data":{{"other":"{unrelated}"}}}}',
    )
    assert not (await reconcile(namespace, "demo", kube=kube)).changed
    new_dsn = base64.b64encode(b"postgresql://smartflow:rotated@db:5432/smartflow").decode()
    kubectl(
        "-n", namespace, "patch", "secret", "smartflow-database", "-p", f'{{"data":{{"dsn":"{new_dsn}"}}}}'
    )
    await reconcile(namespace, "demo", kube=kube)
    after = hashes()
    assert set(after) == set(before)
    assert all(after[key] != before[key] for key in before)


async def test_all_to_split_to_all_leaves_no_stale_children(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    kubectl.apply(namespace, example("runtime-all.yaml"))
    await reconcile(namespace, "monolith", kube=kube)
    kubectl("-n", namespace, "patch", "sfr", "monolith", "--type=merge", "-p", '{"spec":{"mode":"split"}}')
    result = await reconcile(namespace, "monolith", kube=kube)
    assert result.pruned == ["Deployment/monolith-all"]
    assert {k for k in children(kubectl, namespace) if k.startswith("Deployment/")} == {
        "Deployment/monolith-api",
        "Deployment/monolith-relay",
        "Deployment/monolith-consumer",
        "Deployment/monolith-memory-worker",
    }
    kubectl("-n", namespace, "patch", "sfr", "monolith", "--type=merge", "-p", '{"spec":{"mode":"all"}}')
    await reconcile(namespace, "monolith", kube=kube)
    assert set(children(kubectl, namespace)) == {"Deployment/monolith-all", "Service/monolith-api"}
    status = kubectl.json("-n", namespace, "get", "sfr", "monolith")["status"]
    assert set(status["roles"]) == {"all"} and status["mode"] == "all"


async def test_someone_elses_edit_is_reverted(kubectl: Kubectl, namespace: str, kube: KubeClient) -> None:
    kubectl.apply(namespace, example("runtime-all.yaml"))
    await reconcile(namespace, "monolith", kube=kube)
    kubectl("-n", namespace, "set", "image", "deployment/monolith-all", "runtime=evil/image:1")
    result = await reconcile(namespace, "monolith", kube=kube)
    assert result.applied == ["Deployment/monolith-all (updated)"]
    image = _container(children(kubectl, namespace)["Deployment/monolith-all"])["image"]
    assert image == "ghcr.io/smartflow/runtime:0.1.0"


async def test_deleting_the_runtime_removes_its_children(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    kubectl.apply(namespace, example("runtime-split.yaml"))
    await reconcile(namespace, "demo", kube=kube)
    assert children(kubectl, namespace)
    kubectl("-n", namespace, "delete", "sfr", "demo", "--wait=false")
    wait_for(
        lambda: not children(kubectl, namespace),
        what="the garbage collector to remove the children",
        timeout=90,
    )
    assert not (await reconcile(namespace, "demo", kube=kube)).found


async def test_kubectl_wait_for_ready(
    kubectl: Kubectl,
    namespace: str,
    kube: KubeClient,
    admin_api: client.ApiClient,
    node_images: dict[str, str],
    database_dsn: str,
    kafka_server: kafka.KafkaInfo,
    unique_name: str,
) -> None:
    # The split example on the node: its migration Job and its role pods really run.
    documents = list(yaml.safe_load_all((EXAMPLES / "runtime-split.yaml").read_text()))
    kubectl.apply(
        namespace,
        runnable(
            documents,
            image=node_images["runtime"],
            host_dsn=database_dsn,
            bootstrap_servers=kafka_server.pod_bootstrap_servers,
            topic=f"ready.{unique_name}",
        ),
    )
    await reconcile(namespace, "demo", kube=kube)
    job = kubectl.json("-n", namespace, "get", "sfr", "demo")["status"]["schema"]["jobName"]
    assert await asyncio.to_thread(wait_job, client.BatchV1Api(admin_api), namespace, job) == "Complete"
    await reconcile(namespace, "demo", kube=kube)
    waiting = kubectl(
        "-n", namespace, "wait", "--for=condition=Ready", "sfr/demo", "--timeout=1s", check=False
    )
    assert waiting.returncode != 0
    deployments = [f"demo-{role}" for role in ("api", "relay", "consumer", "memory-worker")]
    await asyncio.to_thread(wait_deployments_ready, client.AppsV1Api(admin_api), namespace, deployments)
    await reconcile(namespace, "demo", kube=kube)
    kubectl("-n", namespace, "wait", "--for=condition=Ready", "sfr/demo", "--timeout=10s")
    status = kubectl.json("-n", namespace, "get", "sfr", "demo")["status"]
    assert status["roles"]["consumer"]["replicas"] == "2/2"
    assert status["observedGeneration"] == 1
    printed = kubectl("-n", namespace, "get", "sfr", "demo").stdout
    assert "split" in printed and "2/2" in printed and "True" in printed


async def test_role_pods_pass_restricted_admission(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    """Pod Security enforces on Pods, not Deployments: create each role's pod from its template."""
    kubectl.apply(namespace, example("runtime-split.yaml"))
    await reconcile(namespace, "demo", kube=kube)
    # The serviceaccount controller makes it, perhaps not yet (pods are admitted only with it).
    kubectl("-n", namespace, "create", "serviceaccount", "default", check=False)
    for key, obj in children(kubectl, namespace).items():
        if not key.startswith("Deployment/"):
            continue
        template = obj["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe-" + obj["metadata"]["name"]}}
        pod["spec"] = template["spec"]
        result = kubectl("-n", namespace, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
        assert "Warning" not in result.stderr, result.stderr
    insecure = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "insecure"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    refused = kubectl(
        "-n", namespace, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(insecure), check=False
    )
    assert refused.returncode != 0 and "restricted" in refused.stderr  # the namespace does enforce


pytestmark = pytest.mark.timeout(180)
