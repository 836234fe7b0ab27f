"""The autoscaling block of the CRD: defaults, validation and the CEL rule in the schema."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from smartflow_operator.autoscaling.spec import AutoscalingSpec, ScalingMode


def test_defaults_are_documented_values() -> None:
    spec = AutoscalingSpec()
    assert (spec.enabled, spec.mode, spec.paused) == (False, ScalingMode.OPERATOR, False)
    assert (spec.min_replicas, spec.max_replicas, spec.target_per_replica) == (1, 10, 100)
    assert (spec.activation_threshold, spec.tolerance, spec.poll_interval_seconds) == (0, 0.1, 5)
    assert spec.fallback is None and spec.exclude_persistent_lag is False


def test_camel_case_aliases_round_trip() -> None:
    spec = AutoscalingSpec.model_validate(
        {
            "enabled": True,
            "minReplicas": 0,
            "maxReplicas": 4,
            "pollIntervalSeconds": 2,
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10}},
            "fallback": {"replicas": 2},
        }
    )
    dumped = spec.model_dump(by_alias=True, exclude_defaults=True)
    assert dumped["minReplicas"] == 0 and dumped["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 10
    assert AutoscalingSpec.model_validate(dumped) == spec


def test_min_above_max_is_rejected() -> None:
    with pytest.raises(ValidationError, match="minReplicas must be less than or equal to maxReplicas"):
        AutoscalingSpec.model_validate({"minReplicas": 5, "maxReplicas": 2})


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        AutoscalingSpec.model_validate({"lagThreshold": 5})


def test_schema_carries_the_cel_rule_and_a_description_on_every_field() -> None:
    schema = AutoscalingSpec.model_json_schema(by_alias=True)
    rules = schema["x-kubernetes-validations"]
    assert len(rules) == 1
    assert rules[0]["rule"].endswith("self.minReplicas <= self.maxReplicas")
    assert rules[0]["message"] == "minReplicas must be less than or equal to maxReplicas"
    models = [schema, *schema["$defs"].values()]
    for model in models:
        for name, field in model.get("properties", {}).items():
            assert field.get("description"), f"{model.get('title')}.{name} has no description"
