"""The relay's claim query against a real PostgreSQL: per-shard prefixes in id order, the
per-shard cap that keeps a claim's cost bounded by the batch, and a previous owner's failure
seen after waiting for its row locks."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from smartflow_runtime.outbox import sql, store
from smartflow_runtime.outbox.model import BackoffPolicy, NewEvent, shard_for_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def event(key: str) -> NewEvent:
    return NewEvent(event_type="test.event", aggregate_id=key, message_key=key, topic="t", payload={"n": 1})


def keys_in_distinct_shards(count: int) -> list[str]:
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        found.setdefault(shard_for_key(f"key-{n}", 32), f"key-{n}")
        n += 1
    return list(found.values())


async def test_claim_takes_a_prefix_of_every_shard_in_id_order_up_to_the_cap(pool: Any) -> None:
    hot, cold = keys_in_distinct_shards(2)
    async with pool.acquire() as conn:
        hot_ids = await store.publish_many(conn, [event(hot) for _ in range(200)], now=T0)
        cold_ids = await store.publish_many(conn, [event(cold) for _ in range(3)], now=T0)
        await store.acquire_shards(conn, "r1", now=T0, lease=LEASE, limit=32)
        shards = set(range(32))
        cap = store.per_shard_claim_cap(100, len(shards))
        assert cap == 50
        async with conn.transaction():
            rows = await store.claim_batch(conn, "r1", shards, now=T0, limit=100)
            assert [r.id for r in rows] == sorted(hot_ids[:cap] + cold_ids)
            assert store.claim_may_have_left_rows(rows, limit=100, shards=len(shards))
            await store.mark_published(conn, rows, now=T0)
        async with conn.transaction():
            rows = await store.claim_batch(conn, "r1", shards, now=T0, limit=100)
            assert [r.id for r in rows] == hot_ids[cap : 2 * cap], "the next prefix, nothing skipped"
            await store.mark_published(conn, rows, now=T0)
        async with conn.transaction():
            rows = await store.claim_batch(conn, "r1", {shard_for_key(hot, 32)}, now=T0, limit=500)
            assert [r.id for r in rows] == hot_ids[2 * cap :], "one shard: the cap is the whole limit"
            assert not store.claim_may_have_left_rows(rows, limit=500, shards=1)


async def test_claim_reads_only_about_a_batch_whatever_the_backlog(pool: Any) -> None:
    keys = keys_in_distinct_shards(32)
    async with pool.acquire() as conn:
        await store.publish_many(conn, [event(keys[i % 32]) for i in range(6400)], now=T0)
        await store.acquire_shards(conn, "r1", now=T0, lease=LEASE, limit=32)
        await conn.execute("ANALYZE outbox_events")
        tx = conn.transaction()
        await tx.start()
        try:
            explained = await conn.fetchval(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + sql.CLAIM_BATCH, list(range(32)), T0, 100, "r1"
            )
        finally:
            await tx.rollback()
        plan = json.loads(explained)[0]["Plan"]

        def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
            return [node] + [n for child in node.get("Plans", []) for n in nodes(child)]

        scanned = sum(
            n.get("Actual Rows", 0) * n.get("Actual Loops", 1)
            for n in nodes(plan)
            if n.get("Relation Name") == "outbox_events" and n.get("Alias") == "b"
        )
        # 32 shards x cap 50 at most, not the 6,400 due rows.
        assert 0 < scanned <= 32 * store.per_shard_claim_cap(100, 32)


async def index_entries_read(conn: Any, index: str) -> int:
    """Index entries read from ``index`` so far (this backend's pending counters flushed first)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT pg_stat_clear_snapshot()")  # the flush happens when the backend idles
    query = "SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = $1"
    return int(await conn.fetchval(query, index))


async def test_a_relay_draining_a_backlog_reads_about_a_batch_per_claim_on_a_cached_statement(
    pool: Any,
) -> None:
    """The relay's connection runs the claim as one prepared statement many times. After five
    executions PostgreSQL may switch to a generic plan, which knows neither ``now`` nor the shard
    count; with it the blocker check (``NOT EXISTS`` an earlier not-yet-due row) was planned as a
    walk of the shard's pending index per candidate row, and a claim of 500 read ~70 entries per
    row claimed (a relay draining 20,000 rows spent 60-130 ms of PostgreSQL CPU per 1,000 events).
    The check now compares ``x.id + 0``, so every plan answers it from the not-yet-due rows only."""
    keys = keys_in_distinct_shards(32)
    async with pool.acquire() as conn:
        await store.publish_many(conn, [event(keys[i % 32]) for i in range(16000)], now=T0)
        await store.acquire_shards(conn, "r1", now=T0, lease=LEASE, limit=32)
        await conn.execute("ANALYZE outbox_events")
        before = await index_entries_read(conn, "outbox_events_pending_by_shard")
        claimed = claims = 0
        while True:
            async with store.claim_transaction(conn, lock_timeout=timedelta(seconds=5)):
                rows = await store.claim_batch(conn, "r1", set(range(32)), now=T0, limit=500)
                await store.mark_published_and_commit(conn, rows, now=T0)
            if not rows:
                break
            claimed += len(rows)
            claims += 1
        read = await index_entries_read(conn, "outbox_events_pending_by_shard") - before
    assert claimed == 16000 and claims == 32
    # A claim walks each shard's pending entries up to the cap (32 x 50 here) and the blocker
    # check reads only not-yet-due rows: about 3 entries per row claimed, against ~70 before.
    assert read <= 6 * claimed, f"{read} index entries read for {claimed} rows ({read / claimed:.1f} per row)"


async def test_row_sent_to_backoff_by_the_previous_owner_blocks_its_shard_for_the_waiting_claim(
    pool: Any,
) -> None:
    """Hand-over race: the new owner waits on the old owner's locks; the old owner's Kafka send
    fails and its rows go back to backoff. The new owner must not send the later rows of that key."""
    key = "handover"
    shard = shard_for_key(key, 32)
    async with pool.acquire() as old, pool.acquire() as new:
        ids = await store.publish_many(old, [event(key) for _ in range(4)], now=T0)
        await store.acquire_shards(old, "old", now=T0, lease=LEASE, limit=32)
        tx = old.transaction()
        await tx.start()
        in_flight = await store.claim_batch(old, "old", {shard}, now=T0, limit=2)
        assert [r.id for r in in_flight] == ids[:2]
        # The lease moves to "new" while "old" still holds its batch (e.g. it was paused).
        await pool.execute("UPDATE outbox_shards SET owner = 'new' WHERE shard = $1", shard)

        async def new_owner_claims() -> list[int]:
            async with new.transaction():
                return [r.id for r in await store.claim_batch(new, "new", {shard}, now=T0, limit=10)]

        waiting = asyncio.ensure_future(new_owner_claims())
        await asyncio.sleep(0.3)
        assert not waiting.done(), "the new owner must wait for the old owner's in-flight rows"
        await store.mark_failed(
            old, [(r, RuntimeError("kafka down")) for r in in_flight], now=T0, backoff=BackoffPolicy(5, 5)
        )
        await tx.commit()
        assert await asyncio.wait_for(waiting, 10) == [], (
            "later rows of the key must wait for the failed ones"
        )
        due = T0 + timedelta(seconds=5)
        async with new.transaction():
            rows = await store.claim_batch(new, "new", {shard}, now=due, limit=10)
        assert [r.id for r in rows] == ids


async def test_notify_linger_gathers_concurrent_commits_into_one_batch(
    pool: Any, bootstrap_servers: str, topic: str
) -> None:
    from prometheus_client import CollectorRegistry

    from smartflow_runtime.metrics import RuntimeMetrics
    from smartflow_runtime.outbox.relay import Relay

    metrics = RuntimeMetrics(CollectorRegistry())
    relay = Relay(
        pool=pool, bootstrap_servers=bootstrap_servers, metrics=metrics, notify_linger_seconds=0.2,
        stats_interval_seconds=None,
    )  # fmt: skip
    async with relay:
        for _ in range(50):
            if relay.owned_shards:
                break
            await asyncio.sleep(0.1)

        async def one_commit(i: int) -> None:
            async with pool.acquire() as conn:
                await store.publish(conn, NewEvent("t.e", f"k{i}", f"k{i}", topic, {"i": i}))

        for i in range(20):  # separate commits, each with its own NOTIFY, inside the linger
            await one_commit(i)
            await asyncio.sleep(0.005)
        for _ in range(100):
            if metrics.registry.get_sample_value("smartflow_relay_batch_size_sum") == 20:
                break
            await asyncio.sleep(0.05)
    assert metrics.registry.get_sample_value("smartflow_relay_batch_size_sum") == 20
    batches = metrics.registry.get_sample_value("smartflow_relay_batch_size_count")
    assert batches is not None and batches <= 3, f"20 commits took {batches} batches"
