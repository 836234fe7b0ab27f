"""The aiokafka boundary of the outbox: producer/consumer construction and error wrapping.

Only the relay and the consumer import this; :class:`KafkaWatch` is their broker probe.
aiokafka exceptions become our :class:`~smartflow_runtime.errors.KafkaUnavailableError` (retriable) or
:class:`~smartflow_runtime.errors.KafkaRejectedError` (permanent), decided by aiokafka's own
``retriable`` flag on the error class, never by message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, ProducerClosed
from aiokafka.errors import KafkaUnavailableError as AioKafkaUnavailableError

from ..errors import KafkaRejectedError, KafkaUnavailableError, SmartflowError
from ..readiness import KAFKA, DependencyStatus

log = logging.getLogger(__name__)


def default_client_id(kind: str) -> str:
    """A readable, unique id for a relay/consumer replica: ``<kind>-<host>-<pid>-<random>``."""
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


# aiokafka leaves ``retriable`` False on these client-side conditions, yet each one passes: a
# delivery timed out, the cluster was unreachable, the producer was closed under us (stop).
_TRANSIENT_DESPITE_FLAG = (KafkaTimeoutError, AioKafkaUnavailableError, ProducerClosed)


def wrap_kafka_error(error: BaseException) -> SmartflowError:
    """Our error for an aiokafka failure: retriable when aiokafka says so, or for the client-side
    conditions in ``_TRANSIENT_DESPITE_FLAG``; permanent otherwise (e.g. record too large)."""
    if isinstance(error, SmartflowError):
        return error
    if (
        isinstance(error, KafkaError)
        and not error.retriable
        and not isinstance(error, _TRANSIENT_DESPITE_FLAG)
    ):
        return KafkaRejectedError(f"{type(error).__name__}: {error}")
    # Timeouts, connection errors and unknown failures: worth another try after backoff.
    return KafkaUnavailableError(f"{type(error).__name__}: {error}")


def build_producer(bootstrap_servers: str, client_id: str, options: Mapping[str, Any] | None) -> Any:
    """An idempotent producer: ``acks=all`` and ``enable_idempotence`` always, other options tunable.

    Idempotence makes broker-side retries of a batch never duplicate or reorder records within a
    partition, which is what per-key order rests on.
    """
    settings: dict[str, Any] = {"linger_ms": 5, "request_timeout_ms": 30000}
    settings.update(options or {})
    settings.update({"acks": "all", "enable_idempotence": True})
    return AIOKafkaProducer(bootstrap_servers=bootstrap_servers, client_id=client_id, **settings)


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
