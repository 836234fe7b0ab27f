"""Fixtures for the operator against the real kube-apiserver: the CRD installed once per session,
a fresh namespace per test (labelled for the `restricted` Pod Security Standard, enforce + warn),
kubectl, and the operator's own API client with its request counter.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from smartflow_devstack.versions import REPO_ROOT, kube_bin
from smartflow_operator.crd import CRD_FILENAME
from smartflow_operator.kube import KubeClient, load_api_client
from smartflow_operator.reconcile import reconcile
from tests.integration.realpods import wait_deployments_ready

EXAMPLES = REPO_ROOT / "examples"
CRD_PATH = REPO_ROOT / "crds" / CRD_FILENAME


class Kubectl:
    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(kube_bin("kubectl")), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)

    def apply(self, namespace: str, manifest: str | Path) -> subprocess.CompletedProcess[str]:
        if isinstance(manifest, Path):
            return self("-n", namespace, "apply", "-f", str(manifest))
        return self("-n", namespace, "apply", "-f", "-", stdin=manifest)


@pytest.fixture(scope="session")
def kubectl(kubeconfig: str) -> Kubectl:
    return Kubectl(kubeconfig)


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl) -> str:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    # `kubectl wait` fails at once while the new CRD has no conditions yet: poll the condition instead.
    established = '{.status.conditions[?(@.type=="Established")].status}'
    deadline = time.monotonic() + 60
    crd_name = "crd/smartflowruntimes.smartflow.io"
    while kubectl("get", crd_name, "-o", f"jsonpath={established}", check=False).stdout != "True":
        assert time.monotonic() < deadline, "the SmartflowRuntime CRD never became Established"
        time.sleep(0.2)
    # Established does not mean discovery has caught up; wait until kubectl can resolve the kind.
    deadline = time.monotonic() + 30
    # (and the OpenAPI schema `kubectl explain` reads is published a little later still).
    while (
        kubectl("get", "sfr", "-A", check=False).returncode != 0
        or kubectl("explain", "smartflowruntime.spec.migrations", check=False).returncode != 0
    ):
        assert time.monotonic() < deadline, "the SmartflowRuntime kind never became discoverable"
        time.sleep(0.5)
    return "smartflowruntimes.smartflow.io"


@pytest.fixture
def namespace(kubectl: Kubectl, crd: str, unique_name: str) -> Iterator[str]:
    name = f"sfr-{unique_name}"
    kubectl("create", "namespace", name)
    kubectl(
        "label",
        "namespace",
        name,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
    )
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def kube(kubeconfig: str) -> AsyncIterator[KubeClient]:
    client = KubeClient(load_api_client(kubeconfig))
    yield client
    client.close()


@pytest.fixture
def admin_api(kubeconfig: str) -> Iterator[client.ApiClient]:
    """The official client as the cluster admin (to read what the Job controller did)."""
    api = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    yield api
    api.close()  # type: ignore[no-untyped-call]


def example(filename: str) -> str:
    """``examples/<filename>`` with the operator's migration Job off (``spec.migrations.enabled``),
    for tests about the children the operator builds: they use the examples' placeholder image and
    servers, which no pod can run. The Job itself runs on the node in ``test_migrations``."""
    documents = list(yaml.safe_load_all((EXAMPLES / filename).read_text()))
    for document in documents:
        if document["kind"] == "SmartflowRuntime":
            document["spec"].setdefault("migrations", {})["enabled"] = False
    return yaml.safe_dump_all(documents)


def children(kubectl: Kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    """Every Deployment, Service and PodDisruptionBudget in the namespace, by `Kind/name`."""
    found: dict[str, dict[str, Any]] = {}
    for kind in ("deployments", "services", "poddisruptionbudgets"):
        for item in kubectl.json("-n", namespace, "get", kind)["items"]:
            found[f"{item['kind']}/{item['metadata']['name']}"] = item
    return found


def versions(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    return {key: obj["metadata"]["resourceVersion"] for key, obj in children(kubectl, namespace).items()}


async def settled(
    kubectl: Kubectl, namespace: str, name: str, *, kube: KubeClient, api: client.ApiClient, **options: Any
) -> None:
    """Let the deployment controller catch up with the runtime's Deployments (it writes their
    status, and so their resourceVersion; pods of a placeholder image never get ready, that status
    then stays) and reconcile once (``options`` go to ``reconcile``): the steady state a resync finds."""
    deployments = [
        key.split("/", 1)[1] for key in children(kubectl, namespace) if key.startswith("Deployment/")
    ]
    await asyncio.to_thread(
        wait_deployments_ready, client.AppsV1Api(api), namespace, deployments, ready=False
    )
    await reconcile(namespace, name, kube=kube, **options)


def wait_for(check: Callable[[], bool], *, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def condition(runtime: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (runtime.get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            return dict(cond)
    return None
