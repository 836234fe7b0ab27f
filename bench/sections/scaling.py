"""Section 4: scale reaction of the real operator, relay and consumer, against KEDA's defaults.

The operator (``smartflow-operator run``) watches one runtime whose relay and consumer scale
with the autoscaling defaults (poll 5 s, target 100 per replica, HPA-style behavior) except the
scale-down stabilization window, shortened from 300 s so a run fits the time budget (the report
says so). No runtime pods run (there is no kubelet): the bench creates and removes the lag itself,
which pins the moment the backlog appears and the moment it is drained exactly.

Per cycle: at a random phase of the poll, 500 due outbox rows (relay lag 500 -> 5 replicas) and
600 Kafka messages for the consumer group (lag 600 -> 6, the partition cap) appear; the clock runs
until each Deployment's ``spec.replicas`` rises, and until it reaches the desired count. Then the
rows are marked published and the group's offsets committed at the log end (lag 0); the clock
runs until each Deployment is back at ``minReplicas``.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import asyncpg

from smartflow_devstack.manifests import split_runtime
from smartflow_operator.autoscaling.spec import AutoscalingSpec

from .. import events
from ..context import Context
from ..kafka_tools import commit_to_end, produce
from ..kube_tools import Kube, OperatorProcess, write_kubeconfig
from ..results import Result, Target
from ..stats import summary

NAME = "scale"
PARTITIONS = 6
RELAY_BACKLOG = 500
CONSUMER_BACKLOG = 600
KEDA_POLL_SECONDS = 30.0
HPA_SYNC_SECONDS = 15.0
HPA_DEFAULT_SCALE_DOWN_WINDOW = 300.0


def defaults() -> dict[str, Any]:
    spec = AutoscalingSpec()
    return {
        "poll_interval_seconds": spec.poll_interval_seconds,
        "target_per_replica": spec.target_per_replica,
        "min_replicas": spec.min_replicas,
        "max_replicas": spec.max_replicas,
        "tolerance": spec.tolerance,
    }


async def watch_replicas(
    kube: Kube,
    namespace: str,
    deployment: str,
    *,
    since: float,
    rises_to: int | None,
    falls_to: int | None,
    within: float,
) -> dict[str, float | None]:
    """Seconds from ``since`` until replicas first change, and until they reach the target (100 ms steps)."""
    first: float | None = None
    reached: float | None = None
    start_value = await kube.replicas(namespace, deployment)
    deadline = since + within
    while time.time() < deadline:
        value = await kube.replicas(namespace, deployment)
        now = time.time() - since
        if value is not None and first is None and value != start_value:
            first = now
        if value is not None and (
            (rises_to is not None and value >= rises_to) or (falls_to is not None and value <= falls_to)
        ):
            reached = now
            if first is None:
                first = now
            break
        await asyncio.sleep(0.1)
    return {"first_change_seconds": first, "reached_seconds": reached}


async def cycle(
    ctx: Context, kube: Kube, namespace: str, dsn: str, topic: str, group: str, poll: float, window: float
) -> dict[str, Any]:
    await asyncio.sleep(random.uniform(0, poll))  # a random phase against the operator's poll
    conn = await asyncpg.connect(dsn)
    try:
        await events.write_outbox(conn, events.build_events(RELAY_BACKLOG, topic=topic))
        relay_since = time.time()
        relay_up = asyncio.create_task(
            watch_replicas(
                kube, namespace, f"{NAME}-relay", since=relay_since, rises_to=5, falls_to=None, within=60
            )
        )
        pairs = [(f"k{i}".encode(), b"x" * 1000) for i in range(CONSUMER_BACKLOG)]
        await produce(ctx.servers.bootstrap_servers, topic, pairs)
        consumer_since = time.time()
        consumer_up = await watch_replicas(
            kube, namespace, f"{NAME}-consumer", since=consumer_since, rises_to=6, falls_to=None, within=60
        )
        relay = await relay_up
        await conn.execute(
            "UPDATE outbox_events SET status = 'published', published_at = now() WHERE status = 'pending'"
        )
        relay_drained = time.time()
        await commit_to_end(ctx.servers.bootstrap_servers, topic, group, PARTITIONS)
        consumer_drained = time.time()
    finally:
        await conn.close()
    within = window + 4 * poll + 60
    relay_down, consumer_down = await asyncio.gather(
        watch_replicas(
            kube, namespace, f"{NAME}-relay", since=relay_drained, rises_to=None, falls_to=1, within=within
        ),
        watch_replicas(
            kube,
            namespace,
            f"{NAME}-consumer",
            since=consumer_drained,
            rises_to=None,
            falls_to=1,
            within=within,
        ),
    )
    return {
        "relay_up": relay,
        "consumer_up": consumer_up,
        "relay_down": relay_down,
        "consumer_down": consumer_down,
    }


async def run(ctx: Context) -> Result:
    result = ctx.result("scaling", "Scale reaction: backlog -> replicas raised, drain -> scale-down")
    info = ctx.servers.ensure_kube()
    cycles = 1 if ctx.smoke else 3
    window = 3.0 if ctx.smoke else 15.0
    spec_defaults = defaults()
    poll = float(spec_defaults["poll_interval_seconds"])
    autoscaling = {"enabled": True, "behavior": {"scaleDown": {"stabilizationWindowSeconds": int(window)}}}
    result.settings.update(
        {
            "cycles": cycles,
            "autoscaling_defaults": spec_defaults,
            "scale_down_stabilization_window_seconds": window,
            "scale_down_window_note": f"shortened from the HPA default {HPA_DEFAULT_SCALE_DOWN_WINDOW:.0f} s",
            "relay_backlog_rows": RELAY_BACKLOG,
            "consumer_backlog_messages": CONSUMER_BACKLOG,
            "kafka_partitions": PARTITIONS,
            "keda_reference_seconds": {"polling_interval": KEDA_POLL_SECONDS, "hpa_sync": HPA_SYNC_SECONDS},
            "replica_observation": "Deployment spec.replicas read every 100 ms",
        }
    )
    namespace = f"bench-scale-{uuid.uuid4().hex[:6]}"
    group = f"bench-scale-{uuid.uuid4().hex[:6]}"
    runs: list[dict[str, Any]] = []
    async with (
        Kube(info) as kube,
        ctx.servers.database("scaling") as dsn,
        ctx.servers.topic("scaling", partitions=PARTITIONS) as topic,
    ):
        await kube.ensure_crd()
        await kube.create_namespace(namespace)
        kubeconfig = write_kubeconfig(
            ctx.work_dir / "kube" / f"{namespace}.kubeconfig", server=info.server, ca_file=info.ca_file
        )
        op = OperatorProcess(namespace, kubeconfig)
        try:
            await kube.create_secret(namespace, "db", {"dsn": dsn})
            await op.start()
            body = split_runtime(
                NAME,
                bootstrap_servers=ctx.servers.bootstrap_servers,
                topic=topic,
                group=group,
                relay=autoscaling,
                consumer=autoscaling,
                migrations=False,  # the bench migrates the database itself
            )
            await kube.create_runtime(namespace, body)
            deadline = time.monotonic() + 60
            while not (
                await kube.replicas(namespace, f"{NAME}-relay") == 1
                and await kube.replicas(namespace, f"{NAME}-consumer") == 1
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("relay/consumer Deployments not at 1 replica within 60s")
                await asyncio.sleep(0.2)
            await asyncio.sleep(poll + 1)  # one quiet poll first: lag 0 recorded
            for i in range(cycles):
                ctx.say(f"scaling: cycle {i + 1}/{cycles}")
                figures = await cycle(ctx, kube, namespace, dsn, topic, group, poll, window)
                ctx.say(f"scaling: {figures}")
                runs.append(figures)
            final = await kube.request("GET", f"{kube.runtimes_path(namespace)}/{NAME}")
        finally:
            await op.stop()
            await kube.delete_namespace(namespace)

    def collect(key: str, field: str) -> list[float]:
        return [r[key][field] for r in runs if r[key][field] is not None]

    result.figures = {
        "cycles": runs,
        "relay_scale_up_first_s": summary(collect("relay_up", "first_change_seconds")),
        "relay_scale_up_to_desired_s": summary(collect("relay_up", "reached_seconds")),
        "consumer_scale_up_first_s": summary(collect("consumer_up", "first_change_seconds")),
        "consumer_scale_up_to_desired_s": summary(collect("consumer_up", "reached_seconds")),
        "relay_scale_down_s": summary(collect("relay_down", "reached_seconds")),
        "consumer_scale_down_s": summary(collect("consumer_down", "reached_seconds")),
        "keda_reference_scale_up_worst_s": KEDA_POLL_SECONDS + HPA_SYNC_SECONDS,
        "hpa_reference_scale_down_s": HPA_DEFAULT_SCALE_DOWN_WINDOW + HPA_SYNC_SECONDS,
        "final_status_roles": ((final or {}).get("status") or {}).get("roles"),
    }
    ups = collect("relay_up", "first_change_seconds") + collect("consumer_up", "first_change_seconds")
    result.targets.append(
        Target(
            "scale-up reaction (worst of relay/consumer)",
            poll,
            "<=",
            "s",
            max(ups) if ups else None,
            f"one poll interval at defaults = {poll:.0f} s; KEDA defaults: up to "
            f"{KEDA_POLL_SECONDS + HPA_SYNC_SECONDS:.0f} s",
        )
    )
    return result
