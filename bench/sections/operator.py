"""Section 5: the operator. CR apply -> every role Deployment present; writes on a no-op resync;
1,000 runtimes on one operator: time to converge, peak RSS, apply latency at that size, writes and
apiserver requests while idle.

The real ``smartflow-operator run`` process watches one bench namespace on the shared apiserver.
Runtimes are split mode (api, relay, consumer, memory-worker) with relay and consumer
autoscaling enabled against a real bench database and topic, as in ``examples/``, so the
autoscaling daemons run (and cost memory) too.

- apply latency: create a runtime, poll its Deployments every 20 ms until all four exist.
- 1,000 runtimes (the fleet): created back to back in their own namespace; converged when every
  one has its four role Deployments in ``status.roles`` and ``status.observedGeneration ==
  metadata.generation``. Peak RSS is the kernel's ``VmHWM``. Fleet runtimes run **no pods**: every
  role has ``replicas: 0`` (relay and consumer autoscale between 0 and 6 on a lag that stays 0)
  and a ``nodeSelector`` no node carries, so even on a stack with a real node nothing is
  scheduled; the kube-controller-manager still creates a ReplicaSet per Deployment and updates
  every Deployment's status, which the operator watches, as on a real cluster. Then, with the
  fleet idle, a window of one resync period counts the operator's requests and writes (its own
  counter) and every client's requests (the apiserver's ``apiserver_request_total``), and a few
  more runtimes are applied one at a time to time CR apply -> Deployments at that size.
- no-op resync: a second operator talks to the apiserver through :class:`CountingProxy`, with
  ``--resync-seconds`` shortened so several resyncs fall in the window; after the runtimes
  have converged and writes have settled, every request in the window is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp

from smartflow_devstack.manifests import split_runtime

from ..context import Context
from ..kube_tools import (
    WRITE_METHODS,
    CountingProxy,
    Kube,
    OperatorProcess,
    Recorded,
    kube_requests,
    kube_requests_by_resource,
    write_kubeconfig,
)
from ..machine import busy_cores, cpu_times, wait_quiet_before_measuring
from ..procs import CpuMeter
from ..results import Result, Target
from ..stats import summary

ROLES = 4  # split mode: api, relay, consumer, memory-worker
AUTOSCALING = {"enabled": True, "minReplicas": 1, "maxReplicas": 6, "targetPerReplica": 100}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Counter increases between two readings, by key."""
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}


def body(ctx: Context, name: str, topic: str, *, autoscaling: bool = True) -> dict[str, Any]:
    scaling = AUTOSCALING if autoscaling else None
    # The apply path itself is measured: the database is migrated by the bench (no migration Job).
    return split_runtime(
        name,
        bootstrap_servers=ctx.servers.bootstrap_servers,
        topic=topic,
        group=f"bench-op-{name}",
        relay=scaling,
        consumer=scaling,
        migrations=False,
    )


# No node carries this label: a fleet runtime's pods (there are none at replicas 0) could never be
# scheduled, also on a stack that has the real node.
NO_NODE = {"smartflow.io/bench-no-node": "true"}
FLEET_AUTOSCALING = {**AUTOSCALING, "minReplicas": 0}


def fleet_body(ctx: Context, name: str, topic: str) -> dict[str, Any]:
    """A runtime of the fleet: as :func:`body`, but every role at 0 replicas on no node."""
    manifest = body(ctx, name, topic)
    roles = manifest["spec"]["roles"]
    for role in ("api", "relay", "consumer", "memoryWorker"):
        roles.setdefault(role, {}).update({"replicas": 0, "nodeSelector": NO_NODE})
    roles["relay"]["autoscaling"] = roles["consumer"]["autoscaling"] = FLEET_AUTOSCALING
    return manifest


def fleet_converged(runtimes: list[dict[str, Any]], prefix: str) -> int:
    """How many runtimes named ``prefix*`` report all role Deployments for their current generation."""
    done = 0
    for runtime in runtimes:
        status = runtime.get("status") or {}
        roles = status.get("roles") or {}
        if (
            runtime["metadata"]["name"].startswith(prefix)
            and status.get("observedGeneration") == runtime["metadata"]["generation"]
            and sum(1 for role in roles.values() if (role or {}).get("deployment")) >= ROLES
        ):
            done += 1
    return done


