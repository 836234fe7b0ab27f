"""The demo scenario, step by step; :func:`run_demo` is what ``make demo`` and the e2e test run.

Everything runs on the local stack (reused if ``make up`` is running, else started and, unless
``keep_up``, stopped at the end). Each run gets its own database, topic and consumer group, so
runs never see each other's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml

from .. import postgres, stack
from ..manifests import GROUP, PLURAL, VERSION
from ..process import alive, free_port, spawn, stop
from ..runner import RunnerProcess, start_runner
from ..runner.endpoints import ready_urls
from ..runner.kubeapi import KubeApi
from ..versions import REPO_ROOT, kube_bin
from .view import DemoSummary, Observation, Timeline, format_line, role_replicas

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class DemoSettings:
    messages: int = 3000
    concurrency: int = 16
    namespace: str = "smartflow-demo"
    name: str = "demo"
    relay_target: int = 200
    consumer_target: int = 200
    relay_min: int = 0
    relay_max: int = 4
    consumer_min: int = 1
    consumer_max: int = 6
    poll_interval: int = 2
    scale_down_window: int = 15
    timeout: float = 300.0
    keep_up: bool = False
    state: Path = REPO_ROOT / ".local" / "demo"
    example: Path = REPO_ROOT / "examples" / "runtime-split.yaml"
    # Servers to use (the e2e test passes its session's); None: reuse `make up`'s or start one.
    servers: stack.Stack | None = None
    out: Callable[[str], None] = field(default=print)


def patched_example(
    settings: DemoSettings, *, dsn: str, bootstrap: str, topic: str, group: str
) -> list[dict[str, Any]]:
    """The example's documents with what only this machine knows filled in and demo-sized scaling."""
    documents = [d for d in yaml.safe_load_all(settings.example.read_text()) if d]
    for document in documents:
        if document["kind"] == "Secret":
            document["stringData"] = {key: dsn for key in document.get("stringData", {"dsn": ""})}
        if document["kind"] == "SmartflowRuntime":
            document["metadata"]["name"] = settings.name
            spec = document["spec"]
            spec["kafka"] = {"bootstrapServers": bootstrap, "topic": topic, "consumerGroup": group}
            roles = spec["roles"]
            for role, target, maximum, minimum in (
                ("relay", settings.relay_target, settings.relay_max, settings.relay_min),
                ("consumer", settings.consumer_target, settings.consumer_max, settings.consumer_min),
            ):
                autoscaling = roles[role].setdefault("autoscaling", {})
                autoscaling.update(
                    {
                        "enabled": True,
                        "minReplicas": minimum,
                        "maxReplicas": maximum,
                        "targetPerReplica": target,
                        "pollIntervalSeconds": settings.poll_interval,
                        "behavior": {"scaleDown": {"stabilizationWindowSeconds": settings.scale_down_window}},
                    }
                )
                roles[role]["replicas"] = minimum
            for role in roles.values():
                role.pop("resources", None)  # no kubelet here: requests mean nothing locally
    return documents


