"""The relay against real PostgreSQL and Kafka: many replicas, exactly-once publication, per-key order,
takeover after a relay is killed, clean hand-back on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from typing import Any

from prometheus_client import CollectorRegistry

from smartflow_devstack.versions import REPO_ROOT
from smartflow_runtime.metrics import RuntimeMetrics
from smartflow_runtime.outbox import store
from smartflow_runtime.outbox.model import BackoffPolicy, NewEvent
from smartflow_runtime.outbox.relay import Relay

from .conftest import Received, read_topic, sample, status_counts, wait_until

KEYS = 200


def make_events(topic: str, count: int, *, start: int = 0) -> list[NewEvent]:
    return [
        NewEvent(
            event_type="test.ordered",
            aggregate_id=f"key-{i % KEYS}",
            message_key=f"key-{i % KEYS}",
            topic=topic,
            payload={"i": i},
        )
        for i in range(start, start + count)
    ]


async def seed(pool: Any, topic: str, count: int) -> list[int]:
    ids: list[int] = []
    async with pool.acquire() as conn:
        for start in range(0, count, 2000):
            async with conn.transaction():
                ids += await store.publish_many(
                    conn, make_events(topic, min(2000, count - start), start=start)
                )
    return ids


def assert_per_key_order(received: list[Received], *, allow_duplicates: bool = False) -> None:
    """Within each partition (offset order) a key's outbox ids only increase; duplicates, if allowed,
    are re-sends of rows already seen and do not count as reordering."""
    by_partition: dict[int, list[Received]] = defaultdict(list)
    for message in received:
        by_partition[message.partition].append(message)
    partitions_of_key: dict[str, set[int]] = defaultdict(set)
    for partition, messages in by_partition.items():
        last: dict[str, int] = {}
        seen: set[int] = set()
        for message in sorted(messages, key=lambda m: m.offset):
            partitions_of_key[message.key].add(partition)
            outbox_id = message.envelope.outbox_id
            if outbox_id in seen and allow_duplicates:
                continue
            seen.add(outbox_id)
            assert outbox_id > last.get(message.key, 0), (
                f"key {message.key}: {outbox_id} after {last[message.key]}"
            )
            last[message.key] = outbox_id
    assert all(len(p) == 1 for p in partitions_of_key.values()), "a key spread over partitions"


def relay(pool: Any, bootstrap_servers: str, name: str, **kwargs: Any) -> Relay:
    options: dict[str, Any] = {
        "pool": pool,
        "bootstrap_servers": bootstrap_servers,
        "metrics": RuntimeMetrics(CollectorRegistry()),
        "relay_id": name,
        "batch_size": 500,
        "lease_seconds": 2.0,
        "poll_interval_seconds": 0.5,
        "backoff": BackoffPolicy(0.1, 0.5),
    }
    options.update(kwargs)
    return Relay(**options)


async def owners(pool: Any) -> dict[str | None, int]:
    rows = await pool.fetch("SELECT owner, count(*) AS n FROM outbox_shards GROUP BY owner")
    return {r["owner"]: r["n"] for r in rows}


async def test_three_relays_publish_10k_events_once_in_key_order(
    pool: Any, bootstrap_servers: str, topic: str
) -> None:
    relays = [relay(pool, bootstrap_servers, f"relay-{i}") for i in range(3)]
    for r in relays:
        await r.start()
    try:
        await wait_until(lambda: _sorted_counts(pool, [10, 11, 11]), within=20, what="fair split 11/11/10")
        assert None not in await owners(pool)
        started = time.monotonic()
        ids = await seed(pool, topic, 10_000)

        async def all_published() -> bool:
            return (await status_counts(pool)).get("published", 0) == 10_000

        await wait_until(all_published, within=60, what="10k published")
        elapsed = time.monotonic() - started
        print(f"3 relays published 10k events in {elapsed:.1f}s")
        for r in relays:
            assert r.is_healthy()
            assert (
                sample(r._metrics, "smartflow_outbox_events_published_total", {"event_type": "test.ordered"})
                > 0
            )
    finally:
        for r in relays:
            await r.stop()
    assert await owners(pool) == {None: 32}, "stopped relays hand their shards back"
    received = await read_topic(bootstrap_servers, topic, expect=10_000)
    counts = Counter(m.envelope.outbox_id for m in received)
    assert len(received) == 10_000 and set(counts) == set(ids) and max(counts.values()) == 1
    assert_per_key_order(received)


async def test_shards_rebalance_when_relays_join_and_leave(pool: Any, bootstrap_servers: str) -> None:
    first = relay(pool, bootstrap_servers, "a")
    second = relay(pool, bootstrap_servers, "b")
    async with first:
        await first.start()  # start is idempotent
        await wait_until(lambda: _eq(owners(pool), {"a": 32}), within=10, what="a owns all")
        async with second:
            await wait_until(lambda: _eq(owners(pool), {"a": 16, "b": 16}), within=10, what="16/16")
            assert first.owned_shards.isdisjoint(second.owned_shards)
        # b left: a takes everything back at once (release is NOTIFYed), not after a lease.
        await wait_until(lambda: _eq(owners(pool), {"a": 32}), within=3, what="a owns all again")
        assert first.is_healthy() and not second.is_healthy()
        await second.stop()  # stop is idempotent
    assert not first.is_healthy()


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


def spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.runtime.procs", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "ready", f"subprocess did not start: {line!r}"
    return proc


async def test_relays_in_separate_processes_publish_once_and_exit_cleanly_on_sigterm(
    dsn: str, pool: Any, bootstrap_servers: str, topic: str
) -> None:
    procs = [
        await asyncio.to_thread(
            spawn, "relay", "--dsn", dsn, "--bootstrap", bootstrap_servers, "--id", f"p{i}"
        )
        for i in range(3)
    ]
    try:
        await wait_until(
            lambda: _sorted_counts(pool, [10, 11, 11]), within=20, what="three processes share the shards"
        )
        ids = await seed(pool, topic, 6000)

        async def all_published() -> bool:
            return (await status_counts(pool)).get("published", 0) == 6000

        await wait_until(all_published, within=60, what="6k published")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.to_thread(proc.wait, 20) for proc in procs]
    assert codes == [0, 0, 0]
    assert await owners(pool) == {None: 32}
    received = await read_topic(bootstrap_servers, topic, expect=6000)
    counts = Counter(m.envelope.outbox_id for m in received)
    assert set(counts) == set(ids) and max(counts.values()) == 1
    assert_per_key_order(received)


async def _sorted_counts(pool: Any, expected: list[int]) -> bool:
    counts = await owners(pool)
    return None not in counts and sorted(counts.values()) == expected


async def test_relay_killed_mid_batch_is_taken_over_after_its_lease(
    dsn: str, pool: Any, bootstrap_servers: str, topic: str
) -> None:
    ids = await seed(pool, topic, 3000)
    # Slow batches (linger 300 ms per send round) so the kill lands while a batch is in flight.
    victim = await asyncio.to_thread(
        spawn, "relay", "--dsn", dsn, "--bootstrap", bootstrap_servers, "--id", "victim",
        "--lease", "2", "--batch", "100", "--linger-ms", "300",
    )  # fmt: skip

    async def some_published() -> bool:
        return (await status_counts(pool)).get("published", 0) >= 300

    try:
        await wait_until(some_published, within=30, what="victim publishing")
    finally:
        victim.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.wait, 10)
    killed_at = store.utcnow()
    published_at_kill = (await status_counts(pool)).get("published", 0)
    assert published_at_kill < 3000, "the victim finished before it could be killed"
    assert await owners(pool) == {"victim": 32}, "a killed relay cannot release its leases"
    lease_end = await pool.fetchval("SELECT min(lease_until) FROM outbox_shards")

    survivor = relay(pool, bootstrap_servers, "survivor")
    async with survivor:

        async def all_published() -> bool:
            return (await status_counts(pool)).get("published", 0) == 3000

        await wait_until(all_published, within=40, what="survivor publishes the rest")
        assert await owners(pool) == {"survivor": 32}
    first_takeover = await pool.fetchval(
        "SELECT min(published_at) FROM outbox_events WHERE published_at > $1", killed_at
    )
    assert first_takeover >= lease_end, "a shard was published by another relay while its lease was valid"
    received = await read_topic(bootstrap_servers, topic, expect=3000)
    counts = Counter(m.envelope.outbox_id for m in received)
    assert set(counts) == set(ids), "an event was lost"
    # At-least-once: only the batch in flight at the kill may appear twice.
    assert sum(n - 1 for n in counts.values()) <= 100
    assert_per_key_order(received, allow_duplicates=True)


async def test_permanent_kafka_rejection_sends_row_dead_without_blocking_others(
    pool: Any, bootstrap_servers: str, topic: str
) -> None:
    async with pool.acquire() as conn:
        big = await store.publish(
            conn,
            NewEvent(
                event_type="test.big",
                aggregate_id="k",
                message_key="k",
                topic=topic,
                payload={"x": "y" * 5000},
            ),
        )
        small = await store.publish(
            conn,
            NewEvent(event_type="test.small", aggregate_id="k", message_key="k", topic=topic, payload={}),
        )
    r = relay(pool, bootstrap_servers, "strict", producer_options={"max_request_size": 2000})
    async with r:

        async def settled() -> bool:
            rows = await pool.fetch("SELECT id, status FROM outbox_events ORDER BY id")
            return [x["status"] for x in rows] == ["dead", "published"]

        await wait_until(settled, within=15, what="big dead, small published")
    row = await pool.fetchrow("SELECT attempts, last_error FROM outbox_events WHERE id = $1", big)
    assert row["attempts"] == 1 and "KafkaRejectedError" in row["last_error"]
    # The relay keeps the backlog gauges fresh (it sampled at start: two due rows).
    assert sample(r._metrics, "smartflow_outbox_due_pending") == 2
    assert (
        sample(r._metrics, "smartflow_outbox_backlog", {"status": "pending", "event_type": "test.big"}) == 1
    )
    assert (
        sample(r._metrics, "smartflow_outbox_events_dead_total", {"stage": "relay", "event_type": "test.big"})
        == 1
    )
    received = await read_topic(bootstrap_servers, topic, expect=1, within=5)
    assert [m.envelope.outbox_id for m in received] == [small]
