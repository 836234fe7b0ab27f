"""Lag probes: measure the outbox backlog and the consumer-group lag directly at the source.

Called by the autoscaling loop (:mod:`.loop`) once per poll and role. Measuring at the source
(an asyncpg query, Kafka admin offsets) rather than asking the pods means scaling works from
zero replicas. Connections are reused across polls: :class:`Probes` keeps one small asyncpg pool
per distinct DSN and one Kafka client pair per bootstrap list, whatever the number of runtimes,
and closes them on shutdown; the topic metadata of a bootstrap list is shared by every read for
2 s (at 1,000 runtimes the all-topics metadata answer was the largest part of a poll's CPU).
Every failure is raised as a :class:`.errors.ProbeError` subclass with the driver's exception
chained; a failure is never reported as zero lag.

Connections carry the runtime's security (``spec.kafka.tls``/``sasl``, ``spec.database.tls``: a
:mod:`..connection_security` value, turned into SSL contexts and SASL options by :mod:`.tls`), and
the security is part of the sharing key: runtimes share a probe only when address *and* credentials
and certificates are equal, and a rotated password or certificate gives the runtime a new probe
(the old one is closed once no runtime uses it). A refused login or a failed certificate check is a
typed error (``KafkaAuthenticationFailed``, ``KafkaTLSFailed``, ``DatabaseAuthenticationFailed``,
``DatabaseTLSFailed``), reported in the role's condition like any other probe failure.

A probe is shared by every runtime on the same database or bootstrap list, and their loops poll
concurrently: ``start``/``stop`` run under the probe's lock (concurrent first polls create one
pool / one client pair), and a failed Kafka read retires the client pair it used instead of
closing it under the other runtimes' reads: the next read gets a fresh pair, and the retired one
is closed once its last in-flight read is done.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from ..connection_security import DatabaseSecurity, KafkaSecurity
from .errors import (
    DatabaseAuthenticationFailed,
    DatabaseTLSFailed,
    DatabaseUnavailable,
    KafkaAuthenticationFailed,
    KafkaTLSFailed,
    KafkaUnavailable,
    OutboxNotMigrated,
    ProbeConfigurationError,
    ProbeError,
    TopicNotFound,
)
from .lag import PartitionLag, Reading
from .tls import database_ssl_context, kafka_client_options

log = logging.getLogger(__name__)

APPLICATION_NAME = "smartflow-operator-lag-probe"
DEFAULT_TIMEOUT_SECONDS = 5.0
TLS_ALERT_WAIT_SECONDS = 1.0
TOPICS_MAX_AGE_SECONDS = 2.0  # a topic created since is found at most this much later
# A topic's log start/end offsets, shared by every runtime's read of that topic for this long: two
# of a read's four requests, the same answer for each runtime on the topic. Read after the group's
# committed offsets, so a shared answer can only trail them by this much: a lag reading stays at
# most this old (the polls are 5 s apart by default).
OFFSETS_MAX_AGE_SECONDS = 1.0
_Range = tuple[dict[TopicPartition, int], dict[TopicPartition, int]]  # (log starts, log ends)

# Relay lag as docs/contracts.md defines it. The COUNT stops at $1 (the caller passes the count
# past which the decision cannot change), so a huge backlog costs no more than a small one; the
# partial index on (available_at) WHERE status = 'pending' serves both the count and the min.
RELAY_LAG_SQL = """
SELECT
    (SELECT count(*) FROM (
        SELECT 1 FROM outbox_events
        WHERE status = 'pending' AND available_at <= now()
        LIMIT $1
    ) AS due) AS due,
    (SELECT EXTRACT(EPOCH FROM now() - min(available_at))::float8
       FROM outbox_events
      WHERE status = 'pending' AND available_at <= now()) AS oldest_due_age,
    (SELECT count(*) FROM outbox_shards) AS shards
