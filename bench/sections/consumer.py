"""Section 2: consumer throughput with the real DB effect vs a raw aiokafka consumer + one UPDATE per event.

The outbox holds N ``published`` rows (1 KB ``task.urgency.promote.requested`` events). For each
run, a fresh topic gets the rows' envelopes *after* the consumers have joined a fresh group and
the group is Stable, so no rebalance falls inside the measurement:

- real: K ``smartflow-runtime run --role consumer`` processes; per event the runtime locks the
  outbox row, runs the real handler (upsert into ``task_urgency``) in a savepoint, marks the row
  consumed, commits, and commits offsets per poll. Clock: first to last ``consumed_at``.
- raw: one aiokafka consumer in the bench process, partitions of a poll handled concurrently (as
  the runtime does), one ``UPDATE outbox_events ... WHERE id = $1`` (autocommit) per event, offsets
  committed per poll. Clock: first record received to last UPDATE done.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from .. import events
from ..context import Context
from ..kafka_tools import group_consumer, produce, wait_group_stable
from ..procs import CpuMeter, RuntimeProcess, postgres_backends, running
from ..results import Result, Target

PARTITIONS = 6


async def reset_rows(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "UPDATE outbox_events SET status = 'published', consumed_at = NULL, published_at = now(); "
        "TRUNCATE task_urgency"
    )
    await conn.execute("VACUUM ANALYZE outbox_events")


async def wait_consumed(conn: asyncpg.Connection, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await conn.fetchval("SELECT count(*) FROM outbox_events WHERE status = 'consumed'") >= count:
            return
        await asyncio.sleep(0.2)
    done = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE status = 'consumed'")
    raise RuntimeError(f"consumer handled {done}/{count} events within {within:.0f}s")


async def real_run(
    ctx: Context,
    dsn: str,
    pairs: list[tuple[bytes, bytes]],
    consumers: int,
    within: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    count = len(pairs)
    conn = await asyncpg.connect(dsn)
    try:
        await reset_rows(conn)
        async with ctx.servers.topic("consumer", partitions=PARTITIONS) as topic:
            group = f"bench-consumer-{uuid.uuid4().hex[:8]}"
            env = {
                "SMARTFLOW_DATABASE_DSN": dsn,
                "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS": ctx.servers.bootstrap_servers,
                "SMARTFLOW_KAFKA_TOPIC": topic,
                "SMARTFLOW_KAFKA_CONSUMER_GROUP": group,
            }
            async with running(
                [
                    RuntimeProcess("consumer", env, profile=profile if i == 0 else None)
                    for i in range(consumers)
                ]
            ) as procs:
                join_seconds = await wait_group_stable(ctx.servers.bootstrap_servers, group, consumers)
                meter = CpuMeter(
                    groups={
                        "consumer_processes": [p.pid for p in procs],
                        "kafka_broker": [ctx.servers.kafka.pid],
                    }
                )
                own = [conn.get_server_pid()]
                meter.add("postgres_backends", postgres_backends(dsn.rsplit("/", 1)[1], exclude=own))
                meter.start()
                produced = await produce(ctx.servers.bootstrap_servers, topic, pairs)
                await wait_consumed(conn, count, within)
                late = postgres_backends(dsn.rsplit("/", 1)[1], exclude=own)
                meter.add("postgres_backends", late, started_during_run=True)
                cpu = meter.stop()
        first, last = await conn.fetchrow(
            "SELECT extract(epoch FROM min(consumed_at))::float8, "
            "extract(epoch FROM max(consumed_at))::float8 FROM outbox_events"
        )
        effects = await conn.fetchval("SELECT count(*) FROM task_urgency")
    finally:
        await conn.close()
    elapsed = last - first
    return {
        "consumers": consumers,
        "events": count,
        "seconds": round(elapsed, 4),
        "events_per_second": round((count - 1) / elapsed, 1) if elapsed > 0 else None,
        "group_join_seconds": round(join_seconds, 2),
        "business_rows_written": effects,
        "producer": produced,
        "cpu_seconds": cpu,
        "cpu_ms_per_1k_events": {k: round(v * 1e6 / count, 1) for k, v in cpu.items()},
    }


async def raw_run(ctx: Context, dsn: str, pairs: list[tuple[bytes, bytes]], within: float) -> dict[str, Any]:
    count = len(pairs)
    pool = await asyncpg.create_pool(dsn, min_size=PARTITIONS, max_size=PARTITIONS)
    assert pool is not None
    try:
        async with ctx.servers.topic("consumerraw", partitions=PARTITIONS) as topic:
            consumer = group_consumer(ctx.servers.bootstrap_servers, topic, "bench-raw")
            await consumer.start()
            try:
                while not consumer.assignment():
                    await consumer.getmany(timeout_ms=200)
                await produce(ctx.servers.bootstrap_servers, topic, pairs)

                async def handle(records: list[Any]) -> None:
                    async with pool.acquire() as conn:
                        for record in records:
                            outbox_id = json.loads(record.value)["outbox_id"]
                            await conn.execute(
                                "UPDATE outbox_events SET updated_at = now() WHERE id = $1", outbox_id
                            )

                done, first, last = 0, 0.0, 0.0
                deadline = time.monotonic() + within
                cpu_before = time.process_time()
                while done < count and time.monotonic() < deadline:
                    batch = await consumer.getmany(timeout_ms=500, max_records=500)
                    if not batch:
                        continue
                    if not first:
                        first = time.perf_counter()
                    await asyncio.gather(*(handle(list(records)) for records in batch.values()))
                    last = time.perf_counter()
                    done += sum(len(r) for r in batch.values())
                    await consumer.commit()
                cpu = time.process_time() - cpu_before
            finally:
                await consumer.stop()
    finally:
        await pool.close()
    if done < count:
        raise RuntimeError(f"raw consumer handled {done}/{count} events within {within:.0f}s")
    elapsed = last - first
    return {
        "events": count,
        "seconds": round(elapsed, 4),
        "events_per_second": round(count / elapsed, 1),
        "cpu_seconds_bench_process": round(cpu, 3),
    }


async def run(ctx: Context) -> Result:
    result = ctx.result("consumer", "Consumer throughput with the real DB effect")
    count = 1000 if ctx.smoke else 10000
    consumer_counts = (1,) if ctx.smoke else (1, 2)
    within = 60.0 if ctx.smoke else 300.0
    result.settings.update(
        {
            "events_per_run": count,
            "consumer_process_counts": list(consumer_counts),
            "kafka_partitions": PARTITIONS,
            "event_type": events.EVENT_TYPE,
            "real_path": "per partition batch: lock rows, handler writes, mark consumed, one commit",
            "raw_path": "aiokafka consumer, partitions concurrent, one autocommit UPDATE per event",
            "clock": "real: first -> last consumed_at; raw: first record received -> last UPDATE done",
        }
    )
    real_runs: list[dict[str, Any]] = []
    raw_runs: list[dict[str, Any]] = []
    async with ctx.servers.database("consumer") as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await events.write_outbox(conn, events.build_events(count, topic="unused"))
            await reset_rows(conn)
            pairs = await events.envelopes(conn)
        finally:
            await conn.close()
        for consumers in consumer_counts:
            ctx.say(f"consumer: {consumers} process(es), {count} events")
            real = await real_run(ctx, dsn, pairs, consumers, within)
            real_runs.append(real)
            ctx.say(f"consumer: {consumers} -> {real['events_per_second']} ev/s")
            raw = await raw_run(ctx, dsn, pairs, within)
            raw_runs.append(raw)
            ctx.say(f"consumer: raw -> {raw['events_per_second']} ev/s")
    raw_eps = sorted(r["events_per_second"] for r in raw_runs)[len(raw_runs) // 2]
    for real in real_runs:
        real["ratio_to_raw"] = (
            round(real["events_per_second"] / raw_eps, 3) if real["events_per_second"] else None
        )
    result.figures = {
        "real_runs": real_runs,
        "raw_runs": raw_runs,
        "raw_median_events_per_second": raw_eps,
        "envelope_mean_bytes": events.mean_size(pairs),
    }
    result.targets.append(
        Target("consumer (1 process) / raw consumer+UPDATE", 0.6, ">=", "x", real_runs[0]["ratio_to_raw"])
    )
    return result
