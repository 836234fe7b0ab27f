"""The api app in-process against a real PostgreSQL: JSON 503s for every database failure, and
``Idempotency-Key`` retries that return the first outcome and write nothing twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from smartflow_devstack.process import free_port
from smartflow_runtime.api import build_api_app


async def _client(pool: Any) -> TestClient[Any, Any]:
    client = TestClient(TestServer(build_api_app(pool=pool, registry=CollectorRegistry(), topic="t")))
    await client.start_server()
    return client


@pytest.fixture
async def api(migrated_dsn: str) -> AsyncIterator[TestClient[Any, Any]]:
    pool = await asyncpg.create_pool(migrated_dsn, min_size=0, max_size=4)
    client = await _client(pool)
    yield client
    await client.close()
    await pool.close()


async def _counts(dsn: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        outbox = await conn.fetchval("SELECT count(*) FROM outbox_events")
        messages = await conn.fetchval("SELECT coalesce(sum(message_count), 0) FROM conversations")
        keys = await conn.fetchval("SELECT count(*) FROM api_idempotency_keys")
    finally:
        await conn.close()
    return int(outbox), int(messages), int(keys)


async def test_a_retry_after_a_lost_response_returns_the_first_outcome_and_has_one_effect(
    api: TestClient[Any, Any], migrated_dsn: str
) -> None:
    body = {"user_id": "u1", "content": "I like green tea."}
    headers = {"Idempotency-Key": "order-42"}
    first = await api.post("/v1/conversations/c1/messages", json=body, headers=headers)
    assert first.status == 202
    first_body = await first.json()
    # The client never saw that answer (connection lost after the commit) and sends it again.
    again = await api.post("/v1/conversations/c1/messages", json=body, headers=headers)
    assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == first_body
    assert await _counts(migrated_dsn) == (3, 1, 1)
    # Without a key, the same body is a new message.
    plain = await api.post("/v1/conversations/c1/messages", json=body)
    assert plain.status == 202 and "Idempotent-Replayed" not in plain.headers
    assert await _counts(migrated_dsn) == (6, 2, 1)


async def test_concurrent_requests_with_one_key_have_one_effect(
    api: TestClient[Any, Any], migrated_dsn: str
) -> None:
    body = {"agent_id": "a", "seq": 1, "kind": "k", "content": {"x": 1}, "state": {"s": 1}}
    answers = await asyncio.gather(
        *(
            api.post("/v1/conversations/c2/agent-steps", json=body, headers={"Idempotency-Key": "k2"})
            for _ in range(8)
        )
    )
    assert [a.status for a in answers] == [202] * 8
    bodies = [await a.json() for a in answers]
    assert all(b == bodies[0] for b in bodies)
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 7
    outbox, _, keys = await _counts(migrated_dsn)
    assert (outbox, keys) == (2, 1)


async def test_a_key_reused_for_another_request_is_refused_and_a_bad_key_is_a_400(
    api: TestClient[Any, Any], migrated_dsn: str
) -> None:
    url = "/v1/tasks/t1/urgency"
    ok = await api.post(
        url, json={"user_id": "u", "urgency": 5, "reason": "r"}, headers={"Idempotency-Key": "x"}
    )
    assert ok.status == 202
    other = await api.post(
        url, json={"user_id": "u", "urgency": 9, "reason": "r"}, headers={"Idempotency-Key": "x"}
    )
    assert other.status == 422 and "different request" in (await other.json())["error"]
    long = await api.post(
        url, json={"user_id": "u", "urgency": 9, "reason": "r"}, headers={"Idempotency-Key": "k" * 201}
    )
    assert long.status == 400 and "Idempotency-Key" in (await long.json())["error"]
    assert (await _counts(migrated_dsn))[0] == 1


async def test_an_unreachable_database_is_a_json_503_naming_it_for_reads_and_commands() -> None:
    # A lazy pool on a port where nothing listens: pool.acquire() itself fails, on every route.
    pool = await asyncpg.create_pool(f"postgresql://x:y@127.0.0.1:{free_port()}/z", min_size=0, timeout=2)
    client = await _client(pool)
    try:
        answers = [
            await client.post("/v1/conversations/c/messages", json={"user_id": "u", "content": "hi"}),
            await client.post(
                "/v1/conversations/c/messages",
                json={"user_id": "u", "content": "hi"},
                headers={"Idempotency-Key": "a"},
            ),
            await client.get("/v1/conversations/c"),
            await client.get("/v1/users/u/token-usage"),
        ]
        for answer in answers:
            assert answer.status == 503 and answer.content_type == "application/json"
            assert (await answer.json())["dependency"] == "database"
            assert answer.headers["Retry-After"] == "1"
    finally:
        await client.close()
        await pool.close()
