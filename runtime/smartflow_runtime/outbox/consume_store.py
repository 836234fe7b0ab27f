"""The consumer's batch store: one transaction applies a partition's fetched messages.

Called by :class:`~.consumer.Consumer` once per partition and poll (once per poll for a small
poll's partitions together, each partition's messages in offset order), on a connection it holds
for the whole batch. The contract is :func:`~.store.consume_and_mark`'s, per message and in offset
order, but with the round trips of a batch instead of eight per event:

1. **Optimistic pass** (the common case): ``BEGIN``; lock every row of the batch with one
   ``SELECT ... WHERE id = ANY($1) ORDER BY id FOR UPDATE``; skip ``consumed``/``dead`` rows (a
   redelivery has no second effect); run the handlers in offset order with no savepoints,
   consecutive events of one type with a bulk handler in one pipelined call; mark every handled
   row ``consumed`` in one ``UPDATE``; ``COMMIT``.
2. **Isolated pass**, only when a handler raised in the first: the first transaction is rolled
   back whole (so no effect of it survives), and the batch runs again in a new transaction with
   one savepoint per message. A failing handler's writes are rolled back to its savepoint and
   its row goes back to ``pending`` with backoff or to ``dead``; the other messages' effects and
   ``consumed`` marks commit with the batch. So a poison message costs its batch one rollback and
   a slower pass, and never blocks its partition.

Why optimistic instead of a savepoint per message always: a savepoint and its release are two
more round trips per event, which is most of what batching saves; handler failures are rare, and
a failure's batch is simply re-run message by message.

Either pass raises :class:`~smartflow_runtime.errors.DatabaseError` when the database itself
fails; then nothing of the batch is durable and the caller must not commit its offsets.

The statements live here rather than in :mod:`.sql` because they belong to this path only.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from . import store
from .model import NOTIFY_CHANNEL, BackoffPolicy, OutboxRow, Status
from .store import ConsumeOutcome, ConsumeResult, driver_errors

BulkHandler = Callable[[Any, Sequence[OutboxRow]], Awaitable[None]]
"""``await bulk(conn, rows)``: the effect of ``handler(conn, row)`` for each row, in order."""

_ROW_COLUMNS = """
    e.id, e.event_id, e.event_type, e.event_version, e.aggregate_id, e.message_key, e.topic,
    e.payload, e.shard, e.status, e.attempts, e.max_attempts, e.available_at, e.last_error
