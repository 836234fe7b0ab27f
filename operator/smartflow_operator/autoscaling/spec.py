"""The ``autoscaling`` block of the relay and consumer roles (part of the CRD schema).

These models are the single source of truth for the fields, their defaults and their docs;
the CRD is generated from them. Semantics follow the HPA v2 where a user would expect it
(behavior, stabilization, policies) and KEDA where it has the better idea (activation,
persistent-lag exclusion, fallback).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ScalingMode(StrEnum):
    OPERATOR = "Operator"
    EXTERNAL = "External"


class PolicyType(StrEnum):
    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(StrEnum):
    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


class ScalingPolicy(_Model):
    type: PolicyType = Field(description="Pods: change by at most `value` pods; Percent: by `value` percent.")
    value: int = Field(gt=0, description="The amount of change allowed within one period.")
    period_seconds: int = Field(
        gt=0, le=1800, description="The window, in seconds, over which the change is limited."
    )


class ScalingRules(_Model):
    stabilization_window_seconds: int | None = Field(
        default=None,
        ge=0,
        le=3600,
        description=(
            "Seconds of recommendations to consider; the most conservative one in the window wins. "
            "Default 0 for scale-up and 300 for scale-down (as the HPA)."
        ),
    )
    select_policy: SelectPolicy = Field(
        default=SelectPolicy.MAX,
        description="Which policy applies when several do: Max (largest change), Min, or Disabled (never).",
    )
    policies: list[ScalingPolicy] | None = Field(
        default=None,
        description=(
            "Rate limits. Default for scale-up: 100% or 4 pods per 15 s, whichever is larger; "
            "for scale-down: 100% per 15 s (as the HPA)."
        ),
    )


class ScalingBehavior(_Model):
    scale_up: ScalingRules = Field(default_factory=ScalingRules, description="How fast replicas may rise.")
    scale_down: ScalingRules = Field(default_factory=ScalingRules, description="How fast replicas may fall.")


class Fallback(_Model):
    failure_threshold: int = Field(
        default=3, ge=1, description="Consecutive probe failures before the fallback replica count applies."
    )
    replicas: int = Field(ge=0, description="Replica count to run while the lag cannot be measured.")


MIN_LE_MAX_MESSAGE = "minReplicas must be less than or equal to maxReplicas"
MIN_LE_MAX_RULE: dict[str, JsonValue] = {
    "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
    "message": MIN_LE_MAX_MESSAGE,
}


class AutoscalingSpec(_Model):
    # Checked at admission by the API server (CEL) and again here for the operator's own parsing.
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [MIN_LE_MAX_RULE]})

    enabled: bool = Field(default=False, description="Scale this role from outbox lag.")
    mode: ScalingMode = Field(
        default=ScalingMode.OPERATOR,
        description=(
            "Operator: the operator decides and writes replicas. External: an HPA or KEDA owns replicas; "
            "the operator stops writing the field so server-side apply never fights it."
        ),
    )
    paused: bool = Field(
        default=False, description="Keep the current replica count; the lag is still measured and reported."
    )
    min_replicas: int = Field(default=1, ge=0, description="Lower bound; 0 allows scale to zero.")
    max_replicas: int = Field(
        default=10,
        ge=1,
        description=(
            "Upper bound. The effective bound is also capped by the partition count (consumer) or the "
            "outbox shard count (relay), past which replicas would idle."
        ),
    )
    target_per_replica: int = Field(
        default=100,
        ge=1,
        description=(
            "Lag one replica is expected to handle: due outbox rows (relay) or Kafka messages (consumer). "
            "desired = ceil(lag / targetPerReplica)."
        ),
    )
    activation_threshold: int = Field(
        default=0,
        ge=0,
        description="Lag above which the role is activated from zero replicas (only governs 0 <-> 1).",
    )
    tolerance: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Relative band around the current count within which no change is made (HPA: 0.1).",
    )
    poll_interval_seconds: int = Field(
        default=5, ge=1, le=3600, description="How often the lag is measured and a decision is made."
    )
    behavior: ScalingBehavior = Field(
        default_factory=ScalingBehavior,
        description="Stabilization windows and rate limits, as in the HPA v2.",
    )
    fallback: Fallback | None = Field(
        default=None,
        description=(
            "Replica count to apply after repeated probe failures (kept within min/max). "
            "Without it, failures hold the current count."
        ),
    )
    exclude_persistent_lag: bool = Field(
        default=False,
        description=(
            "Consumer only: a partition whose committed offset has not moved since the last poll while it "
            "has lag (stuck or poison) counts as zero, so it cannot drive the role to its maximum."
        ),
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(MIN_LE_MAX_MESSAGE)
        return self
