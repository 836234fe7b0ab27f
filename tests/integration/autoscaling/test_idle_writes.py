"""An idle runtime with autoscaling on makes no writes: not per poll, not per resync, not after an
operator restart. The real operator in-process against the real apiserver, Postgres and Kafka;
writes are counted by the operator's own API client (``KubeClient.calls``, the counter behind
``smartflow_operator_kube_requests_total``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from smartflow_operator.controller import Controller

from .conftest import create_topic
from .operator_harness import Cluster, eventually, fast_autoscaling, running_operator, runtime_body

pytestmark = pytest.mark.timeout(180)

NAME = "idle"
POLL_SECONDS = 1
WATCH_SECONDS = 8.0  # 8 polls of each role, 4 periodic resyncs, 8 configuration checks


def _settled(cluster: Cluster) -> bool:
    roles = (cluster.runtime(NAME).get("status") or {}).get("roles") or {}
    reasons = {
        role: (roles.get(role) or {}).get("autoscaling", {}).get("reason") for role in ("relay", "consumer")
    }
    # Past the (3 s) scale-down window that holds a new autoscaler's count: at the minimum, for good.
    return set(reasons.values()) == {"AtMinimum"}


async def _writes_while_idle(cluster: Cluster, controller: Controller) -> tuple[int, int, dict[str, int]]:
    before, reads_before = controller.kube.writes, controller.kube.calls.get("GET", 0)
    status_before = cluster.runtime(NAME)["metadata"]["resourceVersion"]
    await asyncio.sleep(WATCH_SECONDS)  # the operator runs in its own thread
    assert cluster.runtime(NAME)["metadata"]["resourceVersion"] == status_before
    return (
        controller.kube.writes - before,
        controller.kube.calls.get("GET", 0) - reads_before,
        dict(controller.kube.calls),
    )


async def test_an_idle_autoscaled_runtime_makes_no_writes_even_across_a_restart(
    cluster: Cluster, kubeconfig: str, outbox_dsn: str, bootstrap_servers: str, names: Callable[[str], str]
) -> None:
    topic, group = names("outbox"), names("consumers")
    await create_topic(bootstrap_servers, topic, 2)
    cluster.create_secret("db", {"dsn": outbox_dsn})
    autoscaling = fast_autoscaling(pollIntervalSeconds=POLL_SECONDS)
    cluster.create_runtime(
        runtime_body(
            NAME,
            bootstrap_servers=bootstrap_servers,
            topic=topic,
            group=group,
            relay=autoscaling,
            consumer=autoscaling,
        )
    )
    settings = {"resync_seconds": 2.0, "config_check_seconds": 1.0}
    with running_operator(kubeconfig, cluster.namespace, **settings) as controller:
        eventually(lambda: _settled(cluster), timeout=30, what="both roles settled at their minimum")
        await asyncio.sleep(2)  # the last status write's watch echo and the resync it triggers
        writes, reads, calls = await _writes_while_idle(cluster, controller)
        print(f"idle, {WATCH_SECONDS} s: {writes} writes, {reads} reads ({calls})")
        # The loops ran: every resync (each 2 s) reads the runtime and its Secret. (An autoscaler
        # poll reads nothing from the apiserver, and no pass lists children any more.)
        assert reads >= 2 * (WATCH_SECONDS / settings["resync_seconds"] - 1)
        assert writes == 0

    # A restart resumes the decision history from the status and writes nothing either.
    with running_operator(kubeconfig, cluster.namespace, **settings) as controller:
        eventually(lambda: controller.kube.calls.get("GET", 0) > 10, timeout=20, what="the operator polling")
        writes, reads, calls = await _writes_while_idle(cluster, controller)
        print(f"idle after a restart, {WATCH_SECONDS} s: {writes} writes, {reads} reads ({calls})")
        assert writes == 0
        assert controller.kube.writes == 0  # not even for the first passes after the start
        assert _settled(cluster)
