"""The pure builders: one class per builder, plain dicts, plain asserts."""

from __future__ import annotations

from typing import Any

from smartflow_operator.builders.children import desired_children, manifest_hash
from smartflow_operator.builders.deployment import build_deployment, build_env
from smartflow_operator.builders.disruption_budget import build_disruption_budget, wants_disruption_budget
from smartflow_operator.builders.labels import child_name, image_version, role_labels
from smartflow_operator.builders.service import build_api_service
from smartflow_operator.names import ANNOTATION_APPLIED_HASH, ANNOTATION_CONFIG_HASH, Role

from .conftest import make_runtime, with_spec

OWNER = {
    "apiVersion": "smartflow.io/v1alpha1",
    "kind": "SmartflowRuntime",
    "name": "demo",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {entry["name"]: entry.get("value", entry.get("valueFrom")) for entry in container["env"]}


class TestLabels:
    def test_child_names_follow_the_contract(self) -> None:
        runtime = make_runtime()
        assert child_name(runtime, Role.MEMORY_WORKER) == "demo-memory-worker"
        assert child_name(runtime, Role.ALL) == "demo-all"

    def test_role_labels(self) -> None:
        assert role_labels(make_runtime(), Role.RELAY) == {
            "app.kubernetes.io/name": "smartflow",
            "app.kubernetes.io/instance": "demo",
            "app.kubernetes.io/managed-by": "smartflow-operator",
            "app.kubernetes.io/component": "relay",
            "app.kubernetes.io/version": "1.4.2",
        }

    def test_image_version(self) -> None:
        assert image_version("localhost:5000/runtime:dev") == "dev"
        assert image_version("localhost:5000/runtime") == "latest"
        assert image_version("runtime@sha256:" + "ab" * 32) == "ab" * 6
        assert image_version("r/runtime:1.0@sha256:" + "0" * 64) == "1.0"


class TestBuildDeployment:
    def test_role_deployment_runs_the_image_with_the_role_flag(self) -> None:
        deployment = build_deployment(make_runtime(), Role.RELAY, replicas=3, config_hash="abc")
        assert deployment["metadata"]["name"] == "demo-relay"
        assert deployment["metadata"]["namespace"] == "team"
        assert deployment["metadata"]["ownerReferences"] == [OWNER]
        assert deployment["spec"]["replicas"] == 3
        container = _container(deployment)
        assert container["name"] == "runtime"
        assert container["image"] == "registry.example.com/smartflow/runtime:1.4.2"
        assert container["args"] == ["run", "--role", "relay"]

    def test_selector_matches_template_and_omits_version(self) -> None:
        deployment = build_deployment(make_runtime(), Role.API, replicas=1, config_hash="abc")
        selector = deployment["spec"]["selector"]["matchLabels"]
        template_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert "app.kubernetes.io/version" not in selector
        assert selector.items() <= template_labels.items()

    def test_env_carries_dsn_secret_and_kafka(self) -> None:
        env = _env(_container(build_deployment(make_runtime(), Role.CONSUMER, replicas=1, config_hash="x")))
        assert env["SMARTFLOW_DATABASE_DSN"] == {"secretKeyRef": {"name": "db", "key": "dsn"}}
        assert env["SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS"] == "kafka-0:9092,kafka-1:9092"
        assert env["SMARTFLOW_KAFKA_TOPIC"] == "smartflow.agent.outbox"
        assert env["SMARTFLOW_KAFKA_CONSUMER_GROUP"] == "smartflow-agent-outbox-consumer"
        assert env["SMARTFLOW_ADMIN_PORT"] == "9090"
        assert "SMARTFLOW_HTTP_PORT" not in env

    def test_role_env_overrides_shared_env_in_place(self) -> None:
        runtime = make_runtime(
            with_spec(
                env=[{"name": "A", "value": "shared"}, {"name": "B", "value": "b"}],
                roles={"relay": {"env": [{"name": "A", "value": "relay"}]}},
            )
        )
        relay = build_env(runtime, Role.RELAY)
        names = [entry["name"] for entry in relay]
        assert len(names) == len(set(names))
        assert {"name": "A", "value": "relay"} in relay
        assert names.index("A") < names.index("B")
        assert {"name": "A", "value": "shared"} in build_env(runtime, Role.API)

    def test_api_and_all_serve_http_others_only_admin(self) -> None:
        for role, ports in (
            (Role.API, ["http", "admin"]),
            (Role.ALL, ["http", "admin"]),
            (Role.MEMORY_WORKER, ["admin"]),
        ):
            container = _container(build_deployment(make_runtime(), role, replicas=1, config_hash="x"))
            assert [port["name"] for port in container["ports"]] == ports
        api_env = _env(_container(build_deployment(make_runtime(), Role.API, replicas=1, config_hash="x")))
        assert api_env["SMARTFLOW_HTTP_PORT"] == "8080"

    def test_probes_on_the_admin_port(self) -> None:
        container = _container(build_deployment(make_runtime(), Role.RELAY, replicas=1, config_hash="x"))
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"

    def test_restricted_security_context_with_writable_tmp(self) -> None:
        deployment = build_deployment(make_runtime(), Role.API, replicas=1, config_hash="x")
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert pod["volumes"][0]["name"] == "tmp" and "emptyDir" in pod["volumes"][0]

    def test_none_replicas_leave_the_field_to_someone_else(self) -> None:
        deployment = build_deployment(make_runtime(), Role.CONSUMER, replicas=None, config_hash="x")
        assert "replicas" not in deployment["spec"]

    def test_config_hash_is_on_the_pod_template(self) -> None:
        deployment = build_deployment(make_runtime(), Role.API, replicas=1, config_hash="c0ffee")
        assert deployment["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH] == "c0ffee"

    def test_scheduling_knobs_and_pull_settings_pass_through(self) -> None:
        runtime = make_runtime(
            with_spec(
                imagePullPolicy="Always",
                imagePullSecrets=[{"name": "regcred"}],
                envFrom=[{"configMapRef": {"name": "extra"}}],
                roles={
                    "consumer": {
                        "nodeSelector": {"pool": "kafka"},
                        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                        "affinity": {"nodeAffinity": {"x": 1}},
                        "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}},
                    }
                },
            )
        )
        deployment = build_deployment(runtime, Role.CONSUMER, replicas=1, config_hash="x")
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        assert pod["nodeSelector"] == {"pool": "kafka"}
        assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]
        assert pod["affinity"] == {"nodeAffinity": {"x": 1}}
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert container["imagePullPolicy"] == "Always"
        assert container["envFrom"] == [{"configMapRef": {"name": "extra", "optional": False}}]
        assert container["resources"] == {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}}
        # Another role keeps the defaults.
        api_pod = build_deployment(runtime, Role.API, replicas=1, config_hash="x")["spec"]["template"]["spec"]
        assert "nodeSelector" not in api_pod


