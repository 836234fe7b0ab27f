"""The glue between kopf and ``reconcile``: one pass per runtime at a time, metrics, and the
mapping of errors to kopf's retry semantics. Held in kopf's ``memo`` and called by ``handlers``.

* Passes of one runtime are serialized; a resync or child event that finds another pass already
  queued is dropped (that pass will see the newest state), so bursts of Deployment events do not
  pile up.
* Errors that retrying can fix become ``kopf.TemporaryError`` with an exponential delay (10 s,
  20 s, ... capped at 5 min): a missing Secret is retried, not crash-looped, and logged once per
  attempt instead of flooding. Errors that cannot be fixed by waiting become ``PermanentError``.
* An autoscaling decision arrives typed (:meth:`Controller.scale`) and is applied by a pass in the
  same gate: the role's Deployment applied once with the new count, the status written once (the
  reconciler's view and the autoscaler's report together), no Secret read (the configuration of
  the last full pass is reused while the runtime's generation is the same). A child Deployment
  event reuses it too; the periodic resync reads through the shared reads (a copy at most half a
  check interval old), change passes too but never take an absence from them. A pass that
  reuses the configuration also takes the runtime from the watch
  (no GET) when the watch shows the generation that configuration was read for; a change pass
  takes the body kopf handed its handler.
* An autoscaling report without a scale (:meth:`Controller.report`) is written in the same gate,
  so it never conflicts with a pass; reports waiting at once share one write, and a pass takes the
  reports waiting for it into its own status write.
* Children come from the watches (``watched_children``), never from a LIST per pass.
* Passes of different runtimes run at most ``max_concurrent_passes`` at once; a change of a
  runtime (create/update/resume handlers) and a scaling decision are urgent (``priority``): they
  take the next free slot, and their requests the client's next free thread, before resyncs,
  child-event passes and reports.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import kopf

from .config_refs import Kind
from .errors import ConfigurationError, KubeError, OperatorError
from .kube import RUNTIMES, KubeClient
from .metrics import OperatorMetrics
from .migration import SchemaVersionReader
from .names import Role
from .priority import PrioritySlots, urgent
from .reconcile import (
    ConsumerRegistry,
    FetchConfig,
    ReconcileResult,
    fetch_config,
    merge_status_patches,
    reconcile,
)
from .resource import SmartflowRuntime
from .runtime_status import reported_fingerprint
from .shared_reads import PresentOrFresh, Reader, SharedReads
from .status_writer import PatchFor, write_status
from .watched_children import WatchedChildren

Logger = logging.Logger | logging.LoggerAdapter[Any]


class Stopped(Protocol):
    """The stop flag of a per-runtime loop (``runtime_loops.StopFlag``)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[bool]: ...


BACKOFF_BASE_SECONDS = 10.0
MAX_CONCURRENT_PASSES = 32  # twice the client's threads: a pass waits on the apiserver half its time
BACKOFF_MAX_SECONDS = 300.0


def backoff_delay(retry: int) -> float:
    return float(min(BACKOFF_BASE_SECONDS * 2 ** max(retry, 0), BACKOFF_MAX_SECONDS))


@dataclass
class _Gate:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    queued: int = 0


Key = tuple[str, str]
T = TypeVar("T")


def combined(reports: list[PatchFor]) -> PatchFor:
    """One status patch doing what each of ``reports`` does (each replaces its own fields and
    condition types in the object it is given). Pure."""

    def patch_for(current: Mapping[str, Any]) -> dict[str, Any]:
        status = current.get("status") or {}
        patch: dict[str, Any] = {}
        for report in reports:
            patch = merge_status_patches(status, patch, report(current))
        return patch

    return patch_for


def for_kopf(error: OperatorError, retry: int) -> kopf.TemporaryError | kopf.PermanentError:
    """The kopf outcome of a failed change pass: retried after :func:`backoff_delay` unless waiting
    cannot help (``retriable``). Pure."""
    if isinstance(error, ConfigurationError):
        return kopf.TemporaryError(f"{error.reason}: {error.message}", delay=backoff_delay(retry))
    if not error.retriable:
        return kopf.PermanentError(str(error))
    return kopf.TemporaryError(str(error), delay=backoff_delay(retry))


def generation_of(body: Mapping[str, Any] | None) -> int | None:
    """``metadata.generation`` of a runtime as a watch or kopf showed it (None if it has none). Pure."""
    generation = ((body or {}).get("metadata") or {}).get("generation")
    return generation if isinstance(generation, int) else None


