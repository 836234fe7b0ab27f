"""The servers a bench run uses, and throwaway databases and topics on them.

A running ``make up`` stack is reused; otherwise the servers are started here (PostgreSQL and
Kafka always, the Kubernetes control plane only when a section needs it) under
``.local/bench/stack`` and stopped when the run ends. Each section works in its own database
(created, migrated, dropped) and its own topics, so it never touches anyone else's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import ssl
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from smartflow_devstack import kafka, kube, postgres, stack
from smartflow_devstack.node.start import NodeInfo
from smartflow_devstack.process import stop
from smartflow_devstack.versions import REPO_ROOT

from . import machine

WORK_ROOT = REPO_ROOT / ".local" / "bench"


@dataclass
class Servers:
    postgres: postgres.PostgresInfo
    kafka: kafka.KafkaInfo
    kube: kube.KubeInfo | None
    reused: bool
    started_pids: list[int] = field(default_factory=list)
    state: Path = WORK_ROOT / "stack"
    node: NodeInfo | None = None  # the real node, when the reused stack has one (never started here)

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers

    @property
    def pod_bootstrap_servers(self) -> str:
        """Kafka as pods on the node reach it."""
        return self.kafka.pod_bootstrap_servers

    def pod_dsn(self, database: str) -> str:
        """``database`` as pods on the node reach it."""
        return self.postgres.pod_dsn(database)

    def describe(self) -> dict[str, object]:
        return {
            "reused_running_stack": self.reused,
            "postgres_port": self.postgres.port,
            "kafka_bootstrap_servers": self.kafka.bootstrap_servers,
            "kube_server": None if self.kube is None else self.kube.server,
            "node": self.node is not None,
            "postgres_tuning": "devstack cluster: fsync=off, synchronous_commit=off, shared_buffers=256MB",
        }

    def ensure_kube(self) -> kube.KubeInfo:
        if self.kube is None:
            self.kube = kube.start(self.state)
            info = self.kube
            self.started_pids += list(reversed(info.pids()))  # stopped newest first: the scheduler too
        return self.kube

    def close(self) -> None:
        """Stop only what this run started (newest first); a reused stack is left running."""
        for pid in reversed(self.started_pids):
            stop(pid)
        self.started_pids.clear()

    async def postgres_version(self) -> str:
        conn = await asyncpg.connect(self.postgres.dsn)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    def kube_version(self) -> str | None:
        if self.kube is None:
            return None
        context = ssl.create_default_context(cafile=self.kube.ca_file)
        request = urllib.request.Request(
            f"{self.kube.server}/version", headers={"Authorization": f"Bearer {kube.ADMIN_TOKEN}"}
        )
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return str(json.loads(response.read())["gitVersion"])

    async def versions(self) -> dict[str, object]:
        kube_version = await asyncio.to_thread(self.kube_version) if self.kube else None
        return machine.versions(postgres=await self.postgres_version(), kube=kube_version)

    # --- throwaway databases and topics -----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def database(self, label: str, *, shard_count: int = 32) -> AsyncIterator[str]:
        """A fresh database migrated by the runtime's own migrations; dropped afterwards."""
        from smartflow_runtime.db import migrate

        name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(self.postgres.dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        dsn = postgres.dsn_for(self.postgres.port, name)
        try:
            conn = await asyncpg.connect(dsn)
            try:
                await migrate(conn, shard_count=shard_count)
            finally:
                await conn.close()
            yield dsn
        finally:
            admin = await asyncpg.connect(self.postgres.dsn)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()

    @contextlib.asynccontextmanager
    async def topic(self, label: str, *, partitions: int = 6) -> AsyncIterator[str]:
        """A new topic with ``partitions`` partitions (replication 1); deleted afterwards."""
        name = f"bench.{label}.{uuid.uuid4().hex[:8]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
            yield name
        finally:
            with contextlib.suppress(Exception):
                await admin.delete_topics([name])
            await admin.close()


def from_file(path: Path) -> Servers:
    """Servers described by a JSON file (``{"postgres": {...}, "kafka": {...}, "kube": {...}}``, the
    devstack dataclasses as dicts), e.g. written by a test from its fixtures; never stopped by the bench."""
    raw = json.loads(path.read_text())
    return Servers(
        postgres=_known(postgres.PostgresInfo, raw["postgres"]),
        kafka=_known(kafka.KafkaInfo, raw["kafka"]),
        kube=_known(kube.KubeInfo, raw["kube"]) if raw.get("kube") else None,
        node=_known(NodeInfo, raw["node"]) if raw.get("node") else None,
        reused=True,
    )


T = TypeVar("T")


def _known(cls: type[T], values: dict[str, Any]) -> T:
    """``cls(**values)`` with only the fields ``cls`` has: a stack file written by a newer devstack
    (more listeners, say) still describes the servers this bench uses."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in values.items() if k in names})


def acquire(*, need_kube: bool, stack_file: Path | None = None) -> Servers:
    """Reuse the given or the running stack, or start what is missing under ``.local/bench/stack``."""
    if stack_file is not None:
        return from_file(stack_file)
    running = stack.load()
    if running is not None and running.postgres is not None and running.kafka is not None:
        return Servers(
            postgres=running.postgres, kafka=running.kafka, kube=running.kube, node=running.node, reused=True
        )
    state = WORK_ROOT / "stack"
    state.mkdir(parents=True, exist_ok=True)
    pg = postgres.start(state)
    servers = Servers(postgres=pg, kafka=None, kube=None, reused=False, state=state)  # type: ignore[arg-type]
    servers.started_pids.append(pg.pid)
    try:
        servers.kafka = kafka.start(state)
        servers.started_pids.append(servers.kafka.pid)
        if need_kube:
            servers.ensure_kube()
    except BaseException:
        servers.close()
        raise
    return servers
