"""The six core event types: names, payload schemas and builders of outbox events. Pure, no I/O.

Domain commands build events here; handlers validate payloads with the same models, so the
writer and the reader of an event can never disagree on its shape. Keys follow the original
system: the conversation id, except task urgency which is keyed by user id.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import PayloadError
from ..outbox.model import DEFAULT_MAX_ATTEMPTS, NewEvent

DEFAULT_TOPIC = "smartflow.agent.outbox"

CHAT_HISTORY_PERSIST = "chat.history.persist.requested"
TASK_URGENCY_PROMOTE = "task.urgency.promote.requested"
CHAT_TOKEN_USAGE_ADJUST = "chat.token.usage.adjust.requested"
AGENT_STATE_SNAPSHOT = "agent.state.snapshot.persist"
AGENT_TIMELINE_PERSIST = "agent.timeline.persist.requested"
MEMORY_EXTRACT = "memory.extract.requested"

CORE_EVENT_TYPES = (
    CHAT_HISTORY_PERSIST,
    TASK_URGENCY_PROMOTE,
    CHAT_TOKEN_USAGE_ADJUST,
    AGENT_STATE_SNAPSHOT,
    AGENT_TIMELINE_PERSIST,
    MEMORY_EXTRACT,
)


class Payload(BaseModel):
    # Unknown fields are ignored so a newer writer does not break an older consumer mid-rollout.
    model_config = ConfigDict(frozen=True, extra="ignore")


class ChatHistoryPersist(Payload):
    conversation_id: str = Field(min_length=1)
    message_id: uuid.UUID
    user_id: str = Field(min_length=1)
    role: str = Field(min_length=1)
    content: str
    sent_at: datetime


class TokenUsageAdjust(Payload):
    user_id: str = Field(min_length=1)
    conversation_id: str = Field(min_length=1)
    delta: int


class AgentStateSnapshot(Payload):
    conversation_id: str = Field(min_length=1)
    agent_id: str = Field(min_length=1)
    version: int = Field(ge=0)
    state: dict[str, Any]


class AgentTimelinePersist(Payload):
    conversation_id: str = Field(min_length=1)
    seq: int = Field(ge=0)
    kind: str = Field(min_length=1)
    content: dict[str, Any]
    occurred_at: datetime


class TaskUrgencyPromote(Payload):
    task_id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    urgency: int = Field(ge=0, le=100)
    reason: str


class MemoryExtract(Payload):
    user_id: str = Field(min_length=1)
    conversation_id: str = Field(min_length=1)
    message_id: uuid.UUID
    text: str


P = TypeVar("P", bound=Payload)


def parse_payload(model: type[P], payload: dict[str, Any]) -> P:
    """Validate a stored payload; a mismatch is permanent (:class:`PayloadError`), retries cannot fix it."""
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        raise PayloadError(f"{model.__name__}: {error.errors(include_url=False)}") from error


def build_event(
    event_type: str,
    payload: Payload,
    *,
    aggregate_id: str,
    message_key: str,
    topic: str,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> NewEvent:
    return NewEvent(
        max_attempts=max_attempts,
        event_type=event_type,
        aggregate_id=aggregate_id,
        message_key=message_key,
        topic=topic,
        payload=payload.model_dump(mode="json"),
    )


def estimate_tokens(text: str) -> int:
    """A deterministic token estimate (about four characters per token, at least one per message)."""
    return max(1, (len(text) + 3) // 4)