"""


# The schema version as `smartflow-runtime migrate` records it (docs/contracts.md); 0 before any.
SCHEMA_TABLE_SQL = "SELECT to_regclass('schema_migrations') IS NOT NULL"
SCHEMA_VERSION_SQL = "SELECT coalesce(max(version), 0) FROM schema_migrations"


READING_MAX_AGE_SECONDS = 1.0  # a relay reading shared by the runtimes of one database


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedAnswers(Generic[K, V]):
    """One read in flight per key, its answer shared for ``max_age`` seconds by every caller
    asking with that key (1,000 runtimes on one topic or database: one read, not 1,000).

    The read is shielded: a caller that times out or is cancelled does not cancel the read the
    others wait for. A failed read is not shared: the next caller reads again. Expired answers
    are dropped when a new read starts, at most once per ``max_age`` (so the sweep costs O(1) a
    read on average, with 1,000 topics as with one), and keys nobody asks for any more (a
    retired client pair's, say) do not accumulate.
    """

    def __init__(self, max_age: float) -> None:
        self._max_age = max_age
        self._known: dict[K, tuple[float, asyncio.Task[V]]] = {}
        self._swept = time.monotonic()

    def __len__(self) -> int:
        return len(self._known)

    async def get(self, key: K, read: Callable[[], Coroutine[Any, Any, V]], *, name: str) -> V:
        now = time.monotonic()
        known = self._known.get(key)
        if known is None or now - known[0] >= self._max_age:
            self._drop_expired(now)
            task = asyncio.create_task(read(), name=name)
            # Retrieved here too: when every caller timed out, nobody else would.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            known = (now, task)
            self._known[key] = known
        try:
            return await asyncio.shield(known[1])
        except BaseException:
            if self._known.get(key) is known and known[1].done():
                del self._known[key]  # a failed read is not shared: the next caller asks again
            raise

    def _drop_expired(self, now: float) -> None:
        if now - self._swept < self._max_age:
            return
        self._swept = now
        expired = [
            key for key, (at, task) in self._known.items() if task.done() and now - at >= self._max_age
        ]
        for key in expired:
            del self._known[key]


async def _no_reset(_conn: Any) -> None:
    return None


class RelayProbe:
    """Due outbox rows, the oldest due row's age and the shard count, from one database; also the
    schema version (the reconciler reports it in ``status.schema``) through the same pool.
    """

    def __init__(
        self,
        dsn: str,
        *,
        security: DatabaseSecurity | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_connections: int = 2,
    ) -> None:
        self._dsn = dsn
        self._security = security
        self._timeout = timeout
        self._max_connections = max_connections
        self._pool: Any = None
        self._lock = asyncio.Lock()
        self._readings: SharedAnswers[int, Reading] = SharedAnswers(READING_MAX_AGE_SECONDS)  # by limit

    async def start(self) -> None:
        """Create the pool; it connects lazily, so a database that is down does not fail this."""
        await self._started_pool()

    async def _started_pool(self) -> Any:
        async with self._lock:
            if self._pool is None:
                options: dict[str, Any] = {}
                if self._security is not None:  # else the DSN's own sslmode applies
                    try:
                        options["ssl"] = database_ssl_context(self._security)
                    except (ssl.SSLError, ValueError) as error:
                        message = f"invalid PostgreSQL TLS certificate or key (spec.database.tls): {error}"
                        raise ProbeConfigurationError(message) from error
                try:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=0,
                        max_size=self._max_connections,
                        timeout=self._timeout,
                        command_timeout=self._timeout,
                        server_settings={"application_name": APPLICATION_NAME},
                        # No reset query on release (asyncpg's default is one more round trip and
                        # statement per borrow): these connections only run SELECTs and keep no
                        # session state (no SET, LISTEN, advisory lock or cursor).
                        reset=_no_reset,
                        **options,
                    )
                except (ValueError, asyncpg.ClientConfigurationError) as error:
                    raise ProbeConfigurationError(f"invalid database DSN: {error}") from error
            return self._pool

    async def stop(self) -> None:
        async with self._lock:
            pool, self._pool = self._pool, None
            if pool is None:
                return
            try:
                # Waits for reads in flight to give their connection back.
                await asyncio.wait_for(pool.close(), timeout=self._timeout)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def read(self, *, limit: int) -> Reading:
        """One reading; ``metric`` counts due rows up to ``limit`` (``truncated`` when it hit it).
        Runtimes on one database asking with the same limit share one query in flight and its
        answer for ``READING_MAX_AGE_SECONDS``: the same outbox, the same answer."""
        return await self._readings.get(limit, lambda: self._read(limit), name="relay lag reading")

    async def _read(self, limit: int) -> Reading:
        pool = await self._started_pool()
        try:
            async with asyncio.timeout(self._timeout):
                row = await pool.fetchrow(RELAY_LAG_SQL, limit)
        except asyncpg.UndefinedTableError as error:
            raise OutboxNotMigrated(f"outbox tables missing: {error}") from error
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise _database_error(error, "relay lag query failed") from error
        due = int(row["due"])
        return Reading(
            metric=due,
            cap=int(row["shards"]),
            truncated=due >= limit,
            oldest_age_seconds=None
            if row["oldest_due_age"] is None
            else max(float(row["oldest_due_age"]), 0.0),
        )

    async def schema_version(self) -> int:
        """The highest applied migration (``schema_migrations``), 0 on a database never migrated."""
        await self.start()
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as conn:
                if not await conn.fetchval(SCHEMA_TABLE_SQL):
                    return 0
                return int(await conn.fetchval(SCHEMA_VERSION_SQL))
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise _database_error(error, "schema version query failed") from error


class ConsumerProbe:
    """The consumer group's lag over the topic's partitions, from the Kafka admin API.

    lag(partition) = log end offset - committed offset. A partition the group has never committed
    on counts from the log start offset: that is what a new consumer (auto.offset.reset=earliest)
    still has to read, so a group with no commits at all scales from zero instead of being ignored.
    Kafka's own ``kafka-consumer-groups --describe`` prints the same numbers for committed
    partitions; for uncommitted ones it prints ``-``.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        security: KafkaSecurity | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._security = security
        self._timeout = timeout
        self._clients: _KafkaClients | None = None
        self._made: list[_KafkaClients] = []  # every pair made and not known closed
        self._lock = asyncio.Lock()
        self._topics_read: SharedAnswers[_KafkaClients, list[dict[str, Any]]] = SharedAnswers(
            TOPICS_MAX_AGE_SECONDS
        )
        # (client pair, topic, partitions) -> the log range read, shared while fresh
        self._ranges: SharedAnswers[tuple[_KafkaClients, str, tuple[int, ...]], _Range] = SharedAnswers(
            OFFSETS_MAX_AGE_SECONDS
        )

    async def start(self) -> None:
        async with self._lock:
            await self._started()

    async def _started(self) -> _KafkaClients:
        """The current client pair, connected now if there is none (call under the lock)."""
        if self._clients is not None:
            return self._clients
        request_timeout_ms = int(self._timeout * 1000)
        options = self._client_options()
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap,
            client_id=APPLICATION_NAME,
            request_timeout_ms=request_timeout_ms,
            **options,
        )
        offsets = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=APPLICATION_NAME,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=request_timeout_ms,
            **options,
        )
        try:
            async with asyncio.timeout(self._timeout):
                await admin.start()
                await offsets.start()
        except (TimeoutError, OSError, KafkaError) as error:
            await _quietly(admin.close, offsets.stop)
            cause = await self._bootstrap_cause(error, options)
            message = f"cannot reach Kafka at {self._bootstrap}: {_describe(cause)}"
            raise _kafka_error(cause, message) from cause
        self._clients = _KafkaClients(admin=admin, offsets=offsets)
        self._made = [c for c in self._made if not c.closed] + [self._clients]
        return self._clients

    def _client_options(self) -> dict[str, Any]:
        try:
            return kafka_client_options(self._security)
        except (ssl.SSLError, ValueError) as error:
            message = f"invalid Kafka TLS certificate or key (spec.kafka.tls): {error}"
            raise ProbeConfigurationError(message) from error

    async def _bootstrap_cause(self, error: BaseException, options: dict[str, Any]) -> BaseException:
        """aiokafka's bootstrap answers every failure with "Unable to bootstrap" and drops the
        cause. One direct connection to the first broker, made only after such a failure, says
        what it was (a refused login, a certificate the handshake rejected, or nothing reachable)."""
        if not isinstance(error, KafkaConnectionError) or self._security is None:
            return error
        host, _, port = self._bootstrap.split(",")[0].strip().rpartition(":")
        try:
            async with asyncio.timeout(self._timeout):
                conn = await create_conn(
                    host.strip("[]"),
                    int(port),
                    client_id=APPLICATION_NAME,
                    request_timeout_ms=int(self._timeout * 1000),
                    **options,
                )
        except (TimeoutError, OSError, KafkaError, ValueError) as cause:
            found: BaseException = cause
            if isinstance(cause, KafkaConnectionError) and "ssl_context" in options:
                found = await _tls_refusal(host.strip("[]"), int(port), options["ssl_context"]) or found
            return found
        conn.close()
        unexplained: BaseException = error  # (narrowed to aiokafka's untyped class above)
        return unexplained

    async def stop(self) -> None:
        """Retire the current pair: closed now, or after the reads still using it."""
        async with self._lock:
            clients, self._clients = self._clients, None
            if clients is None:
                return
            clients.retired = True
            idle = clients.users == 0
        if idle:
            await clients.close()

    @property
    def open_clients(self) -> int:
        """Client pairs not closed yet: the current one plus retired ones with reads in flight."""
        return sum(1 for c in self._made if not c.closed)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def read(self, *, topic: str, group: str) -> Reading:
        """One reading: total lag, the partition count (the cap) and per-partition detail."""
        async with self._lock:
            clients = await self._started()
            clients.users += 1
        try:
            async with asyncio.timeout(self._timeout):
                return await self._read(clients, topic, group)
        except TopicNotFound:
            raise
        except (TimeoutError, OSError, KafkaError) as error:
            # The pair may hold dead connections: the next read starts afresh; other runtimes'
            # reads in flight on this pair finish (or fail) on their own.
            async with self._lock:
                if self._clients is clients:
                    self._clients = None
                clients.retired = True
            raise _kafka_error(error, f"consumer lag probe failed: {_describe(error)}") from error
        finally:
            async with self._lock:
                clients.users -= 1
                last = clients.retired and clients.users == 0
            if last:
                await clients.close()

    async def _topics(self, clients: _KafkaClients) -> list[dict[str, Any]]:
        """Metadata for all topics, shared by every runtime's read for ``TOPICS_MAX_AGE_SECONDS``:
        the same answer for each of them, and the largest of a read's four requests."""

        async def read() -> list[dict[str, Any]]:
            return list(await clients.admin.describe_topics())

        return await self._topics_read.get(clients, read, name="topic metadata")

    async def _log_range(
        self, clients: _KafkaClients, topic: str, partitions: list[TopicPartition]
    ) -> _Range:
        """Log start and end offsets of ``partitions``: one read in flight per topic, its answer
        shared for ``OFFSETS_MAX_AGE_SECONDS`` (1,000 runtimes on one topic: one read, not 1,000)."""

        async def read() -> _Range:
            starts = await clients.offsets.beginning_offsets(partitions)
            return starts, await clients.offsets.end_offsets(partitions)

        key = (clients, topic, tuple(tp.partition for tp in partitions))
        return await self._ranges.get(key, read, name=f"log range of {topic}")

    async def _read(self, clients: _KafkaClients, topic: str, group: str) -> Reading:
        # Metadata for all topics: asking for one by name would auto-create it on most brokers.
        described = await self._topics(clients)
        found = next((t for t in described if t["topic"] == topic), None)
        if found is None or found["error_code"] != 0 or not found["partitions"]:
            raise TopicNotFound(f"topic {topic!r} does not exist on {self._bootstrap}")
        partitions = [TopicPartition(topic, p["partition"]) for p in found["partitions"]]
        partitions.sort(key=lambda tp: tp.partition)
        # The group's coordinator is asked once per client pair, not before every read (a round
        # trip each time otherwise); after any failure it is asked again (it may have moved).
        coordinator = clients.coordinators.get(group)
        try:
            if coordinator is None:
                coordinator = clients.coordinators[group] = await clients.admin.find_coordinator(group)
            committed = await clients.admin.list_consumer_group_offsets(
                group, group_coordinator_id=coordinator, partitions=partitions
            )
        except BaseException:
            clients.coordinators.pop(group, None)
            raise
        starts, ends = await self._log_range(clients, topic, partitions)
        lags = []
        for tp in partitions:
            offset = committed.get(tp)
            lags.append(
                PartitionLag(
                    partition=tp.partition,
                    committed=offset.offset if offset is not None and offset.offset >= 0 else None,
                    log_start=starts[tp],
                    log_end=ends[tp],
                )
            )
        return Reading(metric=sum(p.lag for p in lags), cap=len(lags), partitions=tuple(lags))


