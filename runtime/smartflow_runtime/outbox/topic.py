"""Ensure the outbox topic exists with the partition count the consumers need (Kafka admin API).

Called by ``smartflow-runtime migrate`` when Kafka settings are present. The partition count
caps the consumer's useful replicas, so a topic silently auto-created with the broker default
(often 1) would cap scaling without anyone noticing. Rules:

- missing -> created with ``partitions`` and replication ``min(3, brokers)``;
- present with at least ``partitions`` -> left alone (never shrunk; Kafka cannot shrink anyway);
- present with fewer -> :class:`~smartflow_runtime.errors.TopicPartitionsError`. Adding
  partitions is deliberately *not* done here: it moves keys to other partitions, which breaks
  per-key order for events in flight, so it is an operator's decision (``kafka-topics --alter``).

Creating first and describing on "already exists" (rather than describing first) avoids asking
for metadata of a missing topic, which a broker with ``auto.create.topics.enable`` would answer
by creating it with its default partition count.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import NewTopic
from aiokafka.errors import for_code

from ..errors import KafkaRejectedError, SmartflowError, TopicPartitionsError
from .kafka import build_admin, wrap_kafka_error

_TOPIC_ALREADY_EXISTS = 36
MAX_REPLICATION_FACTOR = 3


class TopicAction(enum.StrEnum):
    CREATED = "created"
    EXISTS = "exists"


@dataclass(frozen=True)
class TopicResult:
    """What :func:`ensure_topic` found or did; ``partitions`` is the topic's actual count."""

    topic: str
    action: TopicAction
    partitions: int
    wanted: int


async def ensure_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    partitions: int,
    timeout_ms: int = 30000,
    client_options: Mapping[str, Any] | None = None,
) -> TopicResult:
    """Create ``topic`` with ``partitions`` partitions, or check that it has at least that many.

    ``client_options``: the admin client's security options
    (:attr:`~smartflow_runtime.security.ClientSecurity.kafka`); none means PLAINTEXT.

    Raises :class:`TopicPartitionsError` when it exists with fewer, :class:`KafkaUnavailableError`
    when the cluster cannot be reached, :class:`KafkaRejectedError` when creation is refused.
    """
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    admin = build_admin(bootstrap_servers, {**(client_options or {}), "request_timeout_ms": timeout_ms})
    try:
        await admin.start()
        brokers = len((await admin.describe_cluster())["brokers"])
        replication = max(1, min(MAX_REPLICATION_FACTOR, brokers))
        response = await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=replication)],
            timeout_ms=timeout_ms,
        )
        code = _error_code(response, topic)
        if code == 0:
            return TopicResult(topic, TopicAction.CREATED, partitions, partitions)
        if code != _TOPIC_ALREADY_EXISTS:
            raise wrap_kafka_error(for_code(code)(f"cannot create topic {topic!r}"))
        actual = await _partition_count(admin, topic)
    except SmartflowError:
        raise
    except Exception as error:
        raise wrap_kafka_error(error) from error
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    if actual < partitions:
        raise TopicPartitionsError(
            f"topic {topic!r} exists with {actual} partition(s), fewer than the {partitions} wanted "
            f"(SMARTFLOW_KAFKA_TOPIC_PARTITIONS / --topic-partitions); at most {actual} consumer "
            "replicas can be useful. Not changed: adding partitions moves keys to other partitions "
            "and breaks per-key order of events in flight. Add them deliberately (e.g. kafka-topics "
            "--alter --partitions) while the outbox is drained, or ask for fewer."
        )
    return TopicResult(topic, TopicAction.EXISTS, actual, partitions)


def _error_code(response: Any, topic: str) -> int:
    for item in response.topic_errors:
        if item[0] == topic:
            return int(item[1])
    raise KafkaRejectedError(f"create topics response does not mention {topic!r}")


# The broker said the topic exists, but its metadata cache may not show it yet (a topic created a
# moment ago): describing it answers UNKNOWN_TOPIC_OR_PARTITION for a short while.
_UNKNOWN_TOPIC_OR_PARTITION = 3
_DESCRIBE_ATTEMPTS = 25
_DESCRIBE_PAUSE_SECONDS = 0.2


async def _partition_count(admin: Any, topic: str) -> int:
    for _ in range(_DESCRIBE_ATTEMPTS):
        (described,) = await admin.describe_topics([topic])
        if described["error_code"] != _UNKNOWN_TOPIC_OR_PARTITION:
            break
        await asyncio.sleep(_DESCRIBE_PAUSE_SECONDS)
    if described["error_code"] != 0:
        raise wrap_kafka_error(for_code(described["error_code"])(f"cannot describe topic {topic!r}"))
    return len(described["partitions"])
