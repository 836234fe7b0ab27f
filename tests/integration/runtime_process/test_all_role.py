"""``run --role all`` (the monolith mode) end to end: every effect through one process, then a clean drain."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from .conftest import Spawner, create_topic, wait_for


async def test_all_role_applies_every_event_type_and_drains(
    migrated_dsn: str, bootstrap_servers: str, unique_name: str, spawn_runtime: Spawner
) -> None:
    topic, group = f"outbox-{unique_name}", f"group-{unique_name}"
    await create_topic(bootstrap_servers, topic)
    process = await spawn_runtime(
        "all",
        database_dsn=migrated_dsn,
        kafka_bootstrap_servers=bootstrap_servers,
        kafka_topic=topic,
        kafka_consumer_group=group,
    )
    status, text = await process.get(f"{process.admin}/readyz")
    assert status == 200
    assert json.loads(text)["checks"] == {
        "running": True,
        "database": True,
        "schema": True,
        "consumer": True,
        "memory-worker": True,
        "relay": True,
        "http-api": True,
    }

    base = process.http
    async with aiohttp.ClientSession() as session:

        async def post(path: str, body: dict[str, Any]) -> None:
            async with session.post(f"{base}{path}", json=body) as response:
                assert response.status == 202, await response.text()

        async def get(path: str) -> Any:
            async with session.get(f"{base}{path}") as response:
                return response.status, await response.json()

        await post(
            "/v1/conversations/c1/messages", {"user_id": "u1", "content": "I prefer morning meetings."}
        )
        await post(
            "/v1/conversations/c1/agent-steps",
            {
                "agent_id": "planner",
                "seq": 1,
                "kind": "plan",
                "content": {"step": "draft"},
                "state": {"n": 1},
            },
        )
        await post("/v1/tasks/t1/urgency", {"user_id": "u1", "urgency": 70, "reason": "due tomorrow"})

        async def all_effects_visible() -> bool:
            checks = [
                await get("/v1/conversations/c1/messages"),
                await get("/v1/conversations/c1/timeline"),
                await get("/v1/conversations/c1/state"),
                await get("/v1/tasks/t1/urgency"),
                await get("/v1/users/u1/token-usage"),
                await get("/v1/users/u1/memory-facts"),
            ]
            return (
                all(status == 200 for status, _ in checks)
                and len(checks[0][1]["messages"]) == 1
                and len(checks[1][1]["timeline"]) == 1
                and len(checks[4][1]["token_usage"]) == 1
                and len(checks[5][1]["facts"]) >= 1
            )

        await wait_for(all_effects_visible, what="every event type's effect", within=60)
        _, state = await get("/v1/conversations/c1/state")
        assert (state["agent_id"], state["version"], state["state"]) == ("planner", 1, {"n": 1})
        _, urgency = await get("/v1/tasks/t1/urgency")
        assert (urgency["urgency"], urgency["reason"]) == (70, "due tomorrow")
        _, facts = await get("/v1/users/u1/memory-facts")
        assert any("morning meetings" in f["fact"] for f in facts["facts"])

    status, metrics = await process.get(f"{process.admin}/metrics")
    assert status == 200
    for name in (
        "smartflow_outbox_events_published_total",
        "smartflow_outbox_events_consumed_total",
        "smartflow_handler_latency_seconds",
        "smartflow_memory_jobs_total",
        "smartflow_api_requests_total",
    ):
        assert name in metrics
    assert (
        'smartflow_outbox_events_consumed_total{event_type="task.urgency.promote.requested"} 1.0' in metrics
    )

    code, seconds = await process.terminate()
    assert code == 0
    assert seconds < 25
    stopped = [r["msg"] for r in process.log_records() if str(r.get("msg", "")).endswith(" stopped")]
    # Drain order: the api stops taking requests first, the consumer (which commits and leaves) last.
    assert (
        stopped.index("http-api stopped") < stopped.index("relay stopped") < stopped.index("consumer stopped")
    )
