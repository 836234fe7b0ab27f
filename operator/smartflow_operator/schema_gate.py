"""Whether the role Deployments may run the current spec yet: the schema gate. Pure.

Before any role Deployment is created or gets a new image, the migration Job for the current
inputs hash (``builders.migration_job``) must have succeeded. The gate is level-based: it looks at
what is recorded in ``status.schema`` (the last migrated hash) and at the live Job, and says what
to do now:

* migrations off                        -> open, never a Job (``MigrationsDisabled``);
* hash already migrated (status)        -> open, the Job is not even looked at (it may be gone);
* Job succeeded                         -> open, record the hash as migrated (``Migrated``);
* Job running, or none yet              -> closed, create it if missing (``Migrating``);
* Job failed                            -> closed, ``Degraded``/``MigrationFailed`` with the Job's
  failure reason and its pod's last log lines; the running roles are left as they are.

While closed, the reconciler changes none of the runtime's children: existing Deployments keep
their image (and on create there is none yet).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import conditions as c
from .runtime_status import Problem
from .status import SchemaStatus

LOG_QUOTE_MAX_CHARS = 800


class JobPhase(StrEnum):
    ABSENT = "Absent"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    FOREIGN = "Foreign"  # a Job of that name exists but another object controls it


@dataclass(frozen=True)
class JobState:
    """The migration Job as observed: its phase, and for a failure the Job's reason and message."""

    phase: JobPhase
    reason: str = ""
    message: str = ""


def job_state(job: Mapping[str, Any] | None, *, owner_uid: str) -> JobState:
    """Read the Job's conditions the way the Job controller writes them (Complete / Failed)."""
    if job is None:
        return JobState(JobPhase.ABSENT)
    references = job.get("metadata", {}).get("ownerReferences") or []
    if not any(ref.get("uid") == owner_uid and ref.get("controller") for ref in references):
        return JobState(JobPhase.FOREIGN)
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return JobState(JobPhase.SUCCEEDED)
        if condition.get("type") == "Failed":
            return JobState(
                JobPhase.FAILED,
                reason=str(condition.get("reason") or "Failed"),
                message=str(condition.get("message") or ""),
            )
    return JobState(JobPhase.RUNNING)


def quote_log(log: str | None, *, lines: int = 3) -> str | None:
    """The last non-empty ``lines`` of a pod log, on one line, bounded in length (None if empty)."""
    if not log:
        return None
    tail = [line.strip() for line in log.splitlines() if line.strip()][-lines:]
    if not tail:
        return None
    text = " | ".join(tail)
    return text if len(text) <= LOG_QUOTE_MAX_CHARS else "..." + text[-LOG_QUOTE_MAX_CHARS:]


@dataclass(frozen=True)
class SchemaVersion:
    """What the operator read from the database: the version, or why it could not."""

    version: int | None
    error: str | None = None


@dataclass(frozen=True)
class SchemaGate:
    """The decision of one pass."""

    open: bool  # the role Deployments may be applied as the spec says
    create_job: bool  # the migration Job is missing: create it
    ready: bool  # SchemaReady
    reason: str
    message: str
    status: dict[str, Any] = field(default_factory=dict)  # status.schema (camelCase)
    problem: Problem | None = None  # MigrationFailed: reported as Degraded, retried with backoff
    event: tuple[str, str, str] | None = None  # (type, reason, message) when a migration succeeded


def needs_version_read(
    *, enabled: bool, inputs_hash: str, recorded: SchemaStatus | None, job: JobState | None
) -> bool:
    """Read the database's schema version only when it may have changed: always with migrations
    off (someone else migrates), else once when a Job of a new hash has just succeeded, and again
    while it is unknown. A steady runtime costs no query."""
    if not enabled:
        return True
    if recorded is not None and recorded.migrated_hash == inputs_hash:
        return recorded.version is None
    return job is not None and job.phase is JobPhase.SUCCEEDED


def decide_schema(
    *,
    enabled: bool,
    image: str,
    job_name: str,
    inputs_hash: str,
    recorded: SchemaStatus | None,
    job: JobState | None,
    log_quote: str | None = None,
    version: SchemaVersion | None = None,
) -> SchemaGate:
    """The gate for this pass. ``job`` is None when it was not looked up (hash already migrated, or
    migrations off); ``version`` is None when the database was not read this pass."""
    known = version.version if version is not None else None
    if known is None and recorded is not None:
        known = recorded.version  # keep the last reading when this pass did not (or could not) read

    if not enabled:
        seen = (
            f"the database reports schema version {version.version}"
            if version is not None and version.version is not None
            else f"the schema version could not be read ({version.error})"
            if version is not None and version.error
            else "the schema version is not read"
        )
        return SchemaGate(
            open=True,
            create_job=False,
            ready=True,
            reason=c.MIGRATIONS_DISABLED,
            message=f"migrations are run outside the operator (spec.migrations.enabled: false); {seen}",
            status=_status(version=known, job_name=None, inputs_hash=None, migrated=None),
        )

    migrated_before = recorded is not None and recorded.migrated_hash == inputs_hash
    if migrated_before or (job is not None and job.phase is JobPhase.SUCCEEDED):
        at = f"schema version {known}" if known is not None else "schema migrated (version not readable)"
        event = None
        if not migrated_before:
            succeeded = f"migration Job {job_name} succeeded for image {image}; rolling the roles"
            event = ("Normal", c.MIGRATED, succeeded)
        return SchemaGate(
            open=True,
            create_job=False,
            ready=True,
            reason=c.MIGRATED,
            message=f"{at}: migration Job {job_name} succeeded for image {image}",
            status=_status(version=known, job_name=job_name, inputs_hash=inputs_hash, migrated=inputs_hash),
            event=event,
        )

    previous_migrated = recorded.migrated_hash if recorded is not None else None
    status = _status(version=known, job_name=job_name, inputs_hash=inputs_hash, migrated=previous_migrated)
    phase = job.phase if job is not None else JobPhase.ABSENT
    if phase is JobPhase.FAILED:
        assert job is not None
        message = f"migration Job {job_name} failed ({job.reason}"
        message += f": {job.message})" if job.message else ")"
        if log_quote:
            message += f"; last log lines: {log_quote}"
        message += "; the roles keep their current image until a changed spec migrates successfully"
        return SchemaGate(
            open=False,
            create_job=False,
            ready=False,
            reason=c.MIGRATION_FAILED,
            message=message,
            status=status,
            problem=Problem(c.MIGRATION_FAILED, message),
        )
    if phase is JobPhase.FOREIGN:
        message = f"a Job {job_name} exists that this runtime does not control; waiting for it to go"
    else:
        message = f"migration Job {job_name} is running for image {image}; the roles roll once it succeeded"
    return SchemaGate(
        open=False,
        create_job=phase is JobPhase.ABSENT,
        ready=False,
        reason=c.MIGRATING,
        message=message,
        status=status,
    )


def _status(
    *, version: int | None, job_name: str | None, inputs_hash: str | None, migrated: str | None
) -> dict[str, Any]:
    status = SchemaStatus(version=version, job_name=job_name, hash=inputs_hash, migrated_hash=migrated)
    return status.dump()