def changed_while_quiet(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], prefix: str
) -> dict[str, Any]:
    """Of the runtimes rolled out when a window began (nothing left to report about them), how many
    were written during it (their resourceVersion moved), with what their conditions said."""
    rolled_out = [n for n, r in before.items() if n.startswith(prefix) and fleet_settled([r], prefix)]
    written = [
        n
        for n in rolled_out
        if n in after and after[n]["metadata"]["resourceVersion"] != before[n]["metadata"]["resourceVersion"]
    ]

    def conditions(runtime: dict[str, Any]) -> dict[str, str]:
        found = (runtime.get("status") or {}).get("conditions") or []
        return {c["type"]: f"{c.get('reason')}: {c.get('message')}" for c in found}

    sample = []
    for name in written[:3]:
        was, now = conditions(before[name]), conditions(after[name])
        sample.append(
            {"runtime": name, "changed": {k: [was.get(k), v] for k, v in now.items() if was.get(k) != v}}
        )
    return {"rolled_out": len(rolled_out), "written": len(written), "sample": sample}


def fleet_settled(runtimes: list[dict[str, Any]], prefix: str) -> int:
    """How many runtimes named ``prefix*`` say every role is rolled out (``Progressing`` False): the
    Deployment controller has caught up with them, so nothing about them is left to report."""
    done = 0
    for runtime in runtimes:
        conditions = (runtime.get("status") or {}).get("conditions") or []
        progressing = next((c for c in conditions if c.get("type") == "Progressing"), None)
        if runtime["metadata"]["name"].startswith(prefix) and (progressing or {}).get("status") == "False":
            done += 1
    return done


async def converged(kube: Kube, namespace: str, prefix: str) -> int:
    """How many runtimes named ``prefix*`` have all role Deployments and an up-to-date status."""
    per_instance = Counter(
        d["metadata"]["labels"].get("app.kubernetes.io/instance") for d in await kube.deployments(namespace)
    )
    done = 0
    for runtime in await kube.list_runtimes(namespace):
        name = runtime["metadata"]["name"]
        observed = (runtime.get("status") or {}).get("observedGeneration")
        if (
            name.startswith(prefix)
            and per_instance[name] >= ROLES
            and observed == runtime["metadata"]["generation"]
        ):
            done += 1
    return done


async def apply_latency(
    kube: Kube,
    ctx: Context,
    namespace: str,
    topic: str,
    repeats: int,
    *,
    prefix: str = "apply",
    make: Callable[[Context, str, str], dict[str, Any]] = body,
    wait: float = 0.3,
    tolerate_timeouts: bool = False,
    timeouts: list[str] | None = None,
    limit_seconds: float = 60.0,
) -> list[float]:
    """Seconds from each create until its Deployments exist (seen on a watch opened before the
    create). ``tolerate_timeouts``: a runtime whose Deployments take over ``limit_seconds`` is
    listed in ``timeouts`` instead of failing the section."""
    latencies = []
    timeouts = [] if timeouts is None else timeouts
    for i in range(repeats):
        name = f"{prefix}-{i}"
        selector = f"app.kubernetes.io/instance={name}"
        async with kube.watch_deployments(namespace, selector) as watch:
            started = time.perf_counter()
            await kube.create_runtime(namespace, make(ctx, name, topic))
            if await watch.until(ROLES, within=limit_seconds):
                latencies.append(time.perf_counter() - started)
            elif tolerate_timeouts:
                timeouts.append(name)
            else:
                raise RuntimeError(f"{name}: Deployments not created within {limit_seconds:.0f}s")
        await kube.delete_runtime(namespace, name)
        await asyncio.sleep(wait)
    return latencies


async def create_all(kube: Kube, namespace: str, bodies: list[dict[str, Any]], parallel: int = 4) -> None:
    queue = list(reversed(bodies))

    async def worker() -> None:
        while queue:
            await kube.create_runtime(namespace, queue.pop())

    await asyncio.gather(*(worker() for _ in range(parallel)))


