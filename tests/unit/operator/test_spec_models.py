"""The spec models: defaults, camelCase names and the validation the CRD mirrors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from smartflow_operator.names import Role
from smartflow_operator.spec import Mode, PullPolicy, SmartflowRuntimeSpec

from .conftest import BASE_SPEC, with_spec


class TestSpecDefaults:
    def test_minimal_spec_gets_documented_defaults(self) -> None:
        spec = SmartflowRuntimeSpec.model_validate(BASE_SPEC)
        assert spec.mode is Mode.SPLIT
        assert spec.image_pull_policy is PullPolicy.IF_NOT_PRESENT
        assert spec.kafka.topic == "smartflow.agent.outbox"
        assert spec.kafka.consumer_group == "smartflow-agent-outbox-consumer"
        assert spec.roles.api.replicas == 1
        assert spec.roles.relay.autoscaling.enabled is False
        assert spec.roles.consumer.resources.requests == {"cpu": "100m", "memory": "128Mi"}

    def test_fields_are_camel_case_in_the_resource(self) -> None:
        spec = SmartflowRuntimeSpec.model_validate(
            with_spec(roles={"memoryWorker": {"replicas": 3, "nodeSelector": {"pool": "workers"}}})
        )
        assert spec.roles.memory_worker.replicas == 3
        dumped = spec.dump()
        assert dumped["roles"]["memoryWorker"]["nodeSelector"] == {"pool": "workers"}  # type: ignore[index]
        assert "dsnSecretRef" in dumped["database"]  # type: ignore[operator]

    def test_active_roles_follow_the_mode(self) -> None:
        assert SmartflowRuntimeSpec.model_validate(BASE_SPEC).active_roles() == (
            Role.API,
            Role.RELAY,
            Role.CONSUMER,
            Role.MEMORY_WORKER,
        )
        assert SmartflowRuntimeSpec.model_validate(with_spec(mode="all")).active_roles() == (Role.ALL,)


class TestSpecValidation:
    @pytest.mark.parametrize(
        ("spec", "location"),
        [
            (with_spec(mode="both"), ("mode",)),
            (with_spec(image="Not An Image!"), ("image",)),
            (with_spec(roles={"api": {"replicas": -1}}), ("roles", "api", "replicas")),
            (
                with_spec(roles={"relay": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}),
                ("roles", "relay", "autoscaling"),
            ),
            (with_spec(roles={"api": {"replicaz": 2}}), ("roles", "api", "replicaz")),
            (with_spec(database={}), ("database", "dsnSecretRef")),
        ],
    )
    def test_bad_specs_name_the_field(self, spec: dict[str, object], location: tuple[str, ...]) -> None:
        with pytest.raises(ValidationError) as raised:
            SmartflowRuntimeSpec.model_validate(spec)
        assert raised.value.errors()[0]["loc"][: len(location)] == location

    @pytest.mark.parametrize(
        "image",
        [
            "runtime",
            "ghcr.io/smartflow/runtime:0.1.0",
            "localhost:5000/runtime:dev",
            "registry.example.com/a/b/c@sha256:" + "a" * 64,
        ],
    )
    def test_image_references_are_accepted(self, image: str) -> None:
        assert SmartflowRuntimeSpec.model_validate(with_spec(image=image)).image == image

    def test_env_var_with_value_from_secret(self) -> None:
        spec = SmartflowRuntimeSpec.model_validate(
            with_spec(env=[{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
        )
        assert spec.env is not None
        assert spec.env[0].value_from is not None
        assert spec.env[0].value_from.secret_key_ref is not None
        assert spec.env[0].value_from.secret_key_ref.name == "s"
