"""Retention and cheap stats against real PostgreSQL: `prune_consumed` deletes only old consumed
rows, in bounded batches that skip locked rows; `stats` counts consumed history up to a bound."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from smartflow_runtime.outbox import store
from smartflow_runtime.outbox.model import NewEvent, Status

NOW = datetime(2026, 3, 1, tzinfo=UTC)
OLD = NOW - timedelta(days=10)
RECENT = NOW - timedelta(hours=1)


def _event(i: int) -> NewEvent:
    return NewEvent(
        event_type=f"type.{i % 3}", aggregate_id=f"a{i}", message_key=f"k{i}", topic="t", payload={"i": i}
    )


async def _seed(conn: Any) -> dict[str, list[int]]:
    """25 old consumed, 5 recently consumed, and old pending/published/dead rows (4 each)."""
    ids = await store.publish_many(conn, [_event(i) for i in range(42)], now=OLD - timedelta(days=1))
    groups = {
        "old_consumed": ids[:25],
        "recent_consumed": ids[25:30],
        "pending": ids[30:34],
        "published": ids[34:38],
        "dead": ids[38:42],
    }
    await conn.execute(
        "UPDATE outbox_events SET status = 'consumed', consumed_at = $2 WHERE id = ANY($1)",
        groups["old_consumed"],
        OLD,
    )
    await conn.execute(
        "UPDATE outbox_events SET status = 'consumed', consumed_at = $2 WHERE id = ANY($1)",
        groups["recent_consumed"],
        RECENT,
    )
    await conn.execute(
        "UPDATE outbox_events SET status = 'published', published_at = $2 WHERE id = ANY($1)",
        groups["published"],
        OLD,
    )
    await conn.execute(
        "UPDATE outbox_events SET status = 'dead', updated_at = $2 WHERE id = ANY($1)", groups["dead"], OLD
    )
    return groups


async def _ids_by_status(conn: Any) -> dict[str, set[int]]:
    found: dict[str, set[int]] = {}
    for r in await conn.fetch("SELECT id, status FROM outbox_events"):
        found.setdefault(r["status"], set()).add(r["id"])
    return found


async def test_prune_deletes_only_old_consumed_rows_in_bounded_batches(pool: Any) -> None:
    async with pool.acquire() as conn:
        groups = await _seed(conn)
        cutoff = NOW - timedelta(days=7)

        dry = await store.prune_consumed(conn, older_than=cutoff, batch_size=10, dry_run=True)
        assert (dry.rows, dry.batches) == (25, 0)
        assert await conn.fetchval("SELECT count(*) FROM outbox_events") == 42, "a dry run deletes nothing"

        result = await store.prune_consumed(conn, older_than=cutoff, batch_size=10)
        assert (result.rows, result.batches) == (25, 3)
        after = await _ids_by_status(conn)
        assert after == {
            "consumed": set(groups["recent_consumed"]),
            "pending": set(groups["pending"]),
            "published": set(groups["published"]),
            "dead": set(groups["dead"]),
        }
        again = await store.prune_consumed(conn, older_than=cutoff, batch_size=10)
        assert (again.rows, again.batches) == (0, 0)


async def test_prune_steps_over_a_locked_row_instead_of_waiting(pool: Any, dsn: str) -> None:
    async with pool.acquire() as conn:
        groups = await _seed(conn)
    locked_id = groups["old_consumed"][0]
    holder = await asyncpg.connect(dsn)
    try:
        # A consumer handling a redelivery of this row holds its lock (FOR UPDATE) meanwhile.
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT 1 FROM outbox_events WHERE id = $1 FOR UPDATE", locked_id)
        async with pool.acquire() as conn:
            result = await asyncio.wait_for(
                store.prune_consumed(conn, older_than=NOW - timedelta(days=7), batch_size=100), 10
            )
        assert result.rows == 24
        await transaction.rollback()
    finally:
        await holder.close()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM outbox_events WHERE id = $1", locked_id) == "consumed"
        assert (await store.prune_consumed(conn, older_than=NOW - timedelta(days=7))).rows == 1


async def test_prune_refuses_to_run_inside_a_transaction(pool: Any) -> None:
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(ValueError, match="outside"):
            await store.prune_consumed(conn, older_than=NOW)


async def test_stats_counts_consumed_history_up_to_a_bound_then_estimates(pool: Any) -> None:
    async with pool.acquire() as conn:
        await _seed(conn)
        exact = await store.stats(conn, NOW)
        assert (exact.consumed, exact.consumed_exact) == (30, True)
        assert exact.count(Status.CONSUMED) == 30
        assert {e.status for e in exact.backlog} == {"pending", "published", "dead"}
        assert exact.count(Status.PENDING) == 4 and exact.count(Status.DEAD) == 4
        with pytest.raises(ValueError):
            exact.count(Status.CONSUMED, "type.0")

        await conn.execute("ANALYZE outbox_events")
        bounded = await store.stats(conn, NOW, consumed_limit=10)
        assert not bounded.consumed_exact
        # Past the bound: the planner's table estimate minus the exact unfinished rows.
        assert bounded.consumed == 30
        assert bounded.as_dict()["consumed_exact"] is False


async def test_stats_reads_indexes_only_not_the_consumed_history(pool: Any) -> None:
    """The plans behind `stats` must not scan the table: that is what keeps them cheap."""
    from smartflow_runtime.outbox import sql

    async with pool.acquire() as conn:
        await _seed(conn)
        await conn.execute("ANALYZE outbox_events")
        await conn.execute("SET enable_seqscan = off")  # tiny table: make the plan what a big one gets
        for statement, args in (
            (sql.BACKLOG_BY_STATUS_AND_TYPE, ()),
            (sql.CONSUMED_UP_TO, (10_000,)),
            (sql.COUNT_PRUNABLE, (NOW,)),
        ):
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + statement, *args))
            assert "Seq Scan" not in plan, plan
            assert "outbox_events_unfinished" in plan or "outbox_events_consumed" in plan, plan
