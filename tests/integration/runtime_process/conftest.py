"""Fixtures that run the real ``smartflow-runtime`` CLI as subprocesses against the real servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from smartflow_devstack.process import free_port
from smartflow_runtime.db import migrate

CLI = str(Path(sys.executable).parent / "smartflow-runtime")


def base_env(**smartflow: str) -> dict[str, str]:
    """The test process's environment without any SMARTFLOW_* leaking in, plus ``smartflow``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTFLOW_")}
    env.update({f"SMARTFLOW_{k.upper()}": v for k, v in smartflow.items()})
    return env


async def run_cli(*args: str, env: dict[str, str], within: float = 60) -> tuple[int, str, str]:
    """Run the CLI to completion; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@dataclass
class RuntimeProcess:
    """One ``smartflow-runtime run`` process; its JSON log lines land in ``log_path``."""

    role: str
    proc: asyncio.subprocess.Process
    admin_port: int
    http_port: int
    log_path: Path
    env: dict[str, str] = field(repr=False)

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    async def get(self, url: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.text()

    async def wait_ready(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        last = ""
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise AssertionError(
                    f"{self.role} exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}"
                )
            with contextlib.suppress(aiohttp.ClientError, OSError):
                status, last = await self.get(f"{self.admin}/readyz")
                if status == 200:
                    return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{self.role} not ready after {within}s: {last}\n{self.log_text()[-4000:]}")

    async def terminate(self, within: float = 60) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds until exit)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), within)
        return code, time.monotonic() - started


Spawner = Callable[..., Awaitable[RuntimeProcess]]


@pytest.fixture
async def spawn_runtime(tmp_path: Path) -> AsyncIterator[Spawner]:
    """Start ``smartflow-runtime run --role R`` with free ports; every process is killed at teardown."""
    started: list[RuntimeProcess] = []

    async def spawn(
        role: str, *, ready: bool = True, role_from_env: bool = False, **smartflow: str
    ) -> RuntimeProcess:
        admin_port, http_port = free_port(), free_port()
        env = base_env(
            bind_host="127.0.0.1",
            admin_port=str(admin_port),
            http_port=str(http_port),
            log_format="json",
            **smartflow,
        )
        args = ["run"] if role_from_env else ["run", "--role", role]
        if role_from_env:
            env["SMARTFLOW_ROLE"] = role
        log_path = tmp_path / f"{role}-{len(started)}.log"
        log = log_path.open("wb")
        try:
            proc = await asyncio.create_subprocess_exec(
                CLI, *args, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        finally:
            log.close()
        process = RuntimeProcess(role, proc, admin_port, http_port, log_path, env)
        started.append(process)
        if ready:
            await process.wait_ready()
        return process

    yield spawn
    for process in started:
        if process.proc.returncode is None:
            process.proc.kill()
            await process.proc.wait()


async def create_topic(bootstrap_servers: str, topic: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def group_members(bootstrap_servers: str, group: str) -> tuple[str, list[dict[str, Any]]]:
    """(state, members) of a consumer group from the broker, via the Kafka admin API."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    (described,) = response.to_object()["groups"]
    return described["state"], list(described["members"])


async def wait_for(check: Callable[[], Awaitable[bool]], *, what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out after {within}s waiting for {what}")


@pytest.fixture
async def migrated_dsn(database_dsn: str) -> str:
    """A fresh database with the runtime schema (8 shards, so small tests touch few of them)."""
    conn = await asyncpg.connect(database_dsn)
    try:
        await migrate(conn, shard_count=8)
    finally:
        await conn.close()
    return database_dsn
