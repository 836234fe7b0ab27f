"""Handlers of the six core event types and :func:`register_core_handlers`, the one wiring function.

Every consuming role (``consumer``, ``worker``, ``all``) builds its registry with
:func:`build_registry`; nothing else registers core handlers. Handlers only validate the payload
and delegate to one SQL statement in :mod:`smartflow_runtime.domain.sql`; each runs inside the
consumer's transaction that locked the outbox row, so the write and "consumed" commit together.

The four single-statement handlers also have a bulk form for the consumer's batches: the same
statement run once per event in order through ``executemany`` (one pipelined round trip), so
the effect is exactly that of the per-event handlers, including repeated keys in one batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..domain import events as ev
from ..domain import sql
from ..errors import MissingDependencyError, TimelineConflictError
from ..memory import store as memory_store
from ..outbox.model import OutboxRow
from ..outbox.store import driver_errors
from .registry import HandlerRegistry

MEMORY_EXTRACT_JOB = "memory.extract"


@dataclass(frozen=True)
class HandlerDependencies:
    """What the core handlers need besides the connection they are handed.

    clock: ``() -> aware datetime`` stamping persisted rows.
    memory_job_max_attempts: attempts a memory job gets before it goes dead (default 6).
    """

    clock: Callable[[], datetime]
    memory_job_max_attempts: int = memory_store.DEFAULT_MAX_ATTEMPTS


class CoreHandlers:
    """The six handlers, sharing their dependencies."""

    def __init__(self, deps: HandlerDependencies) -> None:
        self._deps = deps

    async def chat_history(self, conn: Any, row: OutboxRow) -> None:
        p = ev.parse_payload(ev.ChatHistoryPersist, row.payload)
        async with driver_errors("persist chat history"):
            await conn.execute(
                sql.INSERT_CHAT_MESSAGE,
                p.message_id,
                p.conversation_id,
                p.user_id,
                p.role,
                p.content,
                p.sent_at,
                self._deps.clock(),
            )

    async def chat_history_bulk(self, conn: Any, rows: Sequence[OutboxRow]) -> None:
        now = self._deps.clock()
        payloads = [ev.parse_payload(ev.ChatHistoryPersist, row.payload) for row in rows]
        async with driver_errors("persist chat history"):
            await conn.executemany(
                sql.INSERT_CHAT_MESSAGE,
                [
                    (p.message_id, p.conversation_id, p.user_id, p.role, p.content, p.sent_at, now)
                    for p in payloads
                ],
            )

    async def task_urgency(self, conn: Any, row: OutboxRow) -> None:
        p = ev.parse_payload(ev.TaskUrgencyPromote, row.payload)
        async with driver_errors("promote task urgency"):
            await conn.execute(
                sql.PROMOTE_TASK, p.task_id, p.user_id, p.urgency, p.reason, self._deps.clock()
            )

    async def task_urgency_bulk(self, conn: Any, rows: Sequence[OutboxRow]) -> None:
        now = self._deps.clock()
        payloads = [ev.parse_payload(ev.TaskUrgencyPromote, row.payload) for row in rows]
        async with driver_errors("promote task urgency"):
            await conn.executemany(
                sql.PROMOTE_TASK, [(p.task_id, p.user_id, p.urgency, p.reason, now) for p in payloads]
            )

    async def token_usage(self, conn: Any, row: OutboxRow) -> None:
        p = ev.parse_payload(ev.TokenUsageAdjust, row.payload)
        async with driver_errors("adjust token usage"):
            await conn.execute(sql.ADJUST_TOKENS, p.user_id, p.conversation_id, p.delta, self._deps.clock())

    async def token_usage_bulk(self, conn: Any, rows: Sequence[OutboxRow]) -> None:
        now = self._deps.clock()
        payloads = [ev.parse_payload(ev.TokenUsageAdjust, row.payload) for row in rows]
        async with driver_errors("adjust token usage"):
            await conn.executemany(
                sql.ADJUST_TOKENS, [(p.user_id, p.conversation_id, p.delta, now) for p in payloads]
            )

    async def state_snapshot(self, conn: Any, row: OutboxRow) -> None:
        p = ev.parse_payload(ev.AgentStateSnapshot, row.payload)
        async with driver_errors("persist agent state"):
            await conn.execute(
                sql.UPSERT_SNAPSHOT,
                p.conversation_id,
                p.agent_id,
                p.version,
                json.dumps(p.state, sort_keys=True),
                self._deps.clock(),
            )

    async def state_snapshot_bulk(self, conn: Any, rows: Sequence[OutboxRow]) -> None:
        now = self._deps.clock()
        payloads = [ev.parse_payload(ev.AgentStateSnapshot, row.payload) for row in rows]
        async with driver_errors("persist agent state"):
            await conn.executemany(
                sql.UPSERT_SNAPSHOT,
                [
                    (p.conversation_id, p.agent_id, p.version, json.dumps(p.state, sort_keys=True), now)
                    for p in payloads
                ],
            )

    async def timeline(self, conn: Any, row: OutboxRow) -> None:
        """Insert a timeline entry; the same (conversation, seq) with identical content is a replay."""
        p = ev.parse_payload(ev.AgentTimelinePersist, row.payload)
        async with driver_errors("persist agent timeline"):
            inserted = await conn.fetchval(
                sql.INSERT_TIMELINE,
                p.conversation_id,
                p.seq,
                p.kind,
                json.dumps(p.content, sort_keys=True),
                p.occurred_at,
            )
            if inserted is not None:
                return
            existing = await conn.fetchrow(sql.SELECT_TIMELINE_ENTRY, p.conversation_id, p.seq)
        same = (
            existing is not None
            and existing["kind"] == p.kind
            and json.loads(existing["content"]) == p.content
            and existing["occurred_at"] == p.occurred_at
        )
        if not same:
            raise TimelineConflictError(
                f"timeline {p.conversation_id!r} seq {p.seq} already holds a different entry"
            )

    async def memory_extract(self, conn: Any, row: OutboxRow) -> None:
        p = ev.parse_payload(ev.MemoryExtract, row.payload)
        await memory_store.enqueue(
            conn,
            job_type=MEMORY_EXTRACT_JOB,
            idempotency_key=f"{MEMORY_EXTRACT_JOB}:{p.message_id}",
            payload=p.model_dump(mode="json"),
            now=self._deps.clock(),
            max_attempts=self._deps.memory_job_max_attempts,
        )


def register_core_handlers(registry: HandlerRegistry, deps: HandlerDependencies) -> HandlerRegistry:
    """Check ``deps`` and register the six core handlers (in the original system's order).

    Raises :class:`MissingDependencyError` naming every unusable dependency, and
    :class:`DuplicateHandlerError` if ``registry`` already has one of the core types.
    """
    problems = []
    if deps is None:
        raise MissingDependencyError("handler dependencies missing")
    if not callable(deps.clock):
        problems.append("clock must be callable")
    if not isinstance(deps.memory_job_max_attempts, int) or deps.memory_job_max_attempts < 1:
        problems.append("memory_job_max_attempts must be an integer >= 1")
    if problems:
        raise MissingDependencyError("core handlers cannot be wired: " + "; ".join(problems))
    handlers = CoreHandlers(deps)
    registry.register(ev.CHAT_HISTORY_PERSIST, handlers.chat_history, bulk=handlers.chat_history_bulk)
    registry.register(ev.TASK_URGENCY_PROMOTE, handlers.task_urgency, bulk=handlers.task_urgency_bulk)
    registry.register(ev.CHAT_TOKEN_USAGE_ADJUST, handlers.token_usage, bulk=handlers.token_usage_bulk)
    registry.register(ev.AGENT_STATE_SNAPSHOT, handlers.state_snapshot, bulk=handlers.state_snapshot_bulk)
    registry.register(ev.AGENT_TIMELINE_PERSIST, handlers.timeline)
    registry.register(ev.MEMORY_EXTRACT, handlers.memory_extract)
    return registry


def build_registry(deps: HandlerDependencies) -> HandlerRegistry:
    """A fresh registry with the core handlers: what every consuming role passes to its Consumer."""
    return register_core_handlers(HandlerRegistry(), deps)
