"""The GitOps chart: values in, one SmartflowRuntime (and optionally its DSN Secret) out, in a shape
the operator's own spec model accepts. The apiserver-side check is in tests/integration/chart/.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from smartflow_operator.resource import SmartflowRuntime

from .helm import RUNTIME_CHART, Manifest, helm, of_kind, one, render, render_error

CHART = yaml.safe_load((RUNTIME_CHART / "Chart.yaml").read_text())
MINIMAL: dict[str, Any] = {
    "kafka": {"bootstrapServers": "kafka-0.kafka:9092,kafka-1.kafka:9092"},
    "database": {"dsnSecret": {"name": "orders-db"}},
}


def _runtime(values: dict[str, Any], release: str = "orders") -> tuple[Manifest, list[Manifest]]:
    manifests = render(RUNTIME_CHART, release=release, namespace="shop", values=values)
    return one(manifests, "SmartflowRuntime"), manifests


def test_helm_lint_is_clean() -> None:
    result = helm(
        "lint", "--strict", str(RUNTIME_CHART), "--set", "kafka.bootstrapServers=k:9092",
        "--set", "database.dsnSecret.name=db",
    )  # fmt: skip
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_minimal_values_give_a_runtime_the_operator_can_parse() -> None:
    body, manifests = _runtime(MINIMAL)
    assert not of_kind(manifests, "Secret"), "an existing Secret is referenced, not created"
    runtime = SmartflowRuntime.from_object(body)
    assert (runtime.name, runtime.namespace) == ("orders", "shop")
    assert runtime.spec.image == f"ghcr.io/smartflow/runtime:{CHART['appVersion']}"
    assert runtime.spec.database.dsn_secret_ref.name == "orders-db"
    assert runtime.spec.database.dsn_secret_ref.key == "dsn"
    assert runtime.spec.kafka.bootstrap_servers == "kafka-0.kafka:9092,kafka-1.kafka:9092"
    assert runtime.spec.mode.value == "split"


def test_roles_env_and_mode_pass_through_to_the_spec() -> None:
    values = {
        **MINIMAL,
        "name": "orders-prod",
        "mode": "all",  # not the default (split): a hard-coded mode would fail here
        "image": {"repository": "registry.local/smartflow", "tag": "1.2.3", "pullPolicy": "Always"},
        "env": [{"name": "SMARTFLOW_LOG_LEVEL", "value": "DEBUG"}],
        "envFrom": [{"configMapRef": {"name": "orders-settings"}}],
        "roles": {
            "api": {"replicas": 3},
            "relay": {
                "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 6, "targetPerReplica": 300}
            },
        },
    }
    body, _ = _runtime(values)
    runtime = SmartflowRuntime.from_object(body)
    assert runtime.name == "orders-prod"
    assert body["spec"]["mode"] == "all" and runtime.spec.mode.value == "all"
    assert runtime.spec.image == "registry.local/smartflow:1.2.3"
    assert runtime.spec.image_pull_policy.value == "Always"
    assert body["spec"]["env"] == values["env"]
    assert body["spec"]["envFrom"] == values["envFrom"]
    assert runtime.spec.roles.api.replicas == 3
    relay = runtime.spec.roles.relay.autoscaling
    assert (relay.enabled, relay.min_replicas, relay.max_replicas) == (True, 1, 6)


def test_migrations_pass_through_and_default_to_the_operators() -> None:
    body, _ = _runtime(MINIMAL)
    assert "migrations" not in body["spec"]
    assert SmartflowRuntime.from_object(body).spec.migrations.enabled is True
    body, _ = _runtime({**MINIMAL, "migrations": {"enabled": False, "ttlSecondsAfterFinished": 600}})
    migrations = SmartflowRuntime.from_object(body).spec.migrations
    assert (migrations.enabled, migrations.ttl_seconds_after_finished) == (False, 600)


def test_the_dsn_secret_can_be_created_for_development() -> None:
    values = {
        "kafka": MINIMAL["kafka"],
        "database": {"createSecret": {"enabled": True, "dsn": "postgresql://u:p@db:5432/orders"}},
    }
    body, manifests = _runtime(values)
    secret = one(manifests, "Secret")
    assert body["spec"]["database"]["dsnSecretRef"] == {"name": secret["metadata"]["name"], "key": "dsn"}
    dsn = secret.get("stringData", {}).get("dsn") or base64.b64decode(secret["data"]["dsn"]).decode()
    assert dsn == "postgresql://u:p@db:5432/orders"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"database": MINIMAL["database"]}, "kafka.bootstrapServers"),
        ({"kafka": MINIMAL["kafka"]}, "database.dsnSecret.name"),
        (
            {
                **MINIMAL,
                "database": {"dsnSecret": {"name": "db"}, "createSecret": {"enabled": True, "dsn": "x"}},
            },
            "not both",
        ),
        ({**MINIMAL, "mode": "monolith"}, "mode"),
        ({**MINIMAL, "roles": {"worker": {"replicas": 1}}}, "worker"),
        ({**MINIMAL, "name": "9-starts-with-a-digit"}, "name"),
    ],
)
def test_incomplete_or_wrong_values_fail_with_a_pointer(values: dict[str, Any], message: str) -> None:
    assert message in render_error(RUNTIME_CHART, values=values)


def test_tls_sasl_and_the_network_policy_reach_the_runtime() -> None:
    values = {
        **MINIMAL,
        "database": {
            **MINIMAL["database"],
            "tls": {"mode": "verify-ca", "caRef": {"name": "pg-ca", "key": "ca.crt"}},
        },
        "kafka": {
            **MINIMAL["kafka"],
            "tls": {"caRef": {"kind": "ConfigMap", "name": "kafka-ca", "key": "ca.crt"}},
            "sasl": {
                "mechanism": "SCRAM-SHA-512",
                "username": "app",
                "passwordRef": {"name": "k", "key": "pw"},
            },
        },
        "networkPolicy": {"enabled": True, "apiFrom": [{"podSelector": {"matchLabels": {"app": "web"}}}]},
    }
    body, _ = _runtime(values)
    spec = SmartflowRuntime.from_object(body).spec
    assert spec.kafka.security_protocol() == "SASL_SSL"
    assert spec.database.tls is not None and spec.database.tls.mode.value == "verify-ca"
    assert spec.network_policy.enabled is True
    assert "allowPlaintextPassword" not in body["spec"]["kafka"]  # only when asked for
    plain = _runtime(MINIMAL)[0]["spec"]
    assert (
        set(plain["kafka"]) == {"bootstrapServers", "topic", "consumerGroup"}
        and "tls" not in plain["database"]
    )
