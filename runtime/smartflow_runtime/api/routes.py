"""The business routes of the api role: commands that write events, reads that show their effects.

Commands call :mod:`smartflow_runtime.domain.commands` (business row + outbox events in one
transaction) and answer ``202 Accepted`` with the outbox ids: the effects appear once the relay
and a consumer have done their part. Reads call :mod:`smartflow_runtime.domain.queries`.

Request bodies are validated by the pydantic models below; :mod:`.app` turns a validation
failure into a 400 that names each bad field, and any database failure into a JSON 503.

Every command accepts an ``Idempotency-Key`` header (see :mod:`..domain.idempotency`): the key
is stored with the command's rows in one transaction, and a retry with the same key and the
same request answers the first response again (with ``Idempotent-Replayed: true``) without
writing anything.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ..domain import commands, idempotency, queries
from ..outbox.store import connection, utcnow

POOL_KEY = web.AppKey("pool", asyncpg.Pool)
TOPIC_KEY = web.AppKey("topic", str)
MAX_ATTEMPTS_KEY = web.AppKey("max_attempts", int)

MAX_LIMIT = 1000
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

Command = Callable[[Any], Awaitable[Mapping[str, Any]]]
"""A command's write on the connection it is given; returns the 202 response body."""


class BadRequest(Exception):
    """A request the client must fix; the message is returned to it as is."""


class _Body(BaseModel):
    # Unknown fields are rejected: a typo ("contnet") should fail loudly, not post an empty message.
    model_config = ConfigDict(extra="forbid", frozen=True)


class PostMessage(_Body):
    user_id: str = Field(min_length=1, max_length=200)
    content: str = Field(min_length=1, max_length=100_000)
    role: str = Field(default="user", min_length=1, max_length=50)
    message_id: uuid.UUID | None = None


class AgentStep(_Body):
    agent_id: str = Field(min_length=1, max_length=200)
    seq: int = Field(ge=0)
    kind: str = Field(min_length=1, max_length=100)
    content: dict[str, Any]
    state: dict[str, Any]


class PromoteUrgency(_Body):
    user_id: str = Field(min_length=1, max_length=200)
    urgency: int = Field(ge=0, le=100)
    reason: str = Field(min_length=1, max_length=2000)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        raise BadRequest("request body required: a JSON object")
    try:
        data = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def _limit(request: web.Request, default: int = 100) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit must be an integer 1..{MAX_LIMIT}, got {raw!r}")
    return int(raw)


def _not_found(what: str) -> web.Response:
    return web.json_response({"error": f"{what} not found"}, status=404)


# --- commands ---------------------------------------------------------------------------------


async def _run_command(request: web.Request, command: Command) -> web.Response:
    """Run ``command`` and answer 202 with its body; with an ``Idempotency-Key``, at most once per key."""
    pool = request.app[POOL_KEY]
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        async with connection(pool, "api command") as conn:
            return web.json_response(dict(await command(conn)), status=202)
    if (problem := idempotency.validate_key(key)) is not None:
        raise BadRequest(problem)
    fingerprint = idempotency.request_fingerprint(request.method, request.path, await request.read())
    async with connection(pool, "api command") as conn, conn.transaction():
        stored = await idempotency.find_locked(conn, key, fingerprint)
        if stored is not None:
            return web.json_response(
                dict(stored.body), status=stored.status, headers={REPLAYED_HEADER: "true"}
            )
        body = await command(conn)
        response = idempotency.StoredResponse(status=202, body=body)
        await idempotency.remember(conn, key, fingerprint, response, now=utcnow())
    return web.json_response(dict(body), status=202)


async def post_message(request: web.Request) -> web.Response:
    body = PostMessage.model_validate(await _body(request))

    async def command(conn: Any) -> Mapping[str, Any]:
        posted = await commands.post_chat_message(
            conn,
            conversation_id=request.match_info["conversation_id"],
            user_id=body.user_id,
            content=body.content,
            role=body.role,
            message_id=body.message_id,
            topic=request.app[TOPIC_KEY],
            max_attempts=request.app[MAX_ATTEMPTS_KEY],
        )
        return {
            "message_id": str(posted.message_id),
            "conversation_id": posted.conversation_id,
            "tokens": posted.tokens,
            "outbox_ids": list(posted.outbox_ids),
        }

    return await _run_command(request, command)


