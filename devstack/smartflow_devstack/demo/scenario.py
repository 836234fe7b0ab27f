"""The demo scenario, step by step; :func:`run_demo` is what ``make demo`` and the e2e test run.

Everything runs on the local stack and its real node (reused if ``make up`` is running, else
started and, unless ``keep_up``, stopped at the end): the operator is installed from its image with
the Helm chart, the runtime's roles run as pods from the runtime image in a namespace enforcing
``restricted``, and the burst goes through the api Service. Each run gets its own database, topic
and consumer group, so runs never see each other's events.
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
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from .. import postgres, stack
from ..manifests import GROUP, PLURAL, VERSION
from ..node import start as node
from ..versions import REPO_ROOT, helm_bin, kube_bin
from .view import DemoSummary, Observation, Timeline, format_line

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class DemoSettings:
    messages: int = 3000
    concurrency: int = 16
    namespace: str = "smartflow-demo"
    operator_namespace: str = "smartflow-system"
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
    settings: DemoSettings, *, dsn: str, bootstrap: str, topic: str, group: str, image: str
) -> list[dict[str, Any]]:
    """The example's documents with what only this machine knows filled in and demo-sized scaling."""
    documents = [d for d in yaml.safe_load_all(settings.example.read_text()) if d]
    for document in documents:
        if document["kind"] == "Secret":
            document["stringData"] = {key: dsn for key in document.get("stringData", {"dsn": ""})}
        if document["kind"] == "SmartflowRuntime":
            document["metadata"]["name"] = settings.name
            spec = document["spec"]
            spec["image"] = image
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
        self.stack: stack.Stack | None = None
        self.images: dict[str, str] = {}
        self.dsn = ""
        self.kubeconfig = ""
        self.helm_installed = False

    # --- setup ----------------------------------------------------------------------------------

    def setup(self) -> None:
        if self.s.servers is not None:
            self.stack = self.s.servers
            self.out("1/8 local stack: the caller's servers and node")
        else:
            self.started_stack = stack.load() is None
            self.out(
                "1/8 local stack and node: "
                + ("starting" if self.started_stack else "reusing the running `make up` stack")
            )
            self.stack = stack.up()
        assert self.stack.postgres and self.stack.kafka and self.stack.kube and self.stack.node
        self.kubeconfig = self.stack.kube.kubeconfig
        self.images = node.ensure_images(self.stack.node)
        self.out(f"   images in the node: {self.images['runtime']}, {self.images['operator']}")
        database = f"demo_{self.run_id}"
        asyncio.run(_create_database(self.stack.postgres.dsn, database))
        self.dsn = postgres.dsn_for(self.stack.postgres.port, database)
        self.out(f"2/8 database {database}: smartflow-runtime migrate")
        subprocess.run(
            [str(BIN / "smartflow-runtime"), "migrate"],
            env={**os.environ, "SMARTFLOW_DATABASE_DSN": self.dsn, "SMARTFLOW_LOG_FORMAT": "text"},
            check=True,
            capture_output=True,
        )
        self.out("3/8 CRD: kubectl apply --server-side -f crds/")
        _kubectl(
            self.kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(REPO_ROOT / "crds")
        )
        _kubectl_wait(
            self.kubeconfig, "--for=condition=Established", "crd/smartflowruntimes.smartflow.io", timeout=60
        )
        self._fresh_namespace(self.s.namespace)
        self._fresh_namespace(self.s.operator_namespace)
        repository, tag = self.images["operator"].rsplit(":", 1)
        self.out(
            f"4/8 helm install smartflow-operator (image {repository}:{tag}, watching {self.s.namespace})"
        )
        _helm(
            self.kubeconfig,
            "upgrade",
            "--install",
            "smartflow-operator",
            str(REPO_ROOT / "charts" / "smartflow-operator"),
            "--namespace",
            self.s.operator_namespace,
            "--set",
            f"image.repository={repository}",
            "--set",
            f"image.tag={tag}",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            f"watch.namespaces={{{self.s.namespace}}}",
            "--set",
            "operator.logFormat=text",
            "--wait",
            "--timeout",
            "180s",
        )
        self.helm_installed = True
        assert self.stack.kafka is not None and self.stack.postgres is not None
        topic, group = f"smartflow.demo.{self.run_id}", f"smartflow-demo-{self.run_id}"
        documents = patched_example(
            self.s,
            dsn=self.stack.postgres.pod_dsn(database),
            bootstrap=self.stack.kafka.pod_bootstrap_servers,
            topic=topic,
            group=group,
            image=self.images["runtime"],
        )
        s = self.s
        self.out(
            f"5/8 kubectl apply {s.example.relative_to(REPO_ROOT)} in namespace {s.namespace} (enforces"
            f" restricted) with the node's DSN and Kafka and demo-sized scaling:"
            f" relay {s.relay_min}..{s.relay_max} replicas at {s.relay_target} rows each,"
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

    def _fresh_namespace(self, namespace: str) -> None:
        _kubectl(self.kubeconfig, "delete", "namespace", namespace, "--ignore-not-found", "--timeout=120s")
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
            timeout=300,
        )
        self.out(
            f"6/8 kubectl wait --for=condition=Ready sfr/{self.s.name}: {time.monotonic() - started:.1f}s"
        )

    async def burst_and_watch(self) -> tuple[Timeline, float, float | None, float | None]:
        api = k8s_config.new_client_from_config(self.kubeconfig)  # type: ignore[no-untyped-call]
        core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
        service = await asyncio.to_thread(
            core.read_namespaced_service, f"{self.s.name}-api", self.s.namespace
        )
        assert service.spec is not None and service.spec.ports
        port = next(p.port for p in service.spec.ports if p.name == "http")
        url = f"http://{service.spec.cluster_ip}:{port}"
        self.out(f"7/8 sending {self.s.messages} chat messages to the api Service {url}; watching:")
        timeline = Timeline()
        sent = [0]
        started = time.monotonic()
        burst = asyncio.create_task(self._burst(url, sent))
        burst_seconds: float | None = None
        drained_at: float | None = None
        scaled_down_at: float | None = None
        pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=2)
        custom = k8s.CustomObjectsApi(api)
        try:
            while time.monotonic() - started < self.s.timeout:
                observation = await self._observe(
                    pool, core, apps, custom, time.monotonic() - started, sent[0]
                )
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
            api.close()
        return timeline, burst_seconds or 0.0, drained_at, scaled_down_at

    async def _burst(self, url: str, sent: list[int]) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(self.s.messages):
            queue.put_nowait(i)

        async def worker(session: aiohttp.ClientSession) -> None:
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
                    f"{url}/v1/conversations/conv-{i % 64}/messages",
                    json=body,
                    headers={"Idempotency-Key": f"demo-{self.run_id}-{i}"},
                ) as response:
                    if response.status != 202:
                        raise RuntimeError(f"api answered {response.status}: {await response.text()}")
                sent[0] += 1

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(worker(session) for _ in range(self.s.concurrency)))

    async def _observe(
        self, pool: Any, core: Any, apps: Any, custom: Any, at: float, sent: int
    ) -> Observation:
        namespace, name = self.s.namespace, self.s.name
        selector = f"app.kubernetes.io/instance={name}"
        deployments, pods, runtime = await asyncio.gather(
            asyncio.to_thread(apps.list_namespaced_deployment, namespace, label_selector=selector),
            asyncio.to_thread(core.list_namespaced_pod, namespace, label_selector=selector),
            asyncio.to_thread(custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name),
        )
        desired = {
            d.metadata.labels.get("app.kubernetes.io/component", "?"): int(d.spec.replicas or 0)
            for d in deployments.items
        }
        ready: dict[str, int] = {}
        for pod in pods.items:
            if _pod_ready(pod):
                role = pod.metadata.labels.get("app.kubernetes.io/component", "?")
                ready[role] = ready.get(role, 0) + 1
        roles = (runtime.get("status") or {}).get("roles") or {}
        counts = await pool.fetchrow(
            """
            SELECT count(*) FILTER (WHERE status IN ('pending', 'published')) AS unfinished,
                   count(*) FILTER (WHERE status = 'pending' AND available_at <= now()) AS due
            FROM outbox_events
            """
        )
        return Observation(
            at=at,
            desired=desired,
            ready=ready,
            relay_backlog=(roles.get("relay") or {}).get("lag"),
            relay_backlog_cap=self.s.relay_target * self.s.relay_max,
            due_rows=int(counts["due"]),
            consumer_lag=(roles.get("consumer") or {}).get("lag"),
            unfinished_events=int(counts["unfinished"]),
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
                       (SELECT count(*) FROM memory_jobs) AS jobs,
                       (SELECT coalesce(sum(adjustments), 0) FROM token_usage) AS tokens
                FROM outbox_events
                """
            )
        finally:
            await conn.close()
        return {key: int(value) for key, value in dict(row).items()}

    # --- teardown -------------------------------------------------------------------------------

    def teardown(self) -> list[str]:
        """Delete the runtime and the operator; return the names of role pods still there after."""
        left: list[str] = []
        if self.kubeconfig:
            with contextlib.suppress(RuntimeError):
                _kubectl(
                    self.kubeconfig,
                    "-n",
                    self.s.namespace,
                    "delete",
                    "sfr",
                    self.s.name,
                    "--ignore-not-found",
                    "--wait=true",
                    "--timeout=60s",
                )
                left = _pods_of(self.kubeconfig, self.s.namespace, self.s.name, timeout=90)
            if self.helm_installed:
                with contextlib.suppress(RuntimeError):
                    _helm(
                        self.kubeconfig,
                        "uninstall",
                        "smartflow-operator",
                        "--namespace",
                        self.s.operator_namespace,
                        "--wait",
                        "--timeout",
                        "90s",
                    )
            for namespace in (self.s.namespace, self.s.operator_namespace):
                with contextlib.suppress(RuntimeError):
                    _kubectl(self.kubeconfig, "delete", "namespace", namespace, "--wait=false")
        if self.started_stack and not self.s.keep_up:
            stack.down()
        return left


def _pod_ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp is not None or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def _pods_of(kubeconfig: str, namespace: str, instance: str, *, timeout: float) -> list[str]:
    """Role pods of ``instance`` still present after ``timeout`` (the garbage collector deletes them)."""
    deadline = time.monotonic() + timeout
    while True:
        names = _kubectl(
            kubeconfig,
            "-n",
            namespace,
            "get",
            "pods",
            "-l",
            f"app.kubernetes.io/instance={instance}",
            "-o",
            "name",
        ).split()
        if not names or time.monotonic() > deadline:
            return names
        time.sleep(1.0)


def _helm(kubeconfig: str, *args: str) -> str:
    result = subprocess.run(
        [str(helm_bin()), f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result.stdout


def _at_minimum(observation: Observation, settings: DemoSettings) -> bool:
    return (
        observation.desired.get("relay", 0) <= settings.relay_min
        and observation.desired.get("consumer", 0) <= settings.consumer_min
        and observation.ready.get("relay", 0) <= settings.relay_min
        and observation.ready.get("consumer", 0) <= settings.consumer_min
    )


async def _create_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def run_demo(settings: DemoSettings) -> DemoSummary:
    demo = _Demo(settings)
    left: list[str] = []
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
        token_adjustments=counts["tokens"],
        relay_start=timeline.first("relay"),
        relay_peak=timeline.peak("relay"),
        relay_end=timeline.last("relay"),
        consumer_start=timeline.first("consumer"),
        consumer_peak=timeline.peak("consumer"),
        consumer_end=timeline.last("consumer"),
        burst_seconds=burst_seconds,
        drain_seconds=drained,
        scale_down_seconds=scaled_down,
        pods_left=left,
    )
