"""The memory worker against a real PostgreSQL: leases survive a SIGKILL, retries back off, jobs die at
max attempts, and a job's facts are written once."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from smartflow_runtime.errors import ExtractionError
from smartflow_runtime.memory import store as jobs
from smartflow_runtime.memory.store import Fact
from smartflow_runtime.memory.worker import MemoryWorker
from smartflow_runtime.metrics import RuntimeMetrics
from smartflow_runtime.outbox.model import BackoffPolicy
from smartflow_runtime.outbox.store import utcnow

from .conftest import sample, wait_until
from .test_relay import spawn

TEXT = "My name is Grace. I prefer mornings."


async def enqueue(pool: Any, *, max_attempts: int = 6, text: str = TEXT) -> int:
    message_id = uuid.uuid4()
    payload = {"user_id": "grace", "conversation_id": "c", "message_id": str(message_id), "text": text}
    async with pool.acquire() as conn:
        job_id = await jobs.enqueue(
            conn,
            job_type="memory.extract",
            idempotency_key=f"memory.extract:{message_id}",
            payload=payload,
            now=utcnow(),
            max_attempts=max_attempts,
        )
        # Same key again (a replayed event): no second job.
        assert (
            await jobs.enqueue(
                conn,
                job_type="memory.extract",
                idempotency_key=f"memory.extract:{message_id}",
                payload=payload,
                now=utcnow(),
            )
            is None
        )
    assert job_id is not None
    return job_id


async def job(pool: Any, job_id: int) -> Any:
    return await pool.fetchrow("SELECT * FROM memory_jobs WHERE id = $1", job_id)


def worker(pool: Any, **kwargs: Any) -> MemoryWorker:
    options: dict[str, Any] = {
        "pool": pool,
        "metrics": RuntimeMetrics(CollectorRegistry()),
        "lease_seconds": 2.0,
        "poll_interval_seconds": 0.2,
        "backoff": BackoffPolicy(0.05, 0.2),
    }
    options.update(kwargs)
    return MemoryWorker(**options)


async def test_worker_killed_mid_job_is_retried_after_its_lease_and_succeeds_once(
    dsn: str, pool: Any
) -> None:
    job_id = await enqueue(pool)
    victim = await asyncio.to_thread(
        spawn, "memory-worker", "--dsn", dsn, "--id", "victim", "--lease", "2", "--extract-seconds", "60"
    )
    try:
        assert victim.stdout is not None
        assert await asyncio.to_thread(victim.stdout.readline) == "extracting\n"
    finally:
        victim.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.wait, 10)
    row = await job(pool, job_id)
    assert (row["status"], row["lease_owner"], row["attempts"]) == ("processing", "victim", 1)
    lease_end = row["lease_until"]

    survivor = worker(pool, worker_id="survivor")
    async with survivor:

        async def succeeded() -> bool:
            return (await job(pool, job_id))["status"] == "succeeded"

        await wait_until(succeeded, within=15, what="job retried and succeeded")
    row = await job(pool, job_id)
    assert row["attempts"] == 2 and row["lease_owner"] is None
    assert row["finished_at"] >= lease_end, "the job was retried while the victim's lease was valid"
    facts = await pool.fetch("SELECT job_id, kind, fact FROM memory_facts ORDER BY id")
    assert [(f["job_id"], f["kind"], f["fact"]) for f in facts] == [
        (job_id, "identity", "identity: Grace"),
        (job_id, "preference", "preference: mornings"),
    ]
    assert sample(survivor._metrics, "smartflow_memory_jobs_total", {"outcome": "succeeded"}) == 1


class FailingExtractor:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def extract(self, text: str) -> Sequence[Fact]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ExtractionError(f"model busy ({self.calls})")
        return [Fact(kind="note", text=text)]


async def test_failed_job_is_retried_with_backoff_then_succeeds(pool: Any) -> None:
    job_id = await enqueue(pool)
    extractor = FailingExtractor(failures=2)
    async with worker(pool, extractor=extractor) as w:

        async def succeeded() -> bool:
            return (await job(pool, job_id))["status"] == "succeeded"

        await wait_until(succeeded, within=10, what="job succeeded after two failures")
    row = await job(pool, job_id)
    assert row["attempts"] == 3 and extractor.calls == 3
    assert sample(w._metrics, "smartflow_memory_jobs_total", {"outcome": "retry"}) == 2
    assert await pool.fetchval("SELECT count(*) FROM memory_facts WHERE job_id = $1", job_id) == 1


async def test_job_goes_dead_at_max_attempts_with_last_error(pool: Any) -> None:
    job_id = await enqueue(pool, max_attempts=3)
    extractor = FailingExtractor(failures=100)
    async with worker(pool, extractor=extractor) as w:

        async def dead() -> bool:
            return (await job(pool, job_id))["status"] == "dead"

        await wait_until(dead, within=10, what="job dead")
        await asyncio.sleep(0.5)  # a dead job is never claimed again
    row = await job(pool, job_id)
    assert (row["attempts"], row["last_error"]) == (3, "ExtractionError: model busy (3)")
    assert extractor.calls == 3
    assert sample(w._metrics, "smartflow_memory_jobs_total", {"outcome": "dead"}) == 1


async def test_concurrent_workers_claim_each_job_once(pool: Any) -> None:
    ids = [await enqueue(pool, text=f"I like topic {i}.") for i in range(12)]
    workers = [worker(pool, worker_id=f"w{i}", concurrency=2) for i in range(3)]
    for w in workers:
        await w.start()
    try:

        async def all_done() -> bool:
            return await pool.fetchval("SELECT count(*) FROM memory_jobs WHERE status = 'succeeded'") == 12

        await wait_until(all_done, within=15, what="12 jobs succeeded")
    finally:
        for w in workers:
            await w.stop()
    assert await pool.fetchval("SELECT max(attempts) FROM memory_jobs WHERE id = ANY($1)", ids) == 1
    assert await pool.fetchval("SELECT count(*) FROM memory_facts") == 12
    assert (
        sum(sample(w._metrics, "smartflow_memory_jobs_total", {"outcome": "succeeded"}) for w in workers)
        == 12
    )
