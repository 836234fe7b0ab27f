"""Deployment -> local process: the pure mapping of the local runner (smartflow_devstack.runner.spec)."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from smartflow_devstack.runner.errors import ContainerConfigError
from smartflow_devstack.runner.spec import (
    ImageMap,
    Refs,
    build_process_spec,
    deployment_facts,
    expand,
    referenced_objects,
    secret_values,
    template_hash,
)

IMAGES = ImageMap.parse([], default=["/venv/bin/smartflow-runtime"])


def deployment(**container: Any) -> dict[str, Any]:
    """A Deployment as the operator writes it (api role), with container fields overridable."""
    base: dict[str, Any] = {
        "name": "runtime",
        "image": "ghcr.io/smartflow/runtime:0.1.0",
        "args": ["run", "--role", "api"],
        "ports": [{"name": "admin", "containerPort": 9090}, {"name": "http", "containerPort": 8080}],
        "env": [{"name": "SMARTFLOW_ROLE", "value": "api"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "admin"}, "periodSeconds": 5},
    }
    base.update(container)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop-api", "namespace": "shop", "uid": "uid-1", "generation": 4},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": "shop"}},
            "template": {
                "metadata": {
                    "labels": {"app.kubernetes.io/component": "api", "app.kubernetes.io/instance": "shop"},
                    "annotations": {"team": "payments"},
                },
                "spec": {"terminationGracePeriodSeconds": 40, "containers": [base]},
            },
        },
    }


def build(obj: dict[str, Any], refs: Refs | None = None, **kwargs: Any) -> Any:
    options: dict[str, Any] = {
        "refs": refs or Refs(),
        "image_map": IMAGES,
        "pod_name": "shop-api-abc-0",
        "admin_port": 41001,
        "http_port": 41002,
    }
    options.update(kwargs)
    return build_process_spec(obj, **options)


class TestCommandAndArgs:
    def test_the_image_becomes_the_local_entrypoint_followed_by_the_container_args(self) -> None:
        spec = build(deployment())
        assert spec.argv == ("/venv/bin/smartflow-runtime", "run", "--role", "api")

    def test_image_map_prefers_the_exact_image_then_the_repository_then_any(self) -> None:
        images = ImageMap.parse(
            [
                "ghcr.io/smartflow/runtime:0.1.0=python -m exact",
                "ghcr.io/smartflow/runtime=python -m repo",
                "localhost:5000/other=other-cmd --flag 'two words'",
            ],
            default=["fallback"],
        )
        assert images.command_for("ghcr.io/smartflow/runtime:0.1.0") == ("python", "-m", "exact")
        assert images.command_for("ghcr.io/smartflow/runtime:0.2.0") == ("python", "-m", "repo")
        assert images.command_for("ghcr.io/smartflow/runtime@sha256:abcd") == ("python", "-m", "repo")
        assert images.command_for("localhost:5000/other:1") == ("other-cmd", "--flag", "two words")
        assert images.command_for("busybox") == ("fallback",)

    def test_an_unmapped_image_cannot_start(self) -> None:
        images = ImageMap.parse(["known=cmd"])
        with pytest.raises(ContainerConfigError) as error:
            build(deployment(image="unknown:1"), image_map=images)
        assert error.value.reason == "ErrImageNeverPull"

    @pytest.mark.parametrize("entry", ["no-equals", "=cmd", "image="])
    def test_malformed_image_map_entries_are_rejected(self, entry: str) -> None:
        with pytest.raises(ValueError, match="IMAGE=COMMAND"):
            ImageMap.parse([entry])

    def test_args_expand_container_variables_like_the_kubelet(self) -> None:
        spec = build(deployment(args=["run", "--role", "$(SMARTFLOW_ROLE)", "$$(SMARTFLOW_ROLE)", "$(NOPE)"]))
        assert spec.argv[1:] == ("run", "--role", "api", "$(SMARTFLOW_ROLE)", "$(NOPE)")

    def test_a_command_override_is_refused_rather_than_silently_ignored(self) -> None:
        with pytest.raises(ContainerConfigError, match="ENTRYPOINT"):
            build(deployment(command=["/bin/sh", "-c", "echo"]))

    def test_the_container_named_runtime_is_the_one_run(self) -> None:
        obj = deployment()
        sidecar = {"name": "sidecar", "image": "sidecar:1", "args": ["sidecar"]}
        obj["spec"]["template"]["spec"]["containers"].insert(0, sidecar)
        assert build(obj).argv[1:] == ("run", "--role", "api")


class TestEnvironment:
    def test_values_and_refs_resolve_with_env_winning_over_env_from(self) -> None:
        obj = deployment(
            envFrom=[
                {"configMapRef": {"name": "settings"}},
                {"secretRef": {"name": "db"}, "prefix": "SMARTFLOW_"},
            ],
            env=[
                {"name": "SMARTFLOW_LOG_LEVEL", "value": "DEBUG"},
                {
                    "name": "SMARTFLOW_DATABASE_DSN",
                    "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}},
                },
                {"name": "TOPIC", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "topic"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {
                    "name": "ROLE",
                    "valueFrom": {
                        "fieldRef": {"fieldPath": "metadata.labels['app.kubernetes.io/component']"}
                    },
                },
                {
                    "name": "HASH",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['pod-template-hash']"}},
                },
                {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['team']"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "GREETING", "value": "hello $(POD) in $(NS)"},
            ],
        )
        refs = Refs(
            secrets={"db": {"dsn": "postgresql://u:p@127.0.0.1:5432/db", "LOG_LEVEL": "WARNING"}},
            config_maps={"settings": {"topic": "events", "SMARTFLOW_LOG_LEVEL": "INFO", "bad key": "x"}},
        )
        env = build(obj, refs).env
        assert env["SMARTFLOW_DATABASE_DSN"] == "postgresql://u:p@127.0.0.1:5432/db"
        assert env["SMARTFLOW_LOG_LEVEL"] == "DEBUG"  # env beats both envFrom sources
        assert env["SMARTFLOW_dsn"] == "postgresql://u:p@127.0.0.1:5432/db"  # envFrom with prefix
        assert env["TOPIC"] == "events"
        assert "bad key" not in env  # not a valid variable name: skipped like the kubelet does
        assert (env["POD"], env["NS"], env["ROLE"], env["TEAM"], env["IP"]) == (
            "shop-api-abc-0",
            "shop",
            "api",
            "payments",
            "127.0.0.1",
        )
        assert env["HASH"] == deployment_facts(obj).template_hash
        assert env["GREETING"] == "hello shop-api-abc-0 in shop"

    def test_a_missing_secret_means_the_replica_cannot_start(self) -> None:
        obj = deployment(env=[{"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}}}])
        with pytest.raises(ContainerConfigError, match='secret "db" not found') as error:
            build(obj)
        assert error.value.reason == "CreateContainerConfigError"

    def test_a_missing_key_in_an_existing_config_map_means_the_replica_cannot_start(self) -> None:
        obj = deployment(env=[{"name": "T", "valueFrom": {"configMapKeyRef": {"name": "s", "key": "topic"}}}])
        with pytest.raises(ContainerConfigError, match="couldn't find key topic in configmap shop/s"):
            build(obj, Refs(config_maps={"s": {"other": "x"}}))

    def test_a_missing_env_from_source_fails_unless_optional(self) -> None:
        with pytest.raises(ContainerConfigError, match='configmap "extra"'):
            build(deployment(envFrom=[{"configMapRef": {"name": "extra"}}]))
        optional = deployment(
            envFrom=[{"configMapRef": {"name": "extra", "optional": True}}],
            env=[{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": True}}}],
        )
        env = build(optional).env
        assert "K" not in env
        assert env["HOSTNAME"] == "shop-api-abc-0"

    def test_unsupported_references_cannot_start(self) -> None:
        cpu = {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}
        with pytest.raises(ContainerConfigError, match="secretKeyRef"):
            build(deployment(env=[cpu]))
        field = {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}}
        with pytest.raises(ContainerConfigError, match=r"status\.phase"):
            build(deployment(env=[field]))

    def test_each_replica_gets_its_own_loopback_ports_over_what_the_deployment_says(self) -> None:
        obj = deployment(
            env=[
                {"name": "SMARTFLOW_ADMIN_PORT", "value": "9090"},
                {"name": "SMARTFLOW_HTTP_PORT", "value": "8080"},
                {"name": "SMARTFLOW_BIND_HOST", "value": "0.0.0.0"},
            ]
        )
        spec = build(obj, admin_port=41001, http_port=41002)
        assert (spec.env["SMARTFLOW_ADMIN_PORT"], spec.env["SMARTFLOW_HTTP_PORT"]) == ("41001", "41002")
        assert spec.env["SMARTFLOW_BIND_HOST"] == "127.0.0.1"
        assert spec.env["HOSTNAME"] == "shop-api-abc-0"
        assert (spec.admin_port, spec.http_port) == (41001, 41002)

    def test_no_http_port_without_an_http_container_port(self) -> None:
        obj = deployment(ports=[{"name": "admin", "containerPort": 9090}], args=["run", "--role", "relay"])
        spec = build(obj, http_port=None)
        assert "SMARTFLOW_HTTP_PORT" not in spec.env
        assert spec.http_port is None
        assert deployment_facts(obj).wants_http_port is False

    def test_the_base_environment_is_overridden_by_the_container(self) -> None:
        base = {"PATH": "/usr/bin", "SMARTFLOW_ROLE": "leaked", "SMARTFLOW_ADMIN_PORT": "1"}
        env = build(deployment(), base_env=base).env
        assert env["PATH"] == "/usr/bin"
        assert env["SMARTFLOW_ROLE"] == "api"
        assert env["SMARTFLOW_ADMIN_PORT"] == "41001"

    def test_secret_data_is_base64_decoded(self) -> None:
        secret = {"data": {"dsn": base64.b64encode(b"postgresql://x").decode()}, "stringData": {"k": "v"}}
        assert secret_values(secret) == {"dsn": "postgresql://x", "k": "v"}

    def test_referenced_objects_lists_every_secret_and_config_map(self) -> None:
        obj = deployment(
            envFrom=[{"secretRef": {"name": "a"}}, {"configMapRef": {"name": "b"}}],
            env=[
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": "c", "key": "k"}}},
                {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "d", "key": "k"}}},
            ],
        )
        names = referenced_objects(obj)
        assert names.secrets == {"a", "c"}
        assert names.config_maps == {"b", "d"}

    def test_expansion_keeps_unknown_and_lone_dollars(self) -> None:
        assert expand("a$(X)b$c$$(X)$(Y)$", {"X": "1"}) == "a1b$c$(X)$(Y)$"


class TestProbeAndFacts:
    def test_a_named_readiness_probe_points_at_the_replicas_admin_port(self) -> None:
        spec = build(deployment())
        assert spec.readiness is not None
        assert (spec.readiness.kind, spec.readiness.path) == ("http", "/readyz")
        assert spec.probe_port() == 41001

    def test_a_numbered_probe_port_maps_through_the_container_ports(self) -> None:
        probe = {"httpGet": {"path": "/ping", "port": 8080}, "failureThreshold": 5, "initialDelaySeconds": 2}
        spec = build(deployment(readinessProbe=probe))
        assert spec.probe_port() == 41002
        assert spec.readiness.failure_threshold == 5
        assert spec.readiness.initial_delay_seconds == 2.0

    def test_tcp_probes_are_supported_and_exec_probes_are_not(self) -> None:
        spec = build(deployment(readinessProbe={"tcpSocket": {"port": "admin"}}))
        assert spec.readiness.kind == "tcp"
        with pytest.raises(ContainerConfigError, match="httpGet"):
            build(deployment(readinessProbe={"exec": {"command": ["true"]}}))

    def test_a_probe_on_an_unknown_port_cannot_start(self) -> None:
        with pytest.raises(ContainerConfigError, match="7000"):
            build(deployment(readinessProbe={"httpGet": {"path": "/", "port": 7000}}))

    def test_no_probe_means_no_readiness_check(self) -> None:
        obj = deployment()
        del obj["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
        assert build(obj).readiness is None

    def test_facts_read_the_deployment_with_the_apiservers_defaults(self) -> None:
        obj = deployment()
        facts = deployment_facts(obj)
        assert (facts.key, facts.uid, facts.generation, facts.replicas) == ("shop/shop-api", "uid-1", 4, 2)
        assert facts.grace_seconds == 40.0
        assert (facts.strategy, facts.max_surge, facts.max_unavailable) == ("RollingUpdate", 1, 0)
        del obj["spec"]["replicas"]
        del obj["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        obj["spec"]["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "50%"},
        }
        facts = deployment_facts(obj)
        assert (facts.replicas, facts.grace_seconds, facts.max_surge, facts.max_unavailable) == (
            1,
            30.0,
            0,
            0 + 1,
        )
        obj["spec"]["strategy"] = {"type": "Recreate"}
        assert deployment_facts(obj).strategy == "Recreate"

    def test_the_template_hash_changes_with_the_template_only(self) -> None:
        obj = deployment()
        before = template_hash(obj["spec"]["template"])
        scaled = copy.deepcopy(obj)
        scaled["spec"]["replicas"] = 7
        assert deployment_facts(scaled).template_hash == before
        changed = copy.deepcopy(obj)
        changed["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "X", "value": "1"})
        assert deployment_facts(changed).template_hash != before
