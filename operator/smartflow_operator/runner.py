"""``smartflow-operator run``: wire the client, metrics, logging, health and leader election, then
run kopf and the per-runtime loops while this replica leads.

Leader election (:mod:`.leadership`, a ``coordination.k8s.io/v1`` Lease) gates everything that
writes: a replica waits as a candidate (alive, not ready, no kopf, no loops, no writes) until it
holds the Lease, then starts kopf's operator and the per-runtime loops; it stops them when it
loses the Lease (and becomes a candidate again) or on SIGTERM (first refusing every further write
and releasing the Lease, so the other replica takes over at its next retry, then stopping kopf).

Why not kopf's own peering: it is not lease-based. Peers announce themselves in a
``KopfPeering`` object and an operator pauses when it sees a peer of higher priority, but nothing
bounds how long an old leader may keep writing after a partition, it needs an extra CRD and
cluster-wide rights on it, and a paused kopf still watches. A Lease with a renew deadline shorter
than its duration (client-go's algorithm) guarantees the two replicas never write at once, and the
operator's API client refuses writes once the deadline has passed (``KubeClient.may_write``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
import uuid
from dataclasses import dataclass

import kopf
from kubernetes import client
from prometheus_client import start_http_server

from .autoscaling.loop import Autoscaler
from .autoscaling.metrics import AutoscalingMetrics
from .autoscaling.probes import Probes
from .autoscaling.watched_replicas import WatchedReplicas
from .config_watch import ConfigWatcher
from .controller import Controller
from .handlers import register, watched_children
from .health import HealthServer
from .kube import KubeClient, load_api_client
from .leadership import (
    DEFAULT_LEASE_DURATION_SECONDS,
    DEFAULT_LEASE_NAME,
    DEFAULT_RENEW_DEADLINE_SECONDS,
    DEFAULT_RETRY_PERIOD_SECONDS,
    LeaderElector,
    LeaseSettings,
)
from .logs import configure_logging
from .metrics import OperatorMetrics
from .runtime_loops import Loop, RuntimeLoops
from .runtime_metrics import RuntimeStatusMetrics
from .shared_reads import SharedReads

_autoscaling_log = logging.getLogger("smartflow_operator.autoscaling")
_config_log = logging.getLogger("smartflow_operator.config_watch")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = False
    kubeconfig: str | None = None
    health_address: str = "0.0.0.0"
    health_port: int = 8081
    metrics_port: int = 8080
    resync_seconds: float = 60.0
    config_check_seconds: float = 5.0
    log_level: str = "INFO"
    log_format: str = "json"
    leader_election: bool = True
    lease_name: str = DEFAULT_LEASE_NAME
    lease_namespace: str | None = None  # default: $POD_NAMESPACE, else the first watched namespace
    lease_duration_seconds: float = DEFAULT_LEASE_DURATION_SECONDS
    lease_renew_deadline_seconds: float = DEFAULT_RENEW_DEADLINE_SECONDS
    lease_retry_period_seconds: float = DEFAULT_RETRY_PERIOD_SECONDS
    identity: str | None = None  # default: <hostname>-<random>, unique per process

    def lease_settings(self) -> LeaseSettings:
        namespace = (
            self.lease_namespace
            or os.environ.get("POD_NAMESPACE")
            or (self.namespaces[0] if self.namespaces else "default")
        )
        return LeaseSettings(
            namespace=namespace,
            identity=self.identity or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
            name=self.lease_name,
            lease_duration=self.lease_duration_seconds,
            renew_deadline=self.lease_renew_deadline_seconds,
            retry_period=self.lease_retry_period_seconds,
        )


Flag = asyncio.Event | threading.Event


@dataclass(frozen=True)
class _TermMetrics:
    """The metrics of what runs while leading, made once per process (a registry refuses twice)."""

    autoscaling: AutoscalingMetrics
    runtimes: RuntimeStatusMetrics


async def serve(
    config: OperatorConfig,
    *,
    controller: Controller,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set, SIGTERM/SIGINT, or forever. Also used
    in-process by tests. ``ready_flag`` is set once this replica leads and kopf is ready."""
    stopping = asyncio.Event()
    watch_stop = asyncio.create_task(_set_when(stop_flag, stopping)) if stop_flag is not None else None
    _on_signals(stopping.set)
    health = HealthServer(config.health_address, config.health_port)
    await health.start()
    metrics = controller.metrics
    # Registered once per process: a replica that loses the Lease and leads again reuses them.
    term_metrics = _TermMetrics(
        autoscaling=AutoscalingMetrics(metrics.registry), runtimes=RuntimeStatusMetrics(metrics.registry)
    )
    elector: LeaderElector | None = None
    if config.leader_election:
        settings = config.lease_settings()
        lease_kube = KubeClient(
            client.ApiClient(controller.kube.configuration),
            timeout_seconds=settings.retry_period,
            on_request=lambda method, _resource: metrics.lease_requests.labels(method=method).inc(),
            # Its own thread: renewals never queue behind the reconciler's calls (with 1,000
            # runtimes converging they did, past the renew deadline, and the replica lost the Lease).
            threads=1,
        )
        elector = LeaderElector(settings, kube=lease_kube)
        controller.kube.may_write = elector.may_write
    try:
        while not stopping.is_set():
            health.set_ready(False, "not leading: waiting for the leader lease")
            if elector is not None and not await elector.acquire(stopping):
                break
            metrics.leader.set(1)
            lost = await _lead(config, controller, elector, stopping, health, ready_flag, term_metrics)
            metrics.leader.set(0)
            if not lost:
                break
    finally:
        health.set_ready(False, "stopping")
        if elector is not None:
            await elector.release()  # a no-op when the term already released it
            elector.kube.close()
        await health.stop()
        if watch_stop is not None:
            watch_stop.cancel()


