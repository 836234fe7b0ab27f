"""`helm upgrade` of the operator on the real node: the chart's two replicas roll one at a time
(the leader releases its Lease on SIGTERM, the standby takes over), and runtimes keep being
reconciled throughout: a spec change made at any moment of the upgrade is applied within seconds."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from smartflow_devstack import kube
from smartflow_devstack.manifests import split_runtime
from smartflow_devstack.versions import REPO_ROOT, helm_bin
from tests.integration.autoscaling.operator_harness import Cluster, eventually

from .pods import kubectl

CHART = REPO_ROOT / "charts" / "smartflow-operator"
NAME = "upgraded"
# A spec change reaches the Deployments within this while the operator is being rolled: a handover
# (SIGTERM -> Lease released -> the standby's next 2 s retry) plus one pass, with room for a busy node.
MAX_GAP_SECONDS = 15.0


def helm(kubeconfig: str, *args: str) -> None:
    import subprocess

    done = subprocess.run(
        [str(helm_bin()), f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"helm {' '.join(args)}: {done.stdout}{done.stderr}"


@pytest.fixture
def installed(
    node_cluster: Cluster, node_images: dict[str, str], kube_server: kube.KubeInfo
) -> Iterator[tuple[str, list[str]]]:
    operator_ns = f"{node_cluster.namespace}-op"
    node_cluster.core.create_namespace(
        {"metadata": {"name": operator_ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    repository, tag = node_images["operator"].rsplit(":", 1)
    values = [
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", "image.pullPolicy=Never", "--set", f"watch.namespaces={{{node_cluster.namespace}}}",
    ]  # fmt: skip
    helm(
        kube_server.kubeconfig,
        "install",
        "sfo",
        str(CHART),
        "-n",
        operator_ns,
        *values,
        "--wait",
        "--timeout",
        "180s",
    )
    try:
        yield operator_ns, values
    finally:
        helm(kube_server.kubeconfig, "uninstall", "sfo", "-n", operator_ns, "--wait", "--timeout", "120s")
        node_cluster.core.delete_namespace(operator_ns)


def _operator_pods(cluster: Cluster, namespace: str) -> list[Any]:
    return list(
        cluster.core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/name=smartflow-operator"
        ).items
    )


def test_helm_upgrade_rolls_the_operator_without_a_gap_in_reconciling(
    node_cluster: Cluster, installed: tuple[str, list[str]], kube_server: kube.KubeInfo, pod_bootstrap: str
) -> None:
    operator_ns, values = installed
    cluster = node_cluster
    before = {p.metadata.name for p in _operator_pods(cluster, operator_ns)}
    assert len(before) == 2
    cluster.create_secret("db", {"dsn": "postgresql://unused@127.0.0.1:1/unused"})
    body = split_runtime(
        NAME,
        bootstrap_servers=pod_bootstrap,
        topic=f"up.{uuid.uuid4().hex[:6]}",
        group="up",
        migrations=False,
    )
    cluster.create_runtime(body)
    eventually(
        lambda: cluster.deployment(f"{NAME}-api") is not None, timeout=60, what="the operator reconciles"
    )

    # Change the spec every half second during the upgrade; record when each generation was
    # observed (status.observedGeneration) to find the longest wait.
    changed_at: dict[int, float] = {}
    observed_at: dict[int, float] = {}
    stop = threading.Event()
    last_value = [0]

    def change_spec() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            last_value[0] = i
            cluster.patch_runtime(
                NAME, {"spec": {"env": [{"name": "SMARTFLOW_UPGRADE_PROBE", "value": str(i)}]}}
            )
            changed_at[int(cluster.runtime(NAME)["metadata"]["generation"])] = time.monotonic()
            time.sleep(0.5)

    def watch_status() -> None:
        while not stop.is_set():
            observed = int((cluster.runtime(NAME).get("status") or {}).get("observedGeneration") or 0)
            observed_at.setdefault(observed, time.monotonic())
            time.sleep(0.2)

    threads = [threading.Thread(target=change_spec), threading.Thread(target=watch_status)]
    for thread in threads:
        thread.start()
    try:
        helm(
            kube_server.kubeconfig, "upgrade", "sfo", str(CHART), "-n", operator_ns, *values,
            "--set", f"podAnnotations.rolled={uuid.uuid4().hex[:6]}", "--wait", "--timeout", "240s",
        )  # fmt: skip
        time.sleep(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)

    def replaced() -> bool:
        # helm --wait returns once the new pods are Ready; the old ones may still be terminating.
        names = {p.metadata.name for p in _operator_pods(cluster, operator_ns)}
        return len(names) == 2 and not (names & before)

    eventually(replaced, timeout=60, what="both operator pods replaced", interval=1)
    last = max(changed_at)
    eventually(
        lambda: int((cluster.runtime(NAME).get("status") or {}).get("observedGeneration") or 0) >= last,
        timeout=MAX_GAP_SECONDS,
        what="the last change applied",
    )
    # For each change: how long until a generation at least as new was observed.
    gaps = []
    for generation, at in sorted(changed_at.items()):
        seen = [t for g, t in observed_at.items() if g >= generation]
        if seen:
            gaps.append(max(0.0, min(seen) - at))
    print(f"changes during the upgrade: {len(changed_at)}, longest wait {max(gaps):.1f}s")
    assert len(gaps) >= 10 and max(gaps) <= MAX_GAP_SECONDS, sorted(gaps)[-5:]
    applied = yaml.safe_load(
        kubectl(
            kube_server.kubeconfig, "-n", cluster.namespace, "get", "deploy", f"{NAME}-api", "-o", "yaml"
        ).stdout
    )
    env = applied["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "SMARTFLOW_UPGRADE_PROBE", "value": str(last_value[0])} in env, env
