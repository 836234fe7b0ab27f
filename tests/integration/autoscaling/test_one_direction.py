"""A scale change reaches the Deployment in one direction: one apply of the role's Deployment and
at most one status write, with no Secret read again and no PodDisruptionBudget created or deleted
across 1 <-> 2 (the budget is decided from the spec). The real operator in-process against the
real apiserver and Kafka; every request of the operator's API client is counted by method and path
(``KubeClient.requests``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest
from kubernetes import client

from smartflow_operator.controller import Controller

from .conftest import commit, create_topic, produce
from .operator_harness import Cluster, eventually, fast_autoscaling, running_operator, runtime_body

pytestmark = pytest.mark.timeout(180)

NAME = "onedir"
CONSUMER = f"{NAME}-consumer"
QUIET_SECONDS = 4.0  # past the scale write's watch echo, the child-event pass and 4 polls


def _count(requests: Counter[tuple[str, str]], method: str, *, contains: str, excludes: str = "\0") -> int:
    return sum(
        n for (m, path), n in requests.items() if m == method and contains in path and excludes not in path
    )


def _budgets(cluster: Cluster) -> dict[str, str]:
    """The namespace's PodDisruptionBudgets: name -> uid."""
    items = client.PolicyV1Api(cluster.api).list_namespaced_pod_disruption_budget(cluster.namespace).items
    return {item.metadata.name: item.metadata.uid for item in items}


async def _count_until(cluster: Cluster, controller: Controller, expected: int) -> Counter[tuple[str, str]]:
    """The operator's requests from now until the consumer runs ``expected`` and all is quiet."""
    before = Counter(controller.kube.requests)
    eventually(lambda: cluster.replicas(CONSUMER) == expected, timeout=20, what=f"consumer at {expected}")
    await asyncio.sleep(QUIET_SECONDS)
    return controller.kube.requests - before


def _reported(cluster: Cluster) -> dict[str, object]:
    status = cluster.runtime(NAME).get("status") or {}
    return dict(status.get("roles", {}).get("consumer", {}).get("autoscaling", {}))


async def test_one_scale_change_costs_one_deployment_write_and_at_most_one_status_write(
    cluster: Cluster, kubeconfig: str, outbox_dsn: str, bootstrap_servers: str, names: Callable[[str], str]
) -> None:
    topic, group = names("outbox"), names("consumers")
    await create_topic(bootstrap_servers, topic, 4)
    cluster.create_secret("db", {"dsn": outbox_dsn})
    # The relay (whose probe reads the DSN Secret every poll) is not autoscaled here, so every
    # Secret read in the counted windows would come from the scale path.
    cluster.create_runtime(
        runtime_body(
            NAME,
            bootstrap_servers=bootstrap_servers,
            topic=topic,
            group=group,
            consumer=fast_autoscaling(maxReplicas=4),
        )
    )
    settings = {"resync_seconds": 600.0, "config_check_seconds": 0.0}
    with running_operator(kubeconfig, cluster.namespace, **settings) as controller:
        eventually(lambda: cluster.replicas(CONSUMER) == 1, timeout=30, what="consumer created at 1")
        # The budget exists from the start, at one replica: maxReplicas 4 says the role can run two.
        eventually(lambda: CONSUMER in _budgets(cluster), timeout=10, what="the consumer's budget")
        eventually(
            lambda: (
                (cluster.runtime(NAME).get("status") or {})
                .get("roles", {})
                .get("consumer", {})
                .get("autoscaling", {})
                .get("reason")
                == "AtMinimum"
            ),
            timeout=20,
            what="the consumer settled at its minimum (past the new autoscaler's window)",
        )
        await asyncio.sleep(2)
        budgets = _budgets(cluster)

        # 1 -> 3: a lag of 30 at 10 per replica (measured and scaled in the same poll).
        await produce(bootstrap_servers, topic, {0: 10, 1: 10, 2: 10})
        up = await _count_until(cluster, controller, 3)
        # 3 -> 1: the lag is gone; its report (Stabilizing, in the 3 s scale-down window) is a
        # change of the lag, written before the scale change counted here.
        await commit(bootstrap_servers, topic, group, {0: 10, 1: 10, 2: 10})
        eventually(lambda: _reported(cluster).get("metric") == 0, timeout=10, what="lag 0 reported")
        assert cluster.replicas(CONSUMER) == 3
        down = await _count_until(cluster, controller, 1)

    for label, requests in (("up", up), ("down", down)):
        print(f"scale {label}: {sorted(requests.items())}")
        assert _count(requests, "PATCH", contains=f"/deployments/{CONSUMER}") == 1, label
        # No other Deployment applied, and the child event's pass applies nothing again.
        assert _count(requests, "PATCH", contains="/deployments/") == 1, label
        assert _count(requests, "PATCH", contains="/smartflowruntimes/", excludes="/status") == 0, label
        # One status write by the scale pass itself, and one per report of the real Deployment
        # controller about the new ReplicaSet's pods (updatedReplicas...), as on any cluster: one
        # report usually, two on a loaded machine (3 writes seen once in a full `make test`, with
        # no other request). The pods never get ready here (placeholder image), so nothing else
        # can change the status; a writer per poll would show 5 or more (4 polls in the window).
        assert _count(requests, "PATCH", contains=f"/smartflowruntimes/{NAME}/status") <= 3, label
        assert _count(requests, "GET", contains="/secrets/") == 0, label
        assert _count(requests, "GET", contains="/configmaps/") == 0, label
        for method in ("POST", "PATCH", "DELETE"):
            assert _count(requests, method, contains="/poddisruptionbudgets") == 0, (label, method)
    # The decision is reported (not carried) in the status; the budget is the same object.
    status = cluster.runtime(NAME)["status"]
    assert status["roles"]["consumer"]["desiredReplicas"] == 1
    assert status["roles"]["consumer"]["autoscaling"]["desiredReplicas"] == 1
    assert _budgets(cluster) == budgets  # same objects (uids), none added or removed
