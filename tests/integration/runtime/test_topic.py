"""`ensure_topic` against the real broker: create when missing, accept more, refuse fewer, never
change an existing topic's partition count."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from smartflow_runtime.errors import KafkaUnavailableError, TopicPartitionsError
from smartflow_runtime.outbox.topic import TopicAction, ensure_topic


async def _partitions(bootstrap_servers: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0, described
    return len(described["partitions"])


async def _create(bootstrap_servers: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def test_missing_topic_is_created_then_found(bootstrap_servers: str, unique_name: str) -> None:
    topic = f"ensure-{unique_name}"
    first = await ensure_topic(bootstrap_servers, topic, partitions=5)
    assert (first.action, first.partitions) == (TopicAction.CREATED, 5)
    assert await _partitions(bootstrap_servers, topic) == 5
    second = await ensure_topic(bootstrap_servers, topic, partitions=5)
    assert (second.action, second.partitions, second.wanted) == (TopicAction.EXISTS, 5, 5)


async def test_existing_topic_with_more_partitions_is_left_alone(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = f"more-{unique_name}"
    await _create(bootstrap_servers, topic, 4)
    result = await ensure_topic(bootstrap_servers, topic, partitions=2)
    assert (result.action, result.partitions, result.wanted) == (TopicAction.EXISTS, 4, 2)
    assert await _partitions(bootstrap_servers, topic) == 4, "never shrunk"


async def test_existing_topic_with_fewer_partitions_is_an_error_and_unchanged(
    bootstrap_servers: str, unique_name: str
) -> None:
    topic = f"fewer-{unique_name}"
    await _create(bootstrap_servers, topic, 2)
    with pytest.raises(TopicPartitionsError) as caught:
        await ensure_topic(bootstrap_servers, topic, partitions=6)
    message = str(caught.value)
    assert "exists with 2 partition(s), fewer than the 6 wanted" in message
    assert "per-key order" in message
    assert await _partitions(bootstrap_servers, topic) == 2, "never grown silently"


async def test_unreachable_cluster_is_a_retriable_error(unique_name: str) -> None:
    with pytest.raises(KafkaUnavailableError):
        await ensure_topic("127.0.0.1:1", f"x-{unique_name}", partitions=1, timeout_ms=2000)
