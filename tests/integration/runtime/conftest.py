"""Fixtures for the runtime data layer's integration tests: a migrated database, a pool, a topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from smartflow_runtime.db import migrate
from smartflow_runtime.metrics import RuntimeMetrics
from smartflow_runtime.outbox.model import Envelope, parse_envelope

PARTITIONS = 6


@pytest.fixture
async def dsn(database_dsn: str) -> str:
    """A fresh database with the runtime schema (32 outbox shards)."""
    conn = await asyncpg.connect(database_dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return database_dsn


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[Any]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=12)
    yield pool
    await pool.close()


@pytest.fixture
async def topic(bootstrap_servers: str, unique_name: str) -> str:
    name = f"outbox-{unique_name}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()
    return name


@pytest.fixture
def metrics() -> RuntimeMetrics:
    return RuntimeMetrics(CollectorRegistry())


def sample(metrics: RuntimeMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, within: float = 30.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not reached within {within}s")


@dataclass(frozen=True)
class Received:
    partition: int
    offset: int
    key: str
    envelope: Envelope


async def read_topic(
    bootstrap_servers: str, topic: str, *, expect: int, within: float = 30.0
) -> list[Received]:
    """Every message of ``topic`` from the start (no group), waiting until at least ``expect`` arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    received: list[Received] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300, max_records=5000)
            for tp, records in batch.items():
                received.extend(
                    Received(tp.partition, r.offset, r.key.decode(), parse_envelope(r.value)) for r in records
                )
            if len(received) >= expect and not batch:
                break
    finally:
        await consumer.stop()
    return received


async def status_counts(pool: Any) -> dict[str, int]:
    rows = await pool.fetch("SELECT status, count(*) AS n FROM outbox_events GROUP BY status")
    return {r["status"]: r["n"] for r in rows}
