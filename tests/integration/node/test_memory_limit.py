"""A role over its memory limit on the real node: the kernel OOM-kills it, kubelet restarts it,
and once the limit fits the work, every event still arrives exactly once (nothing lost)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import aiohttp
import asyncpg
import pytest

from smartflow_devstack import kube
from smartflow_devstack.manifests import split_runtime
from tests.integration.autoscaling.operator_harness import Cluster, eventually, running_operator

from .load import api_base_url
from .pods import ready_pods, role_pods

NAME = "oom"
STEPS = 160
# Each agent step carries ~450 KB of content and of state: two outbox events of that size. The
# relay claims up to 500 rows a batch, far more than its 192 MiB limit holds.
BLOB = "x" * 450_000


@pytest.fixture(scope="module")
def runtime(
    node_cluster: Cluster,
    node_images: dict[str, str],
    pod_database: tuple[str, str],
    pod_bootstrap: str,
    kube_server: kube.KubeInfo,
) -> Iterator[Cluster]:
    cluster = node_cluster
    cluster.create_secret("db", {"dsn": pod_database[1]})
    run = uuid.uuid4().hex[:6]
    body = split_runtime(
        NAME,
        bootstrap_servers=pod_bootstrap,
        topic=f"node.oom.{run}",
        group=f"node-oom-{run}",
        image=node_images["runtime"],
    )
    body["spec"]["roles"]["relay"]["resources"] = {
        "requests": {"memory": "64Mi"},
        "limits": {"memory": "192Mi"},
    }
    with running_operator(kube_server.kubeconfig, cluster.namespace, resync_seconds=10.0):
        cluster.create_runtime(body)
        for role in ("api", "relay", "consumer", "memory-worker"):
            eventually(
                lambda role=role: len(ready_pods(cluster.core, cluster.namespace, NAME, role)) == 1,
                timeout=240,
                what=f"{role} Ready",
                interval=1,
            )
        yield cluster


async def _send_steps(base_url: str, conversation: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for seq in range(STEPS):
            body = {
                "agent_id": "agent-1",
                "seq": seq,
                "kind": "plan",
                "content": {"text": BLOB},
                "state": {"notes": BLOB},
            }
            async with session.post(
                f"{base_url}/v1/conversations/{conversation}/agent-steps", json=body
            ) as response:
                assert response.status == 202, await response.text()


async def _counts(dsn: str, conversation: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            SELECT
              (SELECT count(*) FROM agent_timeline WHERE conversation_id = $1) AS timeline,
              (SELECT count(*) FROM outbox_events WHERE status = 'consumed') AS consumed,
              (SELECT count(*) FROM outbox_events WHERE status IN ('pending', 'published')) AS unfinished,
              (SELECT count(*) FROM outbox_events WHERE status = 'dead') AS dead
            """,
            conversation,
        )
    finally:
        await conn.close()
    return {key: int(value) for key, value in dict(row).items()}


def test_relay_over_its_memory_limit_is_oom_killed_restarted_and_loses_nothing(
    runtime: Cluster, pod_database: tuple[str, str]
) -> None:
    conversation = f"oom-{uuid.uuid4().hex[:6]}"
    asyncio.run(_send_steps(api_base_url(runtime.core, runtime.namespace, NAME), conversation))

    def oom_killed() -> bool:
        for pod in role_pods(runtime.core, runtime.namespace, NAME, "relay"):
            status = (pod.status.container_statuses or [None])[0]
            terminated = status.last_state.terminated if status else None
            if status and status.restart_count >= 1 and terminated and terminated.reason == "OOMKilled":
                return True
        return False

    eventually(oom_killed, timeout=120, what="relay OOM-killed and restarted by kubelet", interval=1)
    # Give the relay room for its batches: the pods roll with the new limit and publish everything.
    runtime.patch_runtime(NAME, {"spec": {"roles": {"relay": {"resources": {"limits": {"memory": "1Gi"}}}}}})

    def drained() -> dict[str, int] | None:
        counts = asyncio.run(_counts(pod_database[0], conversation))
        return counts if counts["unfinished"] == 0 and counts["timeline"] >= STEPS else None

    counts = eventually(drained, timeout=240, what="every event consumed", interval=2)
    assert counts == {"timeline": STEPS, "consumed": 2 * STEPS, "unfinished": 0, "dead": 0}
