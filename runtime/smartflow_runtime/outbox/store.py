"""The outbox store: the narrow API over ``outbox_events`` / ``outbox_shards`` / ``outbox_relays``.

Every function takes the caller's asyncpg connection (and its transaction, if one is open) and,
where a decision depends on time, ``now``. Callers:

- domain commands (api role) call :func:`publish` inside their business transaction;
- the relay calls the lease and claim functions; the consumer calls :func:`consume_and_mark`;
- the CLI calls :func:`stats`, :func:`replay_dead` and :func:`prune_consumed`.

asyncpg errors are wrapped into :class:`~smartflow_runtime.errors.DatabaseError` here, so services
never see driver exceptions. Handler exceptions inside :func:`consume_and_mark` are *data*: they
decide pending-with-backoff versus dead and are recorded in ``last_error``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from ..errors import (
    DatabaseAuthenticationError,
    DatabaseCertificateError,
    DatabaseError,
    DatabaseTlsError,
    DatabaseUnavailableError,
    SmartflowError,
    is_retriable,
)
from . import sql
from .model import NOTIFY_CHANNEL, SHARDS_CHANNEL, BackoffPolicy, NewEvent, OutboxRow, Status, key_hash

Handler = Callable[[Any, OutboxRow], Awaitable[None]]
"""What :func:`consume_and_mark` runs: ``await handler(conn, row)`` inside the row's transaction."""

_MAX_ERROR_CHARS = 2000


# The driver's and the socket layer's ways of saying "the server is not there right now", by class:
# a refused or lost connection (08xxx, OSError), a server starting up or shutting down (57Pxx:
# CannotConnectNowError, AdminShutdownError), out of connections or memory (53xxx), a pool
# acquire or connect that timed out, a connection the pool already took back (InterfaceError),
# and asyncpg's own protocol-state errors after a connection broke mid-query
# (InternalClientError, e.g. "cannot switch to state 12").
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)


