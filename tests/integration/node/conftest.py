"""Fixtures for tests on the real node: a namespace enforcing ``restricted``, a migrated database
the pods reach through the node, and the operator (in-process, the real ``serve``) watching it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from smartflow_devstack import kafka, kube, postgres
from smartflow_devstack.manifests import split_runtime
from smartflow_devstack.node.start import NodeInfo
from smartflow_operator.kube import load_api_client
from tests.integration.autoscaling.operator_harness import Cluster, eventually, install_crd, running_operator

from .pods import ready_pods

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@pytest.fixture(scope="module")
def node_cluster(
    kube_server: kube.KubeInfo, node_server: NodeInfo, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    """A fresh namespace enforcing the ``restricted`` Pod Security level, deleted afterwards."""
    api = load_api_client(kube_server.kubeconfig)
    install_crd(api)
    module = request.module.__name__.rsplit(".", 1)[-1].replace("_", "-")[5:][:30].rstrip("-")
    name = f"node-{module}-{uuid.uuid4().hex[:6]}"
    cluster = Cluster(api, name)
    cluster.core.create_namespace({"metadata": {"name": name, "labels": RESTRICTED}})
    yield cluster
    cluster.delete_namespace()
    api.close()


@pytest.fixture(scope="module")
def pod_database(postgres_server: postgres.PostgresInfo, request: pytest.FixtureRequest) -> tuple[str, str]:
    """An empty database of this module: (DSN from the host, DSN from a pod). The operator's
    migration Job (a pod on the node) creates the schema before any role runs."""
    import asyncpg

    name = f"node_{request.module.__name__.rsplit('.', 1)[-1][:40]}"

    async def create() -> None:
        conn = await asyncpg.connect(postgres_server.dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return postgres.dsn_for(postgres_server.port, name), postgres_server.pod_dsn(name)


@pytest.fixture(scope="module")
def pod_bootstrap(kafka_server: kafka.KafkaInfo) -> str:
    return kafka_server.pod_bootstrap_servers


@contextmanager
def runtime_on_node(
    cluster: Cluster,
    *,
    name: str,
    image: str,
    pod_dsn: str,
    bootstrap: str,
    kubeconfig: str,
    ready: dict[str, int],
    customize: Callable[[dict[str, Any]], None] = lambda body: None,
) -> Iterator[Cluster]:
    """A split runtime of the runtime image, run by the operator (in-process) until the roles in
    ``ready`` have that many Ready pods; the migration Job creates the schema first."""
    cluster.create_secret("db", {"dsn": pod_dsn})
    run = uuid.uuid4().hex[:6]
    body = split_runtime(
        name, bootstrap_servers=bootstrap, topic=f"node.{name}.{run}", group=f"node-{name}-{run}", image=image
    )
    customize(body)
    with running_operator(kubeconfig, cluster.namespace, resync_seconds=10.0):
        cluster.create_runtime(body)
        for role, want in ready.items():
            eventually(
                lambda role=role, want=want: (
                    len(ready_pods(cluster.core, cluster.namespace, name, role)) == want
                ),
                timeout=240,
                what=f"{want} {role} pod(s) Ready",
                interval=1,
            )
        yield cluster
