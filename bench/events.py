"""The events the bench writes: ``task.urgency.promote.requested`` padded to about 1 KB on the wire.

A real core event type, so the consumer runs its real handler (an upsert into ``task_urgency``).
Keys spread over ``key_count`` users, so rows spread over every outbox shard and Kafka partition.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from smartflow_runtime.domain import events as ev
from smartflow_runtime.outbox import store
from smartflow_runtime.outbox.model import Envelope, NewEvent, OutboxRow

EVENT_TYPE = ev.TASK_URGENCY_PROMOTE
TARGET_ENVELOPE_BYTES = 1024


def _payload(i: int, key: str, reason: str) -> dict[str, Any]:
    return {"task_id": f"task-{i}", "user_id": key, "urgency": i % 101, "reason": reason}


def _padding(key_count: int) -> str:
    """Reason text that makes a typical envelope (6-digit outbox id) exactly ``TARGET_ENVELOPE_BYTES``."""
    sample = Envelope(
        outbox_id=100000,
        event_id=uuid.uuid4(),
        event_type=EVENT_TYPE,
        event_version=1,
        aggregate_id="task-100000",
        payload=_payload(100000, f"user-{key_count - 1}", ""),
    )
    return "x" * max(0, TARGET_ENVELOPE_BYTES - len(sample.encode()))


def build_events(count: int, *, topic: str, key_count: int = 500) -> list[NewEvent]:
    reason = _padding(key_count)
    return [
        NewEvent(
            event_type=EVENT_TYPE,
            aggregate_id=f"task-{i}",
            message_key=f"user-{i % key_count}",
            topic=topic,
            payload=_payload(i, f"user-{i % key_count}", reason),
        )
        for i in range(count)
    ]


async def write_outbox(conn: asyncpg.Connection, events: Sequence[NewEvent], *, chunk: int = 2000) -> None:
    """All events in ONE transaction (the relay sees them at once, woken by the commit's NOTIFY)."""
    async with conn.transaction():
        for start in range(0, len(events), chunk):
            await store.publish_many(conn, events[start : start + chunk])


async def envelopes(conn: asyncpg.Connection) -> list[tuple[bytes, bytes]]:
    """(key, value) of every outbox row, encoded exactly as the relay encodes them, in id order."""
    rows = await conn.fetch(
        """SELECT id, event_id, event_type, event_version, aggregate_id, message_key, topic, payload,
                  shard, status, attempts, max_attempts, available_at, last_error
           FROM outbox_events ORDER BY id"""
    )
    out = []
    for record in rows:
        row = OutboxRow.from_record(record)
        out.append((row.message_key.encode(), Envelope.encode_row(row)))
    return out


def mean_size(pairs: Sequence[tuple[bytes, bytes]]) -> float:
    return round(sum(len(v) for _, v in pairs) / max(1, len(pairs)), 1)


def payload_json_size(event: NewEvent) -> int:
    return len(json.dumps(dict(event.payload)))
