"""Every role as a real pod from the runtime image on the real node, in a namespace enforcing
``restricted``: real probes, SIGTERM drain on scale-down, eviction under a PodDisruptionBudget and
a rollout to a new image tag through the Deployment controller."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch

from smartflow_devstack import kube
from smartflow_devstack.node import network
from smartflow_devstack.node.start import NodeInfo, tag_image
from tests.integration.autoscaling.operator_harness import Cluster, eventually

from .conftest import runtime_on_node
from .load import api_base_url, effects, send_messages
from .pods import container_pids, is_ready, kubectl, ready_pods, role_pods

NAME = "pods"
ROLES = ("api", "relay", "consumer", "memory-worker")


@pytest.fixture(scope="module")
def runtime(
    node_cluster: Cluster,
    node_images: dict[str, str],
    pod_database: tuple[str, str],
    pod_bootstrap: str,
    kube_server: kube.KubeInfo,
) -> Iterator[Cluster]:
    def two_consumers(body: dict[str, Any]) -> None:
        body["spec"]["roles"]["consumer"]["replicas"] = 2

    with runtime_on_node(
        node_cluster,
        name=NAME,
        image=node_images["runtime"],
        pod_dsn=pod_database[1],
        bootstrap=pod_bootstrap,
        kubeconfig=kube_server.kubeconfig,
        ready={"api": 1, "relay": 1, "consumer": 2, "memory-worker": 1},
        customize=two_consumers,
    ) as cluster:
        yield cluster


def _consumer_replicas(cluster: Cluster, replicas: int) -> None:
    cluster.patch_runtime(NAME, {"spec": {"roles": {"consumer": {"replicas": replicas}}}})


def test_every_role_pod_runs_the_image_ready_under_restricted(
    runtime: Cluster, node_images: dict[str, str], kube_server: kube.KubeInfo
) -> None:
    for role in ROLES:
        for pod in ready_pods(runtime.core, runtime.namespace, NAME, role):
            assert pod.spec.node_name == network.NODE_NAME
            assert pod.spec.containers[0].image == node_images["runtime"]
            status = pod.status.container_statuses[0]
            assert status.ready and status.restart_count == 0, (role, status)
            # The restricted security context is really in force inside the container.
            uid = kubectl(
                kube_server.kubeconfig, "-n", runtime.namespace, "exec", pod.metadata.name, "--", "id", "-u"
            )
            assert uid.stdout.strip() == "10001"
            write = kubectl(
                kube_server.kubeconfig,
                "-n",
                runtime.namespace,
                "exec",
                pod.metadata.name,
                "--",
                "sh",
                "-c",
                "touch /written-at-runtime",
                check=False,
            )
            assert write.returncode != 0 and "Read-only file system" in write.stderr, write
    # The namespace enforces `restricted`: a pod asking for root is refused at admission.
    refused = kubectl(
        kube_server.kubeconfig,
        "-n",
        runtime.namespace,
        "run",
        "root-pod",
        f"--image={node_images['runtime']}",
        "--overrides",
        '{"spec":{"securityContext":{"runAsUser":0}}}',
        check=False,
    )
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused


def test_hung_role_is_restarted_by_its_liveness_probe(runtime: Cluster) -> None:
    (pod,) = ready_pods(runtime.core, runtime.namespace, NAME, "memory-worker")
    for pid in container_pids(pod):
        # A stopped process answers no probe: kubelet's liveness probe fails and it restarts the container.
        os.kill(pid, signal.SIGSTOP)
    stopped_at = time.monotonic()

    def restarted() -> Any:
        fresh = runtime.core.read_namespaced_pod(pod.metadata.name, runtime.namespace)
        status = fresh.status.container_statuses[0]
        return status.restart_count >= 1 and status.last_state.terminated is not None and is_ready(fresh)

    eventually(restarted, timeout=120, what="memory-worker restarted by kubelet and Ready again", interval=1)
    events = [
        e
        for e in runtime.events()
        if e["involvedObject"]["name"] == pod.metadata.name and e["reason"] == "Unhealthy"
    ]
    assert any("Liveness probe failed" in e["message"] for e in events), events
    assert time.monotonic() - stopped_at < 120


def test_scaled_down_consumer_drains_on_sigterm_and_exits_zero(
    runtime: Cluster, pod_database: tuple[str, str]
) -> None:
    _consumer_replicas(runtime, 2)
    eventually(
        lambda: len(ready_pods(runtime.core, runtime.namespace, NAME, "consumer")) == 2,
        timeout=120,
        what="2 consumers",
        interval=1,
    )
    user = f"drain-{uuid.uuid4().hex[:6]}"
    base = api_base_url(runtime.core, runtime.namespace, NAME)
    final: dict[str, Any] = {}

    def watch_terminations() -> None:
        stream = watch.Watch()
        selector = f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component=consumer"
        for event in stream.stream(
            runtime.core.list_namespaced_pod, runtime.namespace, label_selector=selector, timeout_seconds=90
        ):
            pod = event["object"]
            statuses = pod.status.container_statuses or []
            if pod.metadata.deletion_timestamp and statuses and statuses[0].state.terminated:
                final[pod.metadata.name] = (pod, statuses[0].state.terminated)
                stream.stop()

    async def scenario() -> int:
        watcher = asyncio.create_task(asyncio.to_thread(watch_terminations))
        sending = asyncio.create_task(send_messages(base, 300, user=user))
        await asyncio.sleep(1.0)
        _consumer_replicas(runtime, 1)
        accepted = await sending
        await asyncio.wait_for(watcher, 100)
        return accepted

    accepted = asyncio.run(scenario())
    assert final, "no consumer pod was seen terminating"
    ((pod, terminated),) = final.values()
    assert terminated.exit_code == 0, terminated
    grace = pod.spec.termination_grace_period_seconds
    signalled_at = pod.metadata.deletion_timestamp.timestamp() - grace
    assert terminated.finished_at.timestamp() - signalled_at < grace, (
        terminated,
        pod.metadata.deletion_timestamp,
    )

    def drained() -> dict[str, int] | None:
        counts = asyncio.run(effects(pod_database[0], user))
        return counts if counts["unfinished"] == 0 and counts["token_adjustments"] >= accepted else None

    counts = eventually(drained, timeout=120, what="every event consumed", interval=1)
    assert counts == {"messages": accepted, "token_adjustments": accepted, "unfinished": 0, "dead": 0}


def test_node_drain_respects_the_role_disruption_budget(runtime: Cluster, kube_server: kube.KubeInfo) -> None:
    _consumer_replicas(runtime, 2)
    eventually(
        lambda: len(ready_pods(runtime.core, runtime.namespace, NAME, "consumer")) == 2,
        timeout=120,
        what="2 consumers",
        interval=1,
    )
    assert client.PolicyV1Api(runtime.api).read_namespaced_pod_disruption_budget(
        f"{NAME}-consumer", runtime.namespace
    )
    selector = f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component=consumer"
    try:
        drain = kubectl(
            kube_server.kubeconfig,
            "drain",
            network.NODE_NAME,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            f"--pod-selector={selector}",
            "--timeout=25s",
            check=False,
            timeout=90,
        )
        # One consumer may go (maxUnavailable 1); the second eviction is refused while its
        # replacement cannot be scheduled on the cordoned node, so the drain cannot finish.
        assert drain.returncode != 0, drain
        assert "disruption budget" in (drain.stdout + drain.stderr), drain
        pods = role_pods(runtime.core, runtime.namespace, NAME, "consumer")
        running = [p for p in pods if is_ready(p)]
        assert len(running) == 1, [(p.metadata.name, p.status.phase) for p in pods]
    finally:
        kubectl(kube_server.kubeconfig, "uncordon", network.NODE_NAME)
    eventually(
        lambda: len(ready_pods(runtime.core, runtime.namespace, NAME, "consumer")) == 2,
        timeout=120,
        what="consumers back after uncordon",
        interval=1,
    )


def test_new_image_tag_rolls_every_role_without_losing_events(
    runtime: Cluster, node_images: dict[str, str], node_server: NodeInfo, pod_database: tuple[str, str]
) -> None:
    new_image = node_images["runtime"].rsplit(":", 1)[0] + f":rollout-{uuid.uuid4().hex[:6]}"
    tag_image(node_server, node_images["runtime"], new_image)
    user = f"rollout-{uuid.uuid4().hex[:6]}"
    base = api_base_url(runtime.core, runtime.namespace, NAME)

    async def scenario() -> int:
        sending = asyncio.create_task(send_messages(base, 400, user=user))
        await asyncio.sleep(1.0)
        runtime.patch_runtime(NAME, {"spec": {"image": new_image}})
        return await sending

    accepted = asyncio.run(scenario())

    def rolled() -> bool:
        for role in ROLES:
            pods = role_pods(runtime.core, runtime.namespace, NAME, role)
            if not pods or any(p.spec.containers[0].image != new_image or not is_ready(p) for p in pods):
                return False
        return True

    eventually(rolled, timeout=240, what="every role rolled to the new tag", interval=1)
    for role in ROLES:
        deployment = runtime.deployment(f"{NAME}-{role}")
        assert deployment is not None
        assert deployment["status"].get("updatedReplicas") == deployment["spec"]["replicas"], deployment[
            "status"
        ]

    def drained() -> dict[str, int] | None:
        counts = asyncio.run(effects(pod_database[0], user))
        return counts if counts["unfinished"] == 0 and counts["token_adjustments"] >= accepted else None

    counts = eventually(drained, timeout=120, what="every event consumed", interval=1)
    assert counts == {"messages": accepted, "token_adjustments": accepted, "unfinished": 0, "dead": 0}
