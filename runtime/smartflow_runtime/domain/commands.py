"""Domain commands the api role calls: each writes its business rows and outbox events atomically.

Every command takes the caller's asyncpg connection and runs in ONE transaction on it (a
savepoint if the caller already opened one): the synchronous business write and the events
commit together or not at all. Consumers apply the events' effects later; read them back with
:mod:`smartflow_runtime.domain.queries`.

``topic`` is the outbox topic (``SMARTFLOW_KAFKA_TOPIC``), ``max_attempts`` the delivery attempts
each event gets before it goes dead (``SMARTFLOW_OUTBOX_MAX_ATTEMPTS``); ``now`` defaults to the
wall clock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..outbox import store as outbox
from ..outbox.model import DEFAULT_MAX_ATTEMPTS
from ..outbox.store import driver_errors, utcnow
from . import events as ev
from . import sql


@dataclass(frozen=True)
class PostedMessage:
    """What :func:`post_chat_message` wrote: the message id, its token estimate and the outbox ids."""

    message_id: uuid.UUID
    conversation_id: str
    tokens: int
    outbox_ids: tuple[int, ...]


async def post_chat_message(
    conn: Any,
    *,
    conversation_id: str,
    user_id: str,
    content: str,
    role: str = "user",
    message_id: uuid.UUID | None = None,
    topic: str = ev.DEFAULT_TOPIC,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    now: datetime | None = None,
) -> PostedMessage:
    """Accept a chat message: bump the conversation and emit its events, in one transaction.

    Writes ``conversations`` (created or message count + 1) and three events keyed by the
    conversation: ``chat.history.persist.requested`` (the message itself),
    ``chat.token.usage.adjust.requested`` (the token estimate) and, for user messages,
    ``memory.extract.requested`` (facts to remember about the user).
    """
    at = now or utcnow()
    mid = message_id or uuid.uuid4()
    tokens = ev.estimate_tokens(content)
    common: dict[str, Any] = {
        "aggregate_id": conversation_id,
        "message_key": conversation_id,
        "topic": topic,
        "max_attempts": max_attempts,
    }
    new_events = [
        ev.build_event(
            ev.CHAT_HISTORY_PERSIST,
            ev.ChatHistoryPersist(
                conversation_id=conversation_id,
                message_id=mid,
                user_id=user_id,
                role=role,
                content=content,
                sent_at=at,
            ),
            **common,
        ),
        ev.build_event(
            ev.CHAT_TOKEN_USAGE_ADJUST,
            ev.TokenUsageAdjust(user_id=user_id, conversation_id=conversation_id, delta=tokens),
            **common,
        ),
    ]
    if role == "user":
        new_events.append(
            ev.build_event(
                ev.MEMORY_EXTRACT,
                ev.MemoryExtract(
                    user_id=user_id, conversation_id=conversation_id, message_id=mid, text=content
                ),
                **common,
            )
        )
    async with conn.transaction():
        async with driver_errors("touch conversation"):
            await conn.execute(sql.TOUCH_CONVERSATION, conversation_id, user_id, at)
        ids = await outbox.publish_many(conn, new_events, now=at)
    return PostedMessage(
        message_id=mid, conversation_id=conversation_id, tokens=tokens, outbox_ids=tuple(ids)
    )


async def record_agent_step(
    conn: Any,
    *,
    conversation_id: str,
    agent_id: str,
    seq: int,
    kind: str,
    content: dict[str, Any],
    state: dict[str, Any],
    topic: str = ev.DEFAULT_TOPIC,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    now: datetime | None = None,
) -> tuple[int, int]:
    """Record one agent step: a timeline entry ``seq`` and the agent's state snapshot at version ``seq``.

    Emits ``agent.timeline.persist.requested`` and ``agent.state.snapshot.persist`` keyed by the
    conversation, in one transaction; returns their outbox ids. Re-sending the same step is
    harmless (identical timeline entry = replay); a different entry at the same seq goes dead.
    """
    at = now or utcnow()
    common: dict[str, Any] = {
        "aggregate_id": conversation_id,
        "message_key": conversation_id,
        "topic": topic,
        "max_attempts": max_attempts,
    }
    timeline = ev.build_event(
        ev.AGENT_TIMELINE_PERSIST,
        ev.AgentTimelinePersist(
            conversation_id=conversation_id, seq=seq, kind=kind, content=content, occurred_at=at
        ),
        **common,
    )
    snapshot = ev.build_event(
        ev.AGENT_STATE_SNAPSHOT,
        ev.AgentStateSnapshot(conversation_id=conversation_id, agent_id=agent_id, version=seq, state=state),
        **common,
    )
    async with conn.transaction():
        first, second = await outbox.publish_many(conn, [timeline, snapshot], now=at)
    return first, second


async def promote_task_urgency(
    conn: Any,
    *,
    task_id: str,
    user_id: str,
    urgency: int,
    reason: str,
    topic: str = ev.DEFAULT_TOPIC,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    now: datetime | None = None,
) -> int:
    """Ask for a task's urgency to be raised to ``urgency`` (0..100; never lowered); keyed by user.

    Returns the outbox id of the ``task.urgency.promote.requested`` event. The write is one
    statement (insert + NOTIFY), atomic on its own: outside a caller's transaction it runs in
    autocommit, one round trip instead of BEGIN / INSERT / COMMIT.
    """
    event = ev.build_event(
        ev.TASK_URGENCY_PROMOTE,
        ev.TaskUrgencyPromote(task_id=task_id, user_id=user_id, urgency=urgency, reason=reason),
        aggregate_id=task_id,
        message_key=user_id,
        topic=topic,
        max_attempts=max_attempts,
    )
    if conn.is_in_transaction():
        async with conn.transaction():  # a savepoint: the caller's transaction decides
            return await outbox.publish(conn, event, now=now or utcnow())
    return await outbox.publish(conn, event, now=now or utcnow())
