"""The aiokafka boundary of the outbox: producer/consumer construction and error wrapping.

Only the relay and the consumer import this. aiokafka exceptions become our
:class:`~smartflow_runtime.errors.KafkaUnavailableError` (retriable) or
:class:`~smartflow_runtime.errors.KafkaRejectedError` (permanent), decided by aiokafka's own
``retriable`` flag on the error class, never by message text.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, ProducerClosed
from aiokafka.errors import KafkaUnavailableError as AioKafkaUnavailableError

from ..errors import KafkaRejectedError, KafkaUnavailableError, SmartflowError


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
