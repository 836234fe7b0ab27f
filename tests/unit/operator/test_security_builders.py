"""Kafka TLS/SASL and PostgreSQL TLS in the pods (the env and mounts of docs/contracts.md), the
referenced Secrets in the config hash, the spec's contradictions, and the NetworkPolicy. Pure."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError

from smartflow_operator.builders.children import desired_children
from smartflow_operator.builders.deployment import build_deployment
from smartflow_operator.builders.migration_job import build_migration_job
from smartflow_operator.builders.network_policy import build_network_policy
from smartflow_operator.config_refs import SECRET_KEY_NOT_FOUND, config_hash, referenced_config
from smartflow_operator.errors import ConfigurationError
from smartflow_operator.names import Role
from smartflow_operator.resource import SmartflowRuntime
from smartflow_operator.spec import SmartflowRuntimeSpec

from .conftest import BASE_SPEC, make_runtime

SASL_SSL: dict[str, Any] = {
    **BASE_SPEC,
    "kafka": {
        "bootstrapServers": "kafka-0:9093",
        "tls": {
            "caRef": {"kind": "ConfigMap", "name": "kafka-ca", "key": "ca.crt"},
            "clientCertificateRef": {"name": "kafka-client", "key": "tls.crt"},
            "clientKeyRef": {"name": "kafka-client", "key": "tls.key"},
        },
        "sasl": {
            "mechanism": "SCRAM-SHA-512",
            "usernameRef": {"name": "kafka-user", "key": "username"},
            "passwordRef": {"name": "kafka-user", "key": "password"},
        },
    },
    "database": {
        "dsnSecretRef": {"name": "db", "key": "dsn"},
        "tls": {
            "mode": "verify-full",
            "caRef": {"name": "db-tls", "key": "ca.crt"},
            "clientCertificateRef": {"name": "db-tls", "key": "tls.crt"},
            "clientKeyRef": {"name": "db-tls", "key": "tls.key"},
        },
    },
}
FETCHED: dict[tuple[str, str], dict[str, str] | None] = {
    ("Secret", "db"): {"dsn": "ZHNu"},
    ("Secret", "db-tls"): {"ca.crt": "Q0E=", "tls.crt": "Q0VSVA==", "tls.key": "S0VZ"},
    ("ConfigMap", "kafka-ca"): {"ca.crt": "-----BEGIN CERTIFICATE-----"},
    ("Secret", "kafka-client"): {"tls.crt": "Y2VydA==", "tls.key": "a2V5"},
    ("Secret", "kafka-user"): {"username": "dXNlcg==", "password": "cHc="},
}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {entry["name"]: entry.get("value", entry.get("valueFrom")) for entry in container["env"]}


def _pod(deployment_or_job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = deployment_or_job["spec"]["template"]["spec"]
    return pod


def _spec(**kafka: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE_SPEC)
    spec["kafka"] = {**spec["kafka"], **kafka}
    return spec


class TestSecurityEnv:
    def test_sasl_ssl_and_database_tls_reach_every_role_and_the_migration_job(self) -> None:
        runtime = make_runtime(SASL_SSL)
        containers = [_pod(build_deployment(runtime, role, replicas=1, config_hash="h"))["containers"][0]
                      for role in runtime.spec.active_roles()]  # fmt: skip
        containers.append(_pod(build_migration_job(runtime, config_hash="h").manifest)["containers"][0])
        for container in containers:
            env = _env(container)
            assert env["SMARTFLOW_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
            assert env["SMARTFLOW_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
            assert env["SMARTFLOW_KAFKA_SASL_USERNAME"] == {
                "secretKeyRef": {"name": "kafka-user", "key": "username"}
            }
            assert env["SMARTFLOW_KAFKA_SASL_PASSWORD"] == {
                "secretKeyRef": {"name": "kafka-user", "key": "password"}
            }
            assert env["SMARTFLOW_KAFKA_SSL_CAFILE"] == "/etc/smartflow/tls/kafka/ca.crt"
            assert env["SMARTFLOW_KAFKA_SSL_CERTFILE"] == "/etc/smartflow/tls/kafka/tls.crt"
            assert env["SMARTFLOW_KAFKA_SSL_KEYFILE"] == "/etc/smartflow/tls/kafka/tls.key"
            assert env["SMARTFLOW_KAFKA_SSL_CHECK_HOSTNAME"] == "true"
            assert env["SMARTFLOW_DATABASE_SSLMODE"] == "verify-full"
            assert env["SMARTFLOW_DATABASE_SSLROOTCERT"] == "/etc/smartflow/tls/database/ca.crt"
            assert env["SMARTFLOW_DATABASE_SSLCERT"] == "/etc/smartflow/tls/database/tls.crt"
            assert env["SMARTFLOW_DATABASE_SSLKEY"] == "/etc/smartflow/tls/database/tls.key"
            assert "SMARTFLOW_KAFKA_ALLOW_PLAINTEXT_PASSWORD" not in env
            assert {"name": "kafka-tls", "mountPath": "/etc/smartflow/tls/kafka", "readOnly": True} in (
                container["volumeMounts"]
            )
            assert {"name": "database-tls", "mountPath": "/etc/smartflow/tls/database", "readOnly": True} in (
                container["volumeMounts"]
            )

    def test_no_secret_value_is_a_literal_in_the_pod_spec(self) -> None:
        runtime = make_runtime(SASL_SSL)
        text = json.dumps(build_deployment(runtime, Role.CONSUMER, replicas=1, config_hash="h"))
        for data in FETCHED.values():
            for value in (data or {}).values():
                assert value not in text

    def test_literal_username_and_protocols(self) -> None:
        sasl = {"mechanism": "SCRAM-SHA-256", "username": "app", "passwordRef": {"name": "k", "key": "pw"}}
        cases = {
            "PLAINTEXT": _spec(),
            "SSL": _spec(tls={}),
            "SASL_PLAINTEXT": _spec(sasl=sasl),
            "SASL_SSL": _spec(sasl=sasl, tls={"checkHostname": False}),
        }
        for protocol, spec in cases.items():
            env = _env(build_deployment(make_runtime(spec), Role.API, replicas=1, config_hash="h")["spec"][
                "template"]["spec"]["containers"][0])  # fmt: skip
            if protocol == "PLAINTEXT":
                assert not any(name.startswith("SMARTFLOW_KAFKA_S") for name in env)
                continue
            assert env["SMARTFLOW_KAFKA_SECURITY_PROTOCOL"] == protocol
            if protocol.startswith("SASL"):
                assert env["SMARTFLOW_KAFKA_SASL_USERNAME"] == "app"
            assert "SMARTFLOW_KAFKA_SSL_CAFILE" not in env  # no caRef: the system trust store
        ssl_env = _env(_pod(build_deployment(make_runtime(cases["SASL_SSL"]), Role.API, replicas=1,
                                             config_hash="h"))["containers"][0])  # fmt: skip
        assert ssl_env["SMARTFLOW_KAFKA_SSL_CHECK_HOSTNAME"] == "false"

    def test_plain_over_plaintext_carries_the_opt_in(self) -> None:
        sasl = {"mechanism": "PLAIN", "username": "app", "passwordRef": {"name": "k", "key": "pw"}}
        runtime = make_runtime(_spec(sasl=sasl, allowPlaintextPassword=True))
        env = _env(_pod(build_deployment(runtime, Role.RELAY, replicas=1, config_hash="h"))["containers"][0])
        assert env["SMARTFLOW_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert env["SMARTFLOW_KAFKA_ALLOW_PLAINTEXT_PASSWORD"] == "true"

    def test_a_spec_without_security_builds_what_it_built_before(self) -> None:
        # No new env, volume or mount: existing runtimes do not roll on an operator upgrade.
        pod = _pod(build_deployment(make_runtime(), Role.API, replicas=1, config_hash="h"))
        assert [volume["name"] for volume in pod["volumes"]] == ["tmp"]
        assert pod["containers"][0]["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
        assert not any(
            "SSL" in entry["name"] or "SASL" in entry["name"] for entry in pod["containers"][0]["env"]
        )


class TestSecurityVolumes:
    def test_projected_read_only_files_readable_by_the_runtime_user_only(self) -> None:
        runtime = make_runtime(SASL_SSL)
        for manifest in (
            build_deployment(runtime, Role.CONSUMER, replicas=1, config_hash="h"),
            build_migration_job(runtime, config_hash="h").manifest,
        ):
            pod = _pod(manifest)
            volumes = {volume["name"]: volume for volume in pod["volumes"]}
            assert volumes["kafka-tls"]["projected"] == {
                "defaultMode": 0o440,
                "sources": [
                    {"configMap": {"name": "kafka-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"secret": {"name": "kafka-client", "items": [{"key": "tls.crt", "path": "tls.crt"}]}},
                    {"secret": {"name": "kafka-client", "items": [{"key": "tls.key", "path": "tls.key"}]}},
                ],
            }
            assert [source["secret"]["items"][0]["path"] for source in volumes["database-tls"]["projected"][
                "sources"]] == ["ca.crt", "tls.crt", "tls.key"]  # fmt: skip
            # The files belong to group 10001 (fsGroup), which the runtime runs as; restricted is kept.
            assert pod["securityContext"]["fsGroup"] == 10001
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["containers"][0]["securityContext"]["runAsGroup"] == 10001

    def test_only_a_ca_gives_only_the_ca_file(self) -> None:
        runtime = make_runtime(_spec(tls={"caRef": {"name": "ca", "key": "bundle.pem"}}))
        pod = _pod(build_deployment(runtime, Role.API, replicas=1, config_hash="h"))
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert volumes["kafka-tls"]["projected"]["sources"] == [
            {"secret": {"name": "ca", "items": [{"key": "bundle.pem", "path": "ca.crt"}]}}
        ]
        env = _env(pod["containers"][0])
        assert "SMARTFLOW_KAFKA_SSL_CERTFILE" not in env and "database-tls" not in volumes


class TestSecurityConfigHash:
    def test_every_tls_and_sasl_key_is_hashed_for_every_role_and_the_job(self) -> None:
        spec = make_runtime(SASL_SSL).spec
        for role in (Role.API, Role.CONSUMER, None):
            fields = {ref.field for ref in referenced_config(spec, role)}
            assert {
                "spec.kafka.tls.caRef",
                "spec.kafka.tls.clientCertificateRef",
                "spec.kafka.tls.clientKeyRef",
                "spec.kafka.sasl.usernameRef",
                "spec.kafka.sasl.passwordRef",
                "spec.database.tls.caRef",
                "spec.database.tls.clientCertificateRef",
                "spec.database.tls.clientKeyRef",
            } <= fields

    def test_a_rotated_password_or_certificate_changes_the_hash(self) -> None:
        refs = referenced_config(make_runtime(SASL_SSL).spec, Role.RELAY)
        before = config_hash(refs, FETCHED, namespace="team")
        for kind_name, key in [
            (("Secret", "kafka-user"), "password"),
            (("ConfigMap", "kafka-ca"), "ca.crt"),
            (("Secret", "db-tls"), "tls.key"),
        ]:
            rotated = copy.deepcopy(FETCHED)
            rotated[kind_name] = {**(rotated[kind_name] or {}), key: "bmV3"}
            assert config_hash(refs, rotated, namespace="team") != before, kind_name

    def test_a_missing_key_names_the_field(self) -> None:
        refs = referenced_config(make_runtime(SASL_SSL).spec, Role.API)
        fetched = {**FETCHED, ("Secret", "kafka-user"): {"username": "dXNlcg=="}}
        with pytest.raises(ConfigurationError) as raised:
            config_hash(refs, fetched, namespace="team")
        assert raised.value.reason == SECRET_KEY_NOT_FOUND
        assert raised.value.message == (
            "Secret team/kafka-user has no key 'password' (from spec.kafka.sasl.passwordRef)"
        )

    def test_a_missing_config_map_names_the_field(self) -> None:
        refs = referenced_config(make_runtime(SASL_SSL).spec, None)
        with pytest.raises(ConfigurationError) as raised:
            config_hash(refs, {**FETCHED, ("ConfigMap", "kafka-ca"): None}, namespace="team")
        assert raised.value.message == "ConfigMap team/kafka-ca (from spec.kafka.tls.caRef) does not exist"


class TestSecuritySpec:
    @pytest.mark.parametrize(
        ("kafka", "message"),
        [
            ({"tls": {"clientKeyRef": {"name": "k", "key": "tls.key"}}}, "and clientKeyRef go together"),
            ({"tls": {"enabled": False, "caRef": {"name": "c", "key": "ca"}}}, "need enabled: true"),
            ({"sasl": {"mechanism": "PLAIN", "username": "u", "passwordRef": {"name": "k", "key": "p"}}},
             "PLAIN without tls would send the password in clear text"),
            ({"sasl": {"mechanism": "SCRAM-SHA-512", "passwordRef": {"name": "k", "key": "p"}}},
             "set exactly one of username and usernameRef"),
        ],
        ids=["key-without-cert", "refs-with-tls-off", "plain-cleartext", "no-username"],
    )  # fmt: skip
    def test_contradictions_are_refused_by_the_models_too(self, kafka: dict[str, Any], message: str) -> None:
        with pytest.raises(ValidationError, match=message):
            SmartflowRuntimeSpec.model_validate(_spec(**kafka))

    def test_database_key_without_certificate_is_refused(self) -> None:
        spec = copy.deepcopy(BASE_SPEC)
        spec["database"]["tls"] = {"clientKeyRef": {"name": "k", "key": "tls.key"}}
        with pytest.raises(ValidationError, match="go together"):
            SmartflowRuntimeSpec.model_validate(spec)

    def test_scram_without_tls_is_allowed(self) -> None:
        sasl = {"mechanism": "SCRAM-SHA-256", "username": "u", "passwordRef": {"name": "k", "key": "p"}}
        assert (
            SmartflowRuntimeSpec.model_validate(_spec(sasl=sasl)).kafka.security_protocol()
            == "SASL_PLAINTEXT"
        )


def _runtime_with_policy(policy: dict[str, Any]) -> SmartflowRuntime:
    return make_runtime({**BASE_SPEC, "networkPolicy": policy})


class TestNetworkPolicy:
    def test_api_port_from_named_peers_and_admin_port_from_monitoring_only(self) -> None:
        runtime = _runtime_with_policy(
            {
                "enabled": True,
                "apiFrom": [{"podSelector": {"matchLabels": {"app": "frontend"}}}],
                "monitoringFrom": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
                ],
            }
        )
        policy = build_network_policy(runtime)
        assert policy["metadata"]["name"] == "demo"
        assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        assert policy["spec"] == {
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/name": "smartflow", "app.kubernetes.io/instance": "demo"}
            },
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}],
                    "ports": [{"protocol": "TCP", "port": "http"}],
                },
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
                    ],
                    "ports": [{"protocol": "TCP", "port": "admin"}],
                },
            ],
        }

    def test_no_peers_admit_nothing_rather_than_everything(self) -> None:
        policy = build_network_policy(_runtime_with_policy({"enabled": True}))
        assert policy["spec"]["ingress"] == []  # an empty `from` would admit every source

    def test_only_when_enabled(self) -> None:
        def kinds(policy: dict[str, Any]) -> list[str]:
            children = desired_children(
                _runtime_with_policy(policy),
                config_hashes=dict.fromkeys(Role, "h"),
                replicas=dict.fromkeys(Role, 1),
            )
            return [child["kind"] for child in children]

        assert "NetworkPolicy" not in kinds({})
        assert kinds({"enabled": True}).count("NetworkPolicy") == 1

    def test_a_peer_must_select_something(self) -> None:
        with pytest.raises(ValidationError, match="set podSelector, namespaceSelector or ipBlock"):
            SmartflowRuntimeSpec.model_validate({**BASE_SPEC, "networkPolicy": {"apiFrom": [{}]}})
