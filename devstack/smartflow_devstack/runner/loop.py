"""The local runner's reconcile loop: Deployments in the apiserver -> local processes, and back into
the Deployments' status. A DEV/TEST tool standing in for the deployment controller and kubelet the
local control plane does not have (see :mod:`smartflow_devstack.runner`).

Level-based, one pass at a time (every ``interval`` seconds, sooner when a watch reports a change):

1. list the Deployments (label selector, given namespaces or all);
2. observe: reap exited processes (a crash -> restart with backoff), probe readiness;
3. decide with :func:`.rollout.plan_rollout` and act: start replicas of the current template, send
   SIGTERM to the ones to stop (SIGKILL after the grace period), stop every replica of a deleted
   Deployment;
4. report: patch the ``status`` subresource when :func:`.status.status_changed`, and write
   ``<state>/endpoints.json`` (:mod:`.endpoints`).

Readiness probes run once per pass (the probe's ``periodSeconds`` is not waited for, so local
rollouts are quick); thresholds and ``initialDelaySeconds`` are honoured. Liveness/startup probes,
init containers, sidecars and resource limits are not modelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from ..process import free_port
from ..versions import REPO_ROOT
from . import endpoints
from .errors import ContainerConfigError, KubeApiError
from .kubeapi import KubeApi
from .replica import REASON_CRASH_LOOP, REASON_RUN_ERROR, RUNNING, TERMINATING, Replica, Revision, probe
from .rollout import ReplicaView, plan_rollout
from .spec import (
    MANAGED_BY_SELECTOR,
    REASON_CONFIG_ERROR,
    REASON_IMAGE_NOT_MAPPED,
    DeploymentFacts,
    ImageMap,
    Refs,
    build_process_spec,
    config_map_values,
    deployment_facts,
    referenced_objects,
    secret_values,
)
from .status import ReplicaFailure, build_status, status_changed

log = logging.getLogger(__name__)

Json = dict[str, Any]

FAILURE_REASONS = (REASON_CONFIG_ERROR, REASON_IMAGE_NOT_MAPPED, REASON_CRASH_LOOP, REASON_RUN_ERROR)
_HOST_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "VIRTUAL_ENV")
_SHUTDOWN_SLACK = 10.0  # beyond the longest grace period, before every replica is killed outright


def local_base_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What a replica starts from, as a container starts from its image: the image's ``ENV`` for
    Python, plus the host's PATH, HOME and locale. Nothing else of the runner's environment (in
    particular no ``SMARTFLOW_*``) leaks in: a Deployment missing a setting must fail locally too."""
    picked = {key: environ[key] for key in _HOST_ENV if key in environ}
    return {**picked, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass(frozen=True)
class RunnerSettings:
    state: Path
    image_map: ImageMap
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    selector: str = MANAGED_BY_SELECTOR
    interval: float = 1.0
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    workdir: Path = REPO_ROOT
    base_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.state / "logs"


@dataclass
class _Tracked:
    """What the runner knows of one Deployment and the replicas it runs for it."""

    namespace: str
    name: str
    deployment: Json
    facts: DeploymentFacts
    replicas: dict[str, Replica] = field(default_factory=dict)
    deleted: bool = False
    progress_key: tuple[object, ...] = ()
    last_progress: datetime = field(default_factory=lambda: datetime.now(UTC))

    def active(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.state != TERMINATING]


class LocalRunner:
    """Keeps ``spec.replicas`` local processes per watched Deployment; ``async with`` it, then
    :meth:`run` until an event is set. Leaving the block stops every process it started."""

    def __init__(
        self,
        *,
        api: KubeApi,
        settings: RunnerSettings,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._api = api
        self._settings = settings
        self._clock = clock
        self._wall = wall
        self._tracked: dict[str, _Tracked] = {}
        self._wake = asyncio.Event()
        self._watches: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._seq = 0
        self._last_document: Json | None = None

    async def start(self) -> None:
        if self._session is not None:
            return
        self._session = aiohttp.ClientSession()
        scopes: list[str | None] = list(self._settings.namespaces) or [None]
        self._watches = [asyncio.create_task(self._watch(scope)) for scope in scopes]
        log.info(
            "local runner watching %s (%s), state in %s",
            ", ".join(self._settings.namespaces) or "every namespace",
            self._settings.selector,
            self._settings.state,
        )

    async def stop(self) -> None:
        """Stop every replica (SIGTERM, SIGKILL after its grace period), then report them gone."""
        for task in self._watches:
            task.cancel()
        for task in self._watches:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watches = []
        now = self._clock()
        replicas = [r for tracked in self._tracked.values() for r in tracked.replicas.values()]
        for replica in replicas:
            replica.terminate(now=now, grace_seconds=_grace(replica))
        deadline = now + max([_grace(r) for r in replicas] or [0.0]) + _SHUTDOWN_SLACK
        while replicas and self._clock() < deadline:
            replicas = [r for r in replicas if not r.finish(self._clock())]
            if replicas:
                await asyncio.sleep(0.1)
        for replica in replicas:  # past every grace period: SIGKILL and reap
            replica.kill_at = 0.0
            replica.finish(self._clock())
        for tracked in self._tracked.values():
            tracked.replicas.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._report_status(), timeout=5)
        self._write_endpoints(running=False)
        if self._session is not None:
            await self._session.close()
            self._session = None
        log.info("local runner stopped")

    async def __aenter__(self) -> LocalRunner:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile until ``stop`` is set."""
        while not stop.is_set():
            await self.reconcile_once()
            waits = [asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())]
            _, pending = await asyncio.wait(
                waits, timeout=self._settings.interval, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            if self._wake.is_set() and not stop.is_set():
                await asyncio.sleep(0.05)  # let a burst of watch events settle into one pass

    async def reconcile_once(self) -> None:
        """One pass: list, observe, decide and act, report."""
        self._wake.clear()
        await self._refresh()
        now = self._clock()
        for tracked in self._tracked.values():
            for replica in tracked.replicas.values():
                replica.check_exit(now=now, base=self._settings.backoff_base, cap=self._settings.backoff_max)
        await self._probe_all(now)
        for tracked in list(self._tracked.values()):
            await self._reconcile(tracked, now)
        for key, tracked in list(self._tracked.items()):
            for name, replica in list(tracked.replicas.items()):
                if replica.state == TERMINATING and replica.finish(now):
                    del tracked.replicas[name]
                    log.info("%s stopped", name)
            if tracked.deleted and not tracked.replicas:
                del self._tracked[key]
        await self._report_status()
        self._write_endpoints(running=True)

    async def _refresh(self) -> None:
        scopes: list[str | None] = list(self._settings.namespaces) or [None]
        listed: dict[str, Json] = {}
        try:
            for scope in scopes:
                for item in await self._api.list_deployments(scope, selector=self._settings.selector):
                    metadata = item.get("metadata", {})
                    listed[f"{metadata.get('namespace')}/{metadata.get('name')}"] = item
        except KubeApiError as error:
            log.warning("cannot list Deployments (keeping the replicas as they are): %s", error)
            return
        for key, deployment in listed.items():
            facts = deployment_facts(deployment)
            tracked = self._tracked.get(key)
            if tracked is None:
                self._tracked[key] = _Tracked(facts.namespace, facts.name, deployment, facts)
            else:
                tracked.deployment, tracked.facts, tracked.deleted = deployment, facts, False
        for key, tracked in self._tracked.items():
            if key not in listed and not tracked.deleted:
                tracked.deleted = True
                log.info("Deployment %s is gone: stopping its replicas", key)

    async def _probe_all(self, now: float) -> None:
        if self._session is None:
            return
        running = [r for t in self._tracked.values() for r in t.replicas.values() if r.state == RUNNING]
        results = await asyncio.gather(*(probe(r, session=self._session, now=now) for r in running))
        for replica, ok in zip(running, results, strict=True):
            if ok is not None:
                replica.observe_probe(ok, now)

    async def _reconcile(self, tracked: _Tracked, now: float) -> None:
        if tracked.deleted:
            for replica in tracked.active():
                replica.terminate(now=now, grace_seconds=_grace(replica))
            return
        facts = tracked.facts
        revision = Revision(facts.uid, facts.template_hash)
        old_terminating = sum(
            1 for r in tracked.replicas.values() if r.state == TERMINATING and r.revision != revision
        )
        step = plan_rollout(facts, self._views(tracked, now), old_terminating=old_terminating)
        for name in step.stop:
            replica = tracked.replicas[name]
            replica.terminate(now=now, grace_seconds=_grace(replica, facts))
        for _ in range(step.start):
            self._add_replica(tracked, revision)
        due = [r for r in tracked.active() if r.revision == revision and r.due(now)]
        if not due:
            return
        try:
            refs = await self._resolve_refs(tracked)
        except KubeApiError as error:
            log.warning("cannot read the Secrets/ConfigMaps of %s/%s: %s", facts.namespace, facts.name, error)
            return
        for replica in due:
            self._launch(tracked, replica, refs, now)

    def _launch(self, tracked: _Tracked, replica: Replica, refs: Refs, now: float) -> None:
        taken = {
            p
            for t in self._tracked.values()
            for r in t.replicas.values()
            for p in (r.admin_port, r.http_port)
        }
        admin_port = _free_port(taken)
        http_port = _free_port(taken | {admin_port}) if tracked.facts.wants_http_port else None
        try:
            spec = build_process_spec(
                tracked.deployment,
                refs=refs,
                image_map=self._settings.image_map,
                pod_name=replica.name,
                admin_port=admin_port,
                http_port=http_port,
                base_env=self._settings.base_env,
            )
        except ContainerConfigError as error:
            replica.fail(
                error.reason,
                str(error),
                now=now,
                base=self._settings.backoff_base,
                cap=self._settings.backoff_max,
            )
            log.warning("%s cannot start: %s: %s", replica.name, error.reason, error)
            return
        replica.launch(spec, cwd=self._settings.workdir, now=now)

    def _add_replica(self, tracked: _Tracked, revision: Revision) -> None:
        used = {r.index for r in tracked.replicas.values()}
        index = next(i for i in range(len(used) + 1) if i not in used)
        self._seq += 1
        name = f"{tracked.name}-{revision.template_hash}-{index}"
        log_path = self._settings.logs / f"{tracked.namespace}_{tracked.name}-{index}.log"
        tracked.replicas[name] = Replica(
            name=name, index=index, seq=self._seq, revision=revision, log_path=log_path
        )

    async def _resolve_refs(self, tracked: _Tracked) -> Refs:
        names = referenced_objects(tracked.deployment)
        namespace = tracked.namespace
        secrets: dict[str, dict[str, str]] = {}
        config_maps: dict[str, dict[str, str]] = {}
        for name in sorted(names.secrets):
            secret = await self._api.get_secret(namespace, name)
            if secret is not None:
                secrets[name] = secret_values(secret)
        for name in sorted(names.config_maps):
            config_map = await self._api.get_config_map(namespace, name)
            if config_map is not None:
                config_maps[name] = config_map_values(config_map)
        return Refs(secrets=secrets, config_maps=config_maps)

    def _views(self, tracked: _Tracked, now: float) -> list[ReplicaView]:
        revision = Revision(tracked.facts.uid, tracked.facts.template_hash)
        return [
            ReplicaView(
                name=r.name,
                seq=r.seq,
                current=r.revision == revision,
                ready=r.ready,
                available=r.available(now, tracked.facts.min_ready_seconds),
            )
            for r in tracked.active()
        ]

    async def _report_status(self) -> None:
        now, wall = self._clock(), self._wall()
        for tracked in list(self._tracked.values()):
            if tracked.deleted:
                continue
            facts = tracked.facts
            views = self._views(tracked, now)
            counts = (
                len(views),
                sum(v.current for v in views),
                sum(v.ready for v in views),
                sum(v.available for v in views),
            )
            key = (facts.generation, facts.template_hash, *counts)
            if key != tracked.progress_key:
                tracked.progress_key, tracked.last_progress = key, wall
            status = build_status(
                facts,
                views,
                now=wall,
                last_progress=tracked.last_progress,
                failure=_failure(tracked),
                previous=tracked.deployment.get("status"),
            )
            if not status_changed(tracked.deployment.get("status"), status):
                continue
            try:
                if await self._api.patch_deployment_status(facts.namespace, facts.name, status):
                    tracked.deployment["status"] = status
            except KubeApiError as error:
                log.warning("cannot write the status of %s: %s", f"{facts.namespace}/{facts.name}", error)

    def _write_endpoints(self, *, running: bool) -> None:
        deployments: dict[str, Json] = {}
        for key, tracked in sorted(self._tracked.items()):
            revision = Revision(tracked.facts.uid, tracked.facts.template_hash)
            deployments[key] = {
                "namespace": tracked.namespace,
                "name": tracked.name,
                "generation": tracked.facts.generation,
                "template_hash": tracked.facts.template_hash,
                "desired": 0 if tracked.deleted else tracked.facts.replicas,
                "replicas": [
                    {
                        "name": r.name,
                        "pid": r.pid,
                        "admin_port": r.admin_port,
                        "http_port": r.http_port,
                        "ready": r.ready,
                        "current": r.revision == revision,
                        "state": r.state,
                        "reason": r.reason,
                        "message": r.message,
                        "restarts": r.restarts,
                        "log": str(r.log_path),
                    }
                    for r in sorted(tracked.replicas.values(), key=lambda r: r.index)
                ],
            }
        document: Json = {"runner_pid": os.getpid(), "running": running, "deployments": deployments}
        if document == self._last_document:
            return
        self._last_document = document
        endpoints.write(
            self._settings.state, {**document, "updated_at": self._wall().strftime("%Y-%m-%dT%H:%M:%SZ")}
        )

    async def _watch(self, namespace: str | None) -> None:
        """Wake the loop on every change; the loop itself lists, so a lost event costs one interval."""
        while True:
            try:
                async for _ in self._api.watch_deployments(namespace, selector=self._settings.selector):
                    self._wake.set()
            except KubeApiError as error:
                log.debug("watch ended: %s", error)
                await asyncio.sleep(1.0)
            await asyncio.sleep(0.2)


def _grace(replica: Replica, facts: DeploymentFacts | None = None) -> float:
    """The replica's own template's grace period (an old replica keeps the one it started with)."""
    if replica.spec is not None:
        return replica.spec.grace_seconds
    return facts.grace_seconds if facts is not None else 0.0


def _failure(tracked: _Tracked) -> ReplicaFailure | None:
    revision = Revision(tracked.facts.uid, tracked.facts.template_hash)
    for replica in sorted(tracked.active(), key=lambda r: r.index):
        if replica.revision == revision and replica.reason in FAILURE_REASONS:
            return ReplicaFailure(reason=replica.reason, message=f"{replica.name}: {replica.message}")
    return None


def _free_port(taken: set[int | None]) -> int:
    while True:
        port = free_port()
        if port not in taken:
            return port
