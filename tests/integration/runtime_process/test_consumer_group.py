"""The api role never joins the consumer group; the consumer role does (checked on the real broker)."""

from __future__ import annotations

import asyncio

import aiohttp

from smartflow_devstack import kafka

from .conftest import Spawner, create_topic, group_members, wait_for


async def test_api_next_to_a_consumer_is_not_a_group_member(
    migrated_dsn: str, bootstrap_servers: str, unique_name: str, spawn_runtime: Spawner
) -> None:
    topic, group = f"outbox-{unique_name}", f"group-{unique_name}"
    await create_topic(bootstrap_servers, topic)
    common = {
        "database_dsn": migrated_dsn,
        "kafka_bootstrap_servers": bootstrap_servers,
        "kafka_topic": topic,
        "kafka_consumer_group": group,
    }
    # The api gets the very same Kafka settings as the consumer: it must still stay out of the group.
    consumer = await spawn_runtime("consumer", **common)
    api = await spawn_runtime("api", **common)
    relay = await spawn_runtime("relay", **common)

    async def one_stable_member() -> bool:
        state, members = await group_members(bootstrap_servers, group)
        return state == "Stable" and len(members) == 1

    await wait_for(one_stable_member, what="the consumer to join the group")
    _, members = await group_members(bootstrap_servers, group)
    (member,) = members
    assert member["client_id"].startswith("consumer-")
    assert f"-{consumer.proc.pid}-" in member["client_id"]

    # Real traffic flows api -> outbox -> relay -> Kafka -> consumer while the api stays out of the group.
    async with aiohttp.ClientSession() as session:
        for i in range(5):
            body = {"user_id": "u1", "content": f"message {i}"}
            async with session.post(f"{api.http}/v1/conversations/c{i % 2}/messages", json=body) as response:
                assert response.status == 202

        async def all_persisted() -> bool:
            seen = 0
            for conversation in ("c0", "c1"):
                async with session.get(f"{api.http}/v1/conversations/{conversation}/messages") as response:
                    seen += len((await response.json())["messages"])
            return seen == 5

        await wait_for(all_persisted, what="the consumer to persist the posted messages")

    # Kafka's own consumer-groups tool, over every group on the broker: the consumer process is the
    # one member of our group, and neither the api nor the relay is a member of any group.
    described = await asyncio.to_thread(
        kafka.run_tool,
        kafka.CONSUMER_GROUPS_TOOL,
        "--bootstrap-server",
        bootstrap_servers,
        "--describe",
        "--all-groups",
        "--members",
    )
    member_lines = [line.split() for line in described.splitlines() if line.startswith(group + " ")]
    assert len(member_lines) == 1, described
    assert member["client_id"] in member_lines[0]
    assert f"-{api.proc.pid}-" not in described
    assert f"-{relay.proc.pid}-" not in described

    # A consumer that drains leaves the group explicitly: the group empties at once, no session timeout.
    code, seconds = await consumer.terminate()
    assert code == 0
    state, members = await group_members(bootstrap_servers, group)
    assert (state, members) == ("Empty", [])
    assert seconds < 25
    for process in (api, relay):
        code, _ = await process.terminate()
        assert code == 0
