"""The reconciler and the autoscaler write one status: neither undoes the other's condition.

Both write ``status.conditions`` with a JSON merge patch, which replaces the whole list. Each
test forces the bad interleaving on the real apiserver: one writer reads the runtime, the other
writes its condition, then the first writes. Without the resourceVersion precondition (and the
rebuild on 409) the second write would carry the stale list and drop or revert the other
writer's condition; here both condition types must survive with their newest values.

The runtime's pods are real (the runtime image on the node, the deployment controller writes the
Deployments' status): Ready becomes True when they are, and False when the relay really stops
answering its readiness probe (its processes are stopped, so it also publishes nothing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes import client

from smartflow_devstack import kafka
from smartflow_operator.autoscaling.loop import Autoscaler
from smartflow_operator.kube import RUNTIMES, KubeClient, ResourceKind, load_api_client
from smartflow_operator.names import Role
from smartflow_operator.reconcile import reconcile
from tests.integration.realpods import frozen, pod_dsn, wait_deployments_ready, wait_ready_count

from .conftest import create_topic, insert_events
from .operator_harness import Cluster, fast_autoscaling, runtime_body

NAME = "race"
log = logging.getLogger(__name__)


class InterleavingKube(KubeClient):
    """A client that runs ``before`` right before its first status patch of the runtime: the other
    writer's write lands between this writer's read and its write."""

    def __init__(self, api: client.ApiClient, before: Callable[[], Awaitable[object]]) -> None:
        super().__init__(api)
        self._before: Callable[[], Awaitable[object]] | None = before

    async def patch_status(
        self, kind: ResourceKind, namespace: str, name: str, patch: Any, **kwargs: Any
    ) -> dict[str, Any]:
        if kind == RUNTIMES and self._before is not None:
            before, self._before = self._before, None
            await before()
        return await super().patch_status(kind, namespace, name, patch, **kwargs)


async def _noop(namespace: str, name: str, role: object, replicas: int, report: object) -> None:
    return None


async def test_reconcile_and_autoscaler_status_writes_keep_each_others_conditions(
    cluster: Cluster,
    kubeconfig: str,
    outbox_dsn: str,
    bootstrap_servers: str,
    kafka_server: kafka.KafkaInfo,
    node_images: dict[str, str],
    names: Callable[[str], str],
) -> None:
    ns = cluster.namespace
    topic = names("outbox")
    await create_topic(bootstrap_servers, topic, 4)
    cluster.create_secret("db", {"dsn": pod_dsn(outbox_dsn)})
    cluster.create_runtime(
        runtime_body(
            NAME,
            bootstrap_servers=kafka_server.pod_bootstrap_servers,
            topic=topic,
            group=names("group"),
            relay=fast_autoscaling(),
            image=node_images["runtime"],
        )
    )
    deployments = [f"{NAME}-{role}" for role in ("api", "relay", "consumer", "memory-worker")]
    kube = KubeClient(load_api_client(kubeconfig))
    autoscaler = Autoscaler(kube=kube, scale=_noop)
    try:
        await reconcile(ns, NAME, kube=kube)  # children created; no pod ready yet
        assert cluster.condition(NAME, "Ready")["status"] == "False"
        await asyncio.to_thread(wait_deployments_ready, cluster.apps, ns, deployments)

        # 1. The reconciler has read the runtime (Ready is about to become True) when the
        #    autoscaler reports the relay's lag and writes RelayAutoscaling.
        reconciler_kube = InterleavingKube(
            load_api_client(kubeconfig), lambda: autoscaler.poll(ns, NAME, Role.RELAY, logger=log)
        )
        try:
            result = await reconcile(ns, NAME, kube=reconciler_kube)
        finally:
            reconciler_kube.close()
        assert result.status_written
        ready, relay = cluster.condition(NAME, "Ready"), cluster.condition(NAME, "RelayAutoscaling")
        assert ready is not None and ready["status"] == "True", ready
        assert relay is not None and relay["status"] == "True", "the autoscaler's condition was dropped"
        assert "due outbox rows 0" in relay["message"]
        # The reconciler re-read the runtime after its first, stale status patch was refused.
        assert reconciler_kube.calls["PATCH"] >= 2

        # 2. The autoscaler has read the runtime (a new backlog changes its condition) when the
        #    reconciler writes Ready=False (the relay pod stopped answering: it hangs).
        with frozen(cluster.core, ns, NAME, "relay"):
            await asyncio.to_thread(wait_ready_count, cluster.apps, ns, f"{NAME}-relay", 0, timeout=60)
            await insert_events(outbox_dsn, 7)  # nobody publishes them: the relay is stopped
            autoscaler_kube = InterleavingKube(
                load_api_client(kubeconfig), lambda: reconcile(ns, NAME, kube=kube)
            )
            racing = Autoscaler(kube=autoscaler_kube, scale=_noop)
            try:
                await racing.poll(ns, NAME, Role.RELAY, logger=log)
            finally:
                await racing.close()
                autoscaler_kube.close()
        ready, relay = cluster.condition(NAME, "Ready"), cluster.condition(NAME, "RelayAutoscaling")
        assert ready is not None and ready["status"] == "False", "the reconciler's condition was reverted"
        assert "relay 0/1 ready" in ready["message"]
        assert relay is not None and "due outbox rows 7" in relay["message"], relay
        status = cluster.runtime(NAME)["status"]
        assert status["roles"]["relay"]["lag"] == 7
        assert status["roles"]["relay"]["readyReplicas"] == 0
    finally:
        await autoscaler.close()
        kube.close()