async def fleet(
    kube: Kube, ctx: Context, info: Any, topic: str, *, count: int, window: float, apply_repeats: int
) -> dict[str, Any]:
    """``count`` runtimes on one operator (default resync): converge, RSS, idle requests, apply latency."""
    namespace = f"bench-fleet-{uuid.uuid4().hex[:6]}"
    await kube.create_namespace(namespace)
    kubeconfig = write_kubeconfig(
        ctx.work_dir / "kube" / f"{namespace}.kubeconfig", server=info.server, ca_file=info.ca_file
    )
    op = OperatorProcess(namespace, kubeconfig)
    try:
        await kube.create_secret(namespace, "db", {"dsn": ctx.settings_dsn})
        # The earlier steps' namespaces are still being garbage-collected (their Deployments,
        # ReplicaSets, Pods): the fleet starts once the control plane has caught up (bounded).
        machine_quiet = await wait_quiet_before_measuring(smoke=ctx.smoke)
        if not machine_quiet["quiet"]:
            ctx.say(f"operator fleet: the machine stayed busy ({machine_quiet['busy_cores_before']} cores)")
        await op.start()
        idle_rss = op.rss()
        # Where the convergence time goes: CPU of each control-plane process and of the operator,
        # the machine's busy cores, and every client's requests, from the first create to the
        # last runtime converged.
        meter = CpuMeter(
            groups={
                "kube_apiserver": [info.apiserver_pid],
                "etcd": [info.etcd_pid],
                "kube_controller_manager": [info.controller_manager_pid],
                "operator": [op.pid],
            }
        )
        api_at_start, op_at_start = await kube.apiserver_requests(), kube_requests(await op.metrics())
        machine_at_start = cpu_times()
        meter.start()
        started = time.perf_counter()
        await create_all(kube, namespace, [fleet_body(ctx, f"many-{i}", topic) for i in range(count)])
        created = time.perf_counter() - started
        rss_samples: list[float] = []
        progress: list[list[float]] = []
        deadline = time.monotonic() + CONVERGE_WAIT_SECONDS
        done = 0
        while time.monotonic() < deadline:
            try:
                done = fleet_converged(await kube.list_runtimes(namespace), "many-")
            except (TimeoutError, aiohttp.ClientError) as error:  # a busy apiserver: look again
                ctx.say(f"operator fleet: listing the runtimes failed ({type(error).__name__}), retrying")
                await asyncio.sleep(2.0)
                continue
            progress.append([round(time.perf_counter() - started, 2), done])
            rss_samples.append(op.rss()["rss_mib"] or 0.0)
            if done == count:
                break
            await asyncio.sleep(2.0 if count >= 100 else 0.3)
        converge = time.perf_counter() - started
        converge_cpu = meter.stop()
        machine_busy = busy_cores(machine_at_start, cpu_times())
        converge_api = delta(await kube.apiserver_requests(), api_at_start)
        converge_ops = delta(kube_requests(await op.metrics()), op_at_start)
        ctx.say(f"operator fleet: {done}/{count} converged after {converge:.1f}s")
        # Idle means nothing left to report: wait (bounded) until the Deployment controller has
        # rolled out every Deployment (it works through them at its own client's rate) and the
        # first autoscaling polls (every 5 s) have reported.
        settle_started = time.monotonic()
        settled = 0
        min_settle = MIN_SETTLE_SECONDS if count >= 100 else 7.0
        while time.monotonic() - settle_started < SETTLE_WAIT_SECONDS:
            with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                settled = fleet_settled(await kube.list_runtimes(namespace), "many-")
            rss_samples.append(op.rss()["rss_mib"] or 0.0)
            if settled == count and time.monotonic() - settle_started >= min_settle:
                break
            await asyncio.sleep(2.0 if count >= 100 else 0.3)
        settle = time.monotonic() - settle_started
        ctx.say(f"operator fleet: {settled}/{count} rolled out {settle:.1f}s after convergence")
        before_runtimes = {r["metadata"]["name"]: r for r in await kube.list_runtimes(namespace)}
        before_samples, before_api = await op.metrics(), await kube.apiserver_requests()
        before_op = kube_requests(before_samples)
        window_start = time.monotonic()
        await asyncio.sleep(window)
        elapsed = time.monotonic() - window_start
        after_samples, after_api = await op.metrics(), await kube.apiserver_requests()
        after_runtimes = {r["metadata"]["name"]: r for r in await kube.list_runtimes(namespace)}
        quiet = changed_while_quiet(before_runtimes, after_runtimes, "many-")
        after_op = kube_requests(after_samples)
        by_resource_before = kube_requests_by_resource(before_samples)
        idle_by_resource = {
            key: round(value - by_resource_before.get(key, 0.0))
            for key, value in sorted(kube_requests_by_resource(after_samples).items())
            if value - by_resource_before.get(key, 0.0) > 0
        }
        settled_rss = op.rss()
        idle_ops = delta(after_op, before_op)
        idle_api = delta(after_api, before_api)
        ctx.say(f"operator fleet: idle window {elapsed:.0f}s: operator {idle_ops}, apiserver {idle_api}")
        timed_out: list[str] = []
        latencies = await apply_latency(
            kube,
            ctx,
            namespace,
            topic,
            apply_repeats,
            prefix="sized",
            make=fleet_body,
            wait=1.0,
            tolerate_timeouts=True,
            timeouts=timed_out,
            limit_seconds=APPLY_AT_SIZE_TIMEOUT_SECONDS,
        )
        final_rss = op.rss()
    finally:
        await op.stop()
        await kube.delete_namespace(namespace)
    writes = sum(v for k, v in idle_ops.items() if k in WRITE_METHODS)
    return {
        "runtimes": count,
        "quiet_wait_before_fleet": machine_quiet,
        "converged": done,
        "create_calls_seconds": round(created, 2),
        "converge_seconds": round(converge, 2) if done == count else None,
        "progress": progress,
        "converge_cpu_cores": {
            group: round(seconds / converge, 3)
            for group, seconds in converge_cpu.items()
            if group != "bench_process"
        }
        | {"bench": round(converge_cpu["bench_process"] / converge, 3), "machine_busy": machine_busy},
        "converge_apiserver_requests_by_verb": {k: round(v) for k, v in sorted(converge_api.items()) if v},
        "converge_operator_requests_by_method": {k: round(v) for k, v in sorted(converge_ops.items()) if v},
        "operator_idle_rss_before_fleet": idle_rss,
        "rss_mib_max_sampled": max(rss_samples) if rss_samples else None,
        "rss_mib_after_settling": settled_rss["rss_mib"],
        "settle_seconds": round(settle, 1),
        "settled": settled,
        "settle_wait_limit_seconds": SETTLE_WAIT_SECONDS,
        "peak_rss_mib": final_rss["peak_rss_mib"],
        "idle_window_seconds": round(elapsed, 1),
        "idle_operator_requests_by_method": {k: round(v) for k, v in idle_ops.items()},
        "idle_operator_requests_per_second": round(sum(idle_ops.values()) / elapsed, 2),
        "idle_operator_requests_by_resource": idle_by_resource,
        "rolled_out_at_window_start": quiet["rolled_out"],
        "rolled_out_runtimes_written_in_window": quiet["written"],
        "rolled_out_runtimes_written_sample": quiet["sample"],
        "idle_operator_writes": round(writes),
        "idle_apiserver_requests_by_verb": {k: round(v) for k, v in sorted(idle_api.items())},
        "idle_apiserver_requests_per_second": round(sum(idle_api.values()) / elapsed, 2),
        "apply_at_size_ms": summary(latencies, scale=1000),
        "apply_at_size_raw_ms": [round(x * 1000, 1) for x in latencies],
        "apply_at_size_timed_out": len(timed_out),
        "apply_at_size_timeout_seconds": APPLY_AT_SIZE_TIMEOUT_SECONDS,
        "operator_stop_seconds": op.stop_seconds,
    }


