"""Relay settings against real PostgreSQL and Kafka: polling only (no LISTEN connection, still
delivering every event once and in key order) and the batch size bounding every batch."""

from __future__ import annotations

from collections import Counter
from typing import Any

from smartflow_runtime.outbox.relay import Relay

from .conftest import read_topic, sample, status_counts, wait_until
from .test_relay import assert_per_key_order, relay, seed


async def _outbox_listeners(pool: Any) -> list[str]:
    """Sessions of this database whose last statement LISTENed on an outbox channel.

    The relay's LISTEN connection runs nothing else, so its last statement stays the LISTEN.
    """
    rows = await pool.fetch(
        """
        SELECT query FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND query ILIKE 'LISTEN "smartflow_outbox%'
        """
    )
    return [r["query"] for r in rows]


async def _published(pool: Any, count: int) -> bool:
    return (await status_counts(pool)).get("published", 0) == count


async def test_polling_only_relay_opens_no_listen_and_still_delivers_everything(
    pool: Any, bootstrap_servers: str, topic: str
) -> None:
    # Control: the default relay LISTENs, so the check below can see a listener when there is one.
    async with relay(pool, bootstrap_servers, "notify"):
        # The loop opens its LISTEN connection after connecting the producer.
        await wait_until(lambda: _has_listeners(pool), within=10, what="a LISTEN relay in pg_stat_activity")
    await wait_until(lambda: _no_listeners(pool), within=10, what="control relay's LISTEN gone")

    polling = relay(pool, bootstrap_servers, "polling", listen_notify=False, poll_interval_seconds=0.3)
    async with polling:
        # Written after start: only the poll can find them (no NOTIFY is received).
        ids = await seed(pool, topic, 600)
        await wait_until(lambda: _published(pool, 600), within=30, what="600 published by polling")
        assert await _outbox_listeners(pool) == []
        assert polling._listen_conn is None
        assert polling.is_healthy()
    received = await read_topic(bootstrap_servers, topic, expect=600)
    counts = Counter(m.envelope.outbox_id for m in received)
    assert set(counts) == set(ids) and max(counts.values()) == 1
    assert_per_key_order(received)


async def _has_listeners(pool: Any) -> bool:
    return bool(await _outbox_listeners(pool))


async def _no_listeners(pool: Any) -> bool:
    return await _outbox_listeners(pool) == []


async def test_batch_size_bounds_every_batch(pool: Any, bootstrap_servers: str, topic: str) -> None:
    await seed(pool, topic, 100)  # due before the relay starts: it drains them batch after batch
    small: Relay = relay(pool, bootstrap_servers, "small", batch_size=7)
    async with small:
        await wait_until(lambda: _published(pool, 100), within=30, what="100 published")
    # One batch = one published_at (taken once per batch after Kafka acked).
    sizes = [
        r["n"]
        for r in await pool.fetch(
            "SELECT published_at, count(*) AS n FROM outbox_events GROUP BY published_at"
        )
    ]
    assert sum(sizes) == 100
    assert max(sizes) == 7, sizes
    assert len(sizes) >= 15
    assert sample(small._metrics, "smartflow_relay_batch_size_count") == len(sizes)
    assert sample(small._metrics, "smartflow_relay_batch_size_sum") == 100
    assert sample(small._metrics, "smartflow_relay_batch_size_bucket", {"le": "5.0"}) < len(sizes)
