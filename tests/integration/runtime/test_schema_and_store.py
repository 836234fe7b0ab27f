"""Migrations and the outbox store against a real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from smartflow_runtime.db import MIGRATIONS, migrate, schema_version
from smartflow_runtime.domain import commands, queries
from smartflow_runtime.errors import MigrationError
from smartflow_runtime.outbox import store
from smartflow_runtime.outbox.model import BackoffPolicy, NewEvent, Status, shard_for_key
from smartflow_runtime.outbox.store import ReplaySelectorError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(key: str = "k", event_type: str = "test.event", **extra: Any) -> NewEvent:
    return NewEvent(
        event_type=event_type, aggregate_id=key, message_key=key, topic="t", payload={"n": 1}, **extra
    )


async def test_migrate_is_versioned_and_idempotent(database_dsn: str) -> None:
    conn = await asyncpg.connect(database_dsn)
    try:
        assert await schema_version(conn) == 0
        first = await migrate(conn, shard_count=8)
        second = await migrate(conn, shard_count=8)
        assert first.applied == tuple(m.version for m in MIGRATIONS)
        assert second.applied == ()
        assert await schema_version(conn) == MIGRATIONS[-1].version
        assert await conn.fetchval("SELECT count(*) FROM outbox_shards") == 8
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(MIGRATIONS)
        with pytest.raises(MigrationError, match="8 shards"):
            await migrate(conn, shard_count=16)
    finally:
        await conn.close()


async def test_default_shard_count_is_32(pool: Any) -> None:
    assert await pool.fetchval("SELECT count(*) FROM outbox_shards") == 32


async def test_publish_computes_stable_shard_and_notifies_on_commit_only(pool: Any) -> None:
    heard: list[str] = []

    def on_notify(*args: Any) -> None:
        heard.append(args[3])

    listener = await pool.acquire()
    await listener.add_listener("smartflow_outbox", on_notify)
    try:
        async with pool.acquire() as conn:
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await store.publish(conn, event("rolled-back"), now=T0)
                    raise RuntimeError("abort")
            async with conn.transaction():
                outbox_id = await store.publish(conn, event("conv-42"), now=T0)
        row = await pool.fetchrow(
            "SELECT shard, status, available_at FROM outbox_events WHERE id = $1", outbox_id
        )
        assert row["shard"] == shard_for_key("conv-42", 32)
        assert row["status"] == "pending" and row["available_at"] == T0
        assert await pool.fetchval("SELECT count(*) FROM outbox_events") == 1
        await listener.execute("SELECT 1")  # let the notification be read
        assert heard == [str(shard_for_key("conv-42", 32))]
    finally:
        await listener.remove_listener("smartflow_outbox", on_notify)
        await pool.release(listener)


async def test_business_write_and_events_roll_back_together(pool: Any) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await commands.post_chat_message(conn, conversation_id="c1", user_id="u1", content="hello")
                raise RuntimeError("the request failed after the command")
        assert await queries.get_conversation(conn, "c1") is None
        assert await conn.fetchval("SELECT count(*) FROM outbox_events") == 0

        posted = await commands.post_chat_message(conn, conversation_id="c1", user_id="u1", content="hi")
        conversation = await queries.get_conversation(conn, "c1")
        assert conversation is not None and conversation.message_count == 1
        types = [
            r["event_type"] for r in await conn.fetch("SELECT event_type FROM outbox_events ORDER BY id")
        ]
        assert types == [
            "chat.history.persist.requested",
            "chat.token.usage.adjust.requested",
            "memory.extract.requested",
        ]
        assert len(posted.outbox_ids) == 3


async def test_claim_marks_and_backoff_cas(pool: Any) -> None:
    async with pool.acquire() as conn:
        ids = await store.publish_many(conn, [event("a", max_attempts=2) for _ in range(3)], now=T0)
        lease = timedelta(seconds=30)
        shard = shard_for_key("a", 32)
        assert await store.acquire_shards(conn, "r1", now=T0, lease=lease, limit=32) == set(range(32))
        async with conn.transaction():
            rows = await store.claim_batch(conn, "r1", {shard}, now=T0, limit=10)
            assert [r.id for r in rows] == ids
            # Another relay without the lease claims nothing.
            assert await store.claim_batch(conn, "r2", {shard}, now=T0, limit=10) == []
            assert await store.mark_published(conn, rows[:1], now=T0) == {ids[0]}
            outcome = await store.mark_failed(
                conn, [(rows[1], RuntimeError("kafka down"))], now=T0, backoff=BackoffPolicy(1, 32)
            )
            assert outcome.pending == {ids[1]}
            # The CAS refuses a stale attempt count: nothing changes.
            assert await store.mark_published(conn, rows[1:2], now=T0) == set()
            await store.mark_published(conn, rows[2:], now=T0)
        failed = await conn.fetchrow("SELECT * FROM outbox_events WHERE id = $1", ids[1])
        assert failed["status"] == "pending" and failed["attempts"] == 1
        assert failed["available_at"] == T0 + timedelta(seconds=1)
        assert failed["last_error"] == "RuntimeError: kafka down"
        # Not due yet; once due, its second failure reaches max_attempts=2 -> dead.
        assert await store.claim_batch(conn, "r1", {shard}, now=T0, limit=10) == []
        later = T0 + timedelta(seconds=1)
        async with conn.transaction():
            (again,) = await store.claim_batch(conn, "r1", {shard}, now=later, limit=10)
            outcome = await store.mark_failed(
                conn, [(again, RuntimeError("still down"))], now=later, backoff=BackoffPolicy()
            )
        assert outcome.dead == {ids[1]}


async def test_failed_first_publish_blocks_later_rows_of_its_shard(pool: Any) -> None:
    """Per-key order across a Kafka failure: a later event may not overtake one waiting out its backoff."""
    async with pool.acquire() as conn:
        first, second = await store.publish_many(conn, [event("same"), event("same")], now=T0)
        shard = shard_for_key("same", 32)
        await store.acquire_shards(conn, "r1", now=T0, lease=timedelta(seconds=60), limit=32)
        async with conn.transaction():
            rows = await store.claim_batch(conn, "r1", {shard}, now=T0, limit=1)
            await store.mark_failed(conn, [(rows[0], RuntimeError("x"))], now=T0, backoff=BackoffPolicy(5, 5))
        assert await store.claim_batch(conn, "r1", {shard}, now=T0 + timedelta(seconds=1), limit=10) == []
        due = await store.claim_batch(conn, "r1", {shard}, now=T0 + timedelta(seconds=5), limit=10)
        assert [r.id for r in due] == [first, second]


async def test_consume_and_mark_skips_done_rows_and_records_failures(pool: Any) -> None:
    calls: list[int] = []

    async def handler(conn: Any, row: Any) -> None:
        calls.append(row.id)
        await conn.execute("CREATE TABLE IF NOT EXISTS effects (id bigint PRIMARY KEY)")
        await conn.execute("INSERT INTO effects VALUES ($1)", row.id)

    async def failing(conn: Any, row: Any) -> None:
        await conn.execute("CREATE TABLE IF NOT EXISTS effects (id bigint PRIMARY KEY)")
        await conn.execute("INSERT INTO effects VALUES ($1)", -row.id)
        raise RuntimeError("boom")

    async with pool.acquire() as conn:
        ok_id, bad_id = await store.publish_many(conn, [event("a"), event("b", max_attempts=2)], now=T0)
        backoff = BackoffPolicy(1, 1)
        first = await store.consume_and_mark(conn, ok_id, handler, now=T0, backoff=backoff)
        second = await store.consume_and_mark(conn, ok_id, handler, now=T0, backoff=backoff)
        assert (first.result, second.result) == (store.ConsumeResult.CONSUMED, store.ConsumeResult.SKIPPED)
        assert calls == [ok_id]
        retry = await store.consume_and_mark(conn, bad_id, failing, now=T0, backoff=backoff)
        dead = await store.consume_and_mark(conn, bad_id, failing, now=T0, backoff=backoff)
        assert (retry.result, dead.result) == (store.ConsumeResult.RETRY, store.ConsumeResult.DEAD)
        # The failing handler's writes were rolled back with its savepoint.
        assert [r["id"] for r in await conn.fetch("SELECT id FROM effects")] == [ok_id]
        row = await conn.fetchrow(
            "SELECT status, attempts, last_error FROM outbox_events WHERE id = $1", bad_id
        )
        assert (row["status"], row["attempts"], row["last_error"]) == ("dead", 2, "RuntimeError: boom")
        missing = await store.consume_and_mark(
            conn, ok_id, handler, now=T0, backoff=backoff, event_id=uuid.uuid4()
        )
        assert missing.result is store.ConsumeResult.MISSING


async def test_stats_and_replay_dead(pool: Any) -> None:
    async with pool.acquire() as conn:
        ids = await store.publish_many(
            conn, [event("a", "type.a"), event("b", "type.b"), event("c", "type.b")], now=T0
        )
        await conn.execute(
            "UPDATE outbox_events SET status = 'dead', last_error = 'x' WHERE id = ANY($1)", ids[1:]
        )
        stats = await store.stats(conn, T0 + timedelta(seconds=10))
        assert stats.count(Status.DEAD, "type.b") == 2 and stats.count(Status.PENDING) == 1
        assert stats.due_pending == 1 and stats.oldest_due_age_seconds == 10.0
        with pytest.raises(ReplaySelectorError):
            await store.replay_dead(conn)
        assert await store.replay_dead(conn, event_type="type.b", dry_run=True) == ids[1:]
        assert (await store.stats(conn, T0)).count(Status.DEAD) == 2
        assert await store.replay_dead(conn, ids=[ids[2]], now=T0) == [ids[2]]
        assert await store.replay_dead(conn, all=True, now=T0) == [ids[1]]
        row = await conn.fetchrow(
            "SELECT status, attempts, last_error FROM outbox_events WHERE id = $1", ids[1]
        )
        assert (row["status"], row["attempts"]) == ("pending", 0)
        assert row["last_error"].startswith("replayed")
