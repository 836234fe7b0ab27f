"""Business traffic for node tests: chat messages sent to the api Service from the host, and the
check that each had exactly one effect (``token_usage.adjustments`` counts every applied token
event, so a duplicate effect shows up there, unlike the idempotent chat/memory tables)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import asyncpg


def api_base_url(core: Any, namespace: str, runtime: str) -> str:
    service = core.read_namespaced_service(f"{runtime}-api", namespace)
    port = next(p.port for p in service.spec.ports if p.name == "http")
    return f"http://{service.spec.cluster_ip}:{port}"


async def send_messages(
    base_url: str, count: int, *, user: str, concurrency: int = 4, retry_seconds: float = 60
) -> int:
    """POST ``count`` chat messages; a refused or 5xx request is retried (rollouts) until accepted."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)
    accepted = [0]

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = {"user_id": user, "content": f"message {i}"}
            key = f"{user}-{i}"
            deadline = asyncio.get_running_loop().time() + retry_seconds
            while True:
                try:
                    async with session.post(
                        f"{base_url}/v1/conversations/{user}-conv-{i % 8}/messages",
                        json=body,
                        headers={"Idempotency-Key": key},
                    ) as response:
                        if response.status == 202:
                            accepted[0] += 1
                            break
                        if response.status < 500:
                            raise AssertionError(f"api answered {response.status}: {await response.text()}")
                except (TimeoutError, aiohttp.ClientError):
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"message {i} not accepted within {retry_seconds}s")
                await asyncio.sleep(0.2)

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return accepted[0]


async def effects(dsn: str, user: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            SELECT
              (SELECT count(*) FROM chat_messages WHERE user_id = $1) AS messages,
              (SELECT coalesce(sum(adjustments), 0) FROM token_usage WHERE user_id = $1) AS token_adjustments,
              (SELECT count(*) FROM outbox_events WHERE status IN ('pending', 'published')) AS unfinished,
              (SELECT count(*) FROM outbox_events WHERE status = 'dead') AS dead
            """,
            user,
        )
    finally:
        await conn.close()
    return {key: int(value) for key, value in dict(row).items()}