class TestBuildApiService:
    def test_split_mode_selects_api_pods(self) -> None:
        service = build_api_service(make_runtime())
        assert service["metadata"]["name"] == "demo-api"
        assert service["metadata"]["ownerReferences"] == [OWNER]
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == "api"
        assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
            ("http", 8080, "http"),
            ("admin", 9090, "admin"),
        ]

    def test_all_mode_keeps_the_name_and_selects_the_all_pods(self) -> None:
        service = build_api_service(make_runtime(with_spec(mode="all")))
        assert service["metadata"]["name"] == "demo-api"
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == "all"


class TestBuildDisruptionBudget:
    def test_budget_allows_one_pod_at_a_time(self) -> None:
        budget = build_disruption_budget(make_runtime(), Role.CONSUMER)
        assert budget["metadata"]["name"] == "demo-consumer"
        assert budget["metadata"]["ownerReferences"] == [OWNER]
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "consumer"

    def test_decided_from_the_spec_never_from_the_live_count(self) -> None:
        def wants(roles: dict[str, Any], role: Role) -> bool:
            return wants_disruption_budget(make_runtime(with_spec(roles=roles)).spec.roles.for_role(role))

        assert not wants({"api": {"replicas": 0}}, Role.API)
        assert not wants({"api": {"replicas": 1}}, Role.API)
        assert wants({"api": {"replicas": 2}}, Role.API)
        # Autoscaled: whatever the count is now, maxReplicas decides (no churn across 1 <-> 2).
        scaled = {"enabled": True, "minReplicas": 1, "maxReplicas": 4}
        assert wants({"relay": {"replicas": 1, "autoscaling": scaled}}, Role.RELAY)
        assert wants({"relay": {"replicas": 0, "autoscaling": {**scaled, "minReplicas": 0}}}, Role.RELAY)
        assert not wants({"relay": {"replicas": 3, "autoscaling": {**scaled, "maxReplicas": 1}}}, Role.RELAY)
        assert wants({"consumer": {"autoscaling": {**scaled, "mode": "External"}}}, Role.CONSUMER)


