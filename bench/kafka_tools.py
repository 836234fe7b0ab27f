"""Kafka helpers of the bench: produce prepared messages, and wait for a consumer group to settle."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from smartflow_runtime.outbox.kafka import build_producer


async def produce(bootstrap: str, topic: str, pairs: Sequence[tuple[bytes, bytes]]) -> dict[str, float]:
    """Send every (key, value) and wait for every ack, with the relay's producer settings."""
    producer: AIOKafkaProducer = build_producer(bootstrap, "bench-producer", None)
    await producer.start()
    try:
        started = time.perf_counter()
        futures = [await producer.send(topic, value=value, key=key) for key, value in pairs]
        await asyncio.gather(*futures)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return {
        "events": len(pairs),
        "seconds": round(elapsed, 4),
        "events_per_second": round(len(pairs) / elapsed, 1),
    }


def group_consumer(bootstrap: str, topic: str, prefix: str) -> AIOKafkaConsumer:
    """A consumer of ``topic`` in a new group (``prefix`` + random suffix), reading from the start
    and committing only when told to."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{prefix}-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def group_state(bootstrap: str, group: str) -> tuple[str, int]:
    """(state, member count) of a consumer group as the coordinator reports it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    for response in responses:
        for described in response.groups:
            # (error_code, group_id, state, protocol_type, protocol, members, ...)
            return str(described[2]), len(described[5])
    return "Unknown", 0


async def wait_group_stable(bootstrap: str, group: str, members: int, within: float = 60.0) -> float:
    """Until the group is ``Stable`` with ``members`` members; returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        state, count = await group_state(bootstrap, group)
        if state == "Stable" and count == members:
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    raise RuntimeError(f"group {group} not Stable with {members} members within {within:.0f}s")


async def commit_to_end(bootstrap: str, topic: str, group: str, partitions: int) -> int:
    """Commit ``group``'s offsets at the log end of every partition (its lag becomes 0); returns the total."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        ends = await consumer.end_offsets(assigned)
        await consumer.commit(dict(ends))
        return int(sum(ends.values()))
    finally:
        await consumer.stop()
