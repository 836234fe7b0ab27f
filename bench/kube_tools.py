"""Kubernetes side of the bench: a small async API client, the operator process, a counting proxy.

- :class:`Kube` talks to the apiserver directly (aiohttp, admin token) to create namespaces,
  Secrets and runtimes and to watch Deployments.
- :class:`OperatorProcess` runs the real ``smartflow-operator run`` for one namespace.
- :class:`CountingProxy` sits between an operator and the apiserver (plain HTTP on 127.0.0.1,
  TLS upstream) and records every request, watches included, so writes can be counted exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from smartflow_devstack import kube as kube_stack
from smartflow_devstack.manifests import GROUP, PLURAL, VERSION
from smartflow_devstack.process import free_port
from smartflow_devstack.versions import REPO_ROOT

from .procs import LOG_DIR, peak_rss_mib, rss_mib

CRD_FILE = REPO_ROOT / "crds" / "smartflow.io_smartflowruntimes.yaml"
MANAGED = "app.kubernetes.io/managed-by=smartflow-operator"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class KubeError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]}")
        self.status = status


class Kube:
    """Just the calls the bench makes; ``async with Kube(info) as kube``."""

    def __init__(self, info: kube_stack.KubeInfo) -> None:
        self.server = info.server
        self._ssl = ssl.create_default_context(cafile=info.ca_file)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Kube:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {kube_stack.ADMIN_TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=120),  # listing 1,000 runtimes on a busy apiserver
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        ok404: bool = False,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        assert self._session is not None
        headers = {"Content-Type": content_type}
        data = None if body is None else json.dumps(body)
        async with self._session.request(
            method, self.server + path, data=data, params=params, headers=headers, ssl=self._ssl
        ) as response:
            text = await response.text()
            if response.status == 404 and ok404:
                return None
            if response.status >= 400:
                raise KubeError(response.status, method, path, text)
            return dict(json.loads(text)) if text else {}

    # --- objects the bench uses -------------------------------------------------------------------

    async def ensure_crd(self) -> None:
        """Create the CRD from ``crds/`` if the cluster has none yet (others may share it), then wait."""
        crd = yaml.safe_load(CRD_FILE.read_text())
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        try:
            await self.request("POST", path, crd)
        except KubeError as error:
            if error.status != 409:
                raise
        name = crd["metadata"]["name"]
        for _ in range(150):
            live = await self.request("GET", f"{path}/{name}")
            # A CRD just created may have "conditions": null until the apiserver has looked at it.
            conditions = ((live or {}).get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return
            await asyncio.sleep(0.2)
        raise RuntimeError("CRD not established")

    async def create_namespace(self, name: str) -> None:
        await self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})

    async def delete_namespace(self, name: str) -> None:
        """Delete a bench namespace. Runtimes left there keep kopf's finalizer once their operator is gone,
        which would hold the namespace in Terminating forever: drop those finalizers too."""
        with contextlib.suppress(KubeError):
            await self.request("DELETE", f"/api/v1/namespaces/{name}", ok404=True)
        with contextlib.suppress(KubeError):
            for runtime in await self.list_runtimes(name):
                if runtime["metadata"].get("finalizers"):
                    await self.request(
                        "PATCH",
                        f"{self.runtimes_path(name)}/{runtime['metadata']['name']}",
                        {"metadata": {"finalizers": None}},
                        content_type="application/merge-patch+json",
                    )

    async def create_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        body = {"metadata": {"name": name}, "stringData": data}
        await self.request("POST", f"/api/v1/namespaces/{namespace}/secrets", body)

    def runtimes_path(self, namespace: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"

    async def create_runtime(self, namespace: str, body: dict[str, Any]) -> None:
        await self.request("POST", self.runtimes_path(namespace), body)

    async def delete_runtime(self, namespace: str, name: str) -> None:
        await self.request("DELETE", f"{self.runtimes_path(namespace)}/{name}", ok404=True)

    async def list_runtimes(self, namespace: str) -> list[dict[str, Any]]:
        found = await self.request("GET", self.runtimes_path(namespace))
        return list((found or {}).get("items", []))

    async def deployments(self, namespace: str, selector: str = MANAGED) -> list[dict[str, Any]]:
        found = await self.request(
            "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments", params={"labelSelector": selector}
        )
        return list((found or {}).get("items", []))

    @contextlib.asynccontextmanager
    async def watch_deployments(self, namespace: str, selector: str) -> AsyncIterator[DeploymentWatch]:
        """A watch of the Deployments matching ``selector``, opened before the caller creates
        anything: the apiserver serves it from its watch cache and pushes each event, where polling
        a LIST would cost every Deployment of the namespace per poll (thousands with the fleet)."""
        assert self._session is not None
        async with self._session.get(
            f"{self.server}/apis/apps/v1/namespaces/{namespace}/deployments",
            params={"watch": "1", "labelSelector": selector, "allowWatchBookmarks": "false"},
            ssl=self._ssl,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as response:
            if response.status >= 400:
                raise KubeError(response.status, "WATCH", namespace, await response.text())
            yield DeploymentWatch(response)

    async def apiserver_requests(self) -> dict[str, float]:
        """The apiserver's ``apiserver_request_total`` summed by verb (every client, watches included)."""
        assert self._session is not None
        async with self._session.get(self.server + "/metrics", ssl=self._ssl) as response:
            text = await response.text()
            if response.status >= 400:
                raise KubeError(response.status, "GET", "/metrics", text)
        by_verb: dict[str, float] = {}
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels, _, value = line.rpartition(" ")
            verb = re.search(r'verb="(\w+)"', labels)
            key = verb.group(1) if verb else "?"
            by_verb[key] = by_verb.get(key, 0.0) + float(value)
        return by_verb

    async def replicas(self, namespace: str, name: str) -> int | None:
        found = await self.request(
            "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}", ok404=True
        )
        return None if found is None else int(found["spec"].get("replicas", 1))


