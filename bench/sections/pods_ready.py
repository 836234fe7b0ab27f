"""Section 7: CR apply -> every role's pod Ready, on the real node.

Needs a stack with the real node (``make up``, or ``--stack-file`` / a running stack that has one);
without a node the section records why it measured nothing. The runtime image is the one already
imported into the node: this checkout's reference (``localhost/smartflow-runtime:<input hash>``)
when the node has it, else another ``localhost/smartflow-runtime`` tag found there (recorded, so
the report says which). The bench never builds or imports an image.

Each sample: create a split runtime (api, relay, consumer, memory-worker at one replica, the
database migrated by the bench so no migration Job runs) in a fresh namespace watched by the real
``smartflow-operator run`` process, poll the pods every 200 ms until each role has a Ready pod,
then delete the runtime and wait until its pods are gone before the next sample.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from smartflow_devstack import images
from smartflow_devstack.manifests import split_runtime
from smartflow_devstack.node.start import node_images
from smartflow_devstack.versions import REPO_ROOT

from ..context import Context
from ..kube_tools import Kube, OperatorProcess, write_kubeconfig
from ..results import Result
from ..stats import summary

ROLES = ("api", "relay", "consumer", "memory-worker")
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


def runtime_image(present: set[str]) -> tuple[str | None, str]:
    """(the image to run, this checkout's reference): the checkout's when the node has it."""
    own = f"localhost/smartflow-runtime:{images.input_hash(REPO_ROOT / 'runtime' / 'Dockerfile')}"
    if own in present:
        return own, own
    others = sorted(ref for ref in present if ref.startswith("localhost/smartflow-runtime:"))
    # The shortest tag is a build's own (tests add "-<suffix>" tags for rollouts).
    return (min(others, key=len) if others else None), own


def ready_roles(pods: list[dict[str, Any]]) -> set[str]:
    ready = set()
    for pod in pods:
        if pod["metadata"].get("deletionTimestamp") or (pod.get("status") or {}).get("phase") != "Running":
            continue
        conditions = (pod.get("status") or {}).get("conditions") or []
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            ready.add(pod["metadata"]["labels"].get("app.kubernetes.io/component", ""))
    return ready


async def pods(kube: Kube, namespace: str, instance: str) -> list[dict[str, Any]]:
    found = await kube.request(
        "GET",
        f"/api/v1/namespaces/{namespace}/pods",
        params={"labelSelector": f"app.kubernetes.io/instance={instance}"},
    )
    return list((found or {}).get("items", []))


async def sample(
    kube: Kube, namespace: str, body: dict[str, Any], within: float
) -> tuple[float, dict[str, float]]:
    """Seconds from the create call until every role has a Ready pod, and when each role got one."""
    name = body["metadata"]["name"]
    started = time.perf_counter()
    await kube.create_runtime(namespace, body)
    first_ready: dict[str, float] = {}
    deadline = time.monotonic() + within
    while len(first_ready) < len(ROLES):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{name}: roles {sorted(set(ROLES) - set(first_ready))} not Ready in {within}s"
            )
        for role in ready_roles(await pods(kube, namespace, name)) - set(first_ready):
            first_ready[role] = round(time.perf_counter() - started, 3)
        await asyncio.sleep(0.2)
        if not first_ready:  # nothing runs yet: stop at once when the operator refused the spec
            runtime = await kube.request("GET", f"{kube.runtimes_path(namespace)}/{name}")
            conditions = ((runtime or {}).get("status") or {}).get("conditions") or []
            degraded = next(
                (c for c in conditions if c["type"] == "Degraded" and c["status"] == "True"), None
            )
            if degraded is not None:
                raise RuntimeError(f"{name} is Degraded: {degraded['reason']}: {degraded.get('message')}")
    total = max(first_ready.values())
    await kube.delete_runtime(namespace, name)
    gone_by = time.monotonic() + 90
    while time.monotonic() < gone_by:  # the next sample starts on an idle node
        if not await pods(kube, namespace, name):
            break
        await asyncio.sleep(0.5)
    return total, first_ready


async def run(ctx: Context) -> Result:
    # No target in the issue: the figure is reported as measured (p50/p95).
    result = ctx.result("pods_ready", "CR apply -> every role pod Ready on the real node")
    samples = 1 if ctx.smoke else 5
    result.settings.update(
        {
            "samples": samples,
            "runtime_spec": "split mode, api/relay/consumer/memory-worker 1 replica each, autoscaling off,"
            " migrations off (the bench migrates), namespace enforcing Pod Security restricted",
            "poll_ms": 200,
            "operator": "smartflow-operator run --namespace NS (one process) on the host",
        }
    )
    node = ctx.servers.node
    if node is None:
        result.figures = {"measured": False, "why_not": "the stack has no node (start one with `make up`)"}
        return result
    image, own = runtime_image(await asyncio.to_thread(node_images, node))
    if image is None:
        result.figures = {"measured": False, "why_not": "no localhost/smartflow-runtime image in the node"}
        return result
    result.settings.update({"image": image, "image_is_this_checkouts": image == own, "checkout_image": own})
    info = ctx.servers.ensure_kube()
    namespace = f"bench-pods-{uuid.uuid4().hex[:6]}"
    totals: list[float] = []
    per_role: list[dict[str, float]] = []
    async with (
        Kube(info) as kube,
        ctx.servers.database("pods") as dsn,
        ctx.servers.topic("pods") as topic,
    ):
        await kube.ensure_crd()
        await kube.request(
            "POST", "/api/v1/namespaces", {"metadata": {"name": namespace, "labels": RESTRICTED}}
        )
        database = dsn.rsplit("/", 1)[1]
        kubeconfig = write_kubeconfig(
            ctx.work_dir / "kube" / f"{namespace}.kubeconfig", server=info.server, ca_file=info.ca_file
        )
        op = OperatorProcess(namespace, kubeconfig)
        try:
            await kube.create_secret(namespace, "db", {"dsn": ctx.servers.pod_dsn(database)})
            await op.start()
            for i in range(samples):
                body = split_runtime(
                    f"ready-{i}",
                    bootstrap_servers=ctx.servers.pod_bootstrap_servers,
                    topic=topic,
                    group=f"bench-ready-{i}",
                    image=image,
                    migrations=False,
                )
                body["spec"]["imagePullPolicy"] = "Never"
                total, roles = await sample(kube, namespace, body, within=180)
                ctx.say(f"pods ready: sample {i + 1}/{samples}: {total:.1f}s {roles}")
                totals.append(total)
                per_role.append(roles)
        finally:
            await op.stop()
            await kube.delete_namespace(namespace)
    ready = summary(totals, scale=1.0)
    result.figures = {
        "measured": True,
        "apply_to_all_pods_ready_s": ready,
        "raw_s": totals,
        "per_role_first_ready_s": per_role,
    }
    return result
