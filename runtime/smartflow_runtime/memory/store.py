"""The memory job store: enqueue, claim with a lease, renew, complete with facts, fail with backoff.

Callers: the ``memory.extract.requested`` handler (:func:`enqueue`), the memory worker (the
rest) and the domain queries. Every function takes the caller's connection and ``now``.
Completion and failure are compare-and-swap on (lease owner, attempt), so a worker whose lease
expired and was taken over can never overwrite the new owner's result.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..errors import is_retriable
from ..outbox.model import BackoffPolicy
from ..outbox.store import describe_error, driver_errors
from . import sql

DEFAULT_MAX_ATTEMPTS = 6
JOBS_CHANNEL = "smartflow_memory_jobs"
"""Postgres channel notified on commit of a new job, so idle workers wake at once."""


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"


@dataclass(frozen=True)
class MemoryJob:
    id: int
    job_type: str
    idempotency_key: str
    payload: dict[str, Any]
    status: JobStatus
    attempts: int
    max_attempts: int
    available_at: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_error: str | None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> MemoryJob:
        payload = record["payload"]
        return cls(
            id=record["id"],
            job_type=record["job_type"],
            idempotency_key=record["idempotency_key"],
            payload=json.loads(payload) if isinstance(payload, str) else dict(payload),
            status=JobStatus(record["status"]),
            attempts=record["attempts"],
            max_attempts=record["max_attempts"],
            available_at=record["available_at"],
            lease_owner=record["lease_owner"],
            lease_until=record["lease_until"],
            last_error=record["last_error"],
        )


@dataclass(frozen=True)
class Fact:
    """One extracted fact about a user."""

    kind: str
    text: str


async def enqueue(
    conn: Any,
    *,
    job_type: str,
    idempotency_key: str,
    payload: Mapping[str, Any],
    now: datetime,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> int | None:
    """Add a job unless one with the same key exists; returns the new id, or None when it existed."""
    async with driver_errors("enqueue memory job"):
        job_id = await conn.fetchval(
            sql.ENQUEUE, job_type, idempotency_key, json.dumps(dict(payload)), max_attempts, now
        )
        if job_id is not None:
            await conn.execute(sql.NOTIFY, JOBS_CHANNEL)
    return None if job_id is None else int(job_id)


async def claim(conn: Any, worker_id: str, *, now: datetime, lease: timedelta) -> MemoryJob | None:
    """Lease one due job (or one whose lease expired) to ``worker_id``; counts an attempt."""
    async with driver_errors("claim memory job"), conn.transaction():
        await conn.fetch(sql.BURY_EXPIRED, now, "lease expired on the last allowed attempt")
        record = await conn.fetchrow(sql.CLAIM, worker_id, now, now + lease)
    return None if record is None else MemoryJob.from_record(record)


async def renew(conn: Any, job: MemoryJob, worker_id: str, *, now: datetime, lease: timedelta) -> bool:
    """Extend our lease on ``job``; False when it is no longer ours."""
    async with driver_errors("renew memory job lease"):
        return await conn.fetchval(sql.RENEW, job.id, worker_id, job.attempts, now + lease) is not None


async def complete(
    conn: Any, job: MemoryJob, worker_id: str, facts: Sequence[Fact], *, now: datetime
) -> bool:
    """Store ``facts`` and mark the job succeeded atomically; False (no writes) if the lease was lost."""
    user_id = str(job.payload.get("user_id", ""))
    conversation_id = str(job.payload.get("conversation_id", ""))
    async with driver_errors("complete memory job"), conn.transaction():
        if await conn.fetchval(sql.COMPLETE, job.id, worker_id, job.attempts, now) is None:
            return False
        if facts:
            await conn.execute(
                sql.INSERT_FACTS,
                [job.id] * len(facts),
                [user_id] * len(facts),
                [conversation_id] * len(facts),
                [f.kind for f in facts],
                [f.text for f in facts],
                now,
            )
    return True


async def fail(
    conn: Any,
    job: MemoryJob,
    worker_id: str,
    error: BaseException,
    *,
    now: datetime,
    backoff: BackoffPolicy,
) -> JobStatus | None:
    """Record a failed attempt: ``failed`` (retried after backoff) or ``dead`` at max attempts or for a
    permanent error. None when the lease was lost meanwhile."""
    dead = job.attempts >= job.max_attempts or not is_retriable(error)
    async with driver_errors("fail memory job"):
        status = await conn.fetchval(
            sql.FAIL,
            job.id,
            worker_id,
            job.attempts,
            dead,
            now + backoff.delay(job.attempts),
            describe_error(error),
            now,
        )
    return None if status is None else JobStatus(status)


async def job_by_key(conn: Any, idempotency_key: str) -> MemoryJob | None:
    async with driver_errors("read memory job"):
        record = await conn.fetchrow(sql.SELECT_JOB_BY_KEY, idempotency_key)
    return None if record is None else MemoryJob.from_record(record)