def first_resync_delay(interval: float, draw: float) -> float:
    """The wait before a runtime's first periodic resync: between half an interval and one and a
    half (``draw`` in [0, 1)), so the resyncs of runtimes resumed together spread over a whole
    interval and the mean period stays ``interval``. Like the jitter controller-runtime puts on
    its resync period."""
    return interval * (0.5 + draw)


class Controller:
    def __init__(
        self,
        *,
        kube: KubeClient,
        metrics: OperatorMetrics,
        schema_versions: SchemaVersionReader | None = None,
        max_concurrent_passes: int = MAX_CONCURRENT_PASSES,
    ) -> None:
        self.kube = kube
        # Passes of different runtimes in flight at once. Unbounded, 1,000 new runtimes started
        # 1,000 passes whose requests interleaved in the client's queue: every pass took about as
        # long as all of them (none converged before nearly all had), and each held its objects
        # in memory meanwhile. Bounded, they finish in turn at the same total rate.
        # A free slot goes to urgent passes first (``priority``): a runtime a user created or
        # changed, or a scaling decision, does not wait behind the resyncs and reports of the rest.
        self._passes = PrioritySlots(max_concurrent_passes)
        self.metrics = metrics
        self.schema_versions = schema_versions  # the lag probes: status.schema.version
        self._gates: defaultdict[Key, _Gate] = defaultdict(_Gate)
        # The configuration the last full pass read, by runtime: (generation, fetched objects).
        self._config: dict[Key, tuple[int, dict[tuple[Kind, str], Any]]] = {}
        # Every runtime's consumer-group identity, for the conflict check (conflicts.py).
        self._consumers: ConsumerRegistry = ConsumerRegistry()
        self._child_pending: set[Key] = set()  # runtimes with a child-event pass scheduled
        self._reports: dict[Key, list[PatchFor]] = {}  # autoscaler reports waiting for the gate
        self._child_seen: dict[Key, tuple[Any, ...]] = {}  # (namespace, Deployment): fingerprint
        # Runtimes whose last change pass failed, with the generation it failed on (or the newest
        # generation a pass already ran for since, see ``spec_changed``).
        self._failed: dict[Key, int] = {}
        # Every runtime's children from the watches (set per leadership term): a pass lists nothing.
        self.children: WatchedChildren | None = None
        # The operator's shared Secret/ConfigMap reads (set per term): what periodic resyncs read.
        self.reads: SharedReads | None = None
        # (namespace, name) -> the runtime as the watch last showed it (set per term).
        self.views: Callable[[str, str], Mapping[str, Any] | None] | None = None

    async def reconcile(
        self,
        namespace: str,
        name: str,
        *,
        logger: Logger,
        retry: int = 0,
        new: bool = False,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        """For create/update/resume handlers: always runs; failures are retried by kopf with backoff.
        ``new``: the create handler (see ``reconcile.reconcile``). ``body``: the runtime as kopf
        handed it to the handler (the watch's newest event): the pass applies that spec without
        a GET, and a status written from it after the object moved on conflicts and is rebuilt
        from a fresh read (``status_writer``). A GET per change was one of a new runtime's eleven
        requests. Its ``metadata.generation`` is remembered when the pass fails, so that the next
        spec change is tried at once (:meth:`spec_changed`), not when kopf's backoff ends."""
        key = (namespace, name)
        view = dict(body) if body is not None else None
        try:
            with urgent():
                await self._serialized(
                    key, lambda: self._measured(namespace, name, logger, new=new, view=view)
                )
        except OperatorError as error:
            generation = generation_of(view)
            if generation is not None:
                self._failed[key] = generation
            raise for_kopf(error, retry) from error

    async def spec_changed(
        self, namespace: str, name: str, *, body: Mapping[str, Any], logger: Logger
    ) -> None:
        """A watch event of a runtime (``body``): when its last change pass failed and the event
        shows a newer spec (another ``metadata.generation``), a pass now, once per generation.

        kopf keeps a failed create or update handler's backoff (10 s, 20 s, 40 s, ... up to 5 min)
        through later edits: while no pass of the runtime has succeeded, a change is still the same
        cause to it, so a user who fixed the spec (a consumer-group conflict, a wrong field) would
        wait out the backoff. Like a controller-runtime work queue, where a new event enqueues the
        object at once whatever its requeue delay, the fix is tried when it arrives. The pass is the
        resync's (best effort, never raises); kopf's delayed retry runs later and finds nothing
        left to do."""
        key = (namespace, name)
        failed = self._failed.get(key)
        generation = generation_of(body)
        if failed is None or generation is None or generation == failed:
            return
        self._failed[key] = generation
        logger.info(
            "the spec changed since the last pass failed: reconciling now (generation %s)", generation
        )
        with urgent():
            await self.resync(namespace, name, logger=logger)

    async def resync(
        self,
        namespace: str,
        name: str,
        *,
        logger: Logger,
        reuse_config: bool = False,
        periodic: bool = False,
    ) -> None:
        """For the periodic timer and child events: best effort, coalesced, never raises.

        A problem is already in the status and retried by the change handlers; here it is only
        logged at debug level so a broken runtime does not flood the log every resync.
        ``reuse_config``: take the Secrets/ConfigMaps the last pass read (child events: nothing the
        pods read has changed).
        """
        try:
            await self._serialized(
                (namespace, name),
                lambda: self._measured(namespace, name, logger, reuse_config=reuse_config, periodic=periodic),
                coalesce=True,
            )
        except ConfigurationError as error:
            logger.debug("resync: still %s", error.reason)
        except KubeError as error:
            logger.warning("resync failed, will retry: %s", error)

    async def child_changed(
        self,
        namespace: str,
        name: str,
        *,
        event_type: str | None,
        deployment: Mapping[str, Any],
        logger: Logger,
        delay: float,
    ) -> None:
        """A watch event of a child Deployment of runtime ``name``: a pass when it changed what the
        runtime's status reports (``reported_fingerprint``) or went, ``delay`` seconds after the first
        such event, for every event until then (the pass reads all children anyway).

        The initial listing and ADDED events only record the fingerprint: the resume handler and the
        pass that created the Deployment have reported it. A new runtime's four Deployments change
        several times in their first seconds (the Deployment controller's status and condition
        updates); a pass for each was most of the operator's requests while 1,000 runtimes converged.
        Readiness reaches the status at most ``delay`` later."""
        metadata = deployment.get("metadata") or {}
        child = (namespace, str(metadata.get("name")))
        if event_type == "DELETED":
            self._child_seen.pop(child, None)
        else:
            fingerprint = reported_fingerprint(deployment)
            previous = self._child_seen.get(child)
            self._child_seen[child] = fingerprint
            gone = bool(metadata.get("deletionTimestamp"))
            if not gone and (event_type in (None, "ADDED") or previous == fingerprint):
                return
        key = (namespace, name)
        if key in self._child_pending:
            return  # the pass already scheduled will see this change
        self._child_pending.add(key)
        try:
            await asyncio.sleep(delay)
        finally:
            self._child_pending.discard(key)
        await self.resync(namespace, name, logger=logger, reuse_config=True)

    async def scale(
        self, namespace: str, name: str, role: Role, replicas: int, *, report: PatchFor, logger: Logger
    ) -> None:
        """Apply an autoscaling decision: the pass that sets ``role``'s Deployment to ``replicas``
        and writes ``report`` (the autoscaler's status patch) with its own status. Raises
        ``KubeError``; a problem the pass finds (Degraded) is reported by it."""

        async def run() -> ReconcileResult:
            return await self._measured(
                namespace, name, logger, reuse_config=True, also_status=report, replicas={role: replicas}
            )

        try:
            with urgent():
                await self._serialized((namespace, name), run)
        except ConfigurationError as error:
            logger.debug("scaled, but the runtime is still %s", error.reason)

    async def report(self, namespace: str, name: str, *, body: Mapping[str, Any], report: PatchFor) -> None:
        """Write an autoscaler report that changes no replicas, in the runtime's gate: never at the
        same time as a pass (one of two concurrent status writes conflicts, re-reads and writes
        again). Reports waiting for the gate share one write: the relay's and the consumer's, or
        the pass ahead of them takes them along in its own status write. ``body``: the runtime as
        the watch shows it, read when the write starts. Raises ``KubeError``."""
        key = (namespace, name)
        waiting = self._reports.get(key)
        if waiting is not None:
            waiting.append(report)
            return
        self._reports[key] = [report]

        async def write() -> None:
            reports = self._reports.pop(key, None)
            if reports:  # else a pass wrote them
                await write_status(self.kube, RUNTIMES, body=dict(body), patch_for=combined(reports))

        await self._serialized(key, write)

    def forget(self, namespace: str, name: str) -> None:
        """The runtime is gone (or going): drop what this controller remembers of it."""
        self._config.pop((namespace, name), None)
        self._failed.pop((namespace, name), None)
        self._consumers.forget(namespace, name)

    async def run_resync(
        self, namespace: str, name: str, *, interval: float, stopped: Stopped, logger: Logger
    ) -> None:
        """The periodic resync of one runtime, every ``interval`` seconds until ``stopped`` (a
        ``runtime_loops`` loop; the first pass is the create/resume handler's).

        The first wait is spread (:func:`first_resync_delay`): an operator that starts (or takes
        over the lease) resumes every runtime at once, and without it all of them would resync
        in the same second of every interval from then on."""
        wait = first_resync_delay(interval, random.random())
        while not await stopped.wait(wait):
            await self.resync(namespace, name, logger=logger, periodic=True)
            wait = interval

    async def _serialized(
        self, key: tuple[str, str], run: Callable[[], Awaitable[T]], *, coalesce: bool = False
    ) -> T | None:
        gate = self._gates[key]
        if coalesce and gate.queued > 0:
            return None
        gate.queued += 1
        try:
            await gate.lock.acquire()
        finally:
            gate.queued -= 1
        try:
            async with self._passes.slot():
                return await run()
        finally:
            gate.lock.release()
            if gate.queued == 0 and self._gates.get(key) is gate:
                del self._gates[key]  # nobody holds or waits for it: a runtime gone leaves nothing behind

    def _fetcher(self, key: Key, *, reuse: bool, periodic: bool = False, change: bool = False) -> FetchConfig:
        async def fetch(runtime: SmartflowRuntime, kube: KubeClient) -> dict[tuple[Kind, str], Any]:
            known = self._config.get(key)
            if reuse and known is not None and known[0] == runtime.generation:
                return known[1]
            # A periodic resync may take a Secret read by another runtime's loop a moment ago (the
            # shared reads, at most half a configuration-check interval old): with 1,000 runtimes on
            # one Secret that is a GET every 2.5 s instead of 1,000 a minute. A change pass shares
            # reads of present objects only (``PresentOrFresh``); other passes read afresh.
            source: Reader = kube
            if self.reads is not None and (periodic or change):
                source = self.reads if periodic else PresentOrFresh(self.reads)
            fetched = await fetch_config(runtime, source)
            self._config[key] = (runtime.generation, fetched)
            return fetched

        return fetch

    def _seen_for(self, key: Key) -> Mapping[str, Any] | None:
        """The watch's view of the runtime for a pass that reuses the last configuration, when that
        view has the generation the last full pass read (so its spec is the one that pass saw): no
        GET. A view of another generation (a spec change on its way, or an older event) is not
        used: the pass reads the runtime, so it never applies an outdated spec."""
        view = self.views(*key) if self.views is not None else None
        known = self._config.get(key)
        if view is None or known is None:
            return None
        return view if generation_of(view) == known[0] else None

    async def _measured(
        self,
        namespace: str,
        name: str,
        logger: Logger,
        *,
        reuse_config: bool = False,
        also_status: PatchFor | None = None,
        replicas: Mapping[Role, int] | None = None,
        new: bool = False,
        periodic: bool = False,
        view: Mapping[str, Any] | None = None,
    ) -> ReconcileResult:
        started = time.monotonic()
        key = (namespace, name)
        waiting = self._reports.pop(key, None)  # autoscaler reports: written with this pass's status
        seen = view if view is not None else self._seen_for(key) if reuse_config else None
        if waiting:
            # In the order they were made, this pass's own report last: for a role, the newest wins
            # (a role's loop goes on polling while its earlier report waits here).
            also_status = combined([*waiting, also_status] if also_status is not None else waiting)
        try:
            result = await reconcile(
                namespace,
                name,
                kube=self.kube,
                logger=logger,
                schema_versions=self.schema_versions,
                fetch=self._fetcher(key, reuse=reuse_config, periodic=periodic, change=view is not None),
                also_status=also_status,
                replicas=replicas,
                consumers=self._consumers,
                new=new,
                watched=self.children.of if self.children is not None else None,
                seen=seen,
            )
            if not result.found:
                self._config.pop(key, None)
                self._consumers.forget(*key)
            self._failed.pop(key, None)  # reconciled: a later edit waits for kopf's handlers again
        except ConfigurationError as error:
            self.metrics.reconciles.labels(result="degraded").inc()
            self.metrics.errors.labels(reason=error.reason).inc()
            raise
        except Exception as error:
            self.metrics.reconciles.labels(result="error").inc()
            self.metrics.errors.labels(reason=type(error).__name__).inc()
            raise
        finally:
            self.metrics.duration.observe(time.monotonic() - started)
        self.metrics.reconciles.labels(result="changed" if result.changed else "unchanged").inc()
        return result
