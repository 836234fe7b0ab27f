"""The autoscaling loop: per runtime, relay and consumer each polled on their own interval.

One of the per-runtime loops (``runtime_loops``) runs :meth:`Autoscaler.run`, which drives one
independent loop per scalable role. Each poll: read the runtime and the role's Deployment,
measure the lag at the source (:mod:`.probes`), decide (:func:`.decision.decide`,
pure, clock passed in), and report the result in ``status.roles.<role>`` with a condition. When
the count changes, the typed decision goes to the controller (``scale``: a pass in the runtime's
serialized gate that applies the role's Deployment with the new count and writes this report with
the roles' new replicas in one status write) and an Event is posted; the decision never travels
through the status.
Paused or External: measured and reported, no replicas written. A failed probe holds the count
and says why in the condition.

Status is written through :mod:`..status_writer` (a merge patch under the read's
resourceVersion, rebuilt from the fresh object on conflict): the reconciler and the two role loops
write the same object, and each replaces only its own condition type. In the operator a report
goes through the controller's per-runtime gate (``report``): it never races a pass, and the two
roles' reports waiting at once, or a pass ahead of them, share one write.

A poll that changes nothing writes nothing: the status is patched only when a reported field,
the lag or the condition changed, or the decision history changed in a way a restart would
miss (a new standing recommendation or scale event, see :mod:`.history`). The history is kept in
memory between polls; on the first poll after a (re)start it is read back from the status and
resumed, so stabilization windows and rate-limit periods survive a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from .. import conditions as c
from ..builders.labels import child_name
from ..config_refs import database_refs, kafka_refs
from ..connection_security import (
    DatabaseSecurity,
    KafkaSecurity,
    database_dsn,
    database_security,
    kafka_security,
    objects_of,
)
from ..errors import ConfigurationError, KubeError
from ..events import build_event
from ..kube import DEPLOYMENTS, RUNTIMES, KubeClient
from ..names import Role
from ..reconcile import fetch_objects
from ..resource import SmartflowRuntime
from ..shared_reads import SharedReads
from ..spec import Mode, ScalableWorkloadSpec
from ..status import Condition, ConditionStatus
from ..status_writer import PatchFor, write_status
from .decision import ScalingDecision, decide, metric_limit
from .errors import ProbeConfigurationError, ProbeError
from .history import ScalingHistory
from .lag import Reading
from .metrics import AutoscalingMetrics
from .probes import Probes
from .report import (
    DISABLED,
    ConditionValue,
    autoscaling_changed,
    autoscaling_status,
    carried_over,
    condition,
    condition_type,
    confirms_last_scale,
    history_of,
    timestamp,
)
from .spec import AutoscalingSpec
from .watched_replicas import WatchedReplicas

SCALED_ROLES = (Role.RELAY, Role.CONSUMER)
IDLE_INTERVAL_SECONDS = 5.0

Clock = Callable[[], datetime]
# (namespace, runtime, role, replicas, the status report to write with it)
Scale = Callable[[str, str, Role, int, PatchFor], Awaitable[object]]
# (namespace, name, the runtime as last seen, the report) -> written (``Controller.report``)
Report = Callable[[str, str, Mapping[str, Any], PatchFor], Awaitable[object]]
Logger = logging.Logger | logging.LoggerAdapter[Any]


class Stopped(Protocol):
    """The loop's stop flag (``runtime_loops.StopFlag``, or anything alike in tests)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> Awaitable[object]: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _RoleState:
    history: ScalingHistory | None = None
    error_reason: str | None = None
    scaled_to: int | None = None  # the count this loop last set, and when (``watched``'s clock)
    scaled_at: float | None = None