def wrap_driver_error(what: str, error: BaseException) -> DatabaseError:
    """Our error for a driver failure: :class:`DatabaseUnavailableError` when the server cannot be
    reached (decided by the exception's class, see ``UNAVAILABLE_ERRORS``), else :class:`DatabaseError`.

    A login the server refused (SQLSTATE class 28: wrong password, no pg_hba rule) and a failed TLS
    handshake are unavailability too, with their own classes and the reason readiness shows:
    :class:`DatabaseAuthenticationError`, :class:`DatabaseCertificateError`, :class:`DatabaseTlsError`."""
    if isinstance(error, DatabaseError):
        return error
    if isinstance(error, asyncpg.InvalidAuthorizationSpecificationError):
        return DatabaseAuthenticationError(f"{what}: authentication failed: {error}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return DatabaseCertificateError(f"{what}: certificate verify failed: {error.verify_message}")
    if isinstance(error, ssl.SSLError):
        return DatabaseTlsError(f"{what}: TLS handshake failed: {error}")
    if isinstance(error, UNAVAILABLE_ERRORS):
        return DatabaseUnavailableError(f"{what}: {type(error).__name__}: {error}")
    return DatabaseError(f"{what}: {type(error).__name__}: {error}")


@asynccontextmanager
async def driver_errors(what: str) -> AsyncIterator[None]:
    """Wrap asyncpg/socket errors raised inside the block into :class:`DatabaseError` (or its
    :class:`DatabaseUnavailableError` subclass when the server cannot be reached)."""
    try:
        yield
    except (asyncpg.PostgresError, *UNAVAILABLE_ERRORS) as error:
        raise wrap_driver_error(what, error) from error


@asynccontextmanager
async def connection(pool: Any, what: str) -> AsyncIterator[Any]:
    """``pool.acquire()`` with driver errors of the acquire *and* of the block wrapped (see
    :func:`driver_errors`): a pool that cannot connect raises :class:`DatabaseUnavailableError`."""
    async with driver_errors(what), pool.acquire() as conn:
        yield conn


def connection_usable(conn: Any) -> bool:
    """False when ``conn`` is closed, or is a pool proxy the pool already took back after its
    connection was lost (asyncpg raises ``InterfaceError`` for any call on such a proxy)."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


def utcnow() -> datetime:
    """The default clock of services: timezone-aware UTC wall time."""
    return datetime.now(UTC)


def describe_error(error: BaseException) -> str:
    """``last_error`` text: the type and message, trimmed so one huge error cannot bloat a row."""
    text = f"{type(error).__name__}: {error}"
    return text[:_MAX_ERROR_CHARS]


# --- writing ----------------------------------------------------------------------------------


async def publish(conn: Any, event: NewEvent, *, now: datetime | None = None) -> int:
    """Write ``event`` into the outbox as ``pending`` on ``conn``; returns its outbox id.

    Call it inside the transaction of the business write it belongs to: both commit or neither
    does. The relay is woken by a NOTIFY that Postgres delivers at commit.
    """
    at = now or utcnow()
    async with driver_errors("outbox publish"):
        record = await conn.fetchrow(
            sql.INSERT_EVENT,
            event.event_id,
            event.event_type,
            event.event_version,
            event.aggregate_id,
            event.message_key,
            event.topic,
            json.dumps(dict(event.payload)),
            key_hash(event.message_key),
            event.max_attempts,
            at,
            NOTIFY_CHANNEL,
        )
    return int(record["id"])


async def publish_many(conn: Any, events: Sequence[NewEvent], *, now: datetime | None = None) -> list[int]:
    """Write many events in one statement (ids follow the input order); same contract as :func:`publish`."""
    if not events:
        return []
    at = now or utcnow()
    async with driver_errors("outbox publish"):
        records = await conn.fetch(
            sql.INSERT_EVENTS,
            [e.event_id for e in events],
            [e.event_type for e in events],
            [e.event_version for e in events],
            [e.aggregate_id for e in events],
            [e.message_key for e in events],
            [e.topic for e in events],
            [json.dumps(dict(e.payload)) for e in events],
            [key_hash(e.message_key) for e in events],
            [e.max_attempts for e in events],
            at,
        )
        await conn.execute(sql.NOTIFY_SHARDS, NOTIFY_CHANNEL, sorted({r["shard"] for r in records}))
    return sorted(int(r["id"]) for r in records)


# --- relay membership and shard leases --------------------------------------------------------


async def shard_count(conn: Any) -> int:
    async with driver_errors("outbox shard count"):
        return int(await conn.fetchval(sql.SHARD_COUNT))


async def heartbeat(conn: Any, relay_id: str, *, now: datetime, lease: timedelta) -> int:
    """Record that ``relay_id`` is alive; returns how many relays are alive (heartbeat within ``lease``)."""
    async with driver_errors("relay heartbeat"):
        await conn.execute(sql.HEARTBEAT, relay_id, now)
        # Forget relays silent for many leases so the table does not grow with pod names.
        await conn.execute(sql.FORGET_RELAYS, now - 10 * lease)
        return int(await conn.fetchval(sql.LIVE_RELAYS, now - lease))


async def leave(conn: Any, relay_id: str) -> None:
    async with driver_errors("relay leave"):
        await conn.execute(sql.LEAVE, relay_id)


async def renew_leases(conn: Any, relay_id: str, *, now: datetime, lease: timedelta) -> set[int]:
    """Extend the lease of every shard still recorded as ours; returns those shards."""
    async with driver_errors("renew shard leases"):
        return {r["shard"] for r in await conn.fetch(sql.RENEW_LEASES, relay_id, now + lease)}


async def acquire_shards(
    conn: Any, relay_id: str, *, now: datetime, lease: timedelta, limit: int
) -> set[int]:
    """Lease up to ``limit`` shards that are free or whose lease expired (a dead relay's)."""
    if limit <= 0:
        return set()
    async with driver_errors("acquire shards"):
        rows = await conn.fetch(sql.ACQUIRE_SHARDS, relay_id, now, now + lease, limit)
    return {r["shard"] for r in rows}


async def release_shards(conn: Any, relay_id: str, shards: Iterable[int] | None = None) -> set[int]:
    """Give up ``shards`` (all of ours when None) and tell other relays so they rebalance at once."""
    wanted = None if shards is None else sorted(shards)
    async with driver_errors("release shards"), conn.transaction():
        released = {r["shard"] for r in await conn.fetch(sql.RELEASE_SHARDS, relay_id, wanted)}
        if released:
            await conn.execute(sql.NOTIFY_SHARDS, SHARDS_CHANNEL, sorted(released))
    return released


# --- relay claims -----------------------------------------------------------------------------


def per_shard_claim_cap(limit: int, shards: int) -> int:
    """The most rows one claim takes from a single shard (``CLAIM_BATCH`` computes the same in SQL).

    Twice a fair share of ``limit``, at least 50, never above ``limit``: with keys spread over the
    shards a claim still fills up, while the rows it reads stay bounded by about ``2 * limit``
    however large the backlog. A claim that hit this cap for some shard may have left due rows
    behind: the relay claims again at once (see :func:`claim_may_have_left_rows`).
    """
    if shards <= 0:
        return limit
    return min(limit, max(-(-2 * limit // shards), 50))


def claim_may_have_left_rows(rows: Sequence[OutboxRow], *, limit: int, shards: int) -> bool:
    """True when a claim of ``limit`` over ``shards`` shards hit a limit, so due rows may remain."""
    if len(rows) >= limit:
        return True
    cap = per_shard_claim_cap(limit, shards)
    per_shard: dict[int, int] = {}
    for row in rows:
        per_shard[row.shard] = per_shard.get(row.shard, 0) + 1
    return any(n >= cap for n in per_shard.values())


def _lock_timeout_sql(lock_timeout: timedelta) -> str:
    return f"SET LOCAL lock_timeout = {max(1, int(lock_timeout.total_seconds() * 1000))}"


@asynccontextmanager
async def claim_transaction(conn: Any, *, lock_timeout: timedelta | None = None) -> AsyncIterator[None]:
    """The transaction of one relay batch (:func:`claim_batch` .. :func:`mark_published`), with
    ``lock_timeout`` set in the same round trip as ``BEGIN``.

    ``conn.transaction()`` plus ``claim_batch(lock_timeout=...)`` costs a round trip more per
    batch (``BEGIN``, then ``SET LOCAL``); at moderate rates a batch is a few rows, so that is a
    visible share of the relay's statements. Commits when the block succeeds and the transaction
    is still open (:func:`mark_published_and_commit` commits it itself), rolls back when it raises
    (if the rollback itself fails, the pool's release rolls back).
    """
    begin = "BEGIN" if lock_timeout is None else f"BEGIN; {_lock_timeout_sql(lock_timeout)}"
    async with driver_errors("begin relay batch"):
        await conn.execute(begin)
    try:
        yield
    except BaseException:
        if connection_usable(conn) and conn.is_in_transaction():
            with contextlib.suppress(asyncpg.PostgresError, *UNAVAILABLE_ERRORS):
                await conn.execute("ROLLBACK")
        raise
    if conn.is_in_transaction():
        async with driver_errors("commit relay batch"):
            await conn.execute("COMMIT")


async def claim_batch(
    conn: Any,
    relay_id: str,
    shards: Iterable[int],
    *,
    now: datetime,
    limit: int,
    lock_timeout: timedelta | None = None,
) -> list[OutboxRow]:
    """Lock up to ``limit`` due rows of ``shards`` (leased by ``relay_id``) in id order.

    Must run inside a transaction that stays open until :func:`mark_published` /
    :func:`mark_failed`: the row locks are what stop a second relay publishing the same rows.
    ``lock_timeout`` bounds the wait for a previous owner's in-flight batch (then
    :class:`DatabaseError`, retriable), so a stuck peer cannot stall this relay's lease renewals.

    Per shard the rows are a prefix of its due rows in id order. A row that a previous owner sent
    back to backoff while we waited for its lock (pending, never published, no longer due) ends
    its shard's prefix: it and the later rows of that shard are left out, as the blocker rule of
    ``CLAIM_BATCH`` would have done had it seen the row's new state.
    """
    wanted = sorted(shards)
    async with driver_errors("claim outbox batch"):
        if lock_timeout is not None:
            await conn.execute(_lock_timeout_sql(lock_timeout))
        records = await conn.fetch(sql.CLAIM_BATCH, wanted, now, limit, relay_id)
    rows: list[OutboxRow] = []
    blocked: set[int] = set()
    for record in records:
        shard = record["shard"]
        if shard in blocked:
            continue
        if record["available_at"] > now:
            if record["published_at"] is None:
                blocked.add(shard)
            continue
        rows.append(OutboxRow.from_record(record))
    return rows


async def mark_published(conn: Any, rows: Sequence[OutboxRow], *, now: datetime) -> set[int]:
    """``pending -> published`` for rows still at the attempts we claimed (compare-and-swap)."""
    if not rows:
        return set()
    async with driver_errors("mark published"):
        records = await conn.fetch(sql.MARK_PUBLISHED, [r.id for r in rows], [r.attempts for r in rows], now)
    return {int(r["id"]) for r in records}


async def mark_published_and_commit(conn: Any, rows: Sequence[OutboxRow], *, now: datetime) -> None:
    """:func:`mark_published` (same compare-and-swap) and ``COMMIT`` of the caller's transaction in
    one round trip: a batch whose rows were all sent ends with one statement, not two."""
    async with driver_errors("mark published"):
        if not rows:
            await conn.execute("COMMIT")
            return
        statement = sql.mark_published_then_commit([r.id for r in rows], [r.attempts for r in rows], now)
        await conn.execute(statement)


@dataclass(frozen=True)
class FailureOutcome:
    """Where failed rows went: back to ``pending`` (with backoff) or ``dead``."""

    pending: frozenset[int]
    dead: frozenset[int]


async def mark_failed(
    conn: Any,
    failures: Sequence[tuple[OutboxRow, BaseException]],
    *,
    now: datetime,
    backoff: BackoffPolicy,
    from_statuses: Sequence[Status] = (Status.PENDING,),
) -> FailureOutcome:
    """Count a failed attempt per row: ``pending`` after ``backoff``, or ``dead`` once attempts reach
    ``max_attempts`` or the error is permanent (``retriable`` false). ``last_error`` keeps the reason.
    """
    if not failures:
        return FailureOutcome(frozenset(), frozenset())
    ids, attempts, available, dead, errors = [], [], [], [], []
    for row, error in failures:
        next_attempt = row.attempts + 1
        ids.append(row.id)
        attempts.append(row.attempts)
        available.append(now + backoff.delay(next_attempt))
        dead.append(next_attempt >= row.max_attempts or not is_retriable(error))
        errors.append(describe_error(error))
    async with driver_errors("mark failed"):
        records = await conn.fetch(
            sql.MARK_FAILED, ids, attempts, available, dead, errors, now, [str(s) for s in from_statuses]
        )
    return FailureOutcome(
        pending=frozenset(int(r["id"]) for r in records if r["status"] == Status.PENDING),
        dead=frozenset(int(r["id"]) for r in records if r["status"] == Status.DEAD),
    )


# --- consumer ---------------------------------------------------------------------------------


class ConsumeResult(enum.StrEnum):
    CONSUMED = "consumed"
    SKIPPED = "skipped"  # already consumed or dead: a redelivery, no second effect
    RETRY = "retry"  # handler failed; row back to pending with backoff
    DEAD = "dead"  # handler failed permanently or for the last allowed time
    MISSING = "missing"  # no such outbox row


@dataclass(frozen=True)
class ConsumeOutcome:
    result: ConsumeResult
    row: OutboxRow | None = None
    error: BaseException | None = None


async def consume_and_mark(
    conn: Any,
    outbox_id: int,
    handler: Handler,
    *,
    now: datetime,
    backoff: BackoffPolicy,
    event_id: uuid.UUID | None = None,
) -> ConsumeOutcome:
    """Run ``handler`` for one outbox row exactly once, in one transaction on ``conn``.

    Locks the row (``FOR UPDATE``), skips it when already ``consumed``/``dead``, runs the handler
    in a savepoint and marks the row ``consumed``. When the handler raises, its writes are rolled
    back and the row goes to ``pending`` with backoff (the relay re-publishes it) or ``dead``;
    either way the transaction commits, so the caller may move its Kafka offset on.

    ``event_id``, when given, must match the row: a message whose outbox id points at a different
    event (another database, a recreated one) is reported ``MISSING`` and leaves the row alone.

    Raises :class:`DatabaseError` when the database itself fails: then nothing is durable and the
    caller must not commit the offset.
    """
    async with driver_errors("consume outbox row"), conn.transaction():
        record = await conn.fetchrow(sql.LOCK_ROW, outbox_id)
        if record is None or (event_id is not None and record["event_id"] != event_id):
            return ConsumeOutcome(ConsumeResult.MISSING)
        row = OutboxRow.from_record(record)
        if row.status in (Status.CONSUMED, Status.DEAD):
            return ConsumeOutcome(ConsumeResult.SKIPPED, row)
        try:
            async with conn.transaction():
                await handler(conn, row)
        except (asyncpg.InterfaceError, OSError):
            raise  # the connection is gone: nothing can be recorded, let the caller retry
        except Exception as error:  # a handler failure is data: it decides the row's next state
            outcome = await mark_failed(
                conn,
                [(row, error)],
                now=now,
                backoff=backoff,
                from_statuses=(Status.PENDING, Status.PUBLISHED),
            )
            result = ConsumeResult.DEAD if row.id in outcome.dead else ConsumeResult.RETRY
            if result is ConsumeResult.RETRY:
                await conn.execute(sql.NOTIFY_SHARDS, NOTIFY_CHANNEL, [row.shard])
            return ConsumeOutcome(result, row, error)
        await conn.execute(sql.MARK_CONSUMED, row.id, now)
        return ConsumeOutcome(ConsumeResult.CONSUMED, row)


async def mark_dead(conn: Any, outbox_id: int, reason: str, *, now: datetime) -> bool:
    """Send a row straight to ``dead`` (an envelope too broken to handle); False if already terminal."""
    async with driver_errors("mark dead"):
        return await conn.fetchval(sql.MARK_DEAD, outbox_id, reason[:_MAX_ERROR_CHARS], now) is not None


# --- operations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BacklogEntry:
    status: str
    event_type: str
    count: int


DEFAULT_CONSUMED_COUNT_LIMIT = 10_000
""":func:`stats` counts consumed rows exactly up to this many; beyond it, it estimates (see below)."""


@dataclass(frozen=True)
class OutboxStats:
    """Unfinished rows (pending, published, dead) by status and event type, the consumed history
    as one bounded count, and the relay lag: due pending rows and the oldest's age.

    ``consumed`` is exact when ``consumed_exact``; past the count limit it is the planner's
    estimate (table rows minus the exact unfinished rows, at least the limit), fine for deciding
    when to run ``outbox prune``. Consumed rows are history, not backlog, so they are not split
    by type.
    """

    backlog: tuple[BacklogEntry, ...]
    due_pending: int
    oldest_due_age_seconds: float | None
    consumed: int = 0
    consumed_exact: bool = True

    def count(self, status: str, event_type: str | None = None) -> int:
        if status == Status.CONSUMED:
            if event_type is not None:
                raise ValueError("consumed rows are counted in total, not by event type")
            return self.consumed
        return sum(
            e.count
            for e in self.backlog
            if e.status == status and (event_type is None or e.event_type == event_type)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "backlog": [
                {"status": e.status, "event_type": e.event_type, "count": e.count} for e in self.backlog
            ],
            "consumed": self.consumed,
            "consumed_exact": self.consumed_exact,
            "due_pending": self.due_pending,
            "oldest_due_age_seconds": self.oldest_due_age_seconds,
        }


async def stats(
    conn: Any, now: datetime, *, consumed_limit: int = DEFAULT_CONSUMED_COUNT_LIMIT
) -> OutboxStats:
    """Backlog by status and type, the consumed count (exact up to ``consumed_limit``, estimated
    beyond) and the relay lag at ``now`` (what ``outbox stats`` prints and the relay samples).

    Every query is bounded by the backlog or by ``consumed_limit``, never by the table's size:
    partial indexes serve the unfinished and the consumed rows separately.
    """
    if consumed_limit < 1:
        raise ValueError("consumed_limit must be >= 1")
    async with driver_errors("outbox stats"):
        backlog = await conn.fetch(sql.BACKLOG_BY_STATUS_AND_TYPE)
        consumed = int(await conn.fetchval(sql.CONSUMED_UP_TO, consumed_limit))
        exact = consumed < consumed_limit
        if not exact:
            unfinished = sum(int(r["n"]) for r in backlog)
            estimate = int(await conn.fetchval(sql.TABLE_ROWS_ESTIMATE)) - unfinished
            consumed = max(consumed, estimate)
        due = await conn.fetchrow(sql.DUE_PENDING, now)
    oldest = due["oldest"]
    return OutboxStats(
        backlog=tuple(BacklogEntry(r["status"], r["event_type"], int(r["n"])) for r in backlog),
        due_pending=int(due["due"]),
        oldest_due_age_seconds=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        consumed=consumed,
        consumed_exact=exact,
    )


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune_consumed` did (or, in a dry run, would do)."""

    rows: int
    batches: int
    cutoff: datetime


async def prune_consumed(
    conn: Any,
    *,
    older_than: datetime,
    batch_size: int = 1000,
    dry_run: bool = False,
) -> PruneResult:
    """Delete ``consumed`` rows whose ``consumed_at`` is before ``older_than``, ``batch_size`` at a time.

    Never touches ``pending``, ``published`` or ``dead`` rows. Each batch is its own short
    transaction, so no lock is held for longer than one batch and concurrent relays and consumers
    keep going; ``conn`` must therefore not be inside a transaction. A redelivered Kafka message
    whose row was pruned finds no row and is skipped, so pruning never causes a second effect.
    ``dry_run`` only counts.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if conn.is_in_transaction():
        raise ValueError("prune_consumed runs its own short transactions; call it outside one")
    async with driver_errors("outbox prune"):
        if dry_run:
            return PruneResult(int(await conn.fetchval(sql.COUNT_PRUNABLE, older_than)), 0, older_than)
        rows = batches = 0
        while True:
            status = await conn.execute(sql.PRUNE_CONSUMED, older_than, batch_size)
            deleted = int(status.rsplit(" ", 1)[-1])  # "DELETE n"
            if deleted == 0:
                break
            rows += deleted
            batches += 1
            if deleted < batch_size:
                break
    return PruneResult(rows, batches, older_than)


class ReplaySelectorError(SmartflowError):
    """``replay_dead`` needs ids, an event type or ``all=True``: replaying everything by accident is wrong."""


async def replay_dead(
    conn: Any,
    *,
    ids: Sequence[int] | None = None,
    event_type: str | None = None,
    all: bool = False,  # the CLI flag's name, kept for the operational contract
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[int]:
    """Send ``dead`` rows back to ``pending`` (attempts reset, due now); returns the ids (would be) replayed.

    Select by ``ids``, by ``event_type`` (both narrow), or every dead row with ``all=True``.
    ``dry_run`` only lists. Replayed rows keep their id, so per-key order among them is kept.
    """
    if not ids and event_type is None and not all:
        raise ReplaySelectorError("choose ids, an event type, or all=True")
    id_list = list(ids) if ids else None
    async with driver_errors("replay dead events"):
        if dry_run:
            return [int(r["id"]) for r in await conn.fetch(sql.SELECT_DEAD, id_list, event_type)]
        async with conn.transaction():
            records = await conn.fetch(sql.REPLAY_DEAD, id_list, event_type, now or utcnow())
            if records:
                await conn.execute(sql.NOTIFY_SHARDS, NOTIFY_CHANNEL, sorted({r["shard"] for r in records}))
    return sorted(int(r["id"]) for r in records)
