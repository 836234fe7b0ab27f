"""Two operators against the real apiserver (plus Postgres for the relay's lag): one
``smartflow-operator run`` process and one in-process operator, both with leader election on the
same Lease (default timings: 15 s / 10 s / 2 s).

- the in-process one starts second: it follows, is alive and not ready, and writes nothing
  (its API clients count every request: the reconciler's and leader election's);
- the leader is SIGKILLed while it autoscales: the follower takes over within the lease duration
  plus one retry period (measured), and scales and reconciles from there;
- SIGTERM: the leader releases the Lease and the follower takes over within seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from smartflow_devstack.process import alive, free_port, spawn, stop
from smartflow_operator.controller import Controller
from smartflow_operator.kube import KubeClient, load_api_client
from smartflow_operator.metrics import OperatorMetrics
from smartflow_operator.names import LEASE_NAME
from smartflow_operator.runner import OperatorConfig, serve

from .conftest import insert_events
from .operator_harness import Cluster, eventually, fast_autoscaling, runtime_body

pytestmark = pytest.mark.timeout(240)

NAME = "ha"
RELAY = f"{NAME}-relay"
LEASE_DURATION, RETRY_PERIOD = 15.0, 2.0
OPERATOR_CLI = Path(sys.executable).with_name("smartflow-operator")


def _holder(cluster: Cluster) -> str:
    try:
        lease = client.CoordinationV1Api(cluster.api).read_namespaced_lease(LEASE_NAME, cluster.namespace)
    except client.ApiException as error:
        if error.status == 404:
            return ""
        raise
    return str(lease.spec.holder_identity or "")


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0  # not listening (yet)


@contextmanager
def operator_process(kubeconfig: str, namespace: str, log: Path) -> Iterator[int]:
    argv = [
        str(OPERATOR_CLI), "run", "--namespace", namespace, "--kubeconfig", kubeconfig,
        "--lease-namespace", namespace, "--health-address", "127.0.0.1",
        "--health-port", str(free_port()), "--metrics-port", str(free_port()),
        "--resync-seconds", "30", "--log-format", "text",
    ]  # fmt: skip
    pid = spawn(argv, log=log)
    try:
        yield pid
    finally:
        stop(pid, timeout=15)


@dataclass
class InProcess:
    controller: Controller
    health_port: int
    ready: threading.Event

    @property
    def writes(self) -> int:
        return self.controller.kube.writes

    def lease_requests(self, method: str) -> float:
        value = self.controller.metrics.registry.get_sample_value(
            "smartflow_operator_lease_requests_total", {"method": method}
        )
        return value or 0.0


@contextmanager
def in_process_operator(kubeconfig: str, namespace: str) -> Iterator[InProcess]:
    """The real ``serve`` in a thread, not waiting for readiness (it may be a follower)."""
    kube = KubeClient(load_api_client(kubeconfig))
    controller = Controller(kube=kube, metrics=OperatorMetrics())
    port = free_port()
    config = OperatorConfig(
        namespaces=(namespace,),
        kubeconfig=kubeconfig,
        health_address="127.0.0.1",
        health_port=port,
        resync_seconds=30.0,
        log_format="text",
        lease_namespace=namespace,
    )
    stop_flag, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(serve(config, controller=controller, stop_flag=stop_flag, ready_flag=ready))
        except BaseException as error:  # reported below
            failure.append(error)

    thread = threading.Thread(target=main, name="operator-b", daemon=True)
    thread.start()
    eventually(lambda: _status(port, "/healthz") == 200, timeout=20, what="B's health endpoint")
    try:
        yield InProcess(controller, port, ready)
    finally:
        stop_flag.set()
        thread.join(30)
        kube.close()
    assert not failure, f"operator B failed: {failure[0]!r}"


def _start(cluster: Cluster, outbox_dsn: str, bootstrap_servers: str, names: Callable[[str], str]) -> None:
    cluster.create_secret("db", {"dsn": outbox_dsn})
    cluster.create_runtime(
        runtime_body(
            NAME,
            bootstrap_servers=bootstrap_servers,
            topic=names("outbox"),
            group=names("group"),
            relay=fast_autoscaling(maxReplicas=8),
        )
    )


def _follows_and_writes_nothing(cluster: Cluster, b: InProcess, leader: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert _holder(cluster) == leader
        assert _status(b.health_port, "/healthz") == 200  # alive ...
        assert _status(b.health_port, "/readyz") == 503  # ... not ready
        time.sleep(0.5)
    assert not b.ready.is_set()
    assert b.writes == 0, dict(b.controller.kube.calls)
    assert b.lease_requests("PUT") == b.lease_requests("POST") == 0  # only reads the Lease
    assert b.lease_requests("GET") >= seconds / RETRY_PERIOD - 1
    assert not b.controller.kube.requests, "the follower's reconciler made no request at all"


async def test_the_follower_takes_over_within_the_lease_duration_after_a_sigkill_mid_scaling(
    cluster: Cluster, kubeconfig: str, outbox_dsn: str, bootstrap_servers: str, names: Callable[[str], str],
    tmp_path: Path,
) -> None:  # fmt: skip
    _start(cluster, outbox_dsn, bootstrap_servers, names)
    with operator_process(kubeconfig, cluster.namespace, tmp_path / "operator-a.log") as a_pid:
        eventually(lambda: cluster.replicas(RELAY) == 1, timeout=40, what="A reconciled the runtime")
        leader = _holder(cluster)
        assert leader
        with in_process_operator(kubeconfig, cluster.namespace) as b:
            _follows_and_writes_nothing(cluster, b, leader, seconds=5)

            # A scales the relay, and is killed in the middle of the next scaling cycle.
            await insert_events(outbox_dsn, 30)
            eventually(lambda: cluster.replicas(RELAY) == 3, timeout=20, what="A scaled the relay to 3")
            await insert_events(outbox_dsn, 20)
            os.killpg(a_pid, signal.SIGKILL)
            killed = time.monotonic()
            writes_while_following = 0
            while (holder := _holder(cluster)) in (leader, ""):
                writes_while_following = b.writes
                assert time.monotonic() - killed < 30, "B never took the Lease"
                await asyncio.sleep(0.1)
            takeover = time.monotonic() - killed
            print(f"SIGKILL -> takeover by the follower: {takeover:.1f} s (lease {LEASE_DURATION:.0f} s)")
            assert not alive(a_pid)
            assert holder != leader
            assert writes_while_following == 0, "no write while neither held a valid lease"
            assert takeover <= LEASE_DURATION + RETRY_PERIOD + 1.0  # + one GET/PUT and scheduling

            # B now autoscales and reconciles the same runtime.
            eventually(lambda: b.ready.is_set(), timeout=20, what="B ready as the leader")
            assert _status(b.health_port, "/readyz") == 200
            eventually(lambda: cluster.replicas(RELAY) == 5, timeout=20, what="B scaled the relay to 5")
            cluster.patch_runtime(NAME, {"spec": {"roles": {"api": {"replicas": 2}}}})
            eventually(
                lambda: cluster.replicas(f"{NAME}-api") == 2, timeout=20, what="B reconciled a spec change"
            )


async def test_sigterm_releases_the_lease_and_the_follower_takes_over_in_seconds(
    cluster: Cluster, kubeconfig: str, outbox_dsn: str, bootstrap_servers: str, names: Callable[[str], str],
    tmp_path: Path,
) -> None:  # fmt: skip
    _start(cluster, outbox_dsn, bootstrap_servers, names)
    with operator_process(kubeconfig, cluster.namespace, tmp_path / "operator-a.log") as a_pid:
        eventually(lambda: cluster.replicas(RELAY) == 1, timeout=40, what="A reconciled the runtime")
        leader = _holder(cluster)
        with in_process_operator(kubeconfig, cluster.namespace) as b:
            _follows_and_writes_nothing(cluster, b, leader, seconds=3)
            os.killpg(a_pid, signal.SIGTERM)
            stopped = time.monotonic()
            eventually(
                lambda: _holder(cluster) not in (leader, ""),
                timeout=10,
                what="B took the Lease",
                interval=0.05,
            )
            handover = time.monotonic() - stopped
            print(f"SIGTERM -> takeover by the follower: {handover:.1f} s")
            assert handover < 5.0
            eventually(lambda: not alive(a_pid), timeout=15, what="A exited")
            eventually(lambda: b.ready.is_set(), timeout=20, what="B ready as the leader")
            await insert_events(outbox_dsn, 40)
            eventually(lambda: cluster.replicas(RELAY) == 4, timeout=20, what="B scaled the relay to 4")
    log = (tmp_path / "operator-a.log").read_text()
    assert "released the lease" in log, log[-2000:]
