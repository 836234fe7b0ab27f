"""``smartflow-operator run``: wire the client, metrics, logging and handlers, then run kopf."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

import kopf
from prometheus_client import start_http_server

from .autoscaling.loop import Autoscaler
from .autoscaling.metrics import AutoscalingMetrics
from .config_watch import ConfigWatcher
from .controller import Controller
from .handlers import register
from .kube import KubeClient, load_api_client
from .logs import configure_logging
from .metrics import OperatorMetrics
from .runtime_loops import Loop, RuntimeLoops

_autoscaling_log = logging.getLogger("smartflow_operator.autoscaling")
_config_log = logging.getLogger("smartflow_operator.config_watch")


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


async def serve(
    config: OperatorConfig,
    *,
    controller: Controller,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
) -> None:
    """Run the operator until ``stop_flag`` is set (or forever). Also used in-process by tests."""
    registry = kopf.OperatorRegistry()
    register(registry)
    config_watcher = ConfigWatcher(
        kube=controller.kube,
        on_change=lambda namespace, name: controller.resync(namespace, name, logger=_config_log),
        interval_seconds=config.config_check_seconds,
    )
    autoscaler = Autoscaler(
        kube=controller.kube,
        # A decision reaches the Deployment in one direction: one pass in the runtime's serialized
        # gate applies it and writes its report.
        scale=lambda namespace, name, role, replicas, report: controller.scale(
            namespace, name, role, replicas, report=report, logger=_autoscaling_log
        ),
        metrics=AutoscalingMetrics(controller.metrics.registry),
    )
    loops: dict[str, Loop] = {
        "resync": lambda namespace, name, _body, stopped, logger: controller.run_resync(
            namespace, name, interval=config.resync_seconds, stopped=stopped, logger=logger
        ),
        "autoscaler": lambda namespace, name, _body, stopped, logger: autoscaler.run(
            namespace, name, stopped=stopped, logger=logger
        ),
    }
    if config.config_check_seconds > 0:
        loops["config-check"] = lambda namespace, name, body, stopped, logger: config_watcher.run(
            namespace, name, body=body, stopped=stopped, logger=logger
        )
    runtime_loops = RuntimeLoops(loops)
    try:
        await kopf.operator(
            registry=registry,
            memo=kopf.Memo(controller=controller, runtime_loops=runtime_loops),
            standalone=True,  # one replica (Recreate): no peering objects to keep
            clusterwide=config.all_namespaces,
            namespaces=config.namespaces,
            liveness_endpoint=f"http://{config.health_address}:{config.health_port}/healthz",
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        await runtime_loops.close()
        await autoscaler.close()  # the lag probes' pools and Kafka clients


def run_operator(config: OperatorConfig) -> int:
    configure_logging(level=config.log_level, fmt=config.log_format)
    # The client is loaded from --kubeconfig explicitly (the `kubernetes` package read $KUBECONFIG
    # at import, so setting the variable now would change nothing); kopf's login handler takes the
    # credentials from this very client (handlers.connection_info), so both act as one identity.
    metrics = OperatorMetrics()
    kube = KubeClient(
        load_api_client(config.kubeconfig),
        on_request=lambda method: metrics.kube_requests.labels(method=method).inc(),
    )
    start_http_server(config.metrics_port, addr=config.health_address, registry=metrics.registry)
    try:
        asyncio.run(serve(config, controller=Controller(kube=kube, metrics=metrics)))
    finally:
        kube.close()
    return 0