def is_quiet(request: Recorded) -> bool:
    """A request about one of the runtimes without autoscaling (by path, or an Event's subject)."""
    return "/quiet-" in request.path or (request.subject or "").startswith("quiet-")


async def noop_resync_writes(
    kube: Kube, ctx: Context, topic: str, window: float, resync: float
) -> dict[str, Any]:
    info = ctx.servers.ensure_kube()
    namespace = f"bench-resync-{uuid.uuid4().hex[:6]}"
    proxy = CountingProxy(info)
    await proxy.start()
    kubeconfig = write_kubeconfig(
        ctx.work_dir / "kube" / f"{namespace}.kubeconfig", server=proxy.url, ca_file=None
    )
    await kube.create_namespace(namespace)
    op = OperatorProcess(namespace, kubeconfig, resync_seconds=resync)
    try:
        await kube.create_secret(namespace, "db", {"dsn": ctx.settings_dsn})
        await op.start()
        names = {"quiet-0": False, "quiet-1": False, "scaled-0": True}
        for name, scaled in names.items():
            await kube.create_runtime(namespace, body(ctx, name, topic, autoscaling=scaled))
        deadline = time.monotonic() + 60
        while await converged(kube, namespace, "") < len(names):
            if time.monotonic() > deadline:
                raise RuntimeError("resync runtimes did not converge within 60s")
            await asyncio.sleep(0.3)
        # Settled: no write about the quiet runtimes for two resync periods (the create handling,
        # kopf's own annotations and the status echo are done); bounded, the window runs anyway.
        settle_deadline = time.monotonic() + 60
        while time.monotonic() < settle_deadline:
            quiet_writes = [r.at for r in proxy.requests if r.method in WRITE_METHODS and is_quiet(r)]
            if time.time() - max(quiet_writes, default=0.0) > 2 * resync + 1:
                break
            await asyncio.sleep(0.5)
        before = kube_requests(await op.metrics())
        start = time.time()
        await asyncio.sleep(window)
        end = time.time()
        after = kube_requests(await op.metrics())
    finally:
        await op.stop()
        ctx.say(f"operator (behind the proxy) stopped in {op.stop_seconds}s")
        await proxy.stop()
        await kube.delete_namespace(namespace)
    seen = proxy.window(start, end)
    writes = [r for r in seen if r.method in WRITE_METHODS]
    by_method = Counter(r.method for r in seen)
    return {
        "window_seconds": round(end - start, 1),
        "resync_seconds": resync,
        "runtimes": {
            name: ("autoscaling on" if scaled else "autoscaling off") for name, scaled in names.items()
        },
        "requests_by_method": dict(by_method),
        "watch_requests": sum(1 for r in seen if "watch=" in r.query),
        "writes": len(writes),
        "writes_detail": [
            {"method": r.method, "path": r.path, "event_for": r.subject, "body": r.body} for r in writes[:50]
        ],
        "writes_to_quiet_runtimes": sum(1 for r in writes if is_quiet(r)),
        "writes_per_minute_idle_autoscaled_runtime": round(
            sum(1 for r in writes if "/scaled-0" in r.path or r.subject == "scaled-0") * 60 / (end - start), 1
        ),
        "operator_metric_requests_delta": {k: after.get(k, 0) - before.get(k, 0) for k in after},
    }


