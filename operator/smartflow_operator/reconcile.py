"""The one reconcile of a SmartflowRuntime: level-based and idempotent, called alike on create,
update, resume, periodic resync and when a child Deployment changes.

One pass: read the runtime -> fetch the Secrets/ConfigMaps it references (hash them) -> the schema
gate (``migration``: the migration Job for this spec must have succeeded, else nothing below runs)
-> build the desired children (pure builders) -> apply only what differs from the live objects ->
delete our children the spec no longer asks for -> report status and Events. A pass over an unchanged
runtime makes no write call at all. The status is written through ``status_writer`` (merge patch
under the read's resourceVersion, rebuilt on conflict), so a concurrent autoscaler report is never
undone.

Problems only the operator can see (a missing Secret or key, a spec that does not parse, a child
the apiserver rejects) stop the pass *before* anything is changed, are reported as ``Degraded``
(plus one Warning Event per new problem) and raised as ``ConfigurationError`` so the caller
retries with backoff. API errors propagate as ``KubeError`` and are retried the same way.

Autoscaling hooks in through ``replicas_for`` (the source of Deployment replicas: for an
autoscaled role the live count, which only a scale pass changes) and through
``status.roles.<role>.{lag,autoscaling}``, which this module preserves and never writes itself. A
scale change is this pass run by ``Controller.scale`` with the decided count (``replicas``), the
autoscaler's report (``also_status``, so decision, report and the roles' replicas reach the
status in one write) and the configuration already fetched (``fetch``, so no Secret is read again).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from . import conditions as c
from .autoscaling.handover import hand_over_replicas
from .autoscaling.replicas import replicas_for
from .builders.children import desired_children
from .builders.labels import child_name, instance_labels
from .config_refs import FetchedConfig, Kind, all_referenced_objects, config_hash, referenced_config
from .conflicts import (
    CONSUMER_GROUP_CONFLICT,
    ConsumerGroups,
    conflict_message,
    conflicting_runtime,
    identity_of,
)
from .connection_security import check_dsn_agrees
from .drift import contains
from .errors import ConfigurationError, Invalid
from .events import build_event
from .kube import CHILD_KINDS, CONFIG_MAPS, DEPLOYMENTS, RUNTIMES, SECRETS, KubeClient, kind_of
from .migration import SchemaVersionReader, gate_schema
from .names import ANNOTATION_APPLIED_HASH, KIND, LABEL_INSTANCE, Role
from .resource import SmartflowRuntime
from .runtime_status import Problem, compute_status, status_patch
from .schema_gate import SchemaGate
from .shared_reads import Reader
from .status import SmartflowRuntimeStatus
from .status_writer import PatchFor, write_status
from .watched_children import ChildKey

Clock = Callable[[], datetime]
FetchConfig = Callable[[SmartflowRuntime, KubeClient], Awaitable[dict[tuple[Kind, str], Any]]]
# (namespace, runtime) -> its children as the watches last saw them, None when they cannot tell.
LiveChildren = Callable[[str, str], dict[ChildKey, dict[str, Any]] | None]
ConsumerRegistry = ConsumerGroups  # every runtime's consumer-group identity as last seen


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ReconcileResult:
    """What one pass did; ``changed`` is False for a no-op resync."""

    found: bool = True
    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    status_written: bool = False
    problem: Problem | None = None

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.pruned or self.status_written)


async def reconcile(
    namespace: str,
    name: str,
    *,
    kube: KubeClient,
    clock: Clock = utc_now,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    schema_versions: SchemaVersionReader | None = None,
    fetch: FetchConfig | None = None,
    also_status: PatchFor | None = None,
    replicas: Mapping[Role, int] | None = None,
    consumers: ConsumerRegistry | None = None,
    new: bool = False,
    watched: LiveChildren | None = None,
    seen: Mapping[str, Any] | None = None,
) -> ReconcileResult:
    """Bring the children and status of runtime ``namespace/name`` in line with its spec.

    ``schema_versions`` reads the database's schema version for ``status.schema`` (the operator's
    lag probes); without it the version is not reported. ``fetch`` reads the referenced
    Secrets/ConfigMaps (default: GET each); ``also_status`` adds another writer's patch (the
    autoscaler's report) to this pass's one status write; ``replicas`` are the autoscaler's decided
    counts for autoscaled roles (clamped to the spec's maxReplicas like the live count);
    ``consumers``: every runtime's consumer-group identity as last seen, for the conflict check
    (:mod:`.conflicts`), updated with this runtime's. ``new``: kopf's create handler (the runtime
    was just created): its children are not listed first. ``watched``: the children from the
    operator's watches (:mod:`.watched_children`) instead of a LIST per kind. ``seen``: the runtime
    as the watch shows it, used instead of a GET (the caller vouches for its spec, see
    ``Controller``); a status written from a view that trails the object conflicts and is rebuilt
    from a fresh read (``status_writer``)."""
    log = logger or logging.getLogger(__name__)
    body = seen if seen is not None else await kube.get(RUNTIMES, namespace, name)
    if body is None or body.get("metadata", {}).get("deletionTimestamp"):
        return ReconcileResult(found=False)  # the garbage collector removes the children
    metadata = body["metadata"]
    previous = _previous_status(body)
    now = _timestamp(clock())
    result = ReconcileResult()
    runtime: SmartflowRuntime | None = None
    schema: SchemaGate | None = None
    try:
        runtime = _parse(body)
        fetched = await (fetch or fetch_config)(runtime, kube)
        check_dsn_agrees(runtime.spec, fetched, namespace=namespace)
        if consumers is not None:
            _check_consumer_group(runtime, fetched, str(metadata.get("creationTimestamp") or ""), consumers)
        step = await gate_schema(runtime, fetched, kube=kube, versions=schema_versions, logger=log)
        schema = step.gate
        if step.created:
            result.applied.append(f"Job/{step.job.name} (created)")
        if schema.problem is not None:
            raise ConfigurationError(schema.problem.reason, schema.problem.message)
        # A runtime kopf sees for the first time has no children to compare or prune: skip the
        # listings, whose cost grows with every object of their kind in the namespace. (An earlier
        # attempt of the same create may have applied some: applying again is idempotent, and a
        # child of a spec changed in between is pruned by the next periodic resync.)
        live = {} if new else await _live_children_of(namespace, name, kube, watched)
        if schema.open:  # else the roles wait for the migration, as they are
            children = _desired(runtime, fetched, live, replicas or {})
            await _apply_changed(children, live, kube, result)
            await _prune(runtime, children, live, kube, result)
    except ConfigurationError as error:
        result.problem = Problem(error.reason, error.message)
        # Said once per new problem (like its Event); retries of the same problem stay at debug.
        known = c.find(previous.conditions, c.DEGRADED)
        repeated = known is not None and (known.reason, known.message) == (error.reason, error.message)
        log.log(
            logging.DEBUG if repeated else logging.WARNING,
            "cannot reconcile: %s: %s",
            error.reason,
            error.message,
        )
        live = await _live_children_of(namespace, name, kube, watched)

    deployments = [obj for obj in live.values() if obj["kind"] == DEPLOYMENTS.kind]

    def desired_status_for(current: Mapping[str, Any]) -> dict[str, Any]:
        return compute_status(
            generation=int(metadata.get("generation") or 0),  # the generation this pass applied
            mode=runtime.spec.mode.value if runtime else None,
            expected_roles=runtime.spec.active_roles() if runtime else (),
            deployments=deployments,
            previous=_previous_status(current),
            problem=result.problem,
            now=now,
            schema=schema,
        )

    def patch_for(current: Mapping[str, Any]) -> dict[str, Any]:
        # Rebuilt from the fresh object when the autoscaler wrote status since our read.
        patch = status_patch(current.get("status") or {}, desired_status_for(current))
        if also_status is not None:
            patch = merge_status_patches(current.get("status") or {}, patch, also_status(current))
        return patch

    result.status_written = await write_status(kube, RUNTIMES, body=body, patch_for=patch_for) is not None
    await _emit_events(body, previous, desired_status_for(body), result, kube, now)
    if schema is not None and schema.event is not None:
        await kube.create_event(namespace, build_event(body, *schema.event, now))
    if result.problem is not None:
        raise ConfigurationError(result.problem.reason, result.problem.message)
    if result.changed:
        log.info("reconciled: applied %s, pruned %s", result.applied or "-", result.pruned or "-")
    return result


# -- steps -------------------------------------------------------------------------------------


def _previous_status(body: Mapping[str, Any]) -> SmartflowRuntimeStatus:
    try:
        return SmartflowRuntimeStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return SmartflowRuntimeStatus()  # a status we cannot read is rewritten, not fatal


def _parse(body: Mapping[str, Any]) -> SmartflowRuntime:
    try:
        return SmartflowRuntime.from_object(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = "spec." + ".".join(str(part) for part in first["loc"])
        raise ConfigurationError(c.INVALID_SPEC, f"{where}: {first['msg']}") from error


def _check_consumer_group(
    runtime: SmartflowRuntime, fetched: FetchedConfig, created: str, consumers: ConsumerRegistry
) -> None:
    """Refuse (Degraded, nothing changed) a runtime joining an older runtime's consumer group on
    another database."""
    me = identity_of(runtime, fetched, created=created)
    consumers.record(me)
    other = conflicting_runtime(me, consumers.in_group_of(me))
    if other is not None:
        raise ConfigurationError(CONSUMER_GROUP_CONFLICT, conflict_message(me, other))


def merge_status_patches(
    status: Mapping[str, Any], ours: Mapping[str, Any], theirs: Mapping[str, Any]
) -> dict[str, Any]:
    """One merge patch doing both: ``roles`` merged per role, ``conditions`` as ours (or the live
    list) with the condition types ``theirs`` changed taken from theirs. Pure."""
    merged = {**theirs, **ours}
    roles: dict[str, Any] = {}
    for patch in (theirs, ours):
        for key, fields in (patch.get("roles") or {}).items():
            roles[key] = None if fields is None else {**(roles.get(key) or {}), **fields}
    if roles:
        merged["roles"] = roles
    if "conditions" in theirs:
        # The types theirs changed (their list is the live one with their own types replaced).
        live = {cond.get("type"): cond for cond in status.get("conditions") or []}
        changed = [cond for cond in theirs["conditions"] if live.get(cond["type"]) != cond]
        base = ours.get("conditions", status.get("conditions"))
        merged["conditions"] = c.merge_by_type(base, changed, owned_types=[cond["type"] for cond in changed])
    return merged


async def fetch_config(runtime: SmartflowRuntime, kube: Reader) -> dict[tuple[Kind, str], Any]:
    """GET every Secret/ConfigMap the spec references (None for a missing one); ``kube`` as in
    :func:`fetch_objects`."""
    return await fetch_objects(kube, runtime.namespace, all_referenced_objects(runtime.spec))


async def fetch_objects(
    kube: Reader, namespace: str, objects: Sequence[tuple[Kind, str]]
) -> dict[tuple[Kind, str], Any]:
    """GET (never list) each Secret/ConfigMap by name: its data, or None when it does not exist.
    ``kube``: the client, or the operator's shared reads (one GET serves many loops, ``shared_reads``)."""
    fetched: dict[tuple[Kind, str], Any] = {}
    for kind, name in objects:
        obj = await kube.get(SECRETS if kind == "Secret" else CONFIG_MAPS, namespace, name)
        fetched[(kind, name)] = None if obj is None else _data_of(obj)
    return fetched


def _data_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(obj.get("data") or {})
    for key, value in (obj.get("binaryData") or {}).items():
        data[key] = value
    return data


def _desired(
    runtime: SmartflowRuntime,
    fetched: FetchedConfig,
    live: Mapping[ChildKey, Mapping[str, Any]],
    decided: Mapping[Role, int],
) -> list[dict[str, Any]]:
    roles = runtime.spec.active_roles()
    hashes = {
        role: config_hash(referenced_config(runtime.spec, role), fetched, namespace=runtime.namespace)
        for role in roles
    }
    replicas = {
        role: replicas_for(runtime.spec, role, decided.get(role, _live_replicas(live, runtime, role)))
        for role in roles
    }
    return desired_children(runtime, config_hashes=hashes, replicas=replicas)


def _live_replicas(
    live: Mapping[ChildKey, Mapping[str, Any]], runtime: SmartflowRuntime, role: Role
) -> int | None:
    deployment = live.get((DEPLOYMENTS.kind, child_name(runtime, role)))
    if deployment is None:
        return None
    return int((deployment.get("spec") or {}).get("replicas", 1))


def _key(obj: Mapping[str, Any]) -> ChildKey:
    return str(obj["kind"]), str(obj["metadata"]["name"])


async def _live_children_of(
    namespace: str, name: str, kube: KubeClient, watched: LiveChildren | None = None
) -> dict[ChildKey, dict[str, Any]]:
    """Our children of runtime ``name``: carrying our labels (ownership is checked before pruning).
    From the watches when given, else listed (each LIST costs every object of its kind in the
    namespace)."""
    seen = watched(namespace, name) if watched is not None else None
    if seen is not None:
        return seen
    labels = instance_labels(name)
    live: dict[ChildKey, dict[str, Any]] = {}
    for kind in CHILD_KINDS:
        for obj in await kube.list(kind, namespace, labels=labels):
            live[_key(obj)] = obj
    return live


def _up_to_date(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    if live is None:
        return False
    wanted = desired["metadata"]["annotations"][ANNOTATION_APPLIED_HASH]
    stamped = (live["metadata"].get("annotations") or {}).get(ANNOTATION_APPLIED_HASH)
    # The hash says our last apply matches; `contains` catches someone editing our fields since.
    return stamped == wanted and contains(live, desired)


async def _apply_changed(
    children: Sequence[Mapping[str, Any]],
    live: dict[ChildKey, dict[str, Any]],
    kube: KubeClient,
    result: ReconcileResult,
) -> None:
    # A child the apiserver rejects (e.g. a malformed affinity, passed through loosely) is a spec
    # problem: the pass stops there and reports Degraded. Children applied before it already match
    # the new spec, and nothing is pruned.
    for child in children:
        key = _key(child)
        if _up_to_date(child, live.get(key)):
            continue
        try:
            # paused/External: keep the count, as the apiserver has it now (a watched copy may
            # trail the last scale, and carries no managedFields)
            current = await _listed(child, kube) if _omits_replicas(child) else live.get(key)
            await hand_over_replicas(child, current, kube)
            applied = await kube.apply(child)
        except Invalid as error:
            raise ConfigurationError(c.CHILD_REJECTED, f"{key[0]} {key[1]} rejected: {error}") from error
        verb = "updated" if key in live else "created"
        live[key] = applied
        result.applied.append(f"{key[0]}/{key[1]} ({verb})")


def _omits_replicas(child: Mapping[str, Any]) -> bool:
    return child["kind"] == DEPLOYMENTS.kind and "replicas" not in (child.get("spec") or {})


async def _listed(child: Mapping[str, Any], kube: KubeClient) -> dict[str, Any] | None:
    """``child`` as the apiserver has it now (by its labels: the operator has no GET on Deployments)."""
    metadata = child["metadata"]
    labels = instance_labels(metadata["labels"][LABEL_INSTANCE])
    found = await kube.list(kind_of(child), metadata["namespace"], labels=labels)
    return next((obj for obj in found if obj["metadata"]["name"] == metadata["name"]), None)


async def _prune(
    runtime: SmartflowRuntime,
    children: Sequence[Mapping[str, Any]],
    live: dict[ChildKey, dict[str, Any]],
    kube: KubeClient,
    result: ReconcileResult,
) -> None:
    wanted = {_key(child) for child in children}
    for key, obj in list(live.items()):
        if key in wanted or not _owned_by(obj, runtime):
            continue
        metadata = obj["metadata"]
        await kube.delete(kind_of(obj), runtime.namespace, metadata["name"], uid=metadata.get("uid"))
        del live[key]
        result.pruned.append(f"{key[0]}/{key[1]}")


def _owned_by(obj: Mapping[str, Any], runtime: SmartflowRuntime) -> bool:
    """Only objects whose controller is this very runtime are ever deleted."""
    references = obj["metadata"].get("ownerReferences") or []
    return any(
        ref.get("uid") == runtime.uid and ref.get("kind") == KIND and ref.get("controller")
        for ref in references
    )


# -- events ------------------------------------------------------------------------------------


async def _emit_events(
    body: Mapping[str, Any],
    previous: SmartflowRuntimeStatus,
    status: Mapping[str, Any],
    result: ReconcileResult,
    kube: KubeClient,
    now: str,
) -> None:
    """One Event for what a pass applied, one per pruned child; one Warning per *new* problem (a retry
    of the same problem is silent). A new runtime's children share one Applied Event: an Event per
    child was six POSTs per runtime created, a third of a new runtime's requests."""
    events: list[tuple[str, str, str]] = []
    if result.applied:
        events.append(("Normal", "Applied", "applied " + ", ".join(result.applied)))
    for pruned in result.pruned:
        events.append(("Normal", "Pruned", f"deleted {pruned}: the spec no longer asks for it"))
    before = c.find(previous.conditions, c.DEGRADED)
    after = next((cond for cond in status["conditions"] if cond["type"] == c.DEGRADED), None)
    if result.problem is not None:
        if (
            before is None
            or before.reason != result.problem.reason
            or before.message != result.problem.message
        ):
            events.append(("Warning", result.problem.reason, result.problem.message))
    elif before is not None and before.status == "True" and after is not None and after["status"] == "False":
        events.append(("Normal", "Recovered", f"the spec is applied again (was {before.reason})"))
    for type_, reason, message in events:
        await kube.create_event(body["metadata"]["namespace"], build_event(body, type_, reason, message, now))


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
