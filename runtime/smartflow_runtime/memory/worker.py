"""The memory worker service: drains ``memory_jobs`` into ``memory_facts``.

Built by the process layer for the ``memory-worker``, ``worker`` and ``all`` roles. Jobs are
claimed with ``FOR UPDATE SKIP LOCKED`` and a lease that is renewed while the job runs; a worker
that crashes stops renewing, and after the lease another worker claims the job again (the
original system left such jobs stuck in ``processing``). A job's facts and its ``succeeded``
mark commit together, and only while the lease is still ours, so a job succeeds once. Failures
are retried with exponential backoff until ``max_attempts`` (default 6), then the job is dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from ..domain.events import MemoryExtract
from ..errors import DatabaseError, PermanentExtractionError
from ..metrics import RuntimeMetrics
from ..outbox.kafka import default_client_id
from ..outbox.model import BackoffPolicy, outage_retry_seconds
from ..outbox.store import connection, connection_usable, driver_errors, utcnow
from ..readiness import DATABASE, DependencyStatus, Unready
from . import store
from .extractor import FactExtractor, RuleBasedExtractor

log = logging.getLogger(__name__)

DEFAULT_BACKOFF = BackoffPolicy(base_seconds=2.0, cap_seconds=60.0)


class MemoryWorker:
    """Memory job loop; ``await start()``, ``await stop()`` (finishes in-flight jobs), ``is_healthy()``.

    Keyword arguments:
        pool: asyncpg pool; one connection for LISTEN plus short-lived ones per step.
        metrics: :class:`RuntimeMetrics` to report into.
        extractor: a :class:`FactExtractor` (default :class:`RuleBasedExtractor`, deterministic, local).
        worker_id: the lease owner name (default: host, pid and a random suffix).
        lease_seconds: job lease; renewed every third of it while the job runs (default 30).
        poll_interval_seconds: fallback poll when no NOTIFY arrives (default 2).
        concurrency: jobs processed at once by this worker (default 1).
        backoff: retry delay policy (default 2 s doubling, cap 60 s).
        clock: ``() -> aware datetime`` for leases and due times.
    """

    def __init__(
        self,
        *,
        pool: Any,
        metrics: RuntimeMetrics,
        extractor: FactExtractor | None = None,
        worker_id: str | None = None,
        lease_seconds: float = 30.0,
        poll_interval_seconds: float = 2.0,
        concurrency: int = 1,
        backoff: BackoffPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if concurrency < 1 or lease_seconds <= 0 or poll_interval_seconds <= 0:
            raise ValueError("concurrency >= 1, lease_seconds > 0 and poll_interval_seconds > 0 required")
        self.worker_id = worker_id or default_client_id("memory")
        self._pool = pool
        self._metrics = metrics
        self._extractor: FactExtractor = extractor or RuleBasedExtractor()
        self._lease = timedelta(seconds=lease_seconds)
        self._poll_seconds = poll_interval_seconds
        self._concurrency = concurrency
        self._backoff = backoff or DEFAULT_BACKOFF
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._listen_conn: Any = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_progress = 0.0
        self._deps = DependencyStatus()
        self._started = False
        self._stopped = False

    async def start(self) -> None:
        """Start the loops. Idempotent. Does not wait for PostgreSQL: the first loop opens the
        LISTEN connection (and re-opens it after a loss); until then :meth:`unready` says why."""
        if self._started:
            return
        self._started = True
        self._last_progress = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._run(), name=f"memory-worker:{self.worker_id}:{i}")
            for i in range(self._concurrency)
        ]

    async def _ensure_listening(self) -> None:
        if self._listen_conn is not None and connection_usable(self._listen_conn):
            return
        await self._unlisten()
        async with driver_errors("memory worker listen"):
            conn = await self._pool.acquire()
            try:
                await conn.add_listener(store.JOBS_CHANNEL, self._on_job)
            except BaseException:
                await self._pool.release(conn)
                raise
        self._listen_conn = conn

    async def _unlisten(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.remove_listener(store.JOBS_CHANNEL, self._on_job)
            with contextlib.suppress(Exception):
                await self._pool.release(conn)

    async def stop(self) -> None:
        """Stop claiming, let in-flight jobs finish, stop listening. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self._wake.set()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await task
        await self._unlisten()

    def is_alive(self) -> bool:
        """True while every loop task runs (outages do not end them; only a bug or :meth:`stop` does)."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    def unready(self) -> tuple[Unready, ...]:
        """``database`` while the loops cannot reach PostgreSQL, with the reason and since when."""
        return self._deps.unready()

    def is_healthy(self) -> bool:
        """Alive with the database up."""
        return self.is_alive() and not self._deps.unready()

    async def __aenter__(self) -> MemoryWorker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _on_job(self, *_: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()
            pause = self._poll_seconds
            try:
                if self._listening_loop():
                    await self._ensure_listening()
                worked = await self.run_once()
                self._last_progress = time.monotonic()
                self._deps.up(DATABASE)
                failures = 0
            except DatabaseError as error:  # an outage: unready, retry soon (a lost job: after its lease)
                failures += 1
                if not self._deps.is_down(DATABASE):
                    log.warning("memory worker: database unavailable: %s", error)
                self._deps.down(DATABASE, str(error))
                worked, pause = False, outage_retry_seconds(failures)
            except Exception as error:  # keep the loop alive; a lost job is retried after its lease
                log.exception("memory worker cycle failed: %s", error)
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=pause)

    def _listening_loop(self) -> bool:
        """Only the first loop task keeps the (one) LISTEN connection open."""
        return bool(self._tasks) and asyncio.current_task() is self._tasks[0]

    async def run_once(self) -> bool:
        """Claim and process one job; False when none was due."""
        async with connection(self._pool, "memory job claim") as conn:
            job = await store.claim(conn, self.worker_id, now=self._clock(), lease=self._lease)
        if job is None:
            return False
        renewer = asyncio.create_task(self._keep_lease(job))
        try:
            outcome = await self._process(job)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        self._metrics.memory_jobs.labels(outcome).inc()
        return True

    async def _keep_lease(self, job: store.MemoryJob) -> None:
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 3)
            try:
                async with self._pool.acquire() as conn:
                    if not await store.renew(conn, job, self.worker_id, now=self._clock(), lease=self._lease):
                        log.warning("memory job %s lease lost", job.id)
                        return
            except Exception as error:  # the completion CAS still protects the result
                log.warning("memory job %s lease renewal failed: %s", job.id, error)

    async def _process(self, job: store.MemoryJob) -> str:
        try:
            try:
                request = MemoryExtract.model_validate(job.payload)
            except ValidationError as error:
                raise PermanentExtractionError(f"bad memory job payload: {error}") from error
            facts = list(await self._extractor.extract(request.text))
        except Exception as error:
            async with connection(self._pool, "memory job fail") as conn:
                status = await store.fail(
                    conn, job, self.worker_id, error, now=self._clock(), backoff=self._backoff
                )
            log.warning("memory job %s failed (attempt %s): %s -> %s", job.id, job.attempts, error, status)
            if status is None:
                return "lease_lost"
            return "dead" if status is store.JobStatus.DEAD else "retry"
        async with connection(self._pool, "memory job complete") as conn:
            done = await store.complete(conn, job, self.worker_id, facts, now=self._clock())
        if not done:
            log.warning("memory job %s finished after its lease was taken over; result dropped", job.id)
            return "lease_lost"
        self._metrics.memory_facts.inc(len(facts))
        return "succeeded"
