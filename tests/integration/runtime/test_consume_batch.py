"""The consumer's batch path against real PostgreSQL (and Kafka for the offset tests).

One transaction per partition batch must keep the per-message contract: a poison message among
good ones is retried or sent dead while the good ones are consumed exactly once and in order
(the optimistic pass is rolled back, not applied twice); already consumed rows have no second
effect; nothing of a batch is durable when the database fails; offsets are committed only after
the batch's transaction committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from smartflow_runtime.domain import events as ev
from smartflow_runtime.errors import DatabaseError, HandlerError
from smartflow_runtime.handlers import HandlerDependencies, HandlerRegistry, build_registry
from smartflow_runtime.metrics import RuntimeMetrics
from smartflow_runtime.outbox import store
from smartflow_runtime.outbox.consume_store import BatchMessage, consume_batch
from smartflow_runtime.outbox.consumer import Consumer
from smartflow_runtime.outbox.model import BackoffPolicy, Envelope, NewEvent, OutboxRow
from smartflow_runtime.outbox.store import ConsumeResult, utcnow

from .conftest import sample, wait_until
from .test_consumer import committed_total

T0 = datetime(2030, 1, 1, tzinfo=UTC)
BACKOFF = BackoffPolicy(1.0, 8.0)
KEY = "conv-batch"


@pytest.fixture
async def effects(pool: Any) -> None:
    """A table whose serial column records the order effects were applied (and committed) in."""
    await pool.execute("CREATE TABLE test_effects (seq serial PRIMARY KEY, name text NOT NULL)")


async def effect_names(pool: Any) -> list[str]:
    return [r["name"] for r in await pool.fetch("SELECT name FROM test_effects ORDER BY seq")]


async def record_effect(conn: Any, row: OutboxRow) -> None:
    await conn.execute("INSERT INTO test_effects (name) VALUES ($1)", row.payload["name"])


async def poison(conn: Any, row: OutboxRow) -> None:
    await conn.execute("INSERT INTO test_effects (name) VALUES ('poison-write-must-roll-back')")
    raise HandlerError("downstream unavailable")


async def publish(
    pool: Any, event_type: str, payloads: Sequence[dict[str, Any]], max_attempts: int = 20
) -> list[int]:
    """Rows as the relay leaves them: ``published``, one key (so one Kafka partition)."""
    async with pool.acquire() as conn:
        ids = [
            await store.publish(
                conn,
                NewEvent(
                    event_type=event_type,
                    aggregate_id=KEY,
                    message_key=KEY,
                    topic="t",
                    payload=p,
                    max_attempts=max_attempts,
                ),
                now=T0,
            )
            for p in payloads
        ]
        await conn.execute("UPDATE outbox_events SET status = 'published' WHERE id = ANY($1::bigint[])", ids)
    return ids


def message(outbox_id: int, handler: Any, bulk: Any = None, event_type: str = "test.effect") -> BatchMessage:
    return BatchMessage(outbox_id, event_type, handler=handler, bulk=bulk)


async def statuses(pool: Any, ids: Sequence[int]) -> list[tuple[str, int]]:
    rows = await pool.fetch(
        "SELECT id, status, attempts FROM outbox_events WHERE id = ANY($1::bigint[])", list(ids)
    )
    by_id = {r["id"]: (r["status"], r["attempts"]) for r in rows}
    return [by_id[i] for i in ids]


async def test_poison_in_a_batch_is_retried_then_dead_while_the_others_are_consumed_once_in_order(
    pool: Any, effects: None
) -> None:
    good = await publish(pool, "test.effect", [{"name": f"g{i}"} for i in range(5)])
    (bad,) = await publish(pool, "test.poison", [{}], max_attempts=2)
    late = await publish(pool, "test.effect", [{"name": f"g{i}"} for i in range(5, 8)])
    batch = (
        [message(i, record_effect) for i in good]
        + [message(bad, poison)]
        + [message(i, record_effect) for i in late]
    )
    async with pool.acquire() as conn:
        outcomes = await consume_batch(conn, batch, now=T0, backoff=BACKOFF)
    assert [o.result for o in outcomes] == [ConsumeResult.CONSUMED] * 5 + [ConsumeResult.RETRY] + [
        ConsumeResult.CONSUMED
    ] * 3
    # The optimistic pass ran g0..g4 and the poison before rolling back: none of that survives,
    # each good effect is there once, in offset order, and the poison's own write is gone.
    assert await effect_names(pool) == [f"g{i}" for i in range(8)]
    assert await statuses(pool, [*good, *late]) == [("consumed", 0)] * 8
    row = await pool.fetchrow(
        "SELECT status, attempts, available_at, last_error FROM outbox_events WHERE id = $1", bad
    )
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["available_at"] == T0 + BACKOFF.delay(1)
    assert row["last_error"] == "HandlerError: downstream unavailable"

    # The relay re-publishes it; redelivered with the old messages again: only the poison runs,
    # fails for the last allowed time and goes dead; the good ones have no second effect.
    await pool.execute("UPDATE outbox_events SET status = 'published' WHERE id = $1", bad)
    async with pool.acquire() as conn:
        again = await consume_batch(conn, batch, now=T0, backoff=BACKOFF)
    assert [o.result for o in again] == [ConsumeResult.SKIPPED] * 5 + [ConsumeResult.DEAD] + [
        ConsumeResult.SKIPPED
    ] * 3
    assert await effect_names(pool) == [f"g{i}" for i in range(8)]
    assert await statuses(pool, [bad]) == [("dead", 2)]


async def test_already_consumed_rows_and_duplicates_in_one_batch_have_no_second_effect(
    pool: Any, effects: None
) -> None:
    ids = await publish(pool, "test.effect", [{"name": f"e{i}"} for i in range(4)])
    async with pool.acquire() as conn:
        pair = [message(ids[0], record_effect), message(ids[1], record_effect)]
        first = await consume_batch(conn, pair, now=T0, backoff=BACKOFF)
    assert [o.result for o in first] == [ConsumeResult.CONSUMED] * 2
    consumed_at = await pool.fetchval("SELECT consumed_at FROM outbox_events WHERE id = $1", ids[0])
    # A redelivery of e0/e1 mixed with new messages, and e2 twice in the same batch.
    later = datetime(2030, 1, 2, tzinfo=UTC)
    batch = [message(i, record_effect) for i in (ids[0], ids[2], ids[1], ids[2], ids[3])]
    async with pool.acquire() as conn:
        outcomes = await consume_batch(conn, batch, now=later, backoff=BACKOFF)
    assert [o.result for o in outcomes] == [
        ConsumeResult.SKIPPED,
        ConsumeResult.CONSUMED,
        ConsumeResult.SKIPPED,
        ConsumeResult.SKIPPED,
        ConsumeResult.CONSUMED,
    ]
    assert await effect_names(pool) == ["e0", "e1", "e2", "e3"]
    assert await pool.fetchval("SELECT consumed_at FROM outbox_events WHERE id = $1", ids[0]) == consumed_at


async def test_bulk_handler_runs_consecutive_events_once_and_a_failure_isolates_the_bad_row(
    pool: Any, effects: None
) -> None:
    ids = await publish(pool, "test.effect", [{"name": f"b{i}"} for i in range(6)])
    (mid,) = await publish(pool, "test.other", [{"name": "other"}])
    bulk_calls: list[list[str]] = []

    async def bulk(conn: Any, rows: Sequence[OutboxRow]) -> None:
        bulk_calls.append([r.payload["name"] for r in rows])
        await conn.executemany(
            "INSERT INTO test_effects (name) VALUES ($1)", [(r.payload["name"],) for r in rows]
        )

    batch = [message(i, record_effect, bulk) for i in ids[:3]] + [message(mid, record_effect)]
    batch += [message(i, record_effect, bulk) for i in ids[3:]]
    async with pool.acquire() as conn:
        outcomes = await consume_batch(conn, batch, now=T0, backoff=BACKOFF)
    assert all(o.result is ConsumeResult.CONSUMED for o in outcomes)
    assert bulk_calls == [["b0", "b1", "b2"], ["b3", "b4", "b5"]]  # runs split by the other type, in order
    assert await effect_names(pool) == ["b0", "b1", "b2", "other", "b3", "b4", "b5"]

    # A bulk call that fails rolls back; the batch is re-run per event and only the bad row fails.
    more = await publish(pool, "test.effect", [{"name": "c0"}, {"name": "bad"}, {"name": "c2"}])

    async def picky(conn: Any, row: OutboxRow) -> None:
        if row.payload["name"] == "bad":
            raise HandlerError("bad row")
        await record_effect(conn, row)

    async def picky_bulk(conn: Any, rows: Sequence[OutboxRow]) -> None:
        await bulk(conn, [r for r in rows if r.payload["name"] != "bad"])
        if any(r.payload["name"] == "bad" for r in rows):
            raise HandlerError("bad row")

    async with pool.acquire() as conn:
        outcomes = await consume_batch(
            conn, [message(i, picky, picky_bulk) for i in more], now=T0, backoff=BACKOFF
        )
    assert [o.result for o in outcomes] == [
        ConsumeResult.CONSUMED,
        ConsumeResult.RETRY,
        ConsumeResult.CONSUMED,
    ]
    assert bulk_calls[2:] == [["c0", "c2"]]  # the bulk call ran, and was rolled back
    assert (await effect_names(pool))[7:] == ["c0", "c2"]


async def test_core_bulk_handlers_match_the_per_event_effect_with_repeated_keys(pool: Any) -> None:
    """Token adjustments are not idempotent and urgency only rises: repeated keys in one bulk call
    must add up and keep the first highest urgency, as one event after another would."""
    reg = build_registry(HandlerDependencies(clock=lambda: T0))
    tokens = await publish(
        pool,
        ev.CHAT_TOKEN_USAGE_ADJUST,
        [{"user_id": "u", "conversation_id": "c", "delta": d} for d in (3, 4, -2)],
    )
    urgency = await publish(
        pool,
        ev.TASK_URGENCY_PROMOTE,
        [
            {"task_id": "t", "user_id": "u", "urgency": n, "reason": r}
            for n, r in ((50, "a"), (70, "b"), (70, "c"), (60, "d"))
        ],
    )

    def msg(i: int, event_type: str) -> BatchMessage:
        return BatchMessage(
            i, event_type, handler=reg.handler_for(event_type), bulk=reg.bulk_handler_for(event_type)
        )

    batch = [msg(i, ev.CHAT_TOKEN_USAGE_ADJUST) for i in tokens] + [
        msg(i, ev.TASK_URGENCY_PROMOTE) for i in urgency
    ]
    async with pool.acquire() as conn:
        outcomes = await consume_batch(conn, batch, now=T0, backoff=BACKOFF)
    assert all(o.result is ConsumeResult.CONSUMED for o in outcomes)
    row = await pool.fetchrow("SELECT tokens, adjustments FROM token_usage WHERE user_id = 'u'")
    assert (row["tokens"], row["adjustments"]) == (5, 3)
    row = await pool.fetchrow("SELECT urgency, reason FROM task_urgency WHERE task_id = 't'")
    assert (row["urgency"], row["reason"]) == (70, "b")


async def test_bad_envelope_missing_row_and_unknown_type_in_one_batch(pool: Any, effects: None) -> None:
    ok, broken, unknown = await publish(pool, "test.effect", [{"name": "ok"}, {"name": "x"}, {"name": "y"}])

    async def no_handler(conn: Any, row: OutboxRow) -> None:
        from smartflow_runtime.errors import UnknownEventTypeError

        raise UnknownEventTypeError("no handler registered for event type 'nope'")

    batch = [
        BatchMessage(broken, "unknown", envelope_error="bad envelope: event_type has the wrong type"),
        message(ok, record_effect),
        message(999_999, record_effect),
        message(unknown, no_handler, event_type="nope"),
    ]
    async with pool.acquire() as conn:
        outcomes = await consume_batch(conn, batch, now=T0, backoff=BACKOFF)
    assert [o.result for o in outcomes] == [
        ConsumeResult.DEAD,
        ConsumeResult.CONSUMED,
        ConsumeResult.MISSING,
        ConsumeResult.DEAD,  # permanent error: dead at once
    ]
    assert await effect_names(pool) == ["ok"]
    reasons = {
        r["id"]: r["last_error"]
        for r in await pool.fetch("SELECT id, last_error FROM outbox_events WHERE status = 'dead'")
    }
    assert reasons[broken].startswith("bad envelope")
    assert "nope" in reasons[unknown]


async def test_a_database_failure_mid_batch_leaves_nothing_durable(pool: Any, effects: None) -> None:
    ids = await publish(pool, "test.effect", [{"name": f"d{i}"} for i in range(4)])

    async def connection_dies(conn: Any, row: OutboxRow) -> None:
        await record_effect(conn, row)
        if row.payload["name"] == "d2":
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")

    async with pool.acquire() as conn:
        with pytest.raises((DatabaseError, asyncpg.PostgresError, asyncpg.InterfaceError)):
            await consume_batch(conn, [message(i, connection_dies) for i in ids], now=T0, backoff=BACKOFF)
    assert await effect_names(pool) == []
    assert await statuses(pool, ids) == [("published", 0)] * 4


# --- offsets and the batch transaction (Kafka) -----------------------------------------------


def consumer_for(pool: Any, bootstrap_servers: str, topic: str, group: str, reg: HandlerRegistry) -> Consumer:
    return Consumer(
        pool=pool,
        bootstrap_servers=bootstrap_servers,
        topic=topic,
        group_id=group,
        registry=reg,
        metrics=RuntimeMetrics(CollectorRegistry()),
        backoff=BackoffPolicy(0.05, 0.2),
        poll_timeout_ms=200,
        consumer_options={"session_timeout_ms": 6000, "heartbeat_interval_ms": 500},
    )


async def send_rows(pool: Any, bootstrap_servers: str, topic: str, ids: Sequence[int]) -> None:
    """Put the rows' envelopes on one partition, as the relay would, all before any consumer runs."""
    rows = await pool.fetch(
        "SELECT e.* FROM outbox_events e WHERE id = ANY($1::bigint[]) ORDER BY id", list(ids)
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await producer.start()
    try:
        for r in rows:
            await producer.send_and_wait(
                topic, Envelope.of_row(OutboxRow.from_record(r)).encode(), partition=0
            )
    finally:
        await producer.stop()


async def test_offsets_wait_for_the_batch_transaction_and_a_crash_before_its_commit_loses_nothing(
    pool: Any, bootstrap_servers: str, topic: str, unique_name: str, effects: None
) -> None:
    ids = await publish(pool, "test.effect", [{"name": f"k{i}"} for i in range(5)])
    (gate_id,) = await publish(pool, "test.gate", [{"name": "gate"}])
    await send_rows(pool, bootstrap_servers, topic, [*ids, gate_id])
    entered, released = asyncio.Event(), asyncio.Event()

    async def gate(conn: Any, row: OutboxRow) -> None:
        entered.set()
        await released.wait()
        await record_effect(conn, row)

    reg = build_registry(HandlerDependencies(clock=utcnow))
    reg.register("test.effect", record_effect)
    reg.register("test.gate", gate)
    group = f"g-{unique_name}"
    first = consumer_for(pool, bootstrap_servers, topic, group, reg)
    await first.start()
    await asyncio.wait_for(entered.wait(), 20)
    # k0..k4 ran in the batch's transaction ahead of the gate: neither they nor any offset are
    # visible while the transaction is open.
    await asyncio.sleep(0.5)
    assert await effect_names(pool) == []
    assert await statuses(pool, ids) == [("published", 0)] * 5
    assert await committed_total(bootstrap_servers, group, topic) == 0
    # The process dies before the transaction commits: the loop is cancelled mid-handler and the
    # Kafka client goes away without committing anything.
    assert first._task is not None
    first._task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first._task
    await first._kafka.stop()
    assert await effect_names(pool) == []
    assert await committed_total(bootstrap_servers, group, topic) == 0

    released.set()
    second = consumer_for(pool, bootstrap_servers, topic, group, reg)
    async with second:

        async def all_consumed() -> bool:
            return await statuses(pool, [*ids, gate_id]) == [("consumed", 0)] * 6

        await wait_until(all_consumed, within=30, what="the batch consumed after the restart")
        await wait_until(
            lambda: _committed(bootstrap_servers, group, topic, 6), within=10, what="offsets committed"
        )
    assert await effect_names(pool) == [f"k{i}" for i in range(5)] + ["gate"]


async def _committed(bootstrap_servers: str, group: str, topic: str, n: int) -> bool:
    return await committed_total(bootstrap_servers, group, topic) == n


async def test_a_crash_after_the_transaction_but_before_the_offset_commit_redelivers_without_effect(
    pool: Any, bootstrap_servers: str, topic: str, unique_name: str, effects: None
) -> None:
    ids = await publish(pool, "test.effect", [{"name": f"r{i}"} for i in range(6)])
    await send_rows(pool, bootstrap_servers, topic, ids)
    reg = build_registry(HandlerDependencies(clock=utcnow))
    reg.register("test.effect", record_effect)
    group = f"g-{unique_name}"
    first = consumer_for(pool, bootstrap_servers, topic, group, reg)

    async def lost_commit(offsets: Any) -> None:
        return None  # the process died before the offset commit reached the broker

    # Patched before start: the loop creates its Kafka client and polls at once.
    first._commit = lost_commit  # type: ignore[method-assign]
    await first.start()
    try:
        await wait_until(
            lambda: _all(pool, ids, "consumed"), within=30, what="batch committed in the database"
        )
    finally:
        await first.stop()
    assert await committed_total(bootstrap_servers, group, topic) == 0
    # The next member starts from the last committed offset (none): every message comes again.
    second = consumer_for(pool, bootstrap_servers, topic, group, reg)
    async with second:

        async def skipped_all() -> bool:
            return (
                sample(second._metrics, "smartflow_outbox_events_skipped_total", {"reason": "already_done"})
                == 6
            )

        await wait_until(skipped_all, within=30, what="redeliveries skipped")
        await wait_until(
            lambda: _committed(bootstrap_servers, group, topic, 6), within=10, what="offsets committed"
        )
    assert await effect_names(pool) == [f"r{i}" for i in range(6)]


async def _all(pool: Any, ids: Sequence[int], status: str) -> bool:
    return all(s == status for s, _ in await statuses(pool, ids))
