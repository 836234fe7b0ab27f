"""The consumer service: runs registered handlers for outbox events arriving from Kafka.

Built by the process layer for the ``consumer``, ``worker`` and ``all`` roles (never ``api``).
Per poll and partition: parse the envelopes, then :func:`~.consume_store.consume_batch` applies
the partition's records in one transaction on one connection: it locks their outbox rows at
once, skips rows already ``consumed``/``dead`` (a redelivery has no second effect), runs the
handlers in offset order and marks the rows consumed. A failing handler sends its row back to
``pending`` with backoff (the relay re-publishes it) or to ``dead`` without undoing the other
records' effects; either way the offset moves on, so a poison message never blocks its
partition. Offsets are committed only after the batches' transactions committed; when the
database fails, nothing of the batch is durable and the same records are retried.

Partitions of one poll are processed concurrently, each in offset order. A small poll (at most
``merge_partitions_up_to`` records, default 100) is applied in one transaction across its
partitions instead, still each partition in offset order: at moderate rates a poll holds a few
records per partition, and every transaction costs its pool borrow, ``BEGIN``, lock, mark and
``COMMIT`` whatever its size. The contract per event is the same (lock, skip if done, handle,
mark consumed; offsets committed only after the commit); a DB failure retries the whole poll.

Rebalancing: aiokafka 0.14 implements only the eager JoinGroup protocol; it has no cooperative
incremental rebalancing (KIP-429) and no KIP-848 consumer protocol. What we do with what it has:

- exactly **one** assignment strategy, ``StickyPartitionAssignor``: after a rebalance, members
  keep the partitions they had, so scale-up/down moves only the partitions that must move and
  warm members keep working on theirs. Only one, because aiokafka 0.14 sends one JoinGroup *per
  configured strategy* on every (re)join (``perform_group_join`` loops over the assignors and
  sends the growing protocol list each time). The second JoinGroup reaches the broker after the
  first one completed the generation, i.e. while the group is ``CompletingRebalance``, with
  different protocol metadata, and the broker answers that with a new rebalance ("Updating
  metadata for member ... during CompletingRebalance"). With two members starting or rejoining
  together each one's second join restarts the other's rebalance: the livelock of issue 13
  (hundreds of generations a minute, nothing consumed). With one strategy each rejoin is one
  JoinGroup, and a member's metadata changes only between generations (the sticky user data is
  the assignment it last received), which the broker accepts without another rebalance.
- a rebalance listener whose ``on_partitions_revoked`` waits for the in-flight batch to finish
  and commit, so the pause is bounded by one batch and nothing is handled twice needlessly
  (a batch that cannot reach the database gives up instead, uncommitted, so an outage does not
  hold the whole group's rebalance); ``smartflow_consumer_rebalances_total`` counts assignments;
- ``stop()`` finishes the current batch per partition, commits, and leaves the group
  explicitly (LeaveGroup), so the rebalance starts at once instead of after the session timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

from ..errors import (
    DatabaseError,
    EnvelopeError,
    KafkaRejectedError,
    KafkaUnavailableError,
    UnknownEventTypeError,
)
from ..handlers.registry import EventHandler, HandlerRegistry
from ..metrics import RuntimeMetrics
from ..readiness import CONSUMER_GROUP, DATABASE, KAFKA, DependencyStatus, Unready
from . import store
from .consume_store import BatchMessage, consume_batch
from .kafka import KafkaWatch, build_consumer, default_client_id, wrap_kafka_error
from .model import BackoffPolicy, OutboxRow, outage_retry_seconds, outbox_id_of, parse_envelope

log = logging.getLogger(__name__)

_UNKNOWN_TYPE = "unknown"
"""The ``event_type`` label of a message too broken to tell its type."""

_KAFKA_STOP_SECONDS = 5.0
"""How long closing a Kafka consumer may take; one that lost its broker is abandoned after it."""
_COMMIT_TIMEOUT_SECONDS = 10.0
"""An offset commit waits for the group coordinator; while the broker is gone it would wait forever.
A commit given up is harmless: effects are durable and idempotent, the messages come again."""


def _assignors() -> tuple[type, ...]:
    """The one assignment strategy (see the module docstring for why never more than one), with
    sticky state private to one consumer.

    aiokafka's StickyPartitionAssignor keeps the member's previous assignment in *class*
    attributes, so two consumers in one process (the tests, or a future multi-consumer role)
    would report each other's partitions. A fresh subclass per consumer isolates that state.
    """
    sticky = type(
        "IsolatedStickyPartitionAssignor",
        (StickyPartitionAssignor,),
        {"member_assignment": None, "generation": StickyPartitionAssignor.DEFAULT_GENERATION_ID},
    )
    return (sticky,)


class _DrainOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        consumer = self._consumer
        consumer._deps.down(CONSUMER_GROUP, "rebalancing")
        # The batch in flight commits its own offsets before releasing the lock; one stuck on an
        # unreachable database gives up (nothing of it is durable or committed).
        consumer._revoke_pending = True
        try:
            async with consumer._batch_lock:
                await consumer._committed()  # the last batch's offsets, before others own them
                log.info("partitions revoked", extra={"partitions": sorted(str(tp) for tp in revoked)})
        finally:
            consumer._revoke_pending = False

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        consumer = self._consumer
        consumer._deps.up(CONSUMER_GROUP)
        consumer._metrics.consumer_rebalances.inc()
        log.info("partitions assigned", extra={"partitions": sorted(str(tp) for tp in assigned)})


class Consumer:
    """Outbox consumer; ``await start()``, ``await stop()`` (drains, idempotent), ``is_healthy()``.

    Keyword arguments:
        pool: asyncpg pool; one connection per partition batch in flight.
        bootstrap_servers: Kafka ``host:port[,host:port]``.
        topic: the outbox topic to subscribe to.
        group_id: the consumer group.
        registry: :class:`HandlerRegistry` (build it with ``handlers.build_registry``).
        metrics: :class:`RuntimeMetrics` to report into.
        client_id: Kafka client id (default: host, pid and a random suffix).
        backoff: :class:`BackoffPolicy` applied when a handler fails (default 1 s doubling, cap 32 s).
        clock: ``() -> aware datetime`` for ``consumed_at`` and backoff due times.
        max_poll_records: records fetched per poll (default 500).
        poll_timeout_ms: how long one poll waits for records (default 500); bounds stop latency.
        db_retry_seconds: pause before retrying a message when the database is unavailable.
        merge_partitions_up_to: a poll of at most this many records is applied in one transaction
            across its partitions (default 100; 0 keeps one transaction per partition always).
        consumer_options: extra aiokafka consumer options (``session_timeout_ms``, the security
            options...); auto commit is always off.
        commit_interval_seconds: offsets of handled batches are committed at most this often
            (default 0.1; 0 commits after every batch). An offset commit is the broker's dearest
            request (1.7 ms of its CPU against 1.1 ms for a one-message produce, measured here),
            and at moderate rates a batch is a few events; the database already holds what was
            consumed, so a later commit costs at most redeliveries the batch skips. Pending
            offsets are committed before partitions are revoked, on stop, and when the interval
            ends with no further batch.
    """

    def __init__(
        self,
        *,
        pool: Any,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        registry: HandlerRegistry,
        metrics: RuntimeMetrics,
        client_id: str | None = None,
        backoff: BackoffPolicy | None = None,
        clock: Callable[[], datetime] = store.utcnow,
        max_poll_records: int = 500,
        poll_timeout_ms: int = 500,
        db_retry_seconds: float = 1.0,
        consumer_options: Mapping[str, Any] | None = None,
        merge_partitions_up_to: int = 100,
        commit_interval_seconds: float = 0.1,
    ) -> None:
        if merge_partitions_up_to < 0:
            raise ValueError("merge_partitions_up_to must be >= 0")
        if commit_interval_seconds < 0:
            raise ValueError("commit_interval_seconds must be >= 0")
        self._commit_interval = commit_interval_seconds
        self._merge_up_to = merge_partitions_up_to
        self.client_id = client_id or default_client_id("consumer")
        self._pool = pool
        self._bootstrap_servers = bootstrap_servers
        self._topic = topic
        self._group_id = group_id
        self._registry = registry
        self._metrics = metrics
        self._backoff = backoff or BackoffPolicy()
        self._clock = clock
        self._max_poll_records = max_poll_records
        self._poll_timeout_ms = poll_timeout_ms
        self._db_retry_seconds = db_retry_seconds
        self._options = dict(consumer_options or {})
        self._kafka: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._batch_lock = asyncio.Lock()
        self._commit_task: asyncio.Task[None] | None = None  # the committer (see _commit_pending)
        self._pending_offsets: dict[TopicPartition, int] = {}  # handled, not yet committed
        self._commit_now = asyncio.Event()  # ends the committer's wait for the interval
        self._last_commit = 0.0
        self._last_progress = 0.0
        self._deps = DependencyStatus()
        self._revoke_pending = False
        self._watch = KafkaWatch(
            deps=self._deps, probe=self._probe_kafka, name=f"consumer {self.client_id} kafka"
        )
        self._stopped = False

    async def start(self) -> None:
        """Start the loop. Idempotent. Does not wait for Kafka: the loop creates the Kafka consumer,
        joins the group, and re-creates it after a loss, while :meth:`unready` names what is down."""
        if self._task is not None:
            return
        self._deps.down(KAFKA, "consumer not connected yet")
        self._deps.down(CONSUMER_GROUP, "joining")
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.client_id}")
        self._watch.start()
        log.info("consumer started", extra={"group": self._group_id, "topic": self._topic})

    async def stop(self) -> None:
        """Finish the batch in flight per partition, commit, leave the group. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        await self._watch.stop()
        await self._drop_kafka()  # commits the last batch's offsets, sends LeaveGroup

    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this member owns now (empty while not connected or rebalancing)."""
        return frozenset(self._kafka.assignment()) if self._kafka is not None else frozenset()

    def is_alive(self) -> bool:
        """True while the loop and its Kafka watch run (outages never end them; a bug or stop() does)."""
        return self._task is not None and not self._task.done() and self._watch.is_alive()

    def unready(self) -> tuple[Unready, ...]:
        """Dependencies down right now (``kafka``, ``database``, ``consumer-group`` while rebalancing)."""
        return self._deps.unready()

    def is_healthy(self) -> bool:
        """Alive with every dependency up."""
        return self.is_alive() and not self._deps.unready()

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._recreate_after_long_outage()
                await self._ensure_kafka()
                batch = await self._kafka.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_poll_records
                )
                self._last_progress = time.monotonic()
                if batch:
                    await self._process(batch)
                failures = 0
            except Exception as error:  # keep consuming: an outage makes the consumer unready, never dead
                failures += 1
                await self._on_cycle_error(error, failures)
                if self._kafka is not None:
                    # Records fetched but not handled must come again: rewind to the committed
                    # offsets. Offsets handled but not yet committed are forgotten (what they
                    # cover comes again and is skipped as done), so no commit moves backwards.
                    self._pending_offsets.clear()
                    with contextlib.suppress(Exception):
                        await self._kafka.seek_to_committed()
                pause = outage_retry_seconds(failures, cap=self._db_retry_seconds * 2)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._stopping.wait()

    async def _on_cycle_error(self, error: Exception, failures: int) -> None:
        """Record the failed dependency (by the error's type); after repeated Kafka failures, or a
        broker outage longer than the session (the broker dropped us anyway), re-create the client."""
        if isinstance(error, DatabaseError):
            self._deps.down(DATABASE, str(error))
            return
        kafka_error = wrap_kafka_error(error)
        if isinstance(kafka_error, KafkaUnavailableError | KafkaRejectedError):
            if not self._deps.is_down(KAFKA):
                log.warning("consumer: Kafka unavailable: %s", kafka_error)
            self._deps.down(KAFKA, str(kafka_error))
            if failures >= 3 and self._kafka is not None:
                log.warning("consumer: re-creating the Kafka consumer after %d failures in a row", failures)
                await self._drop_kafka()
            return
        log.exception("consumer cycle failed: %s", error)

    async def _ensure_kafka(self) -> None:
        """Create, subscribe and start a Kafka consumer when there is none (first cycle, after a loss)."""
        if self._kafka is not None:
            return
        options: dict[str, Any] = {"auto_offset_reset": "earliest", "session_timeout_ms": 10000}
        options.update(self._options)
        options.update({"enable_auto_commit": False, "partition_assignment_strategy": _assignors()})
        kafka = build_consumer(
            self._bootstrap_servers, group_id=self._group_id, client_id=self.client_id, options=options
        )
        kafka.subscribe([self._topic], listener=_DrainOnRevoke(self))
        try:
            await kafka.start()
        except Exception as error:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_KAFKA_STOP_SECONDS):
                    await kafka.stop()
            raise wrap_kafka_error(error) from error
        self._kafka = kafka
        self._deps.up(KAFKA)
        log.info("consumer connected to Kafka", extra={"group": self._group_id})

    async def _drop_kafka(self) -> None:
        await self._committed()
        kafka, self._kafka = self._kafka, None
        if kafka is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_KAFKA_STOP_SECONDS):
                    await kafka.stop()  # commits nothing (auto commit off), sends LeaveGroup

    async def _probe_kafka(self) -> bool:
        """The :class:`KafkaWatch` probe: a metadata round trip on the current Kafka client."""
        kafka = self._kafka
        if kafka is None:
            return False
        await kafka.topics()
        return True

    async def _recreate_after_long_outage(self) -> None:
        """After the broker was unreachable for longer than the session, the broker has dropped this
        member anyway: start over with a fresh client instead of nursing the old one's state."""
        outage = self._watch.take_outage()
        if outage is not None and outage > self._options.get("session_timeout_ms", 10000) / 1000:
            log.warning("consumer: broker unreachable for %.0fs; re-creating the Kafka consumer", outage)
            await self._drop_kafka()

    async def _process(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> None:
        async with self._batch_lock:
            assigned = self._kafka.assignment()
            work = {tp: records for tp, records in batch.items() if tp in assigned}
            total = sum(len(r) for r in work.values())
            self._metrics.consumer_batch_size.observe(total)
            if len(work) > 1 and total <= self._merge_up_to:
                groups = [list(work.values())]
            else:
                groups = [[records] for records in work.values()]
            done = await asyncio.gather(*(self._process_partitions(group) for group in groups))
            offsets = {tp: offset for found in done for tp, offset in found.items()}
            if offsets:
                self._pending_offsets.update(offsets)
                self._start_committer()

    def _start_committer(self) -> None:
        if self._pending_offsets and (self._commit_task is None or self._commit_task.done()):
            self._commit_task = asyncio.create_task(self._commit_pending(), name="offset commit")

    async def _commit_pending(self) -> None:
        """The committer: one task at a time commits the pending offsets, at most once per
        ``commit_interval_seconds``, until none are left (it never raises: see :meth:`_commit`).

        Offsets are committed while the next poll and batch go on: the commit is a round trip to
        the group coordinator, and waiting for it before polling again put that round trip into
        every event's latency (at moderate rates the loop runs back to back). One committer means
        commits land in order; the offsets only move forward and follow the batches' database
        commits, so a commit not yet made costs at most a redelivery, which the batch skips as
        already done."""
        while self._pending_offsets:
            wait = self._last_commit + self._commit_interval - time.monotonic()
            if wait > 0 and not self._commit_now.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._commit_now.wait()
            offsets, self._pending_offsets = self._pending_offsets, {}
            self._last_commit = time.monotonic()
            await self._commit(offsets)

    async def _committed(self) -> None:
        """Commit the pending offsets now and wait until they are (a revoke, a stop and a dropped
        client call this, so the next owner of a partition starts after what was handled)."""
        self._commit_now.set()  # the committer skips its wait for the interval
        try:
            self._start_committer()
            task, self._commit_task = self._commit_task, None
            if task is not None:
                await task  # it runs until nothing is pending
        finally:
            self._commit_now.clear()

    async def _process_partitions(self, partitions: Sequence[Sequence[Any]]) -> dict[TopicPartition, int]:
        """Apply the records of ``partitions`` (each in offset order) in one transaction; returns the
        offsets to commit (next to read) per partition, none when stopping before the outcome was
        durable."""
        partitions = [records for records in partitions if records]
        if not partitions or self._stopping.is_set():
            return {}
        messages: list[BatchMessage] = []
        undecodable = 0
        for records in partitions:
            decoded, skipped = self._decode(records)
            messages += decoded
            undecodable += skipped
        while True:
            try:
                await self._consume(messages)
                self._deps.up(DATABASE)
                break
            except Exception as error:
                # Nothing of the batch was recorded (database unreachable, a bug before the
                # handlers): retry the same records instead of skipping them.
                if isinstance(error, DatabaseError):
                    self._deps.down(DATABASE, str(error))
                log.warning("could not record the outcome of a batch; retrying it: %s", error)
                if self._stopping.is_set() or self._revoke_pending:
                    # Not durable, not committed: whoever owns the partition next reads it again.
                    for records in partitions:
                        self._rewind(records[0])
                    return {}
                await asyncio.sleep(self._db_retry_seconds)
        if undecodable:
            self._metrics.events_skipped.labels("bad_envelope").inc(undecodable)
        self._last_progress = time.monotonic()
        return {TopicPartition(r[-1].topic, r[-1].partition): int(r[-1].offset) + 1 for r in partitions}

    def _rewind(self, first: Any) -> None:
        with contextlib.suppress(Exception):  # not ours any more after the rebalance: nothing to do
            self._kafka.seek(TopicPartition(first.topic, first.partition), first.offset)

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            async with asyncio.timeout(_COMMIT_TIMEOUT_SECONDS):
                await self._kafka.commit(dict(offsets))
            self._metrics.consumer_offset_commits.labels("ok").inc()
        except Exception as error:
            self._metrics.consumer_offset_commits.labels("failed").inc()
            # Effects are durable and idempotent: a lost commit only means a harmless redelivery.
            log.warning("offset commit failed (messages will be redelivered): %s", wrap_kafka_error(error))

    def _decode(self, records: Sequence[Any]) -> tuple[list[BatchMessage], int]:
        """Batch messages for ``records``, and how many carried no outbox id at all (skipped)."""
        messages: list[BatchMessage] = []
        undecodable = 0
        for record in records:
            try:
                envelope = parse_envelope(record.value)
            except EnvelopeError as error:
                outbox_id = outbox_id_of(record.value)
                if outbox_id is None:
                    undecodable += 1
                    log.warning("skipped a message that is not an outbox envelope: %s", error)
                else:
                    messages.append(BatchMessage(outbox_id, _UNKNOWN_TYPE, envelope_error=str(error)))
                continue
            event_type = envelope.event_type
            messages.append(
                BatchMessage(
                    envelope.outbox_id,
                    event_type,
                    handler=self._handler_for(event_type),
                    bulk=self._registry.bulk_handler_for(event_type),
                    event_id=envelope.event_id,
                )
            )
        return messages, undecodable

    async def _consume(self, messages: Sequence[BatchMessage]) -> None:
        """One transaction for ``messages`` on one connection, then their metrics.

        Raises :class:`~smartflow_runtime.errors.DatabaseError` when nothing could be recorded.
        """
        if not messages:
            return
        started = time.perf_counter()
        async with store.driver_errors("consume batch"), self._pool.acquire() as conn:
            outcomes = await consume_batch(conn, messages, now=self._clock(), backoff=self._backoff)
        share = (time.perf_counter() - started) / len(messages)
        handled: Counter[str] = Counter()
        consumed: Counter[str] = Counter()
        for message, outcome in zip(messages, outcomes, strict=True):
            if message.envelope_error is not None:
                self._record_bad_envelope(outcome)
                continue
            if outcome.result is not store.ConsumeResult.SKIPPED:
                handled[message.event_type] += 1
            if outcome.result is store.ConsumeResult.CONSUMED:
                consumed[message.event_type] += 1  # the common case, counted per type below
            else:
                self._record(outcome, message.event_type, message.event_id)
        for event_type, n in consumed.items():
            self._metrics.events_consumed.labels(event_type).inc(n)
        for event_type, n in handled.items():
            latency = self._metrics.handler_latency.labels(event_type)
            for _ in range(n):
                latency.observe(share)

    def _record_bad_envelope(self, outcome: store.ConsumeOutcome) -> None:
        if outcome.result is store.ConsumeResult.DEAD:
            self._metrics.events_dead.labels("consumer", _UNKNOWN_TYPE).inc()
        else:
            self._metrics.events_skipped.labels("bad_envelope").inc()

    def _handler_for(self, event_type: str) -> EventHandler:
        """The registered handler, or one that fails permanently so the row goes dead with the reason."""
        try:
            return self._registry.handler_for(event_type)
        except UnknownEventTypeError as unknown:
            reason = unknown

        async def unknown_type(conn: Any, row: OutboxRow) -> None:
            raise reason

        return unknown_type

    def _record(self, outcome: store.ConsumeOutcome, event_type: str, event_id: uuid.UUID | None) -> None:
        result = outcome.result
        if result is store.ConsumeResult.CONSUMED:
            self._metrics.events_consumed.labels(event_type).inc()
        elif result is store.ConsumeResult.SKIPPED:
            self._metrics.events_skipped.labels("already_done").inc()
        elif result is store.ConsumeResult.MISSING:
            self._metrics.events_skipped.labels("no_such_row").inc()
            log.warning("no outbox row for event %s; skipped", event_id)
        elif result is store.ConsumeResult.RETRY:
            self._metrics.events_failed.labels("consumer", event_type).inc()
            log.warning("handler failed, will retry: %s: %s", event_type, outcome.error)
        else:
            self._metrics.events_dead.labels("consumer", event_type).inc()
            log.error("event went dead: %s: %s", event_type, outcome.error)
