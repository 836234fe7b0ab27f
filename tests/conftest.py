"""Session fixtures handing tests real servers: PostgreSQL, Kafka, a Kubernetes control plane and
the real node (kubelet + containerd) with the project's images.

Each server is started on first use (or taken from a running ``make up`` stack) and stopped at
the end of the session. A server that cannot be had is a test *failure*, never a skip: the
tests exist to prove behaviour against the real thing.

Tier markers are derived from the folder (unit/, integration/, e2e/) so ``-m unit`` works.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from smartflow_devstack import kafka, kube, postgres, stack
from smartflow_devstack.errors import StackError
from smartflow_devstack.node import start as node
from smartflow_devstack.process import stop
from smartflow_devstack.versions import REPO_ROOT

# One folder per pytest process, so parallel sessions never share (or wipe) each other's servers.
TEST_STATE = REPO_ROOT / ".local" / "pytest" / f"run-{os.getpid()}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in ("unit", "integration", "e2e"):
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


def _server_failure(what: str, error: Exception) -> None:
    pytest.fail(f"{what} is required by this test and could not be started: {error}", pytrace=False)


@pytest.fixture(scope="session")
def test_state() -> Path:
    if TEST_STATE.exists():
        shutil.rmtree(TEST_STATE, ignore_errors=True)
    TEST_STATE.mkdir(parents=True)
    return TEST_STATE


@pytest.fixture(scope="session")
def running_stack() -> stack.Stack | None:
    """A stack started by `make up`, if one is alive: reused instead of starting servers."""
    return stack.load()


@pytest.fixture(scope="session")
def postgres_server(running_stack: stack.Stack | None, test_state: Path) -> Iterator[postgres.PostgresInfo]:
    if running_stack is not None and running_stack.postgres is not None:
        yield running_stack.postgres
        return
    try:
        info = postgres.start(test_state)
    except StackError as error:
        _server_failure("PostgreSQL", error)
        raise
    yield info
    stop(info.pid)


@pytest.fixture(scope="session")
def kafka_server(running_stack: stack.Stack | None, test_state: Path) -> Iterator[kafka.KafkaInfo]:
    if running_stack is not None and running_stack.kafka is not None:
        yield running_stack.kafka
        return
    try:
        info = kafka.start(test_state)
    except StackError as error:
        _server_failure("Kafka", error)
        raise
    yield info
    stop(info.pid)


@pytest.fixture(scope="session")
def kube_server(running_stack: stack.Stack | None, test_state: Path) -> Iterator[kube.KubeInfo]:
    if running_stack is not None and running_stack.kube is not None:
        yield running_stack.kube
        return
    try:
        info = kube.start(test_state)
    except StackError as error:
        _server_failure("kube-apiserver", error)
        raise
    yield info
    for pid in info.pids():
        stop(pid)


@pytest.fixture(scope="session")
def node_server(
    running_stack: stack.Stack | None,
    test_state: Path,
    kube_server: kube.KubeInfo,
    postgres_server: postgres.PostgresInfo,
    kafka_server: kafka.KafkaInfo,
) -> Iterator[node.NodeInfo]:
    """The real node: pods scheduled in this session run here (kubelet, containerd, runc)."""
    if running_stack is not None and running_stack.node is not None:
        yield running_stack.node
        return
    try:
        info = node.start(
            test_state,
            control_plane=kube_server,
            forward_ports=[postgres_server.port, *kafka_server.pod_ports],
        )
    except StackError as error:
        _server_failure("the local node", error)
        raise
    yield info
    node.stop_node(info)


@pytest.fixture(scope="session")
def node_images(node_server: node.NodeInfo) -> dict[str, str]:
    """``{"runtime": ref, "operator": ref}``: built from the Dockerfiles and imported into the node."""
    try:
        return node.ensure_images(node_server)
    except StackError as error:
        _server_failure("the project's images", error)
        raise


@pytest.fixture(scope="session")
def bootstrap_servers(kafka_server: kafka.KafkaInfo) -> str:
    return kafka_server.bootstrap_servers


@pytest.fixture(scope="session")
def kubeconfig(kube_server: kube.KubeInfo) -> str:
    return kube_server.kubeconfig


@contextlib.asynccontextmanager
async def fresh_database(
    server: postgres.PostgresInfo, *, prefix: str, owner: str | None = None
) -> AsyncIterator[str]:
    """A new database (its name), owned by ``owner`` when given, dropped on exit."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"' + (f" OWNER {owner}" if owner else ""))
    finally:
        await admin.close()
    try:
        yield name
    finally:
        admin = await asyncpg.connect(server.dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def database_dsn(postgres_server: postgres.PostgresInfo) -> AsyncIterator[str]:
    """A fresh, empty database per test, dropped afterwards: tests never see each other's rows."""
    async with fresh_database(postgres_server, prefix="t") as name:
        yield postgres.dsn_for(postgres_server.port, name)


@pytest.fixture
async def tls_database(postgres_server: postgres.PostgresInfo) -> AsyncIterator[str]:
    """A fresh database owned by the TLS-only role; its DSN (no sslmode: the client decides)."""
    async with fresh_database(postgres_server, prefix="tls", owner=postgres.TLS_USER) as name:
        yield postgres_server.tls_dsn(name)


@pytest.fixture
def unique_name() -> str:
    """A short unique suffix for topics, groups and namespaces."""
    return uuid.uuid4().hex[:8]
