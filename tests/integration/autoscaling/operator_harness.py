"""An in-process operator (the real ``serve``: kopf, reconcile, autoscaler) against the real
kube-apiserver, in its own thread and event loop, plus small helpers to watch what it does."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from smartflow_devstack.manifests import split_runtime
from smartflow_devstack.process import free_port
from smartflow_devstack.versions import REPO_ROOT
from smartflow_operator.controller import Controller
from smartflow_operator.kube import KubeClient, load_api_client
from smartflow_operator.metrics import OperatorMetrics
from smartflow_operator.names import GROUP, PLURAL, VERSION
from smartflow_operator.runner import OperatorConfig, serve

CRD_FILE = Path(REPO_ROOT) / "crds" / "smartflow.io_smartflowruntimes.yaml"
T = TypeVar("T")


def install_crd(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    crd = yaml.safe_load(CRD_FILE.read_text())
    try:
        ext.create_custom_resource_definition(crd)
    except ApiException as error:
        if error.status != 409:
            raise
        live = ext.read_custom_resource_definition(crd["metadata"]["name"])
        crd["metadata"]["resourceVersion"] = live.metadata.resource_version
        ext.replace_custom_resource_definition(crd["metadata"]["name"], crd)
    eventually(
        lambda: any(
            c.type == "Established" and c.status == "True"
            for c in (ext.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions or [])
        ),
        timeout=30,
        what="CRD established",
    )


@contextmanager
def running_operator(kubeconfig: str, namespace: str, **settings: Any) -> Iterator[Controller]:
    """The operator in a thread; ``settings`` override ``OperatorConfig`` fields."""
    # kopf logs in with this client's credentials (the login handler): no $KUBECONFIG needed.
    kube = KubeClient(load_api_client(kubeconfig))
    controller = Controller(kube=kube, metrics=OperatorMetrics())
    config = OperatorConfig(
        namespaces=(namespace,),
        kubeconfig=kubeconfig,
        health_address="127.0.0.1",
        health_port=free_port(),
        # A lease that survives a few seconds' stall of this shared, loaded test machine: these
        # tests are not about leadership (test_leader_election.py is, with the real defaults), and
        # a lost lease stops the operator's writes mid-test.
        **{
            "resync_seconds": 30.0,
            "log_format": "text",
            "lease_duration_seconds": 60.0,
            "lease_renew_deadline_seconds": 45.0,
            **settings,
        },
    )
    stop, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(serve(config, controller=controller, stop_flag=stop, ready_flag=ready))
        except BaseException as error:  # reported to the test below
            failure.append(error)

    thread = threading.Thread(target=main, name="operator", daemon=True)
    thread.start()
    assert ready.wait(60), f"operator did not start: {failure}"
    try:
        yield controller
    finally:
        stop.set()
        thread.join(30)
        kube.close()
    assert not failure, f"operator failed: {failure[0]!r}"


def eventually(check: Callable[[], T], *, timeout: float, what: str, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (ApiException, KeyError, TypeError) as error:
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not reached within {timeout} s (last: {last!r})")


class Cluster:
    """The calls the tests make, synchronously, through the official client."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def create_namespace(self) -> None:
        self.core.create_namespace({"metadata": {"name": self.namespace}})

    def delete_namespace(self) -> None:
        try:
            self.core.delete_namespace(self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise

    def create_secret(self, name: str, data: dict[str, str]) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.core.create_namespaced_secret(self.namespace, {"metadata": {"name": name}, "data": encoded})

    def patch_secret(self, name: str, data: dict[str, str]) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.core.patch_namespaced_secret(name, self.namespace, {"data": encoded})

    def create_runtime(self, body: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def patch_runtime(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, patch)

    def runtime(self, name: str) -> dict[str, Any]:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name))

    def deployment(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(
                self.api.sanitize_for_serialization(
                    self.apps.read_namespaced_deployment(name, self.namespace)
                )
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def replicas(self, name: str) -> int | None:
        deployment = self.deployment(name)
        return None if deployment is None else int(deployment["spec"]["replicas"])

    def scale(self, name: str, replicas: int) -> None:
        """What an HPA does: write the scale subresource."""
        self.apps.patch_namespaced_deployment_scale(name, self.namespace, {"spec": {"replicas": replicas}})

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_event(self.namespace).items
        events = [dict(self.api.sanitize_for_serialization(e)) for e in items]
        return [e for e in events if reason is None or e.get("reason") == reason]

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        conditions = (self.runtime(name).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == type_), None)


def runtime_body(name: str, **options: Any) -> dict[str, Any]:
    """The runtime the autoscaling tests start from: ``split_runtime`` with the operator's migration
    Job off. These tests migrate their database in a fixture, as a team migrating in its own
    pipeline does (the Job itself is tested on the node in tests/integration/operator/
    test_migrations.py); the operator reads the version."""
    return split_runtime(name, migrations=False, **options)


def fast_autoscaling(**overrides: Any) -> dict[str, Any]:
    """Autoscaling with test-sized target, poll interval and scale-down window."""
    return {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 6,
        "targetPerReplica": 10,
        "pollIntervalSeconds": 1,
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 3}},
        **overrides,
    }
