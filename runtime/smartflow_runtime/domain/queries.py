"""Read queries showing the effects of consumed events; the api role's read endpoints call these.

Each takes an asyncpg connection and returns frozen dataclasses; ``as_dict()`` gives a
JSON-ready dict (UUIDs and datetimes as strings) for HTTP responses.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime
from typing import Any

from ..memory import sql as memory_sql
from ..outbox.store import driver_errors
from . import sql


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


class _Row:
    def as_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class Conversation(_Row):
    conversation_id: str
    user_id: str
    message_count: int
    created_at: datetime
    last_message_at: datetime


@dataclasses.dataclass(frozen=True)
class ChatMessage(_Row):
    message_id: uuid.UUID
    conversation_id: str
    user_id: str
    role: str
    content: str
    sent_at: datetime


@dataclasses.dataclass(frozen=True)
class TokenUsage(_Row):
    user_id: str
    conversation_id: str
    tokens: int
    adjustments: int
    updated_at: datetime


@dataclasses.dataclass(frozen=True)
class TimelineEntry(_Row):
    conversation_id: str
    seq: int
    kind: str
    content: dict[str, Any]
    occurred_at: datetime


@dataclasses.dataclass(frozen=True)
class AgentState(_Row):
    conversation_id: str
    agent_id: str
    version: int
    state: dict[str, Any]
    updated_at: datetime


@dataclasses.dataclass(frozen=True)
class TaskUrgency(_Row):
    task_id: str
    user_id: str
    urgency: int
    reason: str
    promoted_at: datetime


@dataclasses.dataclass(frozen=True)
class MemoryFact(_Row):
    id: int
    job_id: int
    user_id: str
    conversation_id: str
    kind: str
    fact: str
    created_at: datetime


async def get_conversation(conn: Any, conversation_id: str) -> Conversation | None:
    """The conversation row written synchronously by ``post_chat_message`` (None if unknown)."""
    async with driver_errors("read conversation"):
        r = await conn.fetchrow(sql.SELECT_CONVERSATION, conversation_id)
    return None if r is None else Conversation(**dict(r))


async def conversation_history(conn: Any, conversation_id: str, *, limit: int = 100) -> list[ChatMessage]:
    """Persisted chat messages of a conversation, oldest first (filled by the history handler)."""
    async with driver_errors("read chat history"):
        rows = await conn.fetch(sql.SELECT_HISTORY, conversation_id, limit)
    return [ChatMessage(**dict(r)) for r in rows]


async def token_usage(conn: Any, user_id: str) -> list[TokenUsage]:
    """A user's token totals per conversation (filled by the token usage handler)."""
    async with driver_errors("read token usage"):
        rows = await conn.fetch(sql.SELECT_TOKEN_USAGE, user_id)
    return [TokenUsage(**dict(r)) for r in rows]


async def agent_timeline(conn: Any, conversation_id: str) -> list[TimelineEntry]:
    """The agent timeline of a conversation by seq (filled by the timeline handler)."""
    async with driver_errors("read agent timeline"):
        rows = await conn.fetch(sql.SELECT_TIMELINE, conversation_id)
    return [TimelineEntry(**{**dict(r), "content": json.loads(r["content"])}) for r in rows]


async def agent_state(conn: Any, conversation_id: str) -> AgentState | None:
    """The newest agent state snapshot of a conversation (filled by the snapshot handler)."""
    async with driver_errors("read agent state"):
        r = await conn.fetchrow(sql.SELECT_SNAPSHOT, conversation_id)
    return None if r is None else AgentState(**{**dict(r), "state": json.loads(r["state"])})


async def task_urgency(conn: Any, task_id: str) -> TaskUrgency | None:
    """A task's promoted urgency (filled by the urgency handler)."""
    async with driver_errors("read task urgency"):
        r = await conn.fetchrow(sql.SELECT_TASK_URGENCY, task_id)
    return None if r is None else TaskUrgency(**dict(r))


async def memory_facts(conn: Any, user_id: str, *, limit: int = 100) -> list[MemoryFact]:
    """Facts the memory worker extracted about a user, oldest first."""
    async with driver_errors("read memory facts"):
        rows = await conn.fetch(memory_sql.SELECT_FACTS, user_id, limit)
    return [MemoryFact(**dict(r)) for r in rows]
