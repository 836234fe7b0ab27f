"""The real ``smartflow-runtime run --role relay`` through the local runner, from the Deployment the
operator's own builder makes: the runner's contract is "run the container's process", so the real
process must start from it, get ready against the test PostgreSQL and Kafka, lease outbox shards, and
drain (releasing its shards) when the runner scales it down with SIGTERM."""

from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
from pathlib import Path

import asyncpg

from smartflow_devstack.process import alive
from smartflow_operator.builders.deployment import build_deployment
from smartflow_operator.names import Role
from smartflow_operator.resource import SmartflowRuntime

from .conftest import Harness, wait_for

RUNTIME = str(Path(sys.executable).parent / "smartflow-runtime")


def relay_deployment(
    namespace: str, *, bootstrap_servers: str, topic: str, replicas: int
) -> dict[str, object]:
    runtime = SmartflowRuntime.from_object(
        {
            "metadata": {"name": "demo", "namespace": namespace, "uid": "not-applied", "generation": 1},
            "spec": {
                "image": "ghcr.io/smartflow/runtime:0.1.0",
                "mode": "split",
                "database": {"dsnSecretRef": {"name": "smartflow-database", "key": "dsn"}},
                "kafka": {"bootstrapServers": bootstrap_servers, "topic": topic},
                "env": [{"name": "SMARTFLOW_SHUTDOWN_GRACE_SECONDS", "value": "5"}],
            },
        }
    )
    deployment = copy.deepcopy(build_deployment(runtime, Role.RELAY, replicas=replicas, config_hash="test"))
    # No SmartflowRuntime object exists here: without this the garbage collector would delete it.
    del deployment["metadata"]["ownerReferences"]
    return deployment


async def shard_owners(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT owner FROM outbox_shards WHERE owner IS NOT NULL")
    finally:
        await conn.close()
    return [row["owner"] for row in rows]


def test_the_real_relay_runs_gets_ready_leases_shards_and_drains_on_scale_down(
    harness: Harness, database_dsn: str, bootstrap_servers: str, unique_name: str
) -> None:
    subprocess.run(
        [RUNTIME, "migrate"], env={"SMARTFLOW_DATABASE_DSN": database_dsn}, check=True, capture_output=True
    )
    harness.core.create_namespaced_secret(
        harness.namespace, {"metadata": {"name": "smartflow-database"}, "stringData": {"dsn": database_dsn}}
    )
    deployment = relay_deployment(
        harness.namespace, bootstrap_servers=bootstrap_servers, topic=f"runner-{unique_name}", replicas=2
    )
    harness.create(deployment)
    name = str(deployment["metadata"]["name"])  # type: ignore[index]

    replicas = harness.wait_ready(name, 2, timeout=90)

    pids = {replica["pid"] for replica in replicas}
    owners = wait_for(
        lambda: asyncio.run(shard_owners(database_dsn)), what="relays to lease shards", timeout=60
    )
    assert {int(owner.split("-")[-2]) for owner in owners} <= pids, owners

    harness.scale(name, 0)
    harness.wait_ready(name, 0, timeout=60)

    for replica in replicas:
        wait_for(lambda r=replica: not alive(r["pid"]), what="relays to exit")
    assert asyncio.run(shard_owners(database_dsn)) == [], "a drained relay releases its shards"
