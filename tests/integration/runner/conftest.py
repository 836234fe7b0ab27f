"""Fixtures for the local runner against the real kube-apiserver: a namespace per test, the runner
started as its own process (``smartflow-devstack runner``) watching it, and Deployments labelled like
the operator's whose image maps to :mod:`tests.integration.runner.fake_workload`.

Every replica pid the tests see is remembered; after the runner is stopped, each must be gone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from smartflow_devstack.process import alive
from smartflow_devstack.runner import RunnerProcess, endpoints, start_runner
from smartflow_devstack.versions import REPO_ROOT

FAKE_IMAGE = "smartflow/fake-workload:test"
FAKE_COMMAND = f"{sys.executable} -m tests.integration.runner.fake_workload"
CRASHER_IMAGE = "smartflow/crasher:test"
CRASHER_COMMAND = f"{sys.executable} -c 'import sys; print(\"crashing\", flush=True); sys.exit(3)'"
MANAGED_BY = {"app.kubernetes.io/managed-by": "smartflow-operator"}


def fake_deployment(
    name: str,
    *,
    replicas: int = 1,
    env: list[dict[str, Any]] | None = None,
    env_from: list[dict[str, Any]] | None = None,
    grace: int = 5,
    http: bool = True,
    role: str = "api",
    labels: dict[str, str] | None = None,
    image: str = FAKE_IMAGE,
) -> dict[str, Any]:
    """A Deployment shaped like the operator's (labels, container ``runtime``, args, ports, probe)."""
    selector = {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": role}
    ports = [{"name": "admin", "containerPort": 9090}]
    if http:
        ports.append({"name": "http", "containerPort": 8080})
    container: dict[str, Any] = {
        "name": "runtime",
        "image": image,
        "args": ["run", "--role", role],
        "ports": ports,
        "env": env or [],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 5},
    }
    if env_from:
        container["envFrom"] = env_from
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {**selector, **(MANAGED_BY if labels is None else labels)}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {"terminationGracePeriodSeconds": grace, "containers": [container]},
            },
        },
    }


def wait_for(check: Callable[[], Any], *, what: str, timeout: float = 30.0) -> Any:
    """Poll until ``check()`` is truthy and return it; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Harness:
    """One runner process plus the Kubernetes clients and the namespace it watches."""

    def __init__(self, *, runner: RunnerProcess, api: client.ApiClient, namespace: str) -> None:
        self.runner = runner
        self.namespace = namespace
        self.api = api
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.seen_pids: set[int] = set()

    def create(self, deployment: dict[str, Any]) -> None:
        self.apps.create_namespaced_deployment(self.namespace, deployment)

    def patch(self, name: str, body: dict[str, Any]) -> None:
        self.apps.patch_namespaced_deployment(name, self.namespace, body)

    def scale(self, name: str, replicas: int) -> None:
        self.patch(name, {"spec": {"replicas": replicas}})

    def status(self, name: str) -> dict[str, Any]:
        body = self.apps.read_namespaced_deployment_status(name, self.namespace)
        return dict(self.api.sanitize_for_serialization(body).get("status") or {})

    def generation(self, name: str) -> int:
        return int(self.apps.read_namespaced_deployment(name, self.namespace).metadata.generation)

    def replicas(self, name: str) -> list[dict[str, Any]]:
        found = endpoints.replicas(self.runner.endpoints(), self.namespace, name)
        self.seen_pids.update(r["pid"] for r in found if r.get("pid"))
        return found

    def wait_ready(self, name: str, count: int, *, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Until the runner runs exactly ``count`` ready, current replicas and the status says so."""
        generation = self.generation(name)

        def settled() -> list[dict[str, Any]] | None:
            replicas = self.replicas(name)
            status = self.status(name)
            done = (
                len(replicas) == count
                and all(r["ready"] and r["current"] for r in replicas)
                and status.get("observedGeneration") == generation
                and (status.get("readyReplicas") or 0) == count
                and (status.get("updatedReplicas") or 0) == count
                and (status.get("replicas") or 0) == count
            )
            return replicas if done else None

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = settled()
            if result is not None:
                return result
            time.sleep(0.2)
        pytest.fail(
            f"timed out after {timeout:.0f}s waiting for {count} ready replicas of {name}: "
            f"runner has {self.replicas(name)}, status {self.status(name)}, generation {generation}"
        )


@pytest.fixture
def kube_client(kubeconfig: str) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=kubeconfig)
    yield api
    api.close()


@pytest.fixture
def namespace(kube_client: client.ApiClient, unique_name: str) -> Iterator[str]:
    name = f"runner-{unique_name}"
    core = client.CoreV1Api(kube_client)
    core.create_namespace({"metadata": {"name": name}})
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as error:
        if error.status != 404:
            raise


@pytest.fixture
def runner_args() -> list[str]:
    """Extra runner options; a test overrides them with ``@pytest.mark.parametrize("runner_args", ...)``."""
    return ["--interval", "0.5", "--backoff-max", "2"]


@pytest.fixture
def harness(
    kubeconfig: str, kube_client: client.ApiClient, namespace: str, tmp_path: Path, runner_args: list[str]
) -> Iterator[Harness]:
    runner = start_runner(
        kubeconfig=kubeconfig,
        state=tmp_path / "runner",
        namespaces=[namespace],
        image_map=[f"{FAKE_IMAGE}={FAKE_COMMAND}", f"{CRASHER_IMAGE}={CRASHER_COMMAND}"],
        extra_args=runner_args,
        cwd=REPO_ROOT,
    )
    runner.wait_ready()
    harness = Harness(runner=runner, api=kube_client, namespace=namespace)
    yield harness
    runner.stop(timeout=30)
    left = sorted(pid for pid in harness.seen_pids if alive(pid))
    assert not left, f"replica processes left behind after the runner stopped: {left}"