FLEET_SIZE = 1000
# The fleet's waits, bounded so the section fits the bench's budget (the report says when one ran out).
CONVERGE_WAIT_SECONDS = 300.0  # the target is 120 s
SETTLE_WAIT_SECONDS = 180.0
MIN_SETTLE_SECONDS = 15.0  # past the first autoscaling polls (every 5 s) and their reports
APPLY_AT_SIZE_TIMEOUT_SECONDS = 30.0


async def run(ctx: Context) -> Result:
    result = ctx.result("operator", f"Operator: apply latency, no-op resync writes, {FLEET_SIZE:,} runtimes")
    info = ctx.servers.ensure_kube()
    repeats = 2 if ctx.smoke else 20
    count = 3 if ctx.smoke else FLEET_SIZE
    window = 4.0 if ctx.smoke else 20.0
    resync = 1.0 if ctx.smoke else 5.0
    fleet_window = 4.0 if ctx.smoke else 60.0  # the operator's default resync period
    sized_repeats = 2 if ctx.smoke else 10
    result.settings.update(
        {
            "apply_repeats": repeats,
            "runtimes_for_convergence": count,
            "runtime_spec": "split mode, relay+consumer autoscaling on (defaults, target 100, max 6)",
            "fleet_runtime_spec": "as runtime_spec, but every role replicas 0 (relay/consumer autoscaling"
            " min 0) and a nodeSelector no node carries: no pods; all runtimes share one Secret, database"
            " and topic, each its own consumer group",
            "fleet_idle_window_seconds": fleet_window,
            "fleet_apply_repeats": sized_repeats,
            "resync_seconds_for_noop_window": resync,
            "noop_window_seconds": window,
            "operator": "smartflow-operator run --namespace NS (one process, default resync 60 s and"
            " config check 5 s), shared apiserver",
        }
    )
    namespace = f"bench-op-{uuid.uuid4().hex[:6]}"
    async with (
        Kube(info) as kube,
        ctx.servers.database("operator") as dsn,
        ctx.servers.topic("operator") as topic,
    ):
        ctx.settings_dsn = dsn
        await kube.ensure_crd()
        await kube.create_namespace(namespace)
        kubeconfig = write_kubeconfig(
            ctx.work_dir / "kube" / f"{namespace}.kubeconfig", server=info.server, ca_file=info.ca_file
        )
        op = OperatorProcess(namespace, kubeconfig)
        try:
            await kube.create_secret(namespace, "db", {"dsn": dsn})
            await op.start()
            idle_rss = op.rss()
            ctx.say(f"operator: apply latency x{repeats}")
            latencies = await apply_latency(kube, ctx, namespace, topic, repeats)
        finally:
            await op.stop()
            await kube.delete_namespace(namespace)
        ctx.say(f"operator: stopped in {op.stop_seconds}s; no-op resync window {window:.0f}s")
        resync_figures = await noop_resync_writes(kube, ctx, topic, window, resync)
        ctx.say(f"operator: {count} runtimes")
        many = await fleet(
            kube, ctx, info, topic, count=count, window=fleet_window, apply_repeats=sized_repeats
        )
        ctx.say(f"operator: converge {many['converge_seconds']}s, peak RSS {many['peak_rss_mib']} MiB")
    apply = summary(latencies, scale=1000)
    result.figures = {
        "apply_to_deployments_ms": apply,
        "apply_to_deployments_raw_ms": [round(x * 1000, 1) for x in latencies],
        "operator_idle_rss": idle_rss,
        "operator_stop_seconds": op.stop_seconds,
        "many_runtimes": many,
        "noop_resync": resync_figures,
    }
    result.targets += [
        Target("CR apply -> Deployments p50", 1000.0, "<=", "ms", apply["p50"]),
        Target(
            "writes on a no-op resync (runtimes without autoscaling)",
            0,
            "<=",
            "writes",
            resync_figures["writes_to_quiet_runtimes"],
        ),
        Target(
            f"{count:,} runtimes converge",
            120.0,
            "<=",
            "s",
            # Not all converged: the time the bench waited, a lower bound (missed either way).
            many["converge_seconds"] or (many["progress"][-1][0] if many["progress"] else None),
            note=""
            if many["converge_seconds"]
            else f"only {many['converged']}/{count} had converged when the bench stopped waiting",
        ),
        Target(f"operator peak RSS with {count:,} runtimes", 400.0, "<=", "MiB", many["peak_rss_mib"]),
        Target(
            f"CR apply -> Deployments p50 with {count:,} runtimes",
            1000.0,
            "<=",
            "ms",
            many["apply_at_size_ms"]["p50"],
        ),
        Target(
            f"rolled-out runtimes written in a resync period, {count:,} runtimes",
            0,
            "<=",
            "runtimes",
            many["rolled_out_runtimes_written_in_window"],
            note=f"{many['rolled_out_at_window_start']:,} of {count:,} were rolled out when the window"
            f" began; the operator sent {many['idle_operator_writes']:,} writes in it (status of runtimes"
            " the Deployment controller was still rolling out)",
        ),
    ]
    return result
