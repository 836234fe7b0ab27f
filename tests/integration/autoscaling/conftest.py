"""Fixtures for the autoscaling integration tests: a migrated outbox database and Kafka helpers.

The outbox schema comes from the runtime's own ``smartflow-runtime migrate`` (run as a
subprocess: the operator package never imports the runtime), so the probe is tested against
the real tables and indexes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from smartflow_devstack import kafka
from smartflow_operator.kube import load_api_client

from .operator_harness import Cluster, install_crd

SHARDS = 8


def migrate(dsn: str, *, shards: int = SHARDS) -> None:
    runtime_cli = Path(sys.executable).with_name("smartflow-runtime")
    result = subprocess.run(
        [str(runtime_cli), "migrate", "--shards", str(shards)],
        env={**os.environ, "SMARTFLOW_DATABASE_DSN": dsn, "SMARTFLOW_LOG_FORMAT": "text"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"smartflow-runtime migrate failed: {result.stdout}{result.stderr}"


@pytest.fixture
async def tls_outbox(tls_database: str) -> str:
    """A database of the TLS-only role, migrated over TLS by the runtime's own ``migrate``; the
    role's DSN without sslmode."""
    await asyncio.to_thread(migrate, f"{tls_database}?sslmode=require")
    return tls_database


@pytest.fixture
async def outbox_dsn(database_dsn: str) -> str:
    """A fresh database with the outbox schema and SHARDS shards."""
    await asyncio.to_thread(migrate, database_dsn)
    return database_dsn


async def insert_events(
    dsn: str, count: int, *, status: str = "pending", due_in_seconds: float = -1.0
) -> None:
    """Insert ``count`` outbox rows, available ``due_in_seconds`` from now (negative: already due)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """
            INSERT INTO outbox_events (event_id, event_type, aggregate_id, message_key, topic, payload,
                                       shard, status, available_at, created_at, updated_at)
            SELECT gen_random_uuid(), 'test.event', 'agg-' || i, 'key-' || i, 'topic', '{}'::jsonb,
                   i % $4, $2, now() + make_interval(secs => $3), now(), now()
            FROM generate_series(1, $1) AS i
            """,
            count,
            status,
            due_in_seconds,
            SHARDS,
        )
    finally:
        await conn.close()


async def create_topic(bootstrap_servers: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def produce(bootstrap_servers: str, topic: str, per_partition: dict[int, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        for partition, count in per_partition.items():
            for i in range(count):
                await producer.send_and_wait(topic, json.dumps({"i": i}).encode(), partition=partition)
    finally:
        await producer.stop()


async def commit(bootstrap_servers: str, topic: str, group: str, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` for ``group`` as a consumer of that group would (no members stay behind)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        await consumer.commit({TopicPartition(topic, p): o for p, o in offsets.items()})
    finally:
        await consumer.stop()


def describe_group(bootstrap_servers: str, group: str) -> str:
    return kafka.run_tool(
        kafka.CONSUMER_GROUPS_TOOL, "--bootstrap-server", bootstrap_servers, "--describe", "--group", group
    )


def tool_lag(output: str, topic: str) -> dict[int, int | None]:
    """Per-partition LAG as Kafka's consumer-groups tool prints it (``-`` becomes None)."""
    lines = [line.split() for line in output.splitlines() if line.strip()]
    header = next(cols for cols in lines if "PARTITION" in cols and "LAG" in cols)
    topic_at, partition_at, lag_at = header.index("TOPIC"), header.index("PARTITION"), header.index("LAG")
    result: dict[int, int | None] = {}
    for cols in lines:
        if len(cols) > lag_at and cols[topic_at] == topic:
            result[int(cols[partition_at])] = None if cols[lag_at] == "-" else int(cols[lag_at])
    return result


def established_connections_to(port: int) -> int:
    """This process's ESTABLISHED TCP connections to ``port`` (others may share the broker)."""
    own_sockets = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            own_sockets.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                remote_port = int(cols[2].split(":")[1], 16)
                if remote_port == port and cols[3] == "01" and cols[9] in own_sockets:
                    count += 1
    return count


@pytest.fixture
def names(unique_name: str) -> Callable[[str], str]:
    return lambda prefix: f"{prefix}-{unique_name}-{uuid.uuid4().hex[:4]}"


AsyncFactory = Callable[..., Coroutine[Any, Any, Any]]


@pytest.fixture
async def application_connections(
    database_dsn: str,
) -> AsyncIterator[Callable[[str], Coroutine[Any, Any, int]]]:
    async def count(application_name: str) -> int:
        conn = await asyncpg.connect(database_dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = $1 AND datname = current_database()",
                    application_name,
                )
            )
        finally:
            await conn.close()

    yield count


@pytest.fixture
def cluster(kubeconfig: str, unique_name: str) -> Iterator[Cluster]:
    """A fresh namespace on the real apiserver, with the SmartflowRuntime CRD installed."""
    api = load_api_client(kubeconfig)
    install_crd(api)
    cluster = Cluster(api, f"as-{unique_name}")
    cluster.create_namespace()
    try:
        yield cluster
    finally:
        cluster.delete_namespace()
        api.close()
