"""A role over its memory limit on the real node: the kernel OOM-kills it and kubelet restarts it
(crash-looping while the limit stays too small), the events it should move wait in the outbox, and
once the limit is raised every event is delivered with exactly one effect: nothing is lost."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from smartflow_devstack import kube
from tests.integration.autoscaling.operator_harness import Cluster, eventually

from .conftest import runtime_on_node
from .load import api_base_url, effects, send_messages
from .pods import role_pods

NAME = "oom"
MESSAGES = 200
# Below what the relay needs to import its dependencies (its container peaked at 38 MiB on this
# node, page cache included): every start of the container ends in the cgroup's OOM killer.
TOO_SMALL = "20Mi"


@pytest.fixture(scope="module")
def runtime(
    node_cluster: Cluster,
    node_images: dict[str, str],
    pod_database: tuple[str, str],
    pod_bootstrap: str,
    kube_server: kube.KubeInfo,
) -> Iterator[Cluster]:
    def small_relay(body: dict[str, Any]) -> None:
        body["spec"]["roles"]["relay"]["resources"] = {
            "requests": {"memory": "16Mi"},
            "limits": {"memory": TOO_SMALL},
        }

    with runtime_on_node(
        node_cluster,
        name=NAME,
        image=node_images["runtime"],
        pod_dsn=pod_database[1],
        bootstrap=pod_bootstrap,
        kubeconfig=kube_server.kubeconfig,
        ready={"api": 1, "consumer": 1, "memory-worker": 1},  # the relay cannot start: see TOO_SMALL
        customize=small_relay,
    ) as cluster:
        yield cluster


def test_role_over_its_memory_limit_is_oom_killed_restarted_and_loses_nothing(
    runtime: Cluster, pod_database: tuple[str, str]
) -> None:
    user = f"oom-{uuid.uuid4().hex[:6]}"
    accepted = asyncio.run(
        send_messages(api_base_url(runtime.core, runtime.namespace, NAME), MESSAGES, user=user)
    )
    assert accepted == MESSAGES

    def oom_killed_and_restarted() -> bool:
        for pod in role_pods(runtime.core, runtime.namespace, NAME, "relay"):
            status = (pod.status.container_statuses or [None])[0]
            terminated = status.last_state.terminated if status else None
            if status and status.restart_count >= 1 and terminated and terminated.reason == "OOMKilled":
                return True
        return False

    eventually(
        oom_killed_and_restarted, timeout=120, what="relay OOM-killed, restarted by kubelet", interval=1
    )
    # Nothing moved while the relay could not run: the events wait in the outbox.
    waiting = asyncio.run(effects(pod_database[0], user))
    assert waiting["unfinished"] >= MESSAGES and waiting["token_adjustments"] == 0, waiting

    runtime.patch_runtime(
        NAME, {"spec": {"roles": {"relay": {"resources": {"limits": {"memory": "512Mi"}}}}}}
    )

    def drained() -> dict[str, int] | None:
        counts = asyncio.run(effects(pod_database[0], user))
        return counts if counts["unfinished"] == 0 and counts["token_adjustments"] >= MESSAGES else None

    counts = eventually(drained, timeout=240, what="every event consumed", interval=2)
    assert counts == {"messages": MESSAGES, "token_adjustments": MESSAGES, "unfinished": 0, "dead": 0}
