"""Helpers for tests that run on the real node: pods by role, their processes, kubectl."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from kubernetes import client

from smartflow_devstack.node import cgroups, network
from smartflow_devstack.versions import kube_bin


def kubectl(
    kubeconfig: str, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(kube_bin("kubectl")), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result


def role_pods(core: client.CoreV1Api, namespace: str, instance: str, role: str) -> list[Any]:
    selector = f"app.kubernetes.io/instance={instance},app.kubernetes.io/component={role}"
    return list(core.list_namespaced_pod(namespace, label_selector=selector).items)


def is_ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp is not None or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def ready_pods(core: client.CoreV1Api, namespace: str, instance: str, role: str) -> list[Any]:
    return [pod for pod in role_pods(core, namespace, instance, role) if is_ready(pod)]


def container_procs(pod: Any) -> Path:
    """The ``cgroup.procs`` file of the pod's first container under the node's root."""
    container_id = pod.status.container_statuses[0].container_id.split("://", 1)[1]
    root = cgroups.CGROUP_FS / "pids" / network.CGROUP_ROOT
    for dirpath, dirnames, _ in os.walk(root):
        if container_id in dirnames:
            return Path(dirpath) / container_id / "cgroup.procs"
    raise AssertionError(f"no cgroup for container {container_id} under {root}")


def container_pids(pod: Any) -> list[int]:
    """Host pids of the pod's first container, found through its cgroup under the node's root."""
    return [int(p) for p in container_procs(pod).read_text().split()]