class DeploymentWatch:
    """The names a watch has seen ADDED so far (see :meth:`Kube.watch_deployments`)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.added: set[str] = set()

    async def until(self, count: int, *, within: float) -> bool:
        """Wait until ``count`` Deployments were added; False after ``within`` seconds."""
        try:
            async with asyncio.timeout(within):
                while len(self.added) < count:
                    line = await self._response.content.readline()
                    if not line:
                        raise KubeError(0, "WATCH", "deployments", "the watch ended")
                    event = json.loads(line)
                    if event.get("type") == "ADDED":
                        self.added.add(event["object"]["metadata"]["name"])
        except TimeoutError:
            return False
        return True


def write_kubeconfig(path: Path, *, server: str, ca_file: str | None) -> Path:
    cluster: dict[str, Any] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = ca_file
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": cluster}],
        "users": [{"name": "admin", "user": {"token": kube_stack.ADMIN_TOKEN}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "admin"}}],
        "current-context": "bench",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return path


@dataclass
class OperatorProcess:
    """``smartflow-operator run --namespace NS`` as its own process, stopped by its pid."""

    namespace: str
    kubeconfig: Path
    resync_seconds: float = 60.0
    health_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=lambda: LOG_DIR / f"operator-{uuid.uuid4().hex[:6]}.log")
    stop_seconds: float | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            str(Path(sys.executable).parent / "smartflow-operator"),
            "run",
            "--namespace",
            self.namespace,
            "--kubeconfig",
            str(self.kubeconfig),
            "--health-address",
            "127.0.0.1",
            "--health-port",
            str(self.health_port),
            "--metrics-port",
            str(self.metrics_port),
            "--resync-seconds",
            str(self.resync_seconds),
            "--log-level",
            "WARNING",
            "--log-format",
            "text",
        ]
        self._spawn(command)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            for _ in range(600):
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"operator exited:\n{self.log.read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"http://127.0.0.1:{self.health_port}/healthz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError("operator not healthy within 60s")

    def _spawn(self, command: list[str]) -> None:
        with open(self.log, "ab") as sink:
            self.process = subprocess.Popen(
                command,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # kopf logs in through the client library's default kubeconfig path: set it too.
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            )

    async def metrics(self) -> dict[str, float]:
        """Every sample of the operator's /metrics as ``name{labels}`` -> value."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
            session.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as response,
        ):
            text = await response.text()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            match = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$", line)
            if match and not line.startswith("#"):
                samples[match.group(1)] = float(match.group(2))
        return samples

    def rss(self) -> dict[str, float | None]:
        return {"rss_mib": rss_mib(self.pid), "peak_rss_mib": peak_rss_mib(self.pid)}

    async def stop(self) -> int | None:
        """SIGTERM, SIGKILL after 20 s; ``stop_seconds`` records how long the shutdown took."""
        proc = self.process
        if proc is None:
            return None
        started = time.monotonic()
        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 5)
        self.stop_seconds = round(time.monotonic() - started, 2)
        return proc.returncode


def kube_requests_by_resource(samples: dict[str, float]) -> dict[str, float]:
    """The operator's own request counter as ``"METHOD resource"`` -> count."""
    found = {}
    for key, value in samples.items():
        match = re.match(r'smartflow_operator_kube_requests_total\{method="(\w+)",resource="([^"]*)"', key)
        if match:
            found[f"{match.group(1)} {match.group(2)}"] = value
    return found


def kube_requests(samples: dict[str, float]) -> dict[str, float]:
    """The operator's own request counter by method (summed over the resource label)."""
    found: dict[str, float] = {}
    for key, value in kube_requests_by_resource(samples).items():
        method = key.split(" ", 1)[0]
        found[method] = found.get(method, 0.0) + value
    return found


@dataclass
class Recorded:
    at: float
    method: str
    path: str
    query: str
    subject: str | None = None  # involvedObject name of an Event
    body: str = ""  # the start of a write's body, to tell what was written


class CountingProxy:
    """A recording reverse proxy to the apiserver on 127.0.0.1 (plain HTTP in, TLS out)."""

    def __init__(self, info: kube_stack.KubeInfo) -> None:
        self.upstream = info.server
        self._ssl = ssl.create_default_context(cafile=info.ca_file)
        self.port = free_port()
        self.requests: list[Recorded] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10), auto_decompress=False
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        # Upstream first: open watch streams end at once instead of holding the shutdown.
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        subject = None
        if request.method == "POST" and request.path.endswith("/events") and body:
            with contextlib.suppress(ValueError, AttributeError):
                subject = json.loads(body).get("involvedObject", {}).get("name")
        excerpt = body[:400].decode(errors="replace") if request.method in WRITE_METHODS else ""
        self.requests.append(
            Recorded(time.time(), request.method, request.path, request.query_string, subject, excerpt)
        )
        skip = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            data=body or None,
            headers=headers,
            ssl=self._ssl,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            # Content-Encoding too: bodies pass through still compressed (auto_decompress=False), and
            # the apiserver gzips large responses (a LIST of thousands of Deployments).
            for key in ("Content-Type", "Content-Encoding", "Warning", "Audit-Id"):
                if key in upstream.headers:
                    response.headers[key] = upstream.headers[key]
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientError):
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
        return response

    def window(self, start: float, end: float) -> list[Recorded]:
        return [r for r in self.requests if start <= r.at < end]
