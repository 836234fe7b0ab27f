"""``smartflow-runtime run --role api`` as a real process: admin endpoints, business endpoints, drain."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp
import asyncpg

from .conftest import Spawner


async def _post(url: str, body: object | bytes) -> tuple[int, dict[str, object]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers={"Content-Type": "application/json"}) as response,
    ):
        return response.status, await response.json()


async def test_api_role_serves_admin_and_business_endpoints_without_kafka(
    migrated_dsn: str, spawn_runtime: Spawner
) -> None:
    # No SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS at all: the api role must not need Kafka.
    api = await spawn_runtime("api", database_dsn=migrated_dsn, kafka_topic="topic-api")

    status, text = await api.get(f"{api.admin}/healthz")
    assert (status, json.loads(text)) == (200, {"status": "ok"})
    status, text = await api.get(f"{api.admin}/readyz")
    assert status == 200
    assert json.loads(text)["checks"] == {"running": True, "database": True, "schema": True, "http-api": True}

    status, posted = await _post(
        f"{api.http}/v1/conversations/conv-1/messages", {"user_id": "u1", "content": "I like green tea."}
    )
    assert status == 202, posted
    assert len(posted["outbox_ids"]) == 3  # type: ignore[arg-type]
    status, _ = await _post(
        f"{api.http}/v1/conversations/conv-1/agent-steps",
        {"agent_id": "a1", "seq": 1, "kind": "thought", "content": {"t": "x"}, "state": {"s": 1}},
    )
    assert status == 202
    status, _ = await _post(
        f"{api.http}/v1/tasks/task-9/urgency", {"user_id": "u1", "urgency": 80, "reason": "deadline"}
    )
    assert status == 202

    # The synchronous write is visible at once; the events wait in the outbox for a relay.
    status, text = await api.get(f"{api.http}/v1/conversations/conv-1")
    assert status == 200 and json.loads(text)["message_count"] == 1
    conn = await asyncpg.connect(migrated_dsn)
    try:
        rows = await conn.fetch("SELECT event_type, status, topic FROM outbox_events ORDER BY id")
    finally:
        await conn.close()
    assert [r["event_type"] for r in rows] == [
        "chat.history.persist.requested",
        "chat.token.usage.adjust.requested",
        "memory.extract.requested",
        "agent.timeline.persist.requested",
        "agent.state.snapshot.persist",
        "task.urgency.promote.requested",
    ]
    assert {(r["status"], r["topic"]) for r in rows} == {("pending", "topic-api")}

    # Reads of effects not yet applied answer empty / 404, not errors.
    status, text = await api.get(f"{api.http}/v1/conversations/conv-1/messages")
    assert (status, json.loads(text)) == (200, {"messages": []})
    status, _ = await api.get(f"{api.http}/v1/tasks/task-9/urgency")
    assert status == 404
    status, _ = await api.get(f"{api.http}/v1/conversations/nope")
    assert status == 404

    # Request metrics by route template, not raw path.
    status, metrics = await api.get(f"{api.admin}/metrics")
    assert status == 200
    assert (
        'smartflow_api_requests_total{method="POST",route="/v1/conversations/{conversation_id}/messages",'
        'status="202"} 1.0' in metrics
    )

    code, seconds = await api.terminate()
    assert code == 0
    assert seconds < 25
    assert "aiokafka" not in api.log_text()


async def test_bad_request_bodies_get_a_400_naming_the_problem(
    migrated_dsn: str, spawn_runtime: Spawner
) -> None:
    api = await spawn_runtime("api", role_from_env=True, database_dsn=migrated_dsn)
    assert {r["role"] for r in api.log_records()} == {"api"}
    url = f"{api.http}/v1/conversations/c/messages"

    status, body = await _post(url, b"{not json")
    assert status == 400 and "not valid JSON" in str(body["error"])
    status, body = await _post(url, [1, 2])
    assert status == 400 and body["error"] == "request body must be a JSON object"
    status, body = await _post(url, {"content": "", "contnet": "typo"})
    assert status == 400
    message = str(body["error"])
    assert "user_id: Field required" in message
    assert "content: String should have at least 1 character" in message
    assert "contnet: Extra inputs are not permitted" in message
    status, body = await _post(
        f"{api.http}/v1/tasks/t/urgency", {"user_id": "u", "urgency": 101, "reason": "r"}
    )
    assert status == 400 and "urgency: Input should be less than or equal to 100" in str(body["error"])
    status, text = await api.get(f"{api.http}/v1/conversations/c/messages?limit=0")
    assert status == 400 and "limit must be an integer 1..1000" in text

    conn = await asyncpg.connect(migrated_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM outbox_events") == 0
    finally:
        await conn.close()
    code, _ = await api.terminate()
    assert code == 0


async def test_on_sigterm_readiness_goes_false_first_while_requests_are_still_served(
    migrated_dsn: str, spawn_runtime: Spawner
) -> None:
    api = await spawn_runtime("api", database_dsn=migrated_dsn, shutdown_grace_seconds="20")
    loop = asyncio.get_running_loop()
    signalled = loop.time()
    api.proc.send_signal(signal.SIGTERM)
    for _ in range(50):
        status, text = await api.get(f"{api.admin}/readyz")
        if status == 503:
            break
        await asyncio.sleep(0.02)
    assert status == 503 and json.loads(text)["checks"]["running"] is False
    # Unready, but still alive and still serving: the load balancer has time to stop sending.
    assert (await api.get(f"{api.admin}/healthz"))[0] == 200
    status, posted = await _post(
        f"{api.http}/v1/conversations/c/messages", {"user_id": "u", "content": "late"}
    )
    assert status == 202, posted
    code = await asyncio.wait_for(api.proc.wait(), 20)
    elapsed = loop.time() - signalled
    assert code == 0
    assert 2.0 <= elapsed < 20
    conn = await asyncpg.connect(migrated_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM outbox_events") == 3
    finally:
        await conn.close()