@dataclass(eq=False)
class _KafkaClients:
    """One connected admin client + offsets consumer, and who is reading through them."""

    admin: Any
    offsets: Any  # a consumer without a group: only asks for log start/end offsets
    users: int = 0
    retired: bool = False
    closed: bool = False
    coordinators: dict[str, int] = field(default_factory=dict)  # group -> its coordinator's node id

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await _quietly(self.admin.close, self.offsets.stop)


RelayKey = tuple[str, DatabaseSecurity | None]
ConsumerKey = tuple[str, KafkaSecurity | None]


class Probes:
    """The operator's probes, shared by every runtime: one per distinct (DSN, database security) /
    (bootstrap list, Kafka security).

    Each runtime's loop asks for its probe by connection string and security; a runtime asking
    with another key than last time (a rotated password or certificate, a new address) drops its
    interest in the old probe, which is closed at the next :meth:`close_unused` once nobody uses
    it; ``release`` drops a runtime's interest altogether; ``close`` (operator shutdown) closes all.
    """

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._timeout = timeout
        self._relays: dict[RelayKey, RelayProbe] = {}
        self._consumers: dict[ConsumerKey, ConsumerProbe] = {}
        self._users: dict[tuple[str, Any], set[str]] = {}
        self._current: dict[tuple[str, str], Any] = {}  # (kind, user) -> the key it uses now
        # Keys whose last user left (a rotation, a release): what close_unused looks at, so a poll
        # costs no walk over every probe.
        self._orphaned: set[tuple[str, Any]] = set()

    def _use(self, kind: str, key: Any, user: str) -> None:
        previous = self._current.get((kind, user))
        if previous is not None and previous != key:
            self._leave(kind, previous, user)
        self._current[(kind, user)] = key
        self._users.setdefault((kind, key), set()).add(user)

    def _leave(self, kind: str, key: Any, user: str) -> None:
        users = self._users.get((kind, key))
        if users is not None:
            users.discard(user)
            if not users:
                self._orphaned.add((kind, key))

    def relay(self, dsn: str, *, user: str, security: DatabaseSecurity | None = None) -> RelayProbe:
        key: RelayKey = (dsn, security)
        self._use("relay", key, user)
        if key not in self._relays:
            self._relays[key] = RelayProbe(dsn, security=security, timeout=self._timeout)
        return self._relays[key]

    def consumer(
        self, bootstrap_servers: str, *, user: str, security: KafkaSecurity | None = None
    ) -> ConsumerProbe:
        key: ConsumerKey = (bootstrap_servers, security)
        self._use("consumer", key, user)
        if key not in self._consumers:
            self._consumers[key] = ConsumerProbe(bootstrap_servers, security=security, timeout=self._timeout)
        return self._consumers[key]

    async def schema_version(self, dsn: str, *, user: str, security: DatabaseSecurity | None = None) -> int:
        """The schema version of the database at ``dsn``, through that DSN's relay probe pool (and
        the probe a rotated credential left behind closed, also for runtimes without autoscaling)."""
        try:
            return await self.relay(dsn, user=user, security=security).schema_version()
        finally:
            await self.close_unused()

    async def release(self, user: str) -> None:
        """Forget ``user`` (a runtime); close the probes no runtime uses any more."""
        for kind in ("relay", "consumer"):
            key = self._current.pop((kind, user), None)
            if key is not None:
                self._leave(kind, key, user)
        await self.close_unused()

    async def close_unused(self) -> None:
        """Close the probes no runtime uses any more (e.g. after a credential rotation)."""
        while self._orphaned:
            kind, target = key = self._orphaned.pop()
            if self._users.get(key):
                continue  # taken up again since its last user left
            self._users.pop(key, None)
            probe: RelayProbe | ConsumerProbe | None = (
                self._relays.pop(target, None) if kind == "relay" else self._consumers.pop(target, None)
            )
            if probe is not None:
                await probe.stop()

    async def close(self) -> None:
        probes: list[RelayProbe | ConsumerProbe] = [*self._relays.values(), *self._consumers.values()]
        self._relays.clear()
        self._consumers.clear()
        self._users.clear()
        self._current.clear()
        self._orphaned.clear()
        for probe in probes:
            await probe.stop()

    @property
    def open_count(self) -> int:
        return len(self._relays) + len(self._consumers)