class Autoscaler:
    """Scales the relay and consumer of every runtime; one instance per operator (held in memo)."""

    def __init__(
        self,
        *,
        kube: KubeClient,
        scale: Scale,
        probes: Probes | None = None,
        metrics: AutoscalingMetrics | None = None,
        clock: Clock = utc_now,
        reads: SharedReads | None = None,
        watched: WatchedReplicas | None = None,
        report: Report | None = None,
    ) -> None:
        self.kube = kube
        self.probes = probes or Probes()
        self.metrics = metrics or AutoscalingMetrics()
        self._scale = scale
        # A report without a scale: through the controller's gate when given (one write with the
        # other role's report or the next pass, never racing a pass), else written here.
        self._write_report = report or self._write_directly
        self._clock = clock
        # The DSN Secret through the operator's shared reads; Deployment counts from the watch.
        self.reads = reads or SharedReads(kube, max_age_seconds=0.0)
        self.watched = watched
        self._states: dict[tuple[str, str, Role], _RoleState] = {}

    async def close(self) -> None:
        await self.probes.close()

    async def run(
        self,
        namespace: str,
        name: str,
        *,
        stopped: Stopped,
        logger: Logger,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        """Poll both roles until ``stopped``; never raises (a broken poll is logged and retried).
        ``body``: the live view of the runtime (``runtime_loops``); without it each poll reads it."""
        try:
            await asyncio.gather(
                *(self._loop(namespace, name, role, stopped, logger, body) for role in SCALED_ROLES)
            )
        finally:
            await self.probes.release(f"{namespace}/{name}")
            for role in SCALED_ROLES:
                self._states.pop((namespace, name, role), None)
                self.metrics.forget(namespace, name, role.value)

    async def _loop(
        self,
        namespace: str,
        name: str,
        role: Role,
        stopped: Stopped,
        logger: Logger,
        body: Mapping[str, Any] | None,
    ) -> None:
        while not stopped.is_set():
            interval = IDLE_INTERVAL_SECONDS
            try:
                interval = await self.poll(namespace, name, role, logger=logger, body=body)
            except KubeError as error:
                logger.warning("%s autoscaling poll failed, retrying: %s", role.value, error)
            except Exception:
                logger.exception("%s autoscaling poll failed unexpectedly, retrying", role.value)
            await stopped.wait(interval)

    async def poll(
        self, namespace: str, name: str, role: Role, *, logger: Logger, body: Mapping[str, Any] | None = None
    ) -> float:
        """One measurement and decision for ``role``; returns the seconds until the next poll.
        ``body``: the watch's live view of the runtime (copied here), else the runtime is read. A
        status write from a view that trails the object fails its resourceVersion precondition and
        is rebuilt from a fresh read (``status_writer``), so the view's lag costs a retry, not a
        lost update."""
        live = body
        body = dict(body) if body else await self.kube.get(RUNTIMES, namespace, name)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return IDLE_INTERVAL_SECONDS
        try:
            runtime = SmartflowRuntime.from_object(body, with_status=False)
        except ValidationError:
            return IDLE_INTERVAL_SECONDS  # the reconciler reports the invalid spec
        workload = runtime.spec.roles.for_role(role)
        if runtime.spec.mode is Mode.ALL or not isinstance(workload, ScalableWorkloadSpec):
            return IDLE_INTERVAL_SECONDS
        scaling = workload.autoscaling
        if not scaling.enabled:
            self.metrics.forget(namespace, name, role.value)
            await self._report_disabled(body, role)
            return float(scaling.poll_interval_seconds)
        state = self._states.setdefault((namespace, name, role), _RoleState())
        current = await self._current_replicas(runtime, role, state)
        if current is None:
            return float(scaling.poll_interval_seconds)  # not created yet: the reconciler will

        reading, error = await self._measure(runtime, role, scaling)
        previous = _autoscaling_of(body, role)
        now = self._clock()
        decision = decide(
            spec=scaling,
            reading=reading,
            current=current,
            history=state.history if state.history is not None else history_of(previous).resumed(now),
            now=now,
        )
        state.history = decision.history
        self._record_metrics(namespace, name, role, decision, reading, error)
        fragment = autoscaling_status(
            role, decision, reading=reading, error=error, previous=previous, now=now
        )
        wanted = condition(role, decision, error=error)
        if previous is not None and confirms_last_scale(previous, fragment):
            fragment = carried_over(previous, fragment)
            wanted = replace(wanted, reason=str(fragment["reason"]), message=str(fragment["message"]))
        report = self._report(role, fragment, wanted, reading, now)
        if decision.changed and decision.writes_replicas:
            await self._scale(namespace, name, role, decision.desired, report)
            state.scaled_to = decision.desired
            state.scaled_at = self.watched.now() if self.watched is not None else None
            direction = "up" if decision.desired > current else "down"
            self.metrics.scale_events.labels(role=role.value, direction=direction).inc()
            await self._event(body, "Normal", decision.reason.value, fragment["message"], now)
            logger.info("%s scaled %d -> %d: %s", role.value, current, decision.desired, fragment["message"])
        else:
            await self._write_report(namespace, name, live or body, report)
        if error is not None and error.reason != state.error_reason:
            await self._event(body, "Warning", error.reason, fragment["message"], now)
            logger.warning("%s", fragment["message"])
        state.error_reason = error.reason if error is not None else None
        return float(scaling.poll_interval_seconds)

    # -- steps -------------------------------------------------------------------------------

    async def _write_directly(
        self, _namespace: str, _name: str, body: Mapping[str, Any], report: PatchFor
    ) -> None:
        await write_status(self.kube, RUNTIMES, body=dict(body), patch_for=report)

    async def _current_replicas(self, runtime: SmartflowRuntime, role: Role, state: _RoleState) -> int | None:
        """The role Deployment's replicas, None when there is no Deployment yet. With ``watched``:
        from the watch when it has seen the Deployment since this loop last scaled it (an older
        entry may predate the scale: then the count this loop set); without: read."""
        deployment_name = child_name(runtime, role)
        if self.watched is not None:
            seen = self.watched.get(runtime.namespace, deployment_name)
            if seen is None:
                return None  # the watch has not seen it: not created yet (the next poll looks again)
            if state.scaled_at is None or seen.at > state.scaled_at or state.scaled_to is None:
                return seen.replicas
            return state.scaled_to
        deployment = await self.kube.get(DEPLOYMENTS, runtime.namespace, deployment_name)
        if deployment is None:
            return None
        return int((deployment.get("spec") or {}).get("replicas", 1))

    async def _measure(
        self, runtime: SmartflowRuntime, role: Role, scaling: AutoscalingSpec
    ) -> tuple[Reading | None, ProbeError | None]:
        user = f"{runtime.namespace}/{runtime.name}"
        started = time.monotonic()
        try:
            if role is Role.RELAY:
                dsn, database = await self._database(runtime)
                probe = self.probes.relay(dsn, user=user, security=database)
                reading = await probe.read(limit=metric_limit(scaling))
            else:
                kafka = runtime.spec.kafka
                consumer = self.probes.consumer(
                    kafka.bootstrap_servers, user=user, security=await self._kafka(runtime)
                )
                reading = await consumer.read(topic=kafka.topic, group=kafka.consumer_group)
        except ProbeError as error:
            self.metrics.probe_errors.labels(role=role.value, reason=error.reason).inc()
            return None, error
        finally:
            self.metrics.probe_duration.labels(role=role.value).observe(time.monotonic() - started)
            await self.probes.close_unused()  # the probe of a rotated password, say
        return reading, None

    async def _database(self, runtime: SmartflowRuntime) -> tuple[str, DatabaseSecurity | None]:
        """The DSN and the TLS settings of the runtime's database, from its Secrets (GET by name)."""
        spec, namespace = runtime.spec, runtime.namespace
        fetched = await fetch_objects(self.reads, namespace, objects_of(database_refs(spec)))
        try:
            return database_dsn(spec, fetched, namespace=namespace), database_security(
                spec, fetched, namespace=namespace
            )
        except ConfigurationError as error:
            raise ProbeConfigurationError(error.message) from error

    async def _kafka(self, runtime: SmartflowRuntime) -> KafkaSecurity | None:
        """The SASL credentials and TLS material of the runtime's brokers (GET by name)."""
        spec, namespace = runtime.spec, runtime.namespace
        fetched = await fetch_objects(self.reads, namespace, objects_of(kafka_refs(spec)))
        try:
            return kafka_security(spec, fetched, namespace=namespace)
        except ConfigurationError as error:
            raise ProbeConfigurationError(error.message) from error

    def _record_metrics(
        self,
        namespace: str,
        name: str,
        role: Role,
        decision: ScalingDecision,
        reading: Reading | None,
        error: ProbeError | None,
    ) -> None:
        labels = (namespace, name, role.value)
        self.metrics.decisions.labels(role=role.value, reason=decision.reason.value).inc()
        if decision.writes_replicas:
            self.metrics.desired_replicas.labels(*labels).set(decision.desired)
        if reading is not None:
            self.metrics.lag.labels(*labels).set(reading.metric)
            if role is Role.CONSUMER:
                self.metrics.observe_partitions(
                    namespace, name, ((p.partition, p.lag) for p in reading.partitions)
                )
            if reading.oldest_age_seconds is not None or role is Role.RELAY:
                self.metrics.oldest_due_age.labels(*labels).set(reading.oldest_age_seconds or 0.0)

    def _report(
        self,
        role: Role,
        fragment: dict[str, Any],
        wanted: ConditionValue,
        reading: Reading | None,
        now: datetime,
    ) -> PatchFor:
        """The status patch of this poll, for a given object: what changed, and nothing when
        nothing did (:func:`.report.autoscaling_changed`).

        Written under the read's resourceVersion (:mod:`..status_writer`): when the reconciler or
        the other role's loop wrote status meanwhile, the patch is rebuilt from the fresh object.
        """

        def patch_for(current: Mapping[str, Any]) -> dict[str, Any]:
            status = current.get("status") or {}
            role_status = (status.get("roles") or {}).get(role.spec_key) or {}
            live = role_status.get("autoscaling")
            patch: dict[str, Any] = {}
            role_patch: dict[str, Any] = {}
            if autoscaling_changed(live if isinstance(live, dict) else None, fragment):
                # A merge patch merges objects: clear keys of the previous value that are gone now.
                cleared = dict.fromkeys((live or {}).keys() - fragment.keys())
                role_patch["autoscaling"] = {**cleared, **fragment}
            if reading is not None and role_status.get("lag") != reading.metric:
                role_patch["lag"] = reading.metric
            if reading is not None and role_status.get("lagReading") != reading.shown:
                role_patch["lagReading"] = reading.shown
            if role_patch:
                patch["roles"] = {role.spec_key: role_patch}
            conditions = _with_condition(status, wanted, current, now)
            if conditions is not None:
                patch["conditions"] = conditions
            return patch

        return patch_for

    async def _report_disabled(self, body: Mapping[str, Any], role: Role) -> None:
        disabled = ConditionValue(
            condition_type(role),
            ConditionStatus.FALSE.value,
            DISABLED,
            f"{role.value} autoscaling is disabled; spec replicas apply",
        )
        now = self._clock()

        def patch_for(current: Mapping[str, Any]) -> dict[str, Any]:
            status = current.get("status") or {}
            patch: dict[str, Any] = {}
            if ((status.get("roles") or {}).get(role.spec_key) or {}).get("autoscaling") is not None:
                patch["roles"] = {role.spec_key: {"autoscaling": None}}
            # Only a condition this loop wrote before is turned to Disabled; none is added.
            if c.find(_conditions(status), disabled.type) is not None:
                conditions = _with_condition(status, disabled, current, now)
                if conditions is not None:
                    patch["conditions"] = conditions
            return patch

        await write_status(self.kube, RUNTIMES, body=body, patch_for=patch_for)

    async def _event(
        self, body: Mapping[str, Any], type_: str, reason: str, message: str, now: datetime
    ) -> None:
        await self.kube.create_event(
            body["metadata"]["namespace"], build_event(body, type_, reason, message, timestamp(now))
        )


def _autoscaling_of(body: Mapping[str, Any], role: Role) -> dict[str, Any] | None:
    roles = (body.get("status") or {}).get("roles") or {}
    value = (roles.get(role.spec_key) or {}).get("autoscaling")
    return value if isinstance(value, dict) else None


def _conditions(status: Mapping[str, Any]) -> list[Condition]:
    parsed = []
    for raw in status.get("conditions") or []:
        try:
            parsed.append(Condition.model_validate(raw))
        except ValidationError:
            continue
    return parsed


def _with_condition(
    status: Mapping[str, Any], wanted: ConditionValue, body: Mapping[str, Any], now: datetime
) -> list[dict[str, Any]] | None:
    """The condition list with this role's condition set (other types kept as read), or None when
    it is unchanged. Reason and message changes count; the transition time moves with the status."""
    current = _conditions(status)
    existing = c.find(current, wanted.type)
    if (
        existing is not None
        and existing.status == wanted.status
        and existing.reason == wanted.reason
        and existing.message == wanted.message
    ):
        return None
    updated = c.set_condition(
        [cond for cond in current if cond.type == wanted.type],
        type_=wanted.type,
        status=ConditionStatus(wanted.status),
        reason=wanted.reason,
        message=wanted.message,
        generation=int(body.get("metadata", {}).get("generation") or 0),
        now=timestamp(now),
    )
    return c.merge_by_type(
        status.get("conditions"), [cond.dump() for cond in updated], owned_types=(wanted.type,)
    )