"""

# $1 ids. In id order, so two transactions locking overlapping batches (a partition moving
# between members during a rebalance) take the locks in the same order and cannot deadlock.
LOCK_ROWS = f"""
SELECT {_ROW_COLUMNS} FROM outbox_events e WHERE e.id = ANY($1::bigint[]) ORDER BY e.id FOR UPDATE
"""

# $1 channel, $2 shards: wakes the relays for rows sent back to pending.
NOTIFY_SHARDS = "SELECT pg_notify($1, s::text) FROM unnest($2::int[]) AS s"

# $1 ids, $2 now
MARK_CONSUMED_MANY = """
UPDATE outbox_events SET status = 'consumed', consumed_at = $2, updated_at = $2
WHERE id = ANY($1::bigint[])
"""

_DONE = (Status.CONSUMED, Status.DEAD)


@dataclass(frozen=True)
class BatchMessage:
    """One Kafka message of a batch, as far as the consumer could decode it.

    ``envelope_error`` set: the message is not a valid envelope and its row (``outbox_id``) goes
    ``dead`` with that reason. Otherwise ``handler`` (and, when the type has one, ``bulk``) applies
    the event; ``event_id`` must match the row or the message is ``MISSING``.
    """

    outbox_id: int
    event_type: str
    handler: store.Handler | None = None
    bulk: BulkHandler | None = None
    event_id: uuid.UUID | None = None
    envelope_error: str | None = None


class _HandlerFailed(Exception):
    """Raised inside the optimistic transaction to roll it back; never leaves this module."""


async def consume_batch(
    conn: Any, messages: Sequence[BatchMessage], *, now: datetime, backoff: BackoffPolicy
) -> list[ConsumeOutcome]:
    """Apply ``messages`` (per partition in offset order) in one transaction on ``conn``.

    Returns one outcome per message, in order. A bad envelope's outcome is ``DEAD`` when its row
    was sent dead, ``MISSING`` when there was none left to kill. ``conn`` must not be inside a
    transaction.
    """
    if not messages:
        return []
    try:
        return await _optimistic(conn, messages, now=now)
    except _HandlerFailed:
        pass  # rolled back whole; run again with one savepoint per message
    return await _isolated(conn, messages, now=now, backoff=backoff)


async def _lock(conn: Any, messages: Sequence[BatchMessage]) -> dict[int, OutboxRow]:
    ids = sorted({m.outbox_id for m in messages})
    return {r["id"]: OutboxRow.from_record(r) for r in await conn.fetch(LOCK_ROWS, ids)}


def _precheck(
    message: BatchMessage, rows: dict[int, OutboxRow], handled: set[int] | None = None
) -> ConsumeOutcome | None:
    """The outcome of a message that runs no handler (no such row, or already done: before the
    batch, or earlier in it, ``handled``), else None."""
    row = rows.get(message.outbox_id)
    if row is None or (message.event_id is not None and row.event_id != message.event_id):
        return ConsumeOutcome(ConsumeResult.MISSING)
    if row.status in _DONE or (handled is not None and row.id in handled):
        return ConsumeOutcome(ConsumeResult.SKIPPED, row)
    return None


async def _kill(
    conn: Any, message: BatchMessage, rows: dict[int, OutboxRow], now: datetime
) -> ConsumeOutcome:
    assert message.envelope_error is not None
    row = rows.get(message.outbox_id)
    if row is None or row.status in _DONE:
        return ConsumeOutcome(ConsumeResult.MISSING, row)
    await store.mark_dead(conn, message.outbox_id, message.envelope_error, now=now)
    rows[row.id] = replace(row, status=Status.DEAD, last_error=message.envelope_error)
    return ConsumeOutcome(ConsumeResult.DEAD, row)


async def _optimistic(conn: Any, messages: Sequence[BatchMessage], *, now: datetime) -> list[ConsumeOutcome]:
    async with driver_errors("consume outbox batch"), conn.transaction():
        rows = await _lock(conn, messages)
        outcomes: list[ConsumeOutcome] = []
        consumed: list[int] = []
        handled: set[int] = set()
        run: list[tuple[BatchMessage, OutboxRow]] = []  # consecutive events for one bulk call
        for message in messages:
            if message.envelope_error is not None:
                await _run_handlers(conn, run)
                outcomes.append(await _kill(conn, message, rows, now))
                continue
            outcome = _precheck(message, rows, handled)
            if outcome is not None:
                outcomes.append(outcome)
                continue
            row = rows[message.outbox_id]
            if run and (message.bulk is None or run[-1][0].bulk != message.bulk):
                await _run_handlers(conn, run)
            run.append((message, row))
            handled.add(row.id)  # a later duplicate in this batch is a redelivery
            consumed.append(row.id)
            outcomes.append(ConsumeOutcome(ConsumeResult.CONSUMED, row))
        await _run_handlers(conn, run)
        if consumed:
            await conn.execute(MARK_CONSUMED_MANY, consumed, now)
    return outcomes


async def _run_handlers(conn: Any, run: list[tuple[BatchMessage, OutboxRow]]) -> None:
    """Run and clear ``run``: one bulk call, or each handler in order. Raises ``_HandlerFailed``."""
    if not run:
        return
    batch = list(run)
    run.clear()
    try:
        bulk = batch[0][0].bulk
        if bulk is not None and len(batch) > 1:
            await bulk(conn, [row for _, row in batch])
        else:
            for message, row in batch:
                assert message.handler is not None
                await message.handler(conn, row)
    except (asyncpg.InterfaceError, OSError):
        raise  # the connection is gone: nothing can be recorded, let the caller retry
    except Exception as error:
        raise _HandlerFailed from error


async def _isolated(
    conn: Any, messages: Sequence[BatchMessage], *, now: datetime, backoff: BackoffPolicy
) -> list[ConsumeOutcome]:
    async with driver_errors("consume outbox batch"), conn.transaction():
        rows = await _lock(conn, messages)
        outcomes: list[ConsumeOutcome] = []
        consumed: list[int] = []
        retry_shards: set[int] = set()
        for message in messages:
            if message.envelope_error is not None:
                outcomes.append(await _kill(conn, message, rows, now))
                continue
            outcome = _precheck(message, rows)
            if outcome is None:
                outcome = await _one(conn, message, rows[message.outbox_id], now=now, backoff=backoff)
                row = outcome.row
                assert row is not None
                if outcome.result is ConsumeResult.CONSUMED:
                    rows[row.id] = replace(row, status=Status.CONSUMED)
                    consumed.append(row.id)
                else:
                    dead = outcome.result is ConsumeResult.DEAD
                    status = Status.DEAD if dead else Status.PENDING
                    rows[row.id] = replace(row, status=status, attempts=row.attempts + 1)
                    if not dead:
                        retry_shards.add(row.shard)
            outcomes.append(outcome)
        if consumed:
            await conn.execute(MARK_CONSUMED_MANY, consumed, now)
        if retry_shards:
            await conn.execute(NOTIFY_SHARDS, NOTIFY_CHANNEL, sorted(retry_shards))
    return outcomes


async def _one(
    conn: Any, message: BatchMessage, row: OutboxRow, *, now: datetime, backoff: BackoffPolicy
) -> ConsumeOutcome:
    """One message in its own savepoint; a handler failure is recorded on its row, not raised."""
    assert message.handler is not None
    try:
        async with conn.transaction():
            await message.handler(conn, row)
    except (asyncpg.InterfaceError, OSError):
        raise
    except Exception as error:  # a handler failure is data: it decides the row's next state
        failed = await store.mark_failed(
            conn, [(row, error)], now=now, backoff=backoff, from_statuses=(Status.PENDING, Status.PUBLISHED)
        )
        result = ConsumeResult.DEAD if row.id in failed.dead else ConsumeResult.RETRY
        return ConsumeOutcome(result, row, error)
    return ConsumeOutcome(ConsumeResult.CONSUMED, row)
