"""The migration Job builder: plain dicts, plain asserts."""

from __future__ import annotations

from typing import Any

from smartflow_operator.builders.deployment import build_deployment
from smartflow_operator.builders.migration_job import build_migration_job, migration_job_name
from smartflow_operator.names import Role

from .conftest import make_runtime, with_spec

OWNER = {
    "apiVersion": "smartflow.io/v1alpha1",
    "kind": "SmartflowRuntime",
    "name": "demo",
    "uid": "uid-1",
    "controller": True,
    "blockOwnerDeletion": True,
}


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {entry["name"]: entry.get("value", entry.get("valueFrom")) for entry in container["env"]}


class TestBuildMigrationJob:
    def test_runs_migrate_from_the_runtime_image_owned_by_the_runtime(self) -> None:
        job = build_migration_job(make_runtime(), config_hash="c1")
        manifest = job.manifest
        assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
        assert job.name == f"demo-migrate-{job.inputs_hash}" == manifest["metadata"]["name"]
        assert len(job.inputs_hash) == 8
        assert manifest["metadata"]["namespace"] == "team"
        assert manifest["metadata"]["ownerReferences"] == [OWNER]
        assert manifest["metadata"]["annotations"]["smartflow.io/migration-hash"] == job.inputs_hash
        (container,) = _pod(manifest)["containers"]
        assert container["image"] == "registry.example.com/smartflow/runtime:1.4.2"
        assert container["args"] == ["migrate", "--shards", "32"]
        sharded = build_migration_job(
            make_runtime(with_spec(migrations={"outboxShards": 4})), config_hash="c1"
        )
        assert sharded.manifest["spec"]["template"]["spec"]["containers"][0]["args"] == [
            "migrate",
            "--shards",
            "4",
        ]
        assert container["name"] == "migrate"
        assert _pod(manifest)["restartPolicy"] == "Never"

    def test_labels_follow_the_contract_on_job_and_pod(self) -> None:
        manifest = build_migration_job(make_runtime(), config_hash="c1").manifest
        expected = {
            "app.kubernetes.io/name": "smartflow",
            "app.kubernetes.io/instance": "demo",
            "app.kubernetes.io/managed-by": "smartflow-operator",
            "app.kubernetes.io/component": "migration",
            "app.kubernetes.io/version": "1.4.2",
        }
        assert manifest["metadata"]["labels"] == expected
        assert manifest["spec"]["template"]["metadata"]["labels"] == expected

    def test_limits_come_from_spec_migrations_with_defaults(self) -> None:
        default = build_migration_job(make_runtime(), config_hash="c1").manifest["spec"]
        assert (default["backoffLimit"], default["activeDeadlineSeconds"]) == (2, 600)
        assert default["ttlSecondsAfterFinished"] == 86400
        assert (default["completions"], default["parallelism"]) == (1, 1)
        spec = with_spec(
            migrations={"backoffLimit": 0, "activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 5}
        )
        custom = build_migration_job(make_runtime(spec), config_hash="c1").manifest["spec"]
        assert (
            custom["backoffLimit"],
            custom["activeDeadlineSeconds"],
            custom["ttlSecondsAfterFinished"],
        ) == (
            0,
            60,
            5,
        )

    def test_shares_env_secrets_and_security_with_the_role_pods(self) -> None:
        spec = with_spec(
            env=[{"name": "SMARTFLOW_KAFKA_TOPIC_PARTITIONS", "value": "24"}],
            envFrom=[{"secretRef": {"name": "kafka-tls"}}],
            imagePullSecrets=[{"name": "registry"}],
            roles={"relay": {"env": [{"name": "ONLY_RELAY", "value": "1"}]}},
        )
        runtime = make_runtime(spec)
        job_pod = _pod(build_migration_job(runtime, config_hash="c1").manifest)
        role_pod = build_deployment(runtime, Role.RELAY, replicas=1, config_hash="c1")["spec"]["template"][
            "spec"
        ]
        (container,) = job_pod["containers"]
        env = _env(container)
        assert env["SMARTFLOW_DATABASE_DSN"] == {"secretKeyRef": {"name": "db", "key": "dsn"}}
        # migrate also ensures the topic: it gets the brokers, the topic and the partition count.
        assert env["SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS"] == "kafka-0:9092,kafka-1:9092"
        assert env["SMARTFLOW_KAFKA_TOPIC"] == "smartflow.agent.outbox"
        assert env["SMARTFLOW_KAFKA_TOPIC_PARTITIONS"] == "24"
        assert "ONLY_RELAY" not in env and "SMARTFLOW_HTTP_PORT" not in env
        assert container["envFrom"] == [{"secretRef": {"name": "kafka-tls", "optional": False}}]
        assert container["securityContext"] == role_pod["containers"][0]["securityContext"]
        for key in ("securityContext", "automountServiceAccountToken", "enableServiceLinks", "volumes"):
            assert job_pod[key] == role_pod[key], key
        assert job_pod["imagePullSecrets"] == [{"name": "registry"}]
        assert job_pod["automountServiceAccountToken"] is False
        assert container["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}

    def test_resources_and_placement_are_the_api_roles_or_alls_in_mode_all(self) -> None:
        placement = {
            "resources": {"requests": {"cpu": "300m"}, "limits": {"memory": "1Gi"}},
            "nodeSelector": {"pool": "db-clients"},
            "tolerations": [{"key": "dedicated", "operator": "Exists"}],
        }
        split = make_runtime(with_spec(roles={"api": placement}))
        pod = _pod(build_migration_job(split, config_hash="c1").manifest)
        assert pod["containers"][0]["resources"] == placement["resources"]
        assert pod["nodeSelector"] == {"pool": "db-clients"}
        assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
        assert "topologySpreadConstraints" not in pod  # one pod: nothing to spread
        everything = make_runtime(with_spec(mode="all", roles={"all": placement}))
        pod = _pod(build_migration_job(everything, config_hash="c1").manifest)
        assert pod["containers"][0]["resources"] == placement["resources"]

    def test_the_hash_moves_with_every_migration_input_and_only_those(self) -> None:
        def name_for(spec: dict[str, Any], config_hash: str = "c1") -> str:
            return build_migration_job(make_runtime(spec), config_hash=config_hash).name

        base = name_for(with_spec())
        assert name_for(with_spec()) == base  # stable: a resync builds the same Job
        changed = {
            "image": name_for(with_spec(image="registry.example.com/smartflow/runtime:1.5.0")),
            "mode": name_for(with_spec(mode="all")),
            "env": name_for(with_spec(env=[{"name": "X", "value": "1"}])),
            "secret values": name_for(with_spec(), config_hash="c2"),
            "kafka": name_for(with_spec(kafka={"bootstrapServers": "other:9092"})),
            "backoff": name_for(with_spec(migrations={"backoffLimit": 5})),
            "api resources": name_for(with_spec(roles={"api": {"resources": {"limits": {"memory": "1Gi"}}}})),
        }
        for what, name in changed.items():
            assert name != base, what
        assert len(set(changed.values())) == len(changed)
        # Not migration inputs: another role's settings, replicas, the TTL of finished Jobs.
        assert (
            name_for(with_spec(roles={"relay": {"replicas": 7, "resources": {"limits": {"cpu": "2"}}}}))
            == base
        )
        assert name_for(with_spec(migrations={"ttlSecondsAfterFinished": 60})) == base

    def test_a_long_runtime_name_still_fits_a_label_value(self) -> None:
        name = migration_job_name("r" * 49, "0123abcd")
        assert len(name) == 63 and name.endswith("-migrate-0123abcd")
        assert migration_job_name("demo", "0123abcd") == "demo-migrate-0123abcd"
