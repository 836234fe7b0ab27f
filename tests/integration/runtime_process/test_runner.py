"""The role runner in-process, with recording stand-in services and a real PostgreSQL.

The stand-ins replace the relay/consumer/worker (not Postgres or Kafka) so that start/stop
order, readiness during a drain, a dying loop, an unready (but alive) service, the schema gate
and an overrun grace period can be observed exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime

import aiohttp
import asyncpg
from prometheus_client import CollectorRegistry

from smartflow_devstack.process import free_port
from smartflow_runtime.config import Need, Role, load_settings
from smartflow_runtime.db import REQUIRED_SCHEMA_VERSION, migrate
from smartflow_runtime.readiness import Unready
from smartflow_runtime.roles import Component, Dependencies, RoleRunner, RunOutcome, components_for
from smartflow_runtime.service import Service


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.ready_when_stopping: list[Mapping[str, bool]] = []


class StandIn:
    def __init__(
        self,
        name: str,
        recorder: Recorder,
        runner: list[RoleRunner],
        *,
        stop_seconds: float = 0.0,
        fail_start: bool = False,
    ) -> None:
        self.name = name
        self.recorder = recorder
        self.runner = runner
        self.alive = True
        self.down: list[Unready] = []
        self.stop_seconds = stop_seconds
        self.fail_start = fail_start

    async def start(self) -> None:
        self.recorder.events.append(f"start {self.name}")
        if self.fail_start:
            raise OSError(f"{self.name} cannot reach its broker")

    async def stop(self) -> None:
        self.recorder.events.append(f"stop {self.name}")
        self.recorder.ready_when_stopping.append((await self.runner[0].readiness()).checks)
        await asyncio.sleep(self.stop_seconds)

    def is_alive(self) -> bool:
        return self.alive

    def unready(self) -> list[Unready]:
        return self.down


def _runner(
    dsn: str,
    role: Role,
    services: dict[Component, StandIn],
    holder: list[RoleRunner],
    *,
    grace: str = "5",
) -> tuple[RoleRunner, int]:
    admin_port = free_port()
    settings = load_settings(
        {
            "SMARTFLOW_DATABASE_DSN": dsn,
            "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "SMARTFLOW_BIND_HOST": "127.0.0.1",
            "SMARTFLOW_ADMIN_PORT": str(admin_port),
            "SMARTFLOW_SHUTDOWN_GRACE_SECONDS": grace,
        },
        needs=[Need.ROLE],
        overrides={"role": role.value},
    )

    def factory(component: Component, deps: Dependencies) -> Service:
        assert deps.pool is not None and deps.settings is settings
        return services[component]

    runner = RoleRunner(
        role=role,
        settings=settings,
        registry=CollectorRegistry(),
        factory=factory,
        watch_interval=0.05,
        probe_interval=0.1,
    )
    holder.append(runner)
    return runner, admin_port


async def _readyz(port: int) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/readyz") as response:
        return response.status, await response.json()


async def _migrated(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, shard_count=4)
    finally:
        await conn.close()
    return dsn


async def _until_ready(port: int) -> dict[str, object]:
    for _ in range(100):
        try:
            status, body = await _readyz(port)
        except aiohttp.ClientError:
            status, body = 0, {}
        if status == 200:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError("never ready")


async def test_starts_in_table_order_drains_in_reverse_after_readiness_turns_false(database_dsn: str) -> None:
    await _migrated(database_dsn)
    recorder, holder = Recorder(), []
    services = {c: StandIn(c.value, recorder, holder) for c in Component}
    runner, admin_port = _runner(database_dsn, Role.ALL, services, holder)
    task = asyncio.create_task(runner.run())
    body = await _until_ready(admin_port)
    assert body["checks"] == {
        "running": True,
        "database": True,
        "schema": True,
        **{c.value: True for c in components_for(Role.ALL)},
    }
    runner.request_stop("test")
    assert await asyncio.wait_for(task, 10) is RunOutcome.DRAINED
    order = [c.value for c in components_for(Role.ALL)]
    assert recorder.events == [f"start {n}" for n in order] + [f"stop {n}" for n in reversed(order)]
    # Every service is stopped only after /readyz has gone false (the pod leaves the endpoints first).
    assert recorder.ready_when_stopping and all(r["running"] is False for r in recorder.ready_when_stopping)


async def test_an_unready_service_is_reported_with_its_dependency_and_the_role_keeps_running(
    database_dsn: str,
) -> None:
    await _migrated(database_dsn)
    recorder, holder = Recorder(), []
    services = {c: StandIn(c.value, recorder, holder) for c in Component}
    runner, admin_port = _runner(database_dsn, Role.WORKER, services, holder)
    task = asyncio.create_task(runner.run())
    await _until_ready(admin_port)
    since = datetime(2026, 1, 1, tzinfo=UTC)
    services[Component.RELAY].down = [Unready("kafka", "KafkaConnectionError: refused", since)]
    await asyncio.sleep(0.5)  # ten watch intervals: an unready service is never treated as dead
    status, body = await _readyz(admin_port)
    assert status == 503 and not task.done()
    assert body["checks"]["relay"] is False and body["checks"]["consumer"] is True  # type: ignore[index]
    (reason,) = body["unready"]  # type: ignore[misc]
    assert reason["dependency"] == "kafka" and reason["since"] == since.isoformat()
    assert "refused" in reason["reason"]
    services[Component.RELAY].down = []
    assert (await _until_ready(admin_port))["checks"]["relay"] is True  # type: ignore[index]
    runner.request_stop("test")
    assert await asyncio.wait_for(task, 10) is RunOutcome.DRAINED


async def test_a_loop_that_ended_makes_the_runner_drain_and_exit_non_zero(database_dsn: str) -> None:
    await _migrated(database_dsn)
    recorder, holder = Recorder(), []
    services = {c: StandIn(c.value, recorder, holder) for c in Component}
    runner, admin_port = _runner(database_dsn, Role.WORKER, services, holder)
    task = asyncio.create_task(runner.run())
    await _until_ready(admin_port)
    services[Component.CONSUMER].alive = False
    assert await asyncio.wait_for(task, 10) is RunOutcome.FAILED
    assert "stop consumer" in recorder.events and "stop relay" in recorder.events


async def test_a_service_that_cannot_start_fails_the_role_and_stops_what_started(database_dsn: str) -> None:
    await _migrated(database_dsn)
    recorder, holder = Recorder(), []
    services = {c: StandIn(c.value, recorder, holder) for c in Component}
    services[Component.RELAY] = StandIn("relay", recorder, holder, fail_start=True)
    runner, _ = _runner(database_dsn, Role.WORKER, services, holder)
    assert await asyncio.wait_for(runner.run(), 10) is RunOutcome.FAILED
    assert recorder.events == [
        "start consumer",
        "start memory-worker",
        "start relay",
        "stop relay",
        "stop memory-worker",
        "stop consumer",
    ]


async def test_a_drain_that_overruns_the_grace_period_is_cut_short_and_fails(database_dsn: str) -> None:
    await _migrated(database_dsn)
    recorder, holder = Recorder(), []
    services = {c: StandIn(c.value, recorder, holder) for c in Component}
    services[Component.CONSUMER] = StandIn("consumer", recorder, holder, stop_seconds=30)
    runner, admin_port = _runner(database_dsn, Role.CONSUMER, services, holder, grace="1")
    task = asyncio.create_task(runner.run())
    await _until_ready(admin_port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    runner.request_stop("test")
    assert await asyncio.wait_for(task, 10) is RunOutcome.FAILED
    assert loop.time() - started < 1.5


async def test_readyz_fails_when_the_database_is_unreachable_but_healthz_stays_up(database_dsn: str) -> None:
    await _migrated(database_dsn)
    recorder, holder = Recorder(), []
    services = {c: StandIn(c.value, recorder, holder) for c in Component}
    runner, admin_port = _runner(database_dsn, Role.MEMORY_WORKER, services, holder)
    task = asyncio.create_task(runner.run())
    await _until_ready(admin_port)
    # Point the readiness ping at a port where nothing listens: the same effect as a database outage.
    runner._settings = runner._settings.model_copy(update={"database_dsn": "postgresql://x:y@127.0.0.1:9/z"})
    await runner._close_ping_conn()
    await asyncio.sleep(0.5)  # a few monitor rounds
    status, body = await _readyz(admin_port)
    assert status == 503
    assert body["checks"] == {"running": True, "database": False, "schema": True, "memory-worker": True}
    assert [u["dependency"] for u in body["unready"]] == ["database"]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{admin_port}/healthz") as r:
        assert r.status == 200
    runner.request_stop("test")
    assert await asyncio.wait_for(task, 10) is RunOutcome.DRAINED


async def test_a_role_on_an_unmigrated_database_waits_unready_and_starts_after_migrate(
    database_dsn: str,
) -> None:
    recorder, holder = Recorder(), []
    services = {c: StandIn(c.value, recorder, holder) for c in Component}
    runner, admin_port = _runner(database_dsn, Role.MEMORY_WORKER, services, holder)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(0.5)
    status, body = await _readyz(admin_port)
    assert status == 503 and not task.done()
    assert body["checks"]["schema"] is False and body["checks"]["database"] is True  # type: ignore[index]
    (reason,) = body["unready"]  # type: ignore[misc]
    assert reason["dependency"] == "schema"
    assert f"version 0, this runtime needs {REQUIRED_SCHEMA_VERSION}" in reason["reason"]
    assert recorder.events == [], "no service starts on a schema it cannot use"
    await _migrated(database_dsn)
    body = await _until_ready(admin_port)
    assert body["checks"]["schema"] is True and recorder.events == ["start memory-worker"]  # type: ignore[index]
    runner.request_stop("test")
    assert await asyncio.wait_for(task, 10) is RunOutcome.DRAINED