async def post_agent_step(request: web.Request) -> web.Response:
    body = AgentStep.model_validate(await _body(request))

    async def command(conn: Any) -> Mapping[str, Any]:
        timeline_id, snapshot_id = await commands.record_agent_step(
            conn,
            conversation_id=request.match_info["conversation_id"],
            agent_id=body.agent_id,
            seq=body.seq,
            kind=body.kind,
            content=body.content,
            state=body.state,
            topic=request.app[TOPIC_KEY],
            max_attempts=request.app[MAX_ATTEMPTS_KEY],
        )
        return {"outbox_ids": [timeline_id, snapshot_id]}

    return await _run_command(request, command)


async def post_task_urgency(request: web.Request) -> web.Response:
    body = PromoteUrgency.model_validate(await _body(request))

    async def command(conn: Any) -> Mapping[str, Any]:
        outbox_id = await commands.promote_task_urgency(
            conn,
            task_id=request.match_info["task_id"],
            user_id=body.user_id,
            urgency=body.urgency,
            reason=body.reason,
            topic=request.app[TOPIC_KEY],
            max_attempts=request.app[MAX_ATTEMPTS_KEY],
        )
        return {"outbox_ids": [outbox_id]}

    return await _run_command(request, command)


# --- reads ------------------------------------------------------------------------------------


async def get_conversation(request: web.Request) -> web.Response:
    async with connection(request.app[POOL_KEY], "api read") as conn:
        found = await queries.get_conversation(conn, request.match_info["conversation_id"])
    return _not_found("conversation") if found is None else web.json_response(found.as_dict())


async def get_messages(request: web.Request) -> web.Response:
    limit = _limit(request)
    async with connection(request.app[POOL_KEY], "api read") as conn:
        rows = await queries.conversation_history(conn, request.match_info["conversation_id"], limit=limit)
    return web.json_response({"messages": [r.as_dict() for r in rows]})


async def get_timeline(request: web.Request) -> web.Response:
    async with connection(request.app[POOL_KEY], "api read") as conn:
        rows = await queries.agent_timeline(conn, request.match_info["conversation_id"])
    return web.json_response({"timeline": [r.as_dict() for r in rows]})


async def get_state(request: web.Request) -> web.Response:
    async with connection(request.app[POOL_KEY], "api read") as conn:
        found = await queries.agent_state(conn, request.match_info["conversation_id"])
    return _not_found("agent state") if found is None else web.json_response(found.as_dict())


async def get_task_urgency(request: web.Request) -> web.Response:
    async with connection(request.app[POOL_KEY], "api read") as conn:
        found = await queries.task_urgency(conn, request.match_info["task_id"])
    return _not_found("task urgency") if found is None else web.json_response(found.as_dict())


async def get_token_usage(request: web.Request) -> web.Response:
    async with connection(request.app[POOL_KEY], "api read") as conn:
        rows = await queries.token_usage(conn, request.match_info["user_id"])
    return web.json_response({"token_usage": [r.as_dict() for r in rows]})


async def get_memory_facts(request: web.Request) -> web.Response:
    limit = _limit(request)
    async with connection(request.app[POOL_KEY], "api read") as conn:
        rows = await queries.memory_facts(conn, request.match_info["user_id"], limit=limit)
    return web.json_response({"facts": [r.as_dict() for r in rows]})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/conversations/{conversation_id}/messages", post_message)
    app.router.add_get("/v1/conversations/{conversation_id}/messages", get_messages)
    app.router.add_get("/v1/conversations/{conversation_id}", get_conversation)
    app.router.add_post("/v1/conversations/{conversation_id}/agent-steps", post_agent_step)
    app.router.add_get("/v1/conversations/{conversation_id}/timeline", get_timeline)
    app.router.add_get("/v1/conversations/{conversation_id}/state", get_state)
    app.router.add_post("/v1/tasks/{task_id}/urgency", post_task_urgency)
    app.router.add_get("/v1/tasks/{task_id}/urgency", get_task_urgency)
    app.router.add_get("/v1/users/{user_id}/token-usage", get_token_usage)
    app.router.add_get("/v1/users/{user_id}/memory-facts", get_memory_facts)
