"""The relay lag probe against a real PostgreSQL with the runtime's own outbox schema."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import pytest

from smartflow_devstack.process import free_port
from smartflow_operator.autoscaling.errors import DatabaseUnavailable, OutboxNotMigrated
from smartflow_operator.autoscaling.probes import (
    APPLICATION_NAME,
    READING_MAX_AGE_SECONDS,
    Probes,
    RelayProbe,
)

from .conftest import SHARDS, insert_events, migrate


async def test_counts_only_due_pending_rows_and_reports_shards_and_age(outbox_dsn: str) -> None:
    await insert_events(outbox_dsn, 7, due_in_seconds=-120)  # due for two minutes
    await insert_events(outbox_dsn, 5, due_in_seconds=-1)
    await insert_events(outbox_dsn, 3, due_in_seconds=3600)  # pending, not yet due (retry backoff)
    await insert_events(outbox_dsn, 4, status="published", due_in_seconds=-300)
    await insert_events(outbox_dsn, 2, status="dead", due_in_seconds=-300)
    await insert_events(outbox_dsn, 1, status="consumed", due_in_seconds=-300)
    async with RelayProbe(outbox_dsn) as probe:
        reading = await probe.read(limit=1000)
    assert reading.metric == 12
    assert reading.truncated is False
    assert reading.cap == SHARDS
    assert reading.oldest_age_seconds is not None and 120 <= reading.oldest_age_seconds < 180


async def test_empty_outbox_reads_zero_with_no_age(outbox_dsn: str) -> None:
    async with RelayProbe(outbox_dsn) as probe:
        reading = await probe.read(limit=100)
    assert (reading.metric, reading.cap, reading.oldest_age_seconds, reading.truncated) == (
        0,
        SHARDS,
        None,
        False,
    )


async def test_count_stops_at_the_limit(outbox_dsn: str) -> None:
    await insert_events(outbox_dsn, 500)
    async with RelayProbe(outbox_dsn) as probe:
        bounded = await probe.read(limit=100)
        full = await probe.read(limit=1000)
    assert (bounded.metric, bounded.truncated) == (100, True)
    assert (full.metric, full.truncated) == (500, False)


async def test_the_count_uses_the_partial_index_and_stops_early(outbox_dsn: str) -> None:
    """EXPLAIN ANALYZE of the count: the scan below the LIMIT returns at most the limit's rows."""
    await insert_events(outbox_dsn, 2000)
    conn = await asyncpg.connect(outbox_dsn)
    try:
        await conn.execute("ANALYZE outbox_events")
        plan = await conn.fetchval(
            "EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*) FROM (SELECT 1 FROM outbox_events "
            "WHERE status = 'pending' AND available_at <= now() LIMIT 50) AS due"
        )
    finally:
        await conn.close()
    root = json.loads(plan)[0]["Plan"]
    limit_node = root["Plans"][0]
    assert limit_node["Node Type"] == "Limit"
    assert limit_node["Actual Rows"] == 50
    assert limit_node["Plans"][0]["Actual Rows"] <= 50


async def test_shard_count_is_the_number_of_shard_rows(database_dsn: str) -> None:
    await asyncio.to_thread(migrate, database_dsn, shards=3)
    async with RelayProbe(database_dsn) as probe:
        assert (await probe.read(limit=10)).cap == 3


async def test_missing_tables_are_a_typed_error(database_dsn: str) -> None:
    async with RelayProbe(database_dsn) as probe:
        with pytest.raises(OutboxNotMigrated) as caught:
            await probe.read(limit=10)
    assert isinstance(caught.value.__cause__, asyncpg.UndefinedTableError)
    assert caught.value.reason == "OutboxNotMigrated"


async def test_unreachable_database_is_a_typed_error_not_zero() -> None:
    dsn = f"postgresql://nobody:x@127.0.0.1:{free_port()}/nothing"
    async with RelayProbe(dsn, timeout=2.0) as probe:
        with pytest.raises(DatabaseUnavailable):
            await probe.read(limit=10)


async def test_one_connection_is_reused_across_polls_and_runtimes(
    outbox_dsn: str, application_connections: Callable[[str], Coroutine[Any, Any, int]]
) -> None:
    probes = Probes()
    try:
        first = probes.relay(outbox_dsn, user="ns/a")
        second = probes.relay(outbox_dsn, user="ns/b")
        assert first is second
        for _ in range(20):
            await first.read(limit=100)
            await second.read(limit=100)
        assert await application_connections(APPLICATION_NAME) == 1
        await probes.release("ns/a")
        assert probes.open_count == 1  # still used by ns/b
        await probes.release("ns/b")
        assert probes.open_count == 0
        assert await application_connections(APPLICATION_NAME) == 0
    finally:
        await probes.close()


async def test_runtimes_on_one_database_share_one_reading_while_it_is_fresh(outbox_dsn: str) -> None:
    """Concurrent reads with the same limit are one query; a read after READING_MAX_AGE_SECONDS
    asks again and sees rows added since."""
    await insert_events(outbox_dsn, 3)
    async with RelayProbe(outbox_dsn) as probe:
        queries = 0
        read = probe._read

        async def counted(limit: int) -> Any:
            nonlocal queries
            queries += 1
            return await read(limit)

        probe._read = counted  # type: ignore[method-assign]
        readings = await asyncio.gather(*(probe.read(limit=100) for _ in range(20)))
        assert [r.metric for r in readings] == [3] * 20
        assert queries == 1
        await insert_events(outbox_dsn, 2)
        await asyncio.sleep(READING_MAX_AGE_SECONDS)
        assert (await probe.read(limit=100)).metric == 5
        assert (await probe.read(limit=50)).metric == 5  # another limit: its own reading
        assert queries == 3
