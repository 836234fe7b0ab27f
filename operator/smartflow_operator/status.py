"""The `SmartflowRuntime` status as pydantic models (the status half of the CRD schema).

The operator writes ``observedGeneration``, the conditions and, per role, the Deployment's
desired/ready replicas and image. Two places belong to others and are preserved as they are:
``roles.<role>.lag`` / ``lagReading`` / ``autoscaling`` (written by the autoscaler) and ``kopf``
(kopf's own bookkeeping). Status models accept unknown fields so an older operator never drops
what a newer one wrote.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, WithJsonSchema

from .models import CamelModel
from .names import Role

PreservedObject = Annotated[
    dict[str, Any], WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
]


class _StatusModel(CamelModel):
    model_config = ConfigDict(extra="allow")


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_StatusModel):
    type: str = Field(description="Ready, Progressing, Degraded, SchemaReady or <Role>Autoscaling.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="A CamelCase word saying why the condition has its status.")
    message: str = Field(default="", description="What happened, for humans.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="The spec generation the condition was computed from."
    )


class RoleStatus(_StatusModel):
    deployment: str = Field(default="", description="Name of the role's Deployment.")
    image: str = Field(default="", description="Image the Deployment runs.")
    desired_replicas: int | None = Field(
        default=None, description="Replicas the Deployment asks for (also when an HPA sets them)."
    )
    ready_replicas: int = Field(default=0, description="Pods ready to serve.")
    updated_replicas: int = Field(default=0, description="Pods running the current pod template.")
    replicas: str = Field(default="", description="ready/desired, as printed by kubectl get.")
    lag: int | None = Field(
        default=None,
        description="Last measured lag: due outbox rows (relay) or consumer-group lag (consumer). "
        "Written by the autoscaler.",
    )
    lag_reading: str | None = Field(
        default=None,
        description="The last lag reading as shown by kubectl get: the number, or N+ when the probe "
        "stopped counting at N (the relay counts due rows only up to targetPerReplica x maxReplicas, "
        "past which the decision cannot change; the backlog may be far larger). Written by the "
        "autoscaler.",
    )
    autoscaling: PreservedObject | None = Field(
        default=None, description="The autoscaler's last readings and decisions for this role."
    )


class RolesStatus(_StatusModel):
    api: RoleStatus | None = Field(default=None, description="The api role.")
    relay: RoleStatus | None = Field(default=None, description="The relay role.")
    consumer: RoleStatus | None = Field(default=None, description="The consumer role.")
    memory_worker: RoleStatus | None = Field(default=None, description="The memory-worker role.")
    all: RoleStatus | None = Field(default=None, description="The all-in-one Deployment (mode all).")

    def for_role(self, role: Role) -> RoleStatus | None:
        statuses: dict[Role, RoleStatus | None] = {
            Role.API: self.api,
            Role.RELAY: self.relay,
            Role.CONSUMER: self.consumer,
            Role.MEMORY_WORKER: self.memory_worker,
            Role.ALL: self.all,
        }
        return statuses[role]


class SchemaStatus(_StatusModel):
    version: int | None = Field(
        default=None,
        description="The schema version the database reports (highest applied migration), as the "
        "operator last read it; absent when it could not be read.",
    )
    job_name: str | None = Field(
        default=None, description="The migration Job for the current spec (absent with migrations off)."
    )
    hash: str | None = Field(
        default=None,
        description="Hash of the image and migration inputs the current spec needs migrated.",
    )
    migrated_hash: str | None = Field(
        default=None,
        description="The inputs hash whose migration Job succeeded last; equal to hash when the roles may "
        "run the current image. A Job of a migrated hash is not run again, even when it was deleted.",
    )


class SmartflowRuntimeStatus(_StatusModel):
    """What the operator observed when it last reconciled this runtime."""

    observed_generation: int | None = Field(
        default=None, description="The spec generation the operator last reconciled."
    )
    mode: str | None = Field(default=None, description="The mode the workloads run in (split or all).")
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Progressing and Degraded, with reasons."
    )
    roles: RolesStatus = Field(default_factory=RolesStatus, description="Per-role workload status.")
    schema_: SchemaStatus | None = Field(
        default=None,
        alias="schema",
        description="The database schema: version, migration Job, and which inputs were migrated.",
    )
    kopf: PreservedObject | None = Field(default=None, description="Bookkeeping of the kopf framework.")