class TestDesiredChildren:
    def _children(self, spec: dict[str, Any], replicas: dict[Role, int | None]) -> list[dict[str, Any]]:
        runtime = make_runtime(spec)
        hashes = dict.fromkeys(runtime.spec.active_roles(), "h")
        return desired_children(runtime, config_hashes=hashes, replicas=replicas)

    def test_split_mode_children(self) -> None:
        replicas: dict[Role, int | None] = {
            Role.API: 2,
            Role.RELAY: 1,
            Role.CONSUMER: None,
            Role.MEMORY_WORKER: 1,
        }
        spec = with_spec(
            roles={
                "api": {"replicas": 2},
                "consumer": {"autoscaling": {"enabled": True, "mode": "External", "maxReplicas": 5}},
            }
        )
        children = self._children(spec, replicas)
        assert sorted((c["kind"], c["metadata"]["name"]) for c in children) == [
            ("Deployment", "demo-api"),
            ("Deployment", "demo-consumer"),
            ("Deployment", "demo-memory-worker"),
            ("Deployment", "demo-relay"),
            ("PodDisruptionBudget", "demo-api"),
            ("PodDisruptionBudget", "demo-consumer"),
            ("Service", "demo-api"),
        ]

    def test_all_mode_children(self) -> None:
        children = self._children(with_spec(mode="all"), {Role.ALL: 1})
        assert sorted((c["kind"], c["metadata"]["name"]) for c in children) == [
            ("Deployment", "demo-all"),
            ("Service", "demo-api"),
        ]

    def test_every_child_is_stamped_with_its_manifest_hash(self) -> None:
        children = self._children(with_spec(mode="all"), {Role.ALL: 1})
        for child in children:
            stamped = child["metadata"]["annotations"][ANNOTATION_APPLIED_HASH]
            unstamped = {**child, "metadata": {**child["metadata"]}}
            annotations = dict(unstamped["metadata"]["annotations"])
            del annotations[ANNOTATION_APPLIED_HASH]
            if annotations:
                unstamped["metadata"]["annotations"] = annotations
            else:
                del unstamped["metadata"]["annotations"]
            if child["kind"] == "Deployment":
                # replicas is not part of a Deployment's hash (the autoscaler scales through /scale)
                unstamped["spec"] = {**child["spec"], "replicas": "set"}
            assert stamped == manifest_hash(unstamped)

    def test_a_deployment_hash_ignores_replicas(self) -> None:
        def deployment_hash(replicas: int) -> str:
            children = self._children(with_spec(mode="all"), {Role.ALL: replicas})
            deployment = next(c for c in children if c["kind"] == "Deployment")
            assert deployment["spec"]["replicas"] == replicas
            return str(deployment["metadata"]["annotations"][ANNOTATION_APPLIED_HASH])

        assert deployment_hash(1) == deployment_hash(3)
        # Leaving replicas to an HPA (None: the field omitted) is a change of the manifest.
        children = self._children(with_spec(mode="all"), {Role.ALL: None})
        deployment = next(c for c in children if c["kind"] == "Deployment")
        assert "replicas" not in deployment["spec"]
        assert deployment["metadata"]["annotations"][ANNOTATION_APPLIED_HASH] != deployment_hash(1)

    def test_hash_changes_with_the_spec_and_only_for_the_changed_role(self) -> None:
        replicas: dict[Role, int | None] = {
            Role.API: 1,
            Role.RELAY: 1,
            Role.CONSUMER: 1,
            Role.MEMORY_WORKER: 1,
        }

        def hashes(spec: dict[str, Any]) -> dict[str, str]:
            return {
                f"{c['kind']}/{c['metadata']['name']}": c["metadata"]["annotations"][ANNOTATION_APPLIED_HASH]
                for c in self._children(spec, replicas)
            }

        before = hashes(with_spec())
        after = hashes(with_spec(roles={"relay": {"nodeSelector": {"pool": "a"}}}))
        assert [key for key in before if before[key] != after[key]] == ["Deployment/demo-relay"]
