"""SIGTERM during load: every role drains, exits 0 within the grace period, and no event is lost."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import asyncpg

from .conftest import RuntimeProcess, Spawner, create_topic, wait_for

GRACE_SECONDS = 10


class Load:
    """Posts chat messages through the api as fast as a few clients can, until stopped."""

    def __init__(self, api: RuntimeProcess, clients: int = 8) -> None:
        self.api = api
        self.clients = clients
        self.accepted: list[str] = []
        self.refused = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(self.clients)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _client(self, n: int) -> None:
        i = 0
        async with aiohttp.ClientSession() as session:
            while not self._stop.is_set():
                i += 1
                body = {"user_id": f"user-{n}", "content": f"I like item {n}-{i}."}
                url = f"{self.api.http}/v1/conversations/conv-{n}/messages"
                try:
                    async with session.post(url, json=body) as response:
                        if response.status == 202:
                            self.accepted.append((await response.json())["message_id"])
                        else:
                            self.refused += 1
                except (aiohttp.ClientError, OSError):
                    # The api is draining or gone: such a request was never accepted.
                    self.refused += 1
                    await asyncio.sleep(0.05)

    async def until_accepted(self, count: int) -> None:
        async def enough() -> bool:
            return len(self.accepted) >= count

        await wait_for(enough, what=f"{count} accepted requests", within=60)


async def _terminate_within_grace(process: RuntimeProcess) -> None:
    code, seconds = await process.terminate(within=GRACE_SECONDS + 15)
    assert code == 0, process.log_text()[-3000:]
    assert seconds < GRACE_SECONDS, f"{process.role} took {seconds:.1f}s to drain"
    messages = [r.get("msg") for r in process.log_records()]
    assert "drain requested" in messages and "role exiting" in messages


async def test_sigterm_during_load_loses_nothing(
    migrated_dsn: str, bootstrap_servers: str, unique_name: str, spawn_runtime: Spawner
) -> None:
    topic, group = f"outbox-{unique_name}", f"group-{unique_name}"
    await create_topic(bootstrap_servers, topic, partitions=3)
    common = {
        "database_dsn": migrated_dsn,
        "kafka_bootstrap_servers": bootstrap_servers,
        "kafka_topic": topic,
        "kafka_consumer_group": group,
        "shutdown_grace_seconds": str(GRACE_SECONDS),
    }
    api = await spawn_runtime("api", **common)
    relay = await spawn_runtime("relay", **common)
    consumer = await spawn_runtime("consumer", **common)
    load = Load(api)
    load.start()
    try:
        await load.until_accepted(50)
        # The consumer drains mid-stream (finishes in-flight events, commits, leaves); a new one takes over.
        await _terminate_within_grace(consumer)
        consumer = await spawn_runtime("consumer", **common)
        await load.until_accepted(len(load.accepted) + 50)
        # The relay drains mid-batch-stream (finishes its batch, releases its shards); a new one takes over.
        await _terminate_within_grace(relay)
        relay = await spawn_runtime("relay", **common)
        await load.until_accepted(len(load.accepted) + 50)
        # The api drains with requests in flight: accepted requests are committed, the rest refused.
        await _terminate_within_grace(api)
    finally:
        await load.stop()

    conn = await asyncpg.connect(migrated_dsn)
    try:

        async def everything_consumed() -> bool:
            left = await conn.fetchval("SELECT count(*) FROM outbox_events WHERE status <> 'consumed'")
            return bool(left == 0)

        with contextlib.suppress(AssertionError):
            await wait_for(everything_consumed, what="every event consumed", within=90)
        statuses = dict(await conn.fetch("SELECT status, count(*) FROM outbox_events GROUP BY status"))
        assert set(statuses) == {"consumed"}, statuses

        # Every accepted message had its three events applied exactly once.
        accepted = set(load.accepted)
        persisted = {str(r["message_id"]) for r in await conn.fetch("SELECT message_id FROM chat_messages")}
        assert accepted <= persisted
        history_events = await conn.fetchval(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'chat.history.persist.requested'"
        )
        assert len(persisted) == history_events
        token_events, token_sum = await conn.fetchrow(
            "SELECT count(*), coalesce(sum((payload->>'delta')::bigint), 0) FROM outbox_events "
            "WHERE event_type = 'chat.token.usage.adjust.requested'"
        )
        adjustments, tokens = await conn.fetchrow("SELECT sum(adjustments), sum(tokens) FROM token_usage")
        assert (adjustments, tokens) == (token_events, token_sum), (
            "a token adjustment was lost or applied twice"
        )
        memory_events = await conn.fetchval(
            "SELECT count(*) FROM outbox_events WHERE event_type = 'memory.extract.requested'"
        )
        assert await conn.fetchval("SELECT count(*) FROM memory_jobs") == memory_events == history_events
        assert await conn.fetchval("SELECT sum(message_count) FROM conversations") == history_events
    finally:
        await conn.close()
    assert len(accepted) >= 150
    started = time.monotonic()
    for process in (relay, consumer):
        await _terminate_within_grace(process)
    assert time.monotonic() - started < 2 * GRACE_SECONDS
