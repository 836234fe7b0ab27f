"""Real pods on the node for integration tests that are about something else (status, conditions,
migrations): what a runtime's pods need to reach, and waiting for what the real controllers do.

The kube-controller-manager runs the deployment, replicaset and Job controllers and the node runs
the pods, so tests never write a Deployment's or a Job's status themselves (the controllers would
write it back). A test gives its runtime the runtime image (``node_images["runtime"]``), a DSN that
pods can dial (:func:`pod_dsn`) and ``kafka_server.pod_bootstrap_servers``, then waits here. To make
readiness drop it stops the container's processes (:func:`frozen`), as a hung process would.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from smartflow_devstack.node import network
from smartflow_devstack.node.start import NodeInfo, tag_image
from tests.integration.node.pods import container_procs, ready_pods

T = TypeVar("T")

# Pod start-up on the shared 2-core node (image already imported): a few seconds each, more under load.
POD_TIMEOUT = 240.0


def pod_dsn(host_dsn: str) -> str:
    """``host_dsn`` (a server on the host's loopback) as pods dial it: the node's forwarder listens
    on the node's address at the same port. User, password and database stay."""
    parts = urlsplit(host_dsn)
    credentials = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    netloc = (
        f"{credentials}@{network.NODE_IP}:{parts.port}" if credentials else f"{network.NODE_IP}:{parts.port}"
    )
    return urlunsplit(parts._replace(netloc=netloc))


def runnable(
    documents: list[dict[str, Any]], *, image: str, host_dsn: str, bootstrap_servers: str, topic: str
) -> str:
    """Runtime manifests (e.g. an example: its Secrets' ``dsn`` and its SmartflowRuntimes) made to
    run on the node: the runtime image, the database ``host_dsn`` names as pods dial it, and Kafka
    at ``bootstrap_servers`` (``kafka_server.pod_bootstrap_servers``) with its own topic and group."""
    for document in documents:
        if document["kind"] == "Secret":
            document.pop("data", None)
            document["stringData"] = {"dsn": pod_dsn(host_dsn)}
        if document["kind"] == "SmartflowRuntime":
            document["spec"]["image"] = image
            kafka = document["spec"].setdefault("kafka", {})
            kafka.update(
                {"bootstrapServers": bootstrap_servers, "topic": topic, "consumerGroup": f"{topic}-group"}
            )
    return yaml.safe_dump_all(documents)


def runtime_image_tag(node: NodeInfo, image: str, tag: str) -> str:
    """Another reference to the runtime image on the node (``<repository>:<its tag>-<tag>``), for
    tests that change ``spec.image``: a real image, so its pods run."""
    repository, current = image.rsplit(":", 1)
    reference = f"{repository}:{current}-{tag}"
    tag_image(node, image, reference)
    return reference


def until(check: Callable[[], T], *, what: str, timeout: float = POD_TIMEOUT, interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ApiException as error:
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def deployment_settled(
    apps: client.AppsV1Api, namespace: str, name: str, *, ready: int | None = None
) -> bool:
    """The deployment controller has seen the Deployment's current spec, no old pod is left and
    ``ready`` pods (default: all ``spec.replicas``) are ready."""
    deployment = apps.read_namespaced_deployment(name, namespace)
    want = int(deployment.spec.replicas if deployment.spec.replicas is not None else 1)
    status = deployment.status
    return (
        (status.observed_generation or 0) >= deployment.metadata.generation
        and (status.replicas or 0) == want
        and (status.updated_replicas or 0) == want
        and (ready == -1 or (status.ready_replicas or 0) == (want if ready is None else ready))
    )


def wait_deployments_ready(
    apps: client.AppsV1Api,
    namespace: str,
    names: Sequence[str],
    *,
    timeout: float = POD_TIMEOUT,
    ready: bool = True,
) -> None:
    """Every Deployment in ``names`` reports all its pods updated and ready (real pods, real probes);
    with ``ready=False`` only that the deployment controller has caught up with its spec (for pods
    that never get ready, e.g. of a placeholder image: the status written then stays)."""
    deadline = time.monotonic() + timeout
    for name in names:
        until(
            lambda name=name: deployment_settled(apps, namespace, name, ready=None if ready else -1),  # type: ignore[misc]
            what=f"Deployment {namespace}/{name} {'ready' if ready else 'observed'}",
            timeout=max(1.0, deadline - time.monotonic()),
        )


def wait_ready_count(
    apps: client.AppsV1Api, namespace: str, name: str, ready: int, *, timeout: float = POD_TIMEOUT
) -> None:
    until(
        lambda: (apps.read_namespaced_deployment(name, namespace).status.ready_replicas or 0) == ready,
        what=f"Deployment {namespace}/{name} at {ready} ready pods",
        timeout=timeout,
    )


def job_outcome(batch: client.BatchV1Api, namespace: str, name: str) -> str | None:
    """``Complete`` or ``Failed`` once the Job controller has finished Job ``name``, else None."""
    job = batch.read_namespaced_job(name, namespace)
    for condition in (job.status and job.status.conditions) or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None


def wait_job(batch: client.BatchV1Api, namespace: str, name: str, *, timeout: float = POD_TIMEOUT) -> str:
    """Wait for the real Job controller to finish Job ``name`` (its pod ran on the node)."""
    return until(
        lambda: job_outcome(batch, namespace, name), what=f"Job {namespace}/{name} finished", timeout=timeout
    )


def wait_next_job(
    batch: client.BatchV1Api, namespace: str, *, seen: set[str], timeout: float = POD_TIMEOUT
) -> str:
    """Wait for a Job not in ``seen`` (the operator's next migration Job), then for it to finish;
    adds it to ``seen`` and returns its name."""
    name = until(
        lambda: next(
            (
                j.metadata.name
                for j in batch.list_namespaced_job(namespace).items
                if j.metadata.name not in seen
            ),
            None,
        ),
        what=f"a new Job in {namespace}",
        timeout=timeout,
    )
    seen.add(name)
    wait_job(batch, namespace, name, timeout=timeout)
    return str(name)


@contextmanager
def frozen(core: client.CoreV1Api, namespace: str, instance: str, role: str) -> Iterator[list[Any]]:
    """Stop (SIGSTOP) every process of the role's ready pods: they answer no probe and do no work,
    so kubelet marks them not ready (the liveness probe restarts them some 30 s later). Continued
    on exit when they still exist."""
    pods = ready_pods(core, namespace, instance, role)
    assert pods, f"no ready {role} pod of {instance} to stop"
    procs = [container_procs(pod) for pod in pods]
    stopped = {pid for path in procs for pid in map(int, path.read_text().split())}
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield pods
    finally:
        # Only processes still in their container: one that kubelet restarted meanwhile freed its
        # pid, and the host may have given that pid to another server (a CI run saw a test's
        # stopped Kafka broker continued by a stale SIGCONT: pid_max is 32768 here).
        for path in procs:
            with suppress(FileNotFoundError):
                for pid in stopped & set(map(int, path.read_text().split())):
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