async def _quietly(*closers: Callable[[], Awaitable[object]]) -> None:
    """Close clients that may already be broken; a failure to close is not worth reporting."""
    for close in closers:
        try:
            await asyncio.wait_for(close(), timeout=DEFAULT_TIMEOUT_SECONDS)
        except Exception as error:  # best effort on a client that may be broken
            log.debug("closing a Kafka client failed: %s", error)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def _tls_refusal(host: str, port: int, context: ssl.SSLContext) -> ssl.SSLError | None:
    """The TLS alert a broker sends right after a TLS 1.3 handshake when it refuses the client
    certificate (e.g. "certificate required"); aiokafka reports it as a closed connection."""
    try:
        async with asyncio.timeout(TLS_ALERT_WAIT_SECONDS):
            reader, writer = await asyncio.open_connection(host, port, ssl=context)
            try:
                await reader.read(1)
            finally:
                writer.close()
    except ssl.SSLError as error:
        return error
    except (TimeoutError, OSError):
        return None
    return None


_KAFKA_AUTH_ERRORS = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
)


def _kafka_error(error: BaseException, message: str) -> ProbeError:
    """The typed probe error for a Kafka failure, decided by the exception's type."""
    if isinstance(error, _KAFKA_AUTH_ERRORS):
        return KafkaAuthenticationFailed(f"{message} (SASL authentication failed)")
    if isinstance(error, ssl.SSLError):
        return KafkaTLSFailed(message)
    return KafkaUnavailable(message)


def _database_error(error: BaseException, what: str) -> ProbeError:
    """The typed probe error for a PostgreSQL failure, decided by the exception's type."""
    message = f"{what}: {type(error).__name__}: {error}"
    if isinstance(error, ssl.SSLError):
        return DatabaseTLSFailed(message)
    if isinstance(error, asyncpg.InvalidAuthorizationSpecificationError):  # also InvalidPasswordError
        return DatabaseAuthenticationFailed(message)
    return DatabaseUnavailable(message)
