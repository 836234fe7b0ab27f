"""Fixtures for tests on the real node: a namespace enforcing ``restricted``, a migrated database
the pods reach through the node, and the operator (in-process, the real ``serve``) watching it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from kubernetes import client

from smartflow_devstack import kafka, kube, postgres
from smartflow_devstack.node.start import NodeInfo
from smartflow_operator.kube import load_api_client
from tests.integration.autoscaling.conftest import migrate
from tests.integration.autoscaling.operator_harness import Cluster, install_crd

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
    name = f"node-{request.module.__name__.rsplit('.', 1)[-1].replace('_', '-')[5:][:30]}".rstrip("-")
    cluster = Cluster(api, name)
    cluster.core.create_namespace({"metadata": {"name": name, "labels": RESTRICTED}})
    yield cluster
    cluster.delete_namespace()
    api.close()


@pytest.fixture(scope="module")
def pod_database(postgres_server: postgres.PostgresInfo, request: pytest.FixtureRequest) -> tuple[str, str]:
    """A migrated database of this module: (DSN from the host, DSN from a pod)."""
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
    host_dsn = postgres.dsn_for(postgres_server.port, name)
    migrate(host_dsn)
    return host_dsn, postgres_server.pod_dsn(name)


@pytest.fixture(scope="module")
def pod_bootstrap(kafka_server: kafka.KafkaInfo) -> str:
    return kafka_server.pod_bootstrap_servers


__all__ = ["client"]
