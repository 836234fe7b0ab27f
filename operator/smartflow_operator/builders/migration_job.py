"""The schema migration Job of a runtime: the one image running `smartflow-runtime migrate` (schema
and Kafka topic), with the environment and Secrets every role shares, the resources and placement
of the API-serving role, and the same restricted security context as the role pods. Pure.

The Job is named after a hash of everything that shapes the migration (image, mode, env, the values
of the Secrets/ConfigMaps it reads, resources, placement, retry limits): a change to any of them
is a new Job, so a fixed spec retries a failed migration, while the same spec never starts a
second Job. ``ttlSecondsAfterFinished`` is left out of the hash: it only decides when Kubernetes
deletes the finished Job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..names import (
    ANNOTATION_MIGRATION_HASH,
    LABEL_COMPONENT,
    LABEL_VERSION,
    MIGRATION_COMPONENT,
    MIGRATION_CONTAINER_NAME,
)
from ..resource import SmartflowRuntime
from .deployment import (
    CONTAINER_SECURITY_CONTEXT,
    build_env,
    build_mounts,
    build_placement,
    build_pod_basics,
)
from .labels import image_version, instance_labels

HASH_LENGTH = 8
MAX_NAME_LENGTH = 63  # the Job controller puts the Job's name into a label of its pods


@dataclass(frozen=True)
class MigrationJob:
    """The Job to run and the inputs hash it stands for."""

    name: str
    inputs_hash: str
    manifest: dict[str, Any]


def migration_labels(runtime: SmartflowRuntime) -> dict[str, str]:
    return {
        **instance_labels(runtime.name),
        LABEL_COMPONENT: MIGRATION_COMPONENT,
        LABEL_VERSION: image_version(runtime.spec.image),
    }


def migration_job_name(runtime_name: str, inputs_hash: str) -> str:
    """`<runtime>-migrate-<hash>`; a long runtime name is shortened so the name fits a label value."""
    suffix = f"-migrate-{inputs_hash}"
    return f"{runtime_name[: MAX_NAME_LENGTH - len(suffix)].rstrip('-')}{suffix}"


def _container(runtime: SmartflowRuntime) -> dict[str, Any]:
    spec = runtime.spec
    container: dict[str, Any] = {
        "name": MIGRATION_CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy.value,
        "args": ["migrate", "--shards", str(spec.migrations.outbox_shards)],
        "env": build_env(runtime, None),
        "resources": spec.roles.for_role(spec.serving_role()).resources.dump(),
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "volumeMounts": build_mounts(runtime),
        # A failed pod's last log lines also land in its status (the operator quotes its log).
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.env_from:
        container["envFrom"] = [source.dump() for source in spec.env_from]
    return container


def build_migration_job(runtime: SmartflowRuntime, *, config_hash: str) -> MigrationJob:
    """The migration Job; ``config_hash`` is the hash of the Secret/ConfigMap values it reads
    (``config_refs.config_hash`` of ``referenced_config(spec, None)``)."""
    spec = runtime.spec
    labels = migration_labels(runtime)
    pod_spec: dict[str, Any] = {
        "containers": [_container(runtime)],
        **build_pod_basics(runtime),
        "restartPolicy": "Never",  # a failed pod is replaced by the Job (backoffLimit), not restarted
        **build_placement(runtime, spec.serving_role()),
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.migrations.backoff_limit,
        "activeDeadlineSeconds": spec.migrations.active_deadline_seconds,
        "completions": 1,
        "parallelism": 1,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    inputs = {"job": job_spec, "mode": spec.mode.value, "config": config_hash}
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    inputs_hash = hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]
    name = migration_job_name(runtime.name, inputs_hash)
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": runtime.namespace,
            "labels": labels,
            "annotations": {ANNOTATION_MIGRATION_HASH: inputs_hash},
            "ownerReferences": [runtime.owner_reference()],
        },
        "spec": {**job_spec, "ttlSecondsAfterFinished": spec.migrations.ttl_seconds_after_finished},
    }
    return MigrationJob(name=name, inputs_hash=inputs_hash, manifest=manifest)