async def _lead(
    config: OperatorConfig,
    controller: Controller,
    elector: LeaderElector | None,
    stopping: asyncio.Event,
    health: HealthServer,
    ready_flag: Flag | None,
    term_metrics: _TermMetrics,
) -> bool:
    """One term as leader: kopf and the loops until ``stopping`` or the lease is lost (True)."""
    registry = kopf.OperatorRegistry()
    register(registry)
    children = watched_children()  # this term's kopf indexes: the passes list no children
    controller.children = children
    # Secrets/ConfigMaps read by many runtimes' loops: one GET per object per half check interval.
    reads = SharedReads(controller.kube, max_age_seconds=config.config_check_seconds / 2)
    controller.reads = reads  # the periodic resyncs' Secret/ConfigMap reads
    watched_replicas = WatchedReplicas()
    config_watcher = ConfigWatcher(
        kube=controller.kube,
        on_change=lambda namespace, name: controller.resync(namespace, name, logger=_config_log),
        interval_seconds=config.config_check_seconds,
        reads=reads,
    )
    probes = Probes()
    if controller.schema_versions is None:
        # status.schema.version is read through the lag probes' pools (one per DSN, shared).
        controller.schema_versions = probes
    autoscaler = Autoscaler(
        kube=controller.kube,
        probes=probes,
        # A decision reaches the Deployment in one direction: one pass in the runtime's serialized
        # gate applies it and writes its report.
        scale=lambda namespace, name, role, replicas, report: controller.scale(
            namespace, name, role, replicas, report=report, logger=_autoscaling_log
        ),
        metrics=term_metrics.autoscaling,
        reads=reads,
        watched=watched_replicas,
        report=lambda namespace, name, body, report: controller.report(
            namespace, name, body=body, report=report
        ),
    )
    loops: dict[str, Loop] = {
        "resync": lambda namespace, name, _body, stopped, logger: controller.run_resync(
            namespace, name, interval=config.resync_seconds, stopped=stopped, logger=logger
        ),
        "autoscaler": lambda namespace, name, body, stopped, logger: autoscaler.run(
            namespace, name, stopped=stopped, logger=logger, body=body
        ),
    }
    if config.config_check_seconds > 0:
        loops["config-check"] = lambda namespace, name, body, stopped, logger: config_watcher.run(
            namespace, name, body=body, stopped=stopped, logger=logger
        )
    runtime_loops = RuntimeLoops(loops, stop_timeout_seconds=2.0)
    controller.views = runtime_loops.view  # passes that reuse the configuration need no GET
    kopf_stop, kopf_ready = asyncio.Event(), asyncio.Event()
    kopf_task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            memo=kopf.Memo(
                controller=controller,
                runtime_loops=runtime_loops,
                watched_replicas=watched_replicas,
                watched_children=children,
                runtime_metrics=term_metrics.runtimes,
            ),
            # No kopf peering: the Lease decides who runs (see the module docstring).
            standalone=True,
            clusterwide=config.all_namespaces,
            namespaces=config.namespaces,
            stop_flag=kopf_stop,
            ready_flag=kopf_ready,
        ),
        name="kopf",
    )
    waits: dict[str, asyncio.Task[object]] = {
        "stopping": asyncio.create_task(stopping.wait()),
        "kopf": kopf_task,
        "ready": asyncio.create_task(kopf_ready.wait()),
    }
    if elector is not None:
        waits["lost"] = asyncio.create_task(elector.keep_renewing(stopping))
    lost = False
    try:
        while True:
            done, _ = await asyncio.wait(waits.values(), return_when=asyncio.FIRST_COMPLETED)
            ready = waits.get("ready")
            if ready is not None and ready in done:
                waits.pop("ready")
                _on_signals(stopping.set)  # kopf installed its own; ours stop it gently
                health.set_ready(True, "leading")
                _set(ready_flag)
                continue
            lost = elector is not None and elector.lost.is_set()
            if kopf_task in done and not stopping.is_set() and not lost:
                log.info("kopf stopped: the operator stops")
                stopping.set()
            break
    finally:
        health.set_ready(False, "not leading")
        if elector is not None and not lost:
            # Shutdown: refuse every write from now on (``may_write`` turns False) and hand the
            # Lease over at once; stopping kopf and the loops takes seconds the other replica
            # need not wait for.
            await elector.release()
        kopf_stop.set()
        with contextlib.suppress(Exception):
            await kopf_task  # a kopf failure was logged by kopf
        await runtime_loops.close()
        await autoscaler.close()  # the lag probes' pools and Kafka clients
        for task in waits.values():
            task.cancel()
    return lost


async def _set_when(flag: Flag, event: asyncio.Event) -> None:
    if isinstance(flag, asyncio.Event):
        await flag.wait()
    else:
        # A thread's flag (tests): polled, so no thread is left blocked on it.
        while not flag.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    event.set()


def _set(flag: Flag | None) -> None:
    if flag is not None:
        flag.set()


def _on_signals(handler: object) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, handler)  # type: ignore[arg-type]


def run_operator(config: OperatorConfig) -> int:
    configure_logging(level=config.log_level, fmt=config.log_format)
    # The client is loaded from --kubeconfig explicitly (the `kubernetes` package read $KUBECONFIG
    # at import, so setting the variable now would change nothing); kopf's login handler takes the
    # credentials from this very client (handlers.connection_info), so both act as one identity.
    metrics = OperatorMetrics()
    kube = KubeClient(
        load_api_client(config.kubeconfig),
        on_request=lambda method, resource: metrics.kube_requests.labels(method, resource).inc(),
    )
    start_http_server(config.metrics_port, addr=config.health_address, registry=metrics.registry)
    try:
        asyncio.run(serve(config, controller=Controller(kube=kube, metrics=metrics)))
    finally:
        kube.close()
    return 0