def _kubectl(kubeconfig: str, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(kube_bin("kubectl")), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def _kubectl_wait(kubeconfig: str, *args: str, timeout: float) -> None:
    """``kubectl wait ARGS``, retried until ``timeout``: right after an object is created its
    ``status.conditions`` may still be absent, and kubectl then fails at once instead of waiting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _kubectl(kubeconfig, "wait", *args, "--timeout=10s")
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class _Demo:
    def __init__(self, settings: DemoSettings) -> None:
        self.s = settings
        self.out = settings.out
        self.run_id = uuid.uuid4().hex[:6]
        self.started_stack = False
        self.operator_pid: int | None = None
        self.runner: RunnerProcess | None = None
        self.stack: stack.Stack | None = None
        self.dsn = ""
        self.kubeconfig = ""

    # --- setup ----------------------------------------------------------------------------------

    def setup(self) -> None:
        self.started_stack = stack.load() is None
        self.out(
            "1/7 local stack: "
            + ("starting" if self.started_stack else "reusing the running `make up` stack")
        )
        self.stack = stack.up()
        assert self.stack.postgres and self.stack.kafka and self.stack.kube
        self.kubeconfig = self.stack.kube.kubeconfig
        database = f"demo_{self.run_id}"
        asyncio.run(_create_database(self.stack.postgres.dsn, database))
        self.dsn = postgres.dsn_for(self.stack.postgres.port, database)
        self.out(f"2/7 database {database}: smartflow-runtime migrate")
        subprocess.run(
            [str(BIN / "smartflow-runtime"), "migrate"],
            env={**os.environ, "SMARTFLOW_DATABASE_DSN": self.dsn, "SMARTFLOW_LOG_FORMAT": "text"},
            check=True,
            capture_output=True,
        )
        self.out("3/7 CRD: kubectl apply --server-side -f crds/")
        _kubectl(
            self.kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds")
        )
        _kubectl_wait(
            self.kubeconfig, "--for=condition=Established", "crd/smartflowruntimes.smartflow.io", timeout=60
        )
        self._fresh_namespace()
        state = self.s.state / self.run_id
        logs = state / "logs"
        self.out(f"4/7 operator and local runner (logs in {logs})")
        self.operator_pid = spawn(
            [
                str(BIN / "smartflow-operator"),
                "run",
                "--namespace",
                self.s.namespace,
                "--health-address",
                "127.0.0.1",
                "--health-port",
                str(free_port()),
                "--metrics-port",
                str(free_port()),
                "--log-format",
                "text",
            ],
            log=logs / "operator.log",
            env={"KUBECONFIG": self.kubeconfig},
        )
        self.runner = start_runner(
            kubeconfig=self.kubeconfig, state=state / "runner", namespaces=[self.s.namespace]
        )
        self.runner.wait_ready()
        topic, group = f"smartflow.demo.{self.run_id}", f"smartflow-demo-{self.run_id}"
        documents = patched_example(
            self.s, dsn=self.dsn, bootstrap=self.stack.kafka.bootstrap_servers, topic=topic, group=group
        )
        s = self.s
        self.out(
            f"5/7 kubectl apply {s.example.relative_to(REPO_ROOT)} with the local DSN and Kafka and"
            f" demo-sized scaling: relay {s.relay_min}..{s.relay_max} replicas at {s.relay_target} rows each,"
            f" consumer {s.consumer_min}..{s.consumer_max} at {s.consumer_target} messages each,"
            f" poll {s.poll_interval}s, scale-down window {s.scale_down_window}s"
        )
        _kubectl(
            self.kubeconfig,
            "apply",
            "--server-side",
            "-n",
            self.s.namespace,
            "-f",
            "-",
            stdin=yaml.safe_dump_all(documents),
        )

    def _fresh_namespace(self) -> None:
        namespace = self.s.namespace
        _kubectl(self.kubeconfig, "delete", "namespace", namespace, "--ignore-not-found", "--timeout=90s")
        manifest = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        }
        _kubectl(self.kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(manifest))

    # --- the run --------------------------------------------------------------------------------

    def wait_ready(self) -> None:
        started = time.monotonic()
        _kubectl_wait(
            self.kubeconfig,
            "-n",
            self.s.namespace,
            "--for=condition=Ready",
            f"sfr/{self.s.name}",
            timeout=180,
        )
        self.out(
            f"6/7 kubectl wait --for=condition=Ready sfr/{self.s.name}: {time.monotonic() - started:.1f}s"
        )

    async def burst_and_watch(self) -> tuple[Timeline, float, float | None, float | None]:
        assert self.runner is not None
        urls = ready_urls(self.runner.endpoints(), self.s.namespace, f"{self.s.name}-api")
        if not urls:
            raise RuntimeError("no ready api replica to send requests to")
        self.out(f"7/7 sending {self.s.messages} chat messages to {len(urls)} api replicas; watching:")
        timeline = Timeline()
        sent = [0]
        started = time.monotonic()
        burst = asyncio.create_task(self._burst(urls, sent))
        burst_seconds: float | None = None
        drained_at: float | None = None
        scaled_down_at: float | None = None
        pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
        kube = KubeApi.from_kubeconfig(self.kubeconfig)
        await kube.start()
        try:
            while time.monotonic() - started < self.s.timeout:
                observation = await self._observe(pool, kube, time.monotonic() - started, sent[0])
                timeline.add(observation)
                self.out(format_line(observation))
                if burst.done():
                    burst.result()
                    if burst_seconds is None:
                        burst_seconds = time.monotonic() - started
                    if (
                        drained_at is None
                        and observation.unfinished_events == 0
                        and not observation.consumer_lag
                    ):
                        drained_at = observation.at
                    if drained_at is not None and _at_minimum(observation, self.s):
                        scaled_down_at = observation.at
                        break
                await asyncio.sleep(1.0)
        finally:
            if not burst.done():
                burst.cancel()
            await pool.close()
            await kube.stop()
        return timeline, burst_seconds or 0.0, drained_at, scaled_down_at

    async def _burst(self, urls: list[str], sent: list[int]) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(self.s.messages):
            queue.put_nowait(i)

        async def worker(session: aiohttp.ClientSession, base: str) -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                body = {
                    "user_id": f"user-{i % 20}",
                    "content": f"message {i}: I prefer meetings at {9 + i % 8}:00",
                }
                async with session.post(
                    f"{base}/v1/conversations/conv-{i % 64}/messages", json=body
                ) as response:
                    if response.status != 202:
                        raise RuntimeError(f"api answered {response.status}: {await response.text()}")
                sent[0] += 1

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(worker(session, urls[n % len(urls)]) for n in range(self.s.concurrency)))

    async def _observe(self, pool: Any, kube: KubeApi, at: float, sent: int) -> Observation:
        namespace, name = self.s.namespace, self.s.name
        deployments = await kube.list_deployments(namespace, selector=f"app.kubernetes.io/instance={name}")
        desired, ready = role_replicas(deployments, name)
        runtime = await kube.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}") or {}
        status = runtime.get("status") or {}
        roles = status.get("roles") or {}
        unfinished = await pool.fetchval(
            "SELECT count(*) FROM outbox_events WHERE status IN ('pending', 'published')"
        )
        return Observation(
            at=at,
            desired=desired,
            ready=ready,
            relay_backlog=(roles.get("relay") or {}).get("lag"),
            consumer_lag=(roles.get("consumer") or {}).get("lag"),
            unfinished_events=int(unfinished),
            sent=sent,
        )

    async def counts(self) -> dict[str, int]:
        conn = await asyncpg.connect(self.dsn)
        try:
            row = await conn.fetchrow(
                """
                SELECT count(*) AS written,
                       count(*) FILTER (WHERE status = 'consumed') AS consumed,
                       count(*) FILTER (WHERE status = 'dead') AS dead,
                       (SELECT count(*) FROM chat_messages) AS messages,
                       (SELECT count(*) FROM memory_jobs) AS jobs
                FROM outbox_events
                """
            )
        finally:
            await conn.close()
        return dict(row)

    # --- teardown -------------------------------------------------------------------------------

    def teardown(self) -> list[int]:
        """Stop the runner (and its replicas) and the operator; return any of those pids still alive."""
        pids: list[int] = []
        if self.runner is not None:
            document = self.runner.endpoints() or {}
            for deployment in (document.get("deployments") or {}).values():
                pids += [r["pid"] for r in deployment.get("replicas", []) if r.get("pid")]
            self.runner.stop()
            pids.append(self.runner.pid)
        if self.operator_pid is not None:
            stop(self.operator_pid)
            pids.append(self.operator_pid)
        if self.kubeconfig:
            with contextlib.suppress(RuntimeError):
                _kubectl(self.kubeconfig, "delete", "namespace", self.s.namespace, "--wait=false")
        if self.started_stack and not self.s.keep_up:
            stack.down()
        return [pid for pid in pids if alive(pid)]


def _at_minimum(observation: Observation, settings: DemoSettings) -> bool:
    return (
        observation.desired.get("relay", 0) <= settings.relay_min
        and observation.desired.get("consumer", 0) <= settings.consumer_min
    )


async def _create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def run_demo(settings: DemoSettings) -> DemoSummary:
    demo = _Demo(settings)
    left: list[int] = []
    try:
        demo.setup()
        demo.wait_ready()
        timeline, burst_seconds, drained, scaled_down = asyncio.run(demo.burst_and_watch())
        counts = asyncio.run(demo.counts())
    finally:
        left = demo.teardown()
    return DemoSummary(
        messages_sent=timeline.observations[-1].sent if timeline.observations else 0,
        events_written=counts["written"],
        events_consumed=counts["consumed"],
        events_dead=counts["dead"],
        chat_messages_stored=counts["messages"],
        memory_jobs=counts["jobs"],
        relay_start=timeline.first("relay"),
        relay_peak=timeline.peak("relay"),
        relay_end=timeline.last("relay"),
        consumer_start=timeline.first("consumer"),
        consumer_peak=timeline.peak("consumer"),
        consumer_end=timeline.last("consumer"),
        burst_seconds=burst_seconds,
        drain_seconds=drained,
        scale_down_seconds=scaled_down,
        processes_left=left,
    )
