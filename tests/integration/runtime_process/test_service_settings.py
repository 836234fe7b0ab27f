"""The tuning settings reach the services of a real `smartflow-runtime` process, and the new
one-shot commands (`outbox prune`, `migrate`'s topic step) as real subprocesses."""

from __future__ import annotations

import aiohttp
import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from smartflow_runtime.domain import events as ev
from smartflow_runtime.outbox import store

from .conftest import Spawner, base_env, create_topic, run_cli, wait_for


def _metric(text: str, name: str, labels: str = "") -> float:
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    raise AssertionError(f"{prefix!r} not in /metrics")


async def test_settings_reach_relay_consumer_and_api_of_a_running_process(
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
        relay_batch_size="7",
        relay_listen_notify="false",
        relay_poll_interval_seconds="0.3",
        consumer_max_poll_records="2",
        outbox_max_attempts="3",
    )
    conn = await asyncpg.connect(migrated_dsn)
    try:
        # The api writes events with the configured max attempts.
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{process.http}/v1/tasks/t-api/urgency", json={"user_id": "u", "urgency": 5, "reason": "r"}
            ) as response,
        ):
            assert response.status == 202, await response.text()
        # 60 more in one transaction: due at once, so the relay drains them batch after batch.
        many = [
            ev.build_event(
                ev.TASK_URGENCY_PROMOTE,
                ev.TaskUrgencyPromote(task_id=f"t{i}", user_id=f"u{i % 5}", urgency=10, reason="load"),
                aggregate_id=f"t{i}",
                message_key=f"u{i % 5}",
                topic=topic,
            )
            for i in range(60)
        ]
        async with conn.transaction():
            await store.publish_many(conn, many)

        async def all_consumed() -> bool:
            return bool(
                await conn.fetchval("SELECT count(*) FROM outbox_events WHERE status = 'consumed'") == 61
            )

        await wait_for(all_consumed, what="61 events consumed", within=60)
        api_row = await conn.fetchval(
            "SELECT max_attempts FROM outbox_events WHERE payload->>'task_id' = 't-api'"
        )
        assert api_row == 3
        # Relay batch size: one batch = one published_at; none above 7.
        sizes = [
            r["n"]
            for r in await conn.fetch("SELECT published_at, count(*) AS n FROM outbox_events GROUP BY 1")
        ]
        assert max(sizes) <= 7 and len(sizes) >= 9, sizes
        # Polling only: this process holds no LISTEN on the outbox channels.
        listeners = await conn.fetchval(
            """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND query ILIKE 'LISTEN "smartflow_outbox%'"""
        )
        assert listeners == 0
    finally:
        await conn.close()
    _, metrics = await process.get(f"{process.admin}/metrics")
    polls = _metric(metrics, "smartflow_consumer_batch_size_count")
    assert _metric(metrics, "smartflow_consumer_batch_size_sum") == 61
    assert _metric(metrics, "smartflow_consumer_batch_size_bucket", 'le="2.0"') == polls, "max 2 per poll"
    assert polls >= 31
    assert _metric(metrics, "smartflow_relay_batch_size_bucket", 'le="10.0"') == _metric(
        metrics, "smartflow_relay_batch_size_count"
    )
    code, _ = await process.terminate()
    assert code == 0


async def test_outbox_prune_command(migrated_dsn: str) -> None:
    conn = await asyncpg.connect(migrated_dsn)
    try:
        events = [
            ev.build_event(
                ev.TASK_URGENCY_PROMOTE,
                ev.TaskUrgencyPromote(task_id=f"t{i}", user_id="u", urgency=1, reason="r"),
                aggregate_id=f"t{i}",
                message_key="u",
                topic="t",
            )
            for i in range(8)
        ]
        ids = await store.publish_many(conn, events)
        await conn.execute(
            """UPDATE outbox_events SET status = 'consumed', consumed_at = now() - interval '3 days'
               WHERE id = ANY($1)""",
            ids[:5],
        )
        await conn.execute("UPDATE outbox_events SET status = 'dead' WHERE id = ANY($1)", ids[5:7])
        env = base_env(database_dsn=migrated_dsn)
        code, out, err = await run_cli("outbox", "prune", "--older-than", "2d", "--dry-run", env=env)
        assert code == 0, err
        assert "would prune 5 consumed event(s)" in out
        assert await conn.fetchval("SELECT count(*) FROM outbox_events") == 8

        code, out, err = await run_cli("outbox", "prune", "--older-than", "4d", env=env)
        assert (code, out.split(" consumed")[0]) == (0, "pruned 0"), err

        code, out, err = await run_cli("outbox", "prune", "--older-than", "2d", "--batch", "2", env=env)
        assert code == 0, err
        assert "pruned 5 consumed event(s)" in out and "in 3 batch(es) of at most 2" in out
        remaining = {r["id"]: r["status"] for r in await conn.fetch("SELECT id, status FROM outbox_events")}
        assert remaining == {ids[5]: "dead", ids[6]: "dead", ids[7]: "pending"}
    finally:
        await conn.close()


async def _partitions(bootstrap_servers: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return len(described["partitions"])


async def test_migrate_ensures_the_topic_partitions(
    database_dsn: str, bootstrap_servers: str, unique_name: str
) -> None:
    topic = f"migrate-{unique_name}"
    env = base_env(
        database_dsn=database_dsn,
        kafka_bootstrap_servers=bootstrap_servers,
        kafka_topic=topic,
        kafka_topic_partitions="5",
    )
    code, out, err = await run_cli("migrate", "--shards", "4", "--skip-topic", env=env)
    assert code == 0, err
    assert "kafka topic: skipped (--skip-topic)" in out

    code, out, err = await run_cli("migrate", "--shards", "4", env=env)
    assert code == 0, err
    assert f"kafka topic {topic}: created with 5 partitions" in out
    assert await _partitions(bootstrap_servers, topic) == 5

    code, out, err = await run_cli("migrate", "--shards", "4", env=env)
    assert code == 0, err
    assert "already up to date" in out and f"kafka topic {topic}: exists with 5 partitions" in out

    code, out, err = await run_cli("migrate", "--shards", "4", "--topic-partitions", "3", env=env)
    assert code == 0, err
    assert "exists with 5 partitions (more than the 3 asked for; left as is)" in out

    code, out, err = await run_cli("migrate", "--shards", "4", "--topic-partitions", "8", env=env)
    assert code == 1
    assert "exists with 5 partition(s), fewer than the 8 wanted" in err
    assert await _partitions(bootstrap_servers, topic) == 5


async def test_migrate_reports_an_invalid_partition_setting(database_dsn: str) -> None:
    env = base_env(database_dsn=database_dsn, kafka_topic_partitions="none")
    code, _, err = await run_cli("migrate", env=env)
    assert code == 3
    assert "SMARTFLOW_KAFKA_TOPIC_PARTITIONS: must be an integer 1..10000, got 'none'" in err
