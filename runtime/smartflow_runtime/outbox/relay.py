"""The relay service: moves due outbox rows from PostgreSQL to Kafka, safely with many replicas.

Built by the process layer for the ``relay``, ``worker`` and ``all`` roles. How it stays correct
when replicas come and go:

- **Shards.** Rows carry ``shard = crc32(message_key) mod N`` (N fixed at migrate time). Each relay
  leases whole shards in ``outbox_shards`` (owner + ``lease_until``) and renews them every third
  of a lease. A relay that dies stops renewing; after the lease its shards are taken over.
- **Fair share.** Relays heartbeat into ``outbox_relays``; each targets ``ceil(N / live relays)``
  shards, releases the surplus (between batches, never mid-batch) and acquires free or expired
  shards up to its target. A release is NOTIFYed so the taker does not wait for its next tick.
- **Order.** One relay publishes a shard's rows in id order, one batch at a time, holding row
  locks until Kafka acked and the rows are marked published. A new owner's claim waits on those
  locks (plain ``FOR UPDATE``), so it cannot overtake a stale owner's in-flight batch.
- **Lanes.** A relay splits its leased shards into ``lanes`` disjoint groups (round-robin over
  the sorted shard numbers) and runs one claim-send-mark loop per group concurrently, each on
  its own connection and transaction: one lane's Kafka round trip overlaps another's claim. A
  shard belongs to one lane, so the order rule above holds per lane. The lanes stop between
  batches when a rebalance is due; shards change hands only while no lane runs. A NOTIFY names
  its row's shard, so after a wake-up by NOTIFY only the lanes holding a notified shard claim;
  after a poll, a rebalance or a lane that may have left rows, every lane does. A wake-up by
  fewer NOTIFYs than a lane's share of a batch (``batch_size / lanes``) runs the notified lanes
  as one loop for that cycle (:func:`~.model.lanes_for_notified`): at moderate rates one claim
  then carries every notified row instead of one tiny batch per lane.
- **Sending.** A batch goes out with aiokafka's batch API (:func:`~.kafka.send_batched`): per
  partition, in id order, one closed batch and one future per partition instead of per row.
- **Wake-ups.** ``LISTEN`` on the outbox channel (writers NOTIFY on commit) plus a fallback poll
  for rows whose backoff expires. After a NOTIFY the relay lingers a few milliseconds (or until a
  batch's worth of NOTIFYs arrived) before claiming, so under load one batch carries many rows
  instead of one per commit, while at low rates an event waits at most the linger.
  With ``listen_notify=False`` the relay opens no LISTEN
  connection and wakes only on the poll (and rebalances only on its lease tick): for poolers that
  cannot LISTEN (PgBouncer in transaction mode) and for comparing the two in benchmarks.
- **Failures.** Kafka errors send rows back to ``pending`` with backoff (or ``dead`` at
  ``max_attempts`` or for a permanent rejection); rows are marked published only after the ack.
  When a whole batch failed because the broker is unreachable, the claim is rolled back instead
  (no attempt counted) and the producer is re-created.
- **Outages.** Nothing here ends the loop: a lost broker or database makes the relay unready
  (:meth:`Relay.unready` names it and since when); the loop retries every 0.2-2 s, re-creates the
  producer and the LISTEN connection, and is ready again after its first good cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from ..errors import DatabaseError, KafkaUnavailableError, SmartflowError
from ..metrics import RuntimeMetrics
from ..readiness import DATABASE, KAFKA, DependencyStatus, Unready
from . import store
from .kafka import (
    KafkaWatch,
    Record,
    build_producer,
    default_client_id,
    max_request_size,
    send_batched,
    wrap_kafka_error,
)
from .model import (
    NOTIFY_CHANNEL,
    SHARDS_CHANNEL,
    BackoffPolicy,
    Envelope,
    OutboxRow,
    lane_groups,
    lanes_for_notified,
    merge_lanes,
    outage_retry_seconds,
    shard_target,
)

log = logging.getLogger(__name__)

_PRODUCER_STOP_SECONDS = 5.0
"""How long stopping a producer may take; one that lost its broker is abandoned after it."""


class Relay:
    """Outbox relay; ``await start()``, ``await stop()`` (drains, idempotent), ``is_healthy()``.

    Keyword arguments:
        pool: asyncpg pool. The relay holds one connection for LISTEN and borrows one per batch.
        bootstrap_servers: Kafka ``host:port[,host:port]``. Rows go to the topic stored on each row.
        metrics: :class:`RuntimeMetrics` to report into.
        relay_id: unique per replica (default: host, pid and a random suffix); the shard lease owner.
        batch_size: rows claimed and sent per batch (default 500).
        lease_seconds: shard lease and heartbeat lifetime; renewed every third of it (default 15).
        poll_interval_seconds: fallback poll when no NOTIFY arrives (default 2); with
            ``listen_notify=False`` the only wake-up, so it bounds the added publish latency.
        listen_notify: LISTEN for new-row and shard-release notifications (default True).
        notify_linger_seconds: after a new-row NOTIFY, wait up to this long (or until
            ``batch_size`` NOTIFYs arrived) before claiming, so batches grow under load (default
            0.005; 0 claims at once).
        backoff: :class:`BackoffPolicy` for Kafka failures (default 1 s doubling, cap 32 s).
        clock: ``() -> aware datetime``; every lease and due-time decision uses it.
        producer_options: extra aiokafka producer options (``linger_ms``, ``max_request_size``...);
            ``acks=all`` and ``enable_idempotence`` are always forced.
        stats_interval_seconds: how often to refresh the outbox backlog gauges from
            :func:`~.store.stats` (default 15; None disables).
        send_timeout_seconds: how long a batch waits for Kafka's acks (default 10); after it the
            claim is rolled back un-counted and the producer re-created (the broker is gone).
        lanes: concurrent claim-send-mark loops over disjoint groups of the leased shards, each
            with its own pooled connection (default 1: one batch at a time). More lanes than
            shards held run as many lanes as shards.
    """

    def __init__(
        self,
        *,
        pool: Any,
        bootstrap_servers: str,
        metrics: RuntimeMetrics,
        relay_id: str | None = None,
        batch_size: int = 500,
        lease_seconds: float = 15.0,
        poll_interval_seconds: float = 2.0,
        listen_notify: bool = True,
        notify_linger_seconds: float = 0.005,
        backoff: BackoffPolicy | None = None,
        clock: Callable[[], datetime] = store.utcnow,
        producer_options: Mapping[str, Any] | None = None,
        stats_interval_seconds: float | None = 15.0,
        send_timeout_seconds: float = 10.0,
        lanes: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if lease_seconds <= 0 or poll_interval_seconds <= 0:
            raise ValueError("lease_seconds and poll_interval_seconds must be > 0")
        if notify_linger_seconds < 0:
            raise ValueError("notify_linger_seconds must be >= 0")
        if lanes < 1:
            raise ValueError("lanes must be >= 1")
        self._lanes = lanes
        self.relay_id = relay_id or default_client_id("relay")
        self._pool = pool
        self._bootstrap_servers = bootstrap_servers
        self._metrics = metrics
        self._batch_size = batch_size
        self._lease = timedelta(seconds=lease_seconds)
        self._tick_seconds = lease_seconds / 3
        self._poll_seconds = poll_interval_seconds
        self._listen_notify = listen_notify
        self._linger_seconds = notify_linger_seconds
        self._backoff = backoff or BackoffPolicy()
        self._clock = clock
        self._producer_options = dict(producer_options or {})
        self._max_request_size = max_request_size(self._producer_options)
        self._stats_interval = stats_interval_seconds
        self._send_timeout = send_timeout_seconds
        self._producer: Any = None
        self._listen_conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._notified = 0  # new-row NOTIFYs since the last claim
        self._notified_shards: set[int] = set()  # their shards (the NOTIFY payload)
        self._claim_all = True  # the next cycle claims on every lane (start, poll, rebalance, leftovers)
        self._batch_full = asyncio.Event()  # set once a batch's worth of them arrived
        self._rebalance_now = False
        self._owned: set[int] = set()
        self._shard_count: int | None = None
        self._last_cycle_ok = 0.0
        self._deps = DependencyStatus()
        self._watch = KafkaWatch(
            deps=self._deps, probe=self._probe_kafka, name=f"relay {self.relay_id} kafka"
        )
        self._stopped = False

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def owned_shards(self) -> frozenset[int]:
        """Shards this relay believed it leased after its last rebalance."""
        return frozenset(self._owned)

    async def start(self) -> None:
        """Start the loop. Idempotent. Does not wait for Kafka or PostgreSQL: the loop connects the
        producer and the LISTEN connection itself, and re-creates them after a loss, while
        :meth:`unready` names what is down."""
        if self._task is not None:
            return
        self._last_cycle_ok = time.monotonic()
        self._deps.down(KAFKA, "producer not connected yet")
        self._task = asyncio.create_task(self._run(), name=f"relay:{self.relay_id}")
        self._watch.start()
        log.info("relay started", extra={"relay_id": self.relay_id, "listen_notify": self._listen_notify})

    async def stop(self) -> None:
        """Stop claiming, finish the in-flight batch, release leases, leave. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        await self._watch.stop()
        try:
            async with store.connection(self._pool, "relay release") as conn:
                released = await store.release_shards(conn, self.relay_id)
                await store.leave(conn, self.relay_id)
            log.info("relay released shards", extra={"relay_id": self.relay_id, "shards": sorted(released)})
        except SmartflowError as error:  # leases expire on their own; others take over later
            log.warning("relay could not release its shards: %s", error)
        self._owned = set()
        self._metrics.relay_shards_owned.set(0)
        await self._unlisten()
        await self._drop_producer()

    def is_alive(self) -> bool:
        """True while the loop and its Kafka watch run (outages never end them; a bug or stop() does)."""
        return self._task is not None and not self._task.done() and self._watch.is_alive()

    def unready(self) -> tuple[Unready, ...]:
        """Dependencies the loop found down (``kafka``, ``database``), each with its reason and since."""
        return self._deps.unready()

    def is_healthy(self) -> bool:
        """Alive with every dependency up."""
        return self.is_alive() and not self._deps.unready()

    async def __aenter__(self) -> Relay:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # --- LISTEN/NOTIFY --------------------------------------------------------------------------

    def _on_rows(self, _conn: object, _pid: object, _channel: object, payload: object) -> None:
        try:
            self._notified_shards.add(int(str(payload)))
        except ValueError:  # not a shard number: look everywhere
            self._claim_all = True
        self._notified += 1
        if self._notified >= self._batch_size:
            self._batch_full.set()
        self._wake.set()

    def _on_shards(self, *_: object) -> None:
        self._rebalance_now = True
        self._wake.set()

    async def _listen(self) -> None:
        if not self._listen_notify:
            return
        conn = await self._pool.acquire()
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_rows)
            await conn.add_listener(SHARDS_CHANNEL, self._on_shards)
        except BaseException:
            await self._pool.release(conn)
            raise
        self._listen_conn = conn

    async def _unlisten(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.remove_listener(NOTIFY_CHANNEL, self._on_rows)
            await conn.remove_listener(SHARDS_CHANNEL, self._on_shards)
        with contextlib.suppress(Exception):
            await self._pool.release(conn)

    async def _ensure_listening(self) -> None:
        """(Re)open the LISTEN connection when there is none or it was lost (a PostgreSQL restart
        closes it and the pool takes the proxy back; see :func:`~.store.connection_usable`)."""
        if not self._listen_notify:
            return
        if self._listen_conn is not None and store.connection_usable(self._listen_conn):
            return
        if self._listen_conn is not None:
            log.warning("relay LISTEN connection lost; reconnecting", extra={"relay_id": self.relay_id})
        await self._unlisten()
        async with store.driver_errors("relay listen"):
            await self._listen()
        # Rows committed while we were not listening sent NOTIFYs nobody heard: look now.
        self._rebalance_now = True
        self._claim_all = True
        self._wake.set()

    # --- the producer ---------------------------------------------------------------------------

    async def _ensure_producer(self) -> None:
        """Start a producer when there is none (first cycle, or after :meth:`_drop_producer`)."""
        if self._producer is not None:
            return
        producer = build_producer(self._bootstrap_servers, self.relay_id, self._producer_options)
        try:
            await producer.start()
        except Exception as error:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_PRODUCER_STOP_SECONDS):
                    await producer.stop()
            raise wrap_kafka_error(error) from error
        self._producer = producer
        self._deps.up(KAFKA)
        log.info("relay producer connected", extra={"relay_id": self.relay_id})

    async def _drop_producer(self) -> None:
        """Stop and forget the producer (after a broker loss, or on stop); the next cycle builds a new one."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_PRODUCER_STOP_SECONDS):
                    await producer.stop()

    async def _probe_kafka(self) -> bool:
        """The :class:`KafkaWatch` probe: a metadata round trip on the current producer's client."""
        producer = self._producer
        if producer is None:
            return False
        await producer.client.fetch_all_metadata()
        return True

    # --- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        next_rebalance = 0.0
        next_stats = 0.0
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()
            notified_rows, self._notified = self._notified, 0
            notified, self._notified_shards = self._notified_shards, set()
            claim_all, self._claim_all = self._claim_all or not self._listen_notify, False
            self._batch_full.clear()
            more = False
            try:
                await self._ensure_producer()
                await self._ensure_listening()
                reached_db = False
                if self._rebalance_now or time.monotonic() >= next_rebalance:
                    self._rebalance_now = False
                    await self._rebalance()
                    next_rebalance = time.monotonic() + self._tick_seconds
                    reached_db = True
                    claim_all = True  # shards may have changed hands, and leases were just renewed
                if self._stats_interval is not None and time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + self._stats_interval
                    async with store.connection(self._pool, "relay stats") as conn:
                        self._metrics.observe_stats(await store.stats(conn, self._clock()))
                # While the watch sees no broker, claiming would only lock rows until the send times out.
                if self._owned and not self._deps.is_down(KAFKA):
                    more = await self._publish_lanes(
                        next_rebalance, None if claim_all else notified, notified_rows
                    )
                    self._claim_all = self._claim_all or more
                    reached_db = True
                if reached_db:
                    self._deps.up(DATABASE)
                self._last_cycle_ok = time.monotonic()
                failures = 0
            except Exception as error:  # keep the loop alive: an outage makes the relay unready, never dead
                failures += 1
                self._claim_all = True
                await self._on_cycle_error(error)
                await self._sleep(outage_retry_seconds(failures, cap=min(self._poll_seconds, 2.0)))
                continue
            if more:
                continue
            await self._sleep(max(0.0, min(self._poll_seconds, next_rebalance - time.monotonic())))

    async def _on_cycle_error(self, error: Exception) -> None:
        """Record which dependency failed (by the error's type); a Kafka loss also drops the producer."""
        if isinstance(error, KafkaUnavailableError):
            if not self._deps.is_down(KAFKA):
                log.warning("relay: Kafka unavailable: %s", error, extra={"relay_id": self.relay_id})
            self._deps.down(KAFKA, str(error))
            # Re-created on the next cycle: a producer that lost its broker may hold stale state.
            await self._drop_producer()
        elif isinstance(error, DatabaseError):
            if not self._deps.is_down(DATABASE):
                log.warning("relay: database unavailable: %s", error, extra={"relay_id": self.relay_id})
            self._deps.down(DATABASE, str(error))
        else:
            log.exception("relay cycle failed: %s", error, extra={"relay_id": self.relay_id})

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:  # the fallback poll: rows whose backoff expired sent no NOTIFY
            self._claim_all = True
        await self._linger()

    async def _linger(self) -> None:
        """After a new-row NOTIFY, let concurrent writers commit too, so one claim takes them all.

        Each committed write sends its own NOTIFY; claiming on the first would publish batches of
        one or two rows under load, and per-batch costs (transaction, claim, Kafka ack, mark) would
        dominate. Skipped when stopping or a rebalance is due.
        """
        if self._linger_seconds <= 0 or self._notified == 0 or self._batch_full.is_set():
            return
        if self._stopping.is_set() or self._rebalance_now:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._batch_full.wait(), timeout=self._linger_seconds)

    async def _rebalance(self) -> None:
        async with store.connection(self._pool, "relay rebalance") as conn:
            now = self._clock()
            if self._shard_count is None:
                self._shard_count = await store.shard_count(conn)
            live = await store.heartbeat(conn, self.relay_id, now=now, lease=self._lease)
            owned = await store.renew_leases(conn, self.relay_id, now=now, lease=self._lease)
            target = shard_target(self._shard_count, live)
            if len(owned) > target:
                surplus = sorted(owned)[target:]
                owned -= await store.release_shards(conn, self.relay_id, surplus)
            elif len(owned) < target:
                owned |= await store.acquire_shards(
                    conn, self.relay_id, now=now, lease=self._lease, limit=target - len(owned)
                )
        if owned != self._owned:
            log.info(
                "relay shards changed",
                extra={"relay_id": self.relay_id, "shards": sorted(owned), "live_relays": live},
            )
        self._owned = owned
        self._metrics.relay_shards_owned.set(len(owned))
        self._metrics.relay_shards.set(self._shard_count)

    async def _publish_lanes(
        self, next_rebalance: float, notified: set[int] | None, notified_rows: int = 0
    ) -> bool:
        """Run the lanes until their shards have no due rows or a rebalance/stop is due; True when
        due rows may remain. Only lanes holding a ``notified`` shard run, every lane when it is
        None; ``notified_rows`` NOTIFYs too few for several lanes run those lanes as one. A lane's
        error is raised after every lane finished its batch."""
        groups = lane_groups(self._owned, self._lanes)
        if notified is not None:
            groups = [g for g in groups if not g.isdisjoint(notified)]
            if not groups:
                return False
            wanted = lanes_for_notified(notified_rows, lanes=self._lanes, batch_size=self._batch_size)
            groups = merge_lanes(groups, wanted)
        if len(groups) == 1:
            return await self._publish_batch(groups[0])

        def stop_lane() -> bool:
            return self._stopping.is_set() or self._rebalance_now or time.monotonic() >= next_rebalance

        async def lane(shards: frozenset[int]) -> bool:
            while True:
                more = await self._publish_batch(shards)
                if not more or stop_lane():
                    return more

        results = await asyncio.gather(*(lane(g) for g in groups), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return any(results)

    async def _publish_batch(self, shards: frozenset[int]) -> bool:
        """Claim, send and mark one batch of ``shards`` in one transaction; True when due rows may remain."""
        async with (
            store.connection(self._pool, "relay batch") as conn,
            store.claim_transaction(conn, lock_timeout=self._lease / 2),
        ):
            rows = await store.claim_batch(
                conn, self.relay_id, shards, now=self._clock(), limit=self._batch_size
            )
            if not rows:
                return False
            more = store.claim_may_have_left_rows(rows, limit=self._batch_size, shards=len(shards))
            self._metrics.relay_batch_size.observe(len(rows))
            errors = await self._send(rows)
            now = self._clock()
            sent = [row for row, error in zip(rows, errors, strict=True) if error is None]
            failed = [(row, error) for row, error in zip(rows, errors, strict=True) if error is not None]
            if failed and not sent and all(isinstance(e, KafkaUnavailableError) for _, e in failed):
                # The broker is gone, not these rows: roll the claim back (no attempt counted, so a
                # long outage cannot send events dead) and let the loop re-create the producer.
                raise failed[0][1]
            if failed:
                await store.mark_published(conn, sent, now=now)
                outcome = await store.mark_failed(conn, failed, now=now, backoff=self._backoff)
            else:  # the common case: mark and commit in one round trip
                await store.mark_published_and_commit(conn, sent, now=now)
                outcome = store.FailureOutcome(frozenset(), frozenset())
        for event_type, count in Counter(row.event_type for row in sent).items():
            self._metrics.events_published.labels(event_type).inc(count)  # one labels() per type, not row
        for row, error in failed:
            counter = self._metrics.events_dead if row.id in outcome.dead else self._metrics.events_failed
            counter.labels("relay", row.event_type).inc()
            log.warning("relay send failed for outbox row %s: %s", row.id, error)
        if failed and not sent:
            # Nothing of the batch went through: do not trust this producer's state (e.g. its
            # idempotence sequence after a broker restart); the next cycle builds a new one.
            await self._drop_producer()
        return more

    async def _send(self, rows: Sequence[OutboxRow]) -> list[SmartflowError | None]:
        """Send every row (per partition in id order, so per-key order holds); one result per row."""
        records = [
            Record(row.topic, row.message_key.encode("utf-8"), Envelope.encode_row(row)) for row in rows
        ]
        deliveries = await send_batched(self._producer, records, max_request_size=self._max_request_size)
        futures = list({id(d): d for d in deliveries if isinstance(d, asyncio.Future)}.values())
        acked = asyncio.gather(*futures, return_exceptions=True)
        try:
            async with asyncio.timeout(self._send_timeout):
                outcomes = dict(zip(map(id, futures), await acked, strict=True))
        except TimeoutError as error:
            # The broker is gone (the producer would keep retrying until its own delivery timeout):
            # give the rows back un-counted and let the loop re-create the producer.
            raise KafkaUnavailableError(f"no acknowledgement within {self._send_timeout:.0f}s") from error
        errors: list[SmartflowError | None] = []
        for delivery in deliveries:
            if isinstance(delivery, SmartflowError):
                errors.append(delivery)
                continue
            result = outcomes[id(delivery)]
            errors.append(wrap_kafka_error(result) if isinstance(result, BaseException) else None)
        return errors
