"""The schema migration step of a reconcile pass: the thin I/O around ``schema_gate``.

Called by ``reconcile`` before it applies any child. It builds the migration Job (pure), looks up
the live Job only when the current inputs hash is not migrated yet, creates the Job when it is
missing, quotes the failed pod's last log lines, and reads the database's schema version through
the lag probes' pool when the gate says it may have changed. What to do is decided by
``schema_gate.decide_schema``; nothing here decides.

Jobs are created (POST) and never updated or pruned: the name carries the inputs hash, a changed
spec is a new Job, and finished Jobs go by ``ttlSecondsAfterFinished`` or with the runtime (owner
reference).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import conditions as c
from .autoscaling.errors import ProbeError
from .builders.migration_job import MigrationJob, build_migration_job
from .config_refs import FetchedConfig, config_hash, referenced_config
from .connection_security import DatabaseSecurity, database_dsn, database_security
from .errors import ConfigurationError, Conflict, Invalid, KubeError
from .kube import JOBS, PODS, KubeClient
from .names import MIGRATION_CONTAINER_NAME
from .resource import SmartflowRuntime
from .schema_gate import (
    JobPhase,
    JobState,
    SchemaGate,
    SchemaVersion,
    decide_schema,
    job_state,
    needs_version_read,
    quote_log,
)

# The label the Job controller puts on the pods of a Job (the Job's uid).
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
LOG_TAIL_LINES = 20

Logger = logging.Logger | logging.LoggerAdapter[Any]


class SchemaVersionReader(Protocol):
    """Reads a database's schema version (``autoscaling.probes.Probes`` is one)."""

    async def schema_version(
        self, dsn: str, *, user: str, security: DatabaseSecurity | None = None
    ) -> int: ...


@dataclass(frozen=True)
class SchemaStep:
    gate: SchemaGate
    job: MigrationJob
    created: bool  # the Job was created by this pass


async def gate_schema(
    runtime: SmartflowRuntime,
    fetched: FetchedConfig,
    *,
    kube: KubeClient,
    versions: SchemaVersionReader | None,
    logger: Logger,
) -> SchemaStep:
    """Look at (and if needed start) the migration for the current spec; the gate says whether the
    role Deployments may be applied. Raises ``ConfigurationError`` when the Job is rejected."""
    spec = runtime.spec
    job = build_migration_job(
        runtime,
        config_hash=config_hash(referenced_config(spec, None), fetched, namespace=runtime.namespace),
    )
    recorded = runtime.status.schema_
    enabled = spec.migrations.enabled
    state: JobState | None = None
    quote: str | None = None
    if enabled and (recorded is None or recorded.migrated_hash != job.inputs_hash):
        live = await kube.get(JOBS, runtime.namespace, job.name)
        state = job_state(live, owner_uid=runtime.uid)
        if state.phase is JobPhase.FAILED and live is not None:
            quote = await _failed_pod_log(kube, runtime.namespace, live, logger)

    version: SchemaVersion | None = None
    if versions is not None and needs_version_read(
        enabled=enabled, inputs_hash=job.inputs_hash, recorded=recorded, job=state
    ):
        version = await _read_version(runtime, fetched, versions)

    gate = decide_schema(
        enabled=enabled,
        image=spec.image,
        job_name=job.name,
        inputs_hash=job.inputs_hash,
        recorded=recorded,
        job=state,
        log_quote=quote,
        version=version,
    )
    created = False
    if gate.create_job:
        try:
            await kube.create(job.manifest)
            created = True
        except Conflict:
            pass  # created meanwhile (another pass or an older operator): it runs, the gate stays shut
        except Invalid as error:
            raise ConfigurationError(c.CHILD_REJECTED, f"Job {job.name} rejected: {error}") from error
    return SchemaStep(gate=gate, job=job, created=created)


async def _failed_pod_log(
    kube: KubeClient, namespace: str, job: Mapping[str, Any], logger: Logger
) -> str | None:
    """The last log lines of the Job's newest pod; its termination message when the log cannot be
    read (the kubelet keeps the last lines there: ``FallbackToLogsOnError``); None without a pod."""
    uid = str(job["metadata"].get("uid", ""))
    pods = await kube.list(PODS, namespace, labels={JOB_UID_LABEL: uid})
    if not pods:
        return None
    newest = max(pods, key=lambda pod: str(pod["metadata"].get("creationTimestamp", "")))
    name = newest["metadata"]["name"]
    log: str | None
    try:
        log = await kube.read_log(
            namespace, name, container=MIGRATION_CONTAINER_NAME, tail_lines=LOG_TAIL_LINES
        )
    except KubeError as error:
        logger.warning("cannot read the log of migration pod %s: %s", name, error)
        log = _termination_message(newest)
    return quote_log(log)


def _termination_message(pod: Mapping[str, Any]) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == MIGRATION_CONTAINER_NAME:
            terminated = (status.get("state") or {}).get("terminated") or {}
            message = terminated.get("message")
            return str(message) if message else None
    return None


async def _read_version(
    runtime: SmartflowRuntime, fetched: FetchedConfig, versions: SchemaVersionReader
) -> SchemaVersion:
    try:
        dsn = database_dsn(runtime.spec, fetched, namespace=runtime.namespace)
        security = database_security(runtime.spec, fetched, namespace=runtime.namespace)
    except ConfigurationError as error:
        return SchemaVersion(None, error.message)
    user = f"{runtime.namespace}/{runtime.name}"
    try:
        return SchemaVersion(await versions.schema_version(dsn, user=user, security=security))
    except ProbeError as error:
        return SchemaVersion(None, f"{error.reason}: {error}")
