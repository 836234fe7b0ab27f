"""The aiokafka boundary of the outbox: client construction and error wrapping.

The relay, the consumer and ``migrate``'s topic step build their clients here (each with the
security options of :mod:`smartflow_runtime.security`); :class:`KafkaWatch` is the broker probe.
aiokafka exceptions become our :class:`~smartflow_runtime.errors.KafkaUnavailableError` (retriable) or
:class:`~smartflow_runtime.errors.KafkaRejectedError` (permanent), decided by aiokafka's own
``retriable`` flag on the error class, never by message text; SASL and TLS failures become
:class:`~smartflow_runtime.errors.KafkaAuthenticationError` and
:class:`~smartflow_runtime.errors.KafkaCertificateError` / :class:`~smartflow_runtime.errors.KafkaTlsError`
(still retriable: a role waits, unready, until the broker accepts it).

aiokafka's bootstrap only logs why it could not connect and raises a bare "Unable to bootstrap"
``KafkaConnectionError``; the clients built here then open one plain connection with the same
settings (:func:`security_failure`) so the caller gets the real error, by type.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    ProducerClosed,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.errors import KafkaUnavailableError as AioKafkaUnavailableError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from ..errors import (
    KafkaAuthenticationError,
    KafkaCertificateError,
    KafkaRejectedError,
    KafkaTlsError,
    KafkaUnavailableError,
    SmartflowError,
)
from ..readiness import KAFKA, DependencyStatus

log = logging.getLogger(__name__)


def default_client_id(kind: str) -> str:
    """A readable, unique id for a relay/consumer replica: ``<kind>-<host>-<pid>-<random>``."""
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


# aiokafka leaves ``retriable`` False on these client-side conditions, yet each one passes: a
# delivery timed out, the cluster was unreachable, the producer was closed under us (stop).
_TRANSIENT_DESPITE_FLAG = (KafkaTimeoutError, AioKafkaUnavailableError, ProducerClosed)

# The broker refused the SASL exchange: wrong credentials, or a mechanism it does not enable.
_SASL_FAILURES = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    UnsupportedSaslMechanismError,
)
SECURITY_FAILURES: tuple[type[BaseException], ...] = (*_SASL_FAILURES, ssl.SSLError)
"""What :func:`security_failure` looks for: errors a retry with the same settings would meet again."""


def wrap_kafka_error(error: BaseException) -> SmartflowError:
    """Our error for an aiokafka failure: SASL and TLS failures first (retriable, with the reason
    readiness shows); then retriable when aiokafka says so, or for the client-side conditions in
    ``_TRANSIENT_DESPITE_FLAG``; permanent otherwise (e.g. record too large)."""
    if isinstance(error, SmartflowError):
        return error
    if isinstance(error, _SASL_FAILURES):
        detail = error.args[0] if error.args and error.args[0] else type(error).__name__
        return KafkaAuthenticationError(f"SASL authentication failed: {detail}")
    if isinstance(error, ssl.SSLCertVerificationError):
        return KafkaCertificateError(f"certificate verify failed: {error.verify_message}")
    if isinstance(error, ssl.SSLError):
        return KafkaTlsError(f"TLS handshake failed: {error}")
    if (
        isinstance(error, KafkaError)
        and not error.retriable
        and not isinstance(error, _TRANSIENT_DESPITE_FLAG)
    ):
        return KafkaRejectedError(f"{type(error).__name__}: {error}")
    # Timeouts, connection errors and unknown failures: worth another try after backoff.
    return KafkaUnavailableError(f"{type(error).__name__}: {error}")


# The options of one connection, as aiokafka's clients take them (security, timeouts).
_CONNECTION_OPTIONS = (
    "security_protocol",
    "ssl_context",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
    "request_timeout_ms",
)


async def security_failure(
    bootstrap_servers: str, options: Mapping[str, Any], *, connect_seconds: float = 5.0
) -> BaseException | None:
    """The SASL or TLS error one connection to a bootstrap server meets with ``options`` (the
    client's), or None when none does (the broker is down, or it was a passing failure).

    Opens at most one connection per bootstrap server, closed again at once."""
    connection = {k: v for k, v in options.items() if k in _CONNECTION_OPTIONS}
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            async with asyncio.timeout(connect_seconds):
                conn = await create_conn(
                    host.strip("[]"), int(port), client_id="smartflow-check", **connection
                )
        except Exception as error:
            # A TLS alert after the handshake (the broker refusing our client certificate, TLS 1.3)
            # surfaces as "connection closed" caused by the SSLError.
            cause = error if isinstance(error, SECURITY_FAILURES) else error.__cause__
            if isinstance(cause, SECURITY_FAILURES):
                return cause
            continue  # unreachable, refused, timed out: not what this looks for
        conn.close()
    return None


class _ExplainedBootstrap:
    """Mixed into an aiokafka client: a failed bootstrap raises the SASL/TLS error behind it, chained
    from aiokafka's own "Unable to bootstrap" (see :func:`security_failure`)."""

    _smartflow_bootstrap: str
    _smartflow_options: Mapping[str, Any]

    def _remember(self, bootstrap_servers: str, options: Mapping[str, Any]) -> None:
        self._smartflow_bootstrap = bootstrap_servers
        self._smartflow_options = dict(options)

    async def start(self) -> None:
        try:
            await super().start()  # type: ignore[misc]
        except KafkaConnectionError as error:
            if self._smartflow_options.get("security_protocol", "PLAINTEXT") == "PLAINTEXT":
                raise  # nothing to explain: no SASL, no TLS (and no extra connection during an outage)
            cause = await security_failure(self._smartflow_bootstrap, self._smartflow_options)
            if cause is None:
                raise
            raise cause from error


class _Producer(_ExplainedBootstrap, AIOKafkaProducer):  # type: ignore[misc]
    pass


class _Consumer(_ExplainedBootstrap, AIOKafkaConsumer):  # type: ignore[misc]
    pass


class _AdminClient(_ExplainedBootstrap, AIOKafkaAdminClient):  # type: ignore[misc]
    pass


PRODUCER_DEFAULTS: Mapping[str, Any] = {
    "linger_ms": 5,
    "request_timeout_ms": 30000,
    # One batch per partition carries a whole relay batch of ~1 KB events (aiokafka's default,
    # 16 KiB, splits 500 of them into dozens of requests); below the broker's 1 MiB message.max.bytes.
    "max_batch_size": 256 * 1024,
}
_MAX_REQUEST_SIZE_DEFAULT = 1048576  # aiokafka's own default of max_request_size


def producer_settings(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments of every producer we build: defaults, then ``options``, then the
    forced ``acks=all`` and ``enable_idempotence`` (see :func:`build_producer`)."""
    settings: dict[str, Any] = dict(PRODUCER_DEFAULTS)
    settings.update(options or {})
    settings.update({"acks": "all", "enable_idempotence": True})
    return settings


def build_producer(bootstrap_servers: str, client_id: str, options: Mapping[str, Any] | None) -> Any:
    """An idempotent producer: ``acks=all`` and ``enable_idempotence`` always, other options tunable
    (the security options of :func:`~smartflow_runtime.security.kafka_client_options` among them).

    Idempotence makes broker-side retries of a batch never duplicate or reorder records within a
    partition, which is what per-key order rests on. The one place producers are constructed.
    """
    settings = producer_settings(options)
    producer = _Producer(bootstrap_servers=bootstrap_servers, client_id=client_id, **settings)
    producer._remember(bootstrap_servers, settings)
    return producer


def build_consumer(
    bootstrap_servers: str, *, group_id: str, client_id: str, options: Mapping[str, Any]
) -> Any:
    """An aiokafka consumer in ``group_id`` with ``options`` (security, offsets, assignors...)."""
    consumer = _Consumer(
        bootstrap_servers=bootstrap_servers, group_id=group_id, client_id=client_id, **options
    )
    consumer._remember(bootstrap_servers, options)
    return consumer


def build_admin(bootstrap_servers: str, options: Mapping[str, Any]) -> Any:
    """An aiokafka admin client with ``options`` (security, ``request_timeout_ms``)."""
    admin = _AdminClient(bootstrap_servers=bootstrap_servers, **options)
    admin._remember(bootstrap_servers, options)
    return admin


@dataclass(frozen=True)
class Record:
    """One message to send: its topic, key and value bytes."""

    topic: str
    key: bytes
    value: bytes


Delivery = asyncio.Future[Any] | SmartflowError
"""Per record: the future of the batch carrying it, or the error that stopped it before it was queued."""


async def send_batched(producer: Any, records: Sequence[Record], *, max_request_size: int) -> list[Delivery]:
    """Send ``records`` with aiokafka's batch API: per partition, in input order, closed batches.

    Each record goes to the partition ``producer.send()`` would choose (the default partitioner
    over the topic's partitions, see :func:`partition_for`). Per partition, the records fill
    ``create_batch()`` builders in input order, and the builders are submitted one after another
    with ``send_batch()``; partitions are submitted concurrently. A closed builder is drained at
    once (no ``linger_ms``): the relay gathered the rows itself. One future per batch, not per
    record (aiokafka issue #528: thousands of pending futures slow the producer down).

    A record larger than ``max_request_size`` is handed to ``producer.send()``, which rejects it
    with aiokafka's own error; when submitting a batch fails, the later batches of its partition
    are not submitted (they would overtake nothing, but keep the rule simple: in order or not at all)
    and all of their records get that error.
    """
    results: list[Delivery | None] = [None] * len(records)
    partitions: dict[str, list[int]] = {}
    for topic in {r.topic for r in records}:
        try:
            await producer.partitions_for(topic)  # waits for the topic's metadata
        except Exception as error:
            failed = wrap_kafka_error(error)
            for i, record in enumerate(records):
                if record.topic == topic:
                    results[i] = failed
            continue
        partitions[topic] = sorted(producer.client.cluster.partitions_for_topic(topic))
    chains: dict[tuple[str, int], list[tuple[Any, list[int]]]] = {}
    for i, record in enumerate(records):
        if results[i] is not None:
            continue
        all_partitions = partitions[record.topic]
        partition = partition_for(record.key, all_partitions)
        if DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.value, []) > max_request_size:
            results[i] = await _send_one(producer, record, partition)
            continue
        chain = chains.setdefault((record.topic, partition), [])
        if not chain or chain[-1][0].append(timestamp=None, key=record.key, value=record.value) is None:
            builder = producer.create_batch()
            builder.append(timestamp=None, key=record.key, value=record.value)  # the first always fits
            chain.append((builder, [i]))
        else:
            chain[-1][1].append(i)

    async def submit(tp: tuple[str, int], chain: list[tuple[Any, list[int]]]) -> None:
        failure: SmartflowError | None = None
        for builder, indexes in chain:
            delivery: Delivery
            if failure is None:
                builder.close()
                try:
                    delivery = await producer.send_batch(builder, tp[0], partition=tp[1])
                except Exception as error:
                    failure = wrap_kafka_error(error)
            if failure is not None:
                delivery = failure
            for i in indexes:
                results[i] = delivery

    await asyncio.gather(*(submit(tp, chain) for tp, chain in chains.items()))
    return [r if r is not None else KafkaUnavailableError("record not submitted") for r in results]


_PARTITIONER = DefaultPartitioner()


def partition_for(key: bytes, all_partitions: Sequence[int]) -> int:
    """The partition of a keyed record, as ``producer.send()`` picks it: murmur2 of the key over
    the topic's partitions (the default partitioner; every partition counts, available or not)."""
    return int(_PARTITIONER(key, list(all_partitions), list(all_partitions)))


def max_request_size(options: Mapping[str, Any] | None) -> int:
    """The ``max_request_size`` a producer built from ``options`` enforces."""
    return int(producer_settings(options).get("max_request_size", _MAX_REQUEST_SIZE_DEFAULT))


async def _send_one(producer: Any, record: Record, partition: int) -> Delivery:
    try:
        future: asyncio.Future[Any] = await producer.send(
            record.topic, value=record.value, key=record.key, partition=partition
        )
    except Exception as error:  # rejected before it was queued (too large, bad topic...)
        return wrap_kafka_error(error)
    return future


class KafkaWatch:
    """Checks the broker with a metadata round trip every ``interval`` seconds, in a task of its
    own, and records the result in ``deps`` (``kafka`` up or down).

    The relay and the consumer each run one: their loops can sit in a Kafka call for a long time
    while the broker is gone (a send waiting for its ack, a commit waiting for the coordinator),
    and readiness must show the outage within seconds all the same, and its end.

    ``probe`` makes the request on the owner's current client; it returns False when there is no
    client yet (nothing to check). :meth:`take_outage` hands the owner the length of an outage
    that just ended, once, so it can decide to re-create its client.
    """

    def __init__(
        self,
        *,
        deps: DependencyStatus,
        probe: Callable[[], Awaitable[bool]],
        interval: float = 2.0,
        timeout: float = 3.0,
        name: str = "kafka watch",
    ) -> None:
        self._deps = deps
        self._probe = probe
        self._interval = interval
        self._timeout = timeout
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self._ended_outage: float | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def is_alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def take_outage(self) -> float | None:
        """Seconds the broker was unreachable in the outage that ended last; None if none ended since."""
        ended, self._ended_outage = self._ended_outage, None
        return ended

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                async with asyncio.timeout(self._timeout):
                    checked = await self._probe()
            except Exception as error:  # any failure of the round trip: the broker is not usable
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning("%s: broker unreachable: %s", self._name, wrap_kafka_error(error))
                self._deps.down(KAFKA, str(wrap_kafka_error(error)))
                continue
            if not checked:
                continue
            if self._down_since is not None:
                self._ended_outage = time.monotonic() - self._down_since
                self._down_since = None
                log.info("%s: broker reachable again", self._name)
            self._deps.up(KAFKA)
