"""The relay's throughput levers against real PostgreSQL and Kafka: lanes (concurrent batches over
disjoint shard groups), aiokafka's batch API, and the runtime pool's cheap release."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from smartflow_runtime.db.pool import create_pool
from smartflow_runtime.outbox.kafka import Record, build_producer, partition_for, send_batched

from .conftest import PARTITIONS, read_topic, status_counts, wait_until
from .test_relay import assert_per_key_order, owners, relay, seed


async def test_batched_records_go_to_the_partition_send_would_choose(
    bootstrap_servers: str, topic: str
) -> None:
    producer = build_producer(bootstrap_servers, "partition-check", None)
    await producer.start()
    try:
        keys = [f"user-{i}".encode() for i in range(60)]
        chosen = [(await producer.send_and_wait(topic, value=b"send", key=key)).partition for key in keys]
        partitions = sorted(await producer.partitions_for(topic))
        assert partitions == list(range(PARTITIONS))
        assert [partition_for(key, partitions) for key in keys] == chosen
        deliveries = await send_batched(
            producer, [Record(topic, key, b"batch") for key in keys], max_request_size=1048576
        )
        assert not [d for d in deliveries if isinstance(d, Exception)]
        assert len({id(d) for d in deliveries}) <= PARTITIONS, (
            "one future per partition batch, not per record"
        )
        for delivery in deliveries:
            await delivery
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    seen: dict[tuple[bytes, bytes], int] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 20
        while len(seen) < 2 * len(keys) and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=300)).items():
                seen.update({(r.key, r.value): tp.partition for r in records})
    finally:
        await consumer.stop()
    assert {k: seen[(k, b"batch")] for k in keys} == {k: seen[(k, b"send")] for k in keys}


async def test_two_relays_with_four_lanes_each_publish_10k_once_in_key_order(
    pool: Any, bootstrap_servers: str, topic: str
) -> None:
    relays = [relay(pool, bootstrap_servers, f"laned-{i}", lanes=4) for i in range(2)]
    for r in relays:
        await r.start()
    try:

        async def split() -> bool:
            # (a dict: a shard between owners counts under None, which a sort cannot order)
            return await owners(pool) == {"laned-0": 16, "laned-1": 16}

        await wait_until(split, within=20, what="16/16 split")
        started = time.monotonic()
        ids = await seed(pool, topic, 10_000)

        async def all_published() -> bool:
            return (await status_counts(pool)).get("published", 0) == 10_000

        await wait_until(all_published, within=60, what="10k published")
        print(f"2 relays x 4 lanes published 10k events in {time.monotonic() - started:.1f}s")
        assert all(r.is_healthy() for r in relays)
    finally:
        for r in relays:
            await r.stop()
    received = await read_topic(bootstrap_servers, topic, expect=10_000)
    counts = Counter(m.envelope.outbox_id for m in received)
    assert len(received) == 10_000 and set(counts) == set(ids) and max(counts.values()) == 1
    assert_per_key_order(received)


async def test_pool_resets_only_connections_that_listened(dsn: str) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=1)
    statements: list[str] = []
    try:
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda q: statements.append(q.query))
            await conn.execute("SELECT 1")
        async with pool.acquire() as conn:
            assert statements == ["SELECT 1"], "a clean connection is released without a reset statement"
            await conn.add_listener("lanes_test", lambda *_: None)
            assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 1
        async with pool.acquire() as conn:
            # The same (only) connection: the full reset ran, so it no longer listens.
            assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
            assert any("UNLISTEN" in s for s in statements)
    finally:
        await pool.close()


async def test_a_notify_wakes_only_the_lane_holding_its_shard(
    pool: Any, bootstrap_servers: str, topic: str, monkeypatch: Any
) -> None:
    from smartflow_runtime.outbox import relay as relay_module
    from smartflow_runtime.outbox import store
    from smartflow_runtime.outbox.model import NewEvent, lane_groups

    claims: list[frozenset[int]] = []
    real_claim = store.claim_batch

    async def counting_claim(conn: Any, relay_id: str, shards: Any, **kwargs: Any) -> Any:
        claims.append(frozenset(shards))
        return await real_claim(conn, relay_id, shards, **kwargs)

    monkeypatch.setattr(relay_module.store, "claim_batch", counting_claim)
    # Long poll and lease: no timer-driven "claim everywhere" cycle falls inside the test.
    r = relay(pool, bootstrap_servers, "notified", lanes=4, poll_interval_seconds=60, lease_seconds=60)
    async with r:
        await wait_until(lambda: _owns_all(r), within=10, what="relay owns every shard")
        await wait_until(lambda: _settled(claims), within=10, what="start-up claims done")
        claims.clear()
        async with pool.acquire() as conn:
            outbox_id = await store.publish(conn, NewEvent("t.lane", "k-1", "k-1", topic, {}))
        await wait_until(lambda: _published(pool, outbox_id), within=10, what="event published")
    shard = await pool.fetchval("SELECT shard FROM outbox_events WHERE id = $1", outbox_id)
    lane = next(g for g in lane_groups(range(32), 4) if shard in g)
    assert claims and set(claims) == {lane}, f"claims on {claims}, expected only lane {sorted(lane)}"


async def _owns_all(r: Any) -> bool:
    return len(r.owned_shards) == 32


async def _settled(claims: list[frozenset[int]]) -> bool:
    before = len(claims)
    await asyncio.sleep(0.5)
    return len(claims) == before


async def _published(pool: Any, outbox_id: int) -> bool:
    return await pool.fetchval("SELECT status FROM outbox_events WHERE id = $1", outbox_id) == "published"
