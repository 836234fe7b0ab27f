"""Kafka TLS/SASL, PostgreSQL TLS and the NetworkPolicy against the real kube-apiserver.

Contradictions are refused at admission (CEL) naming the field; a missing key of a referenced
Secret is Degraded naming the field and changes nothing; the Deployments and the migration Job the
apiserver accepts (in a namespace enforcing `restricted`) carry the contract's env and mounts; a
rotated password rolls the pods; the NetworkPolicy comes and goes with ``spec.networkPolicy``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from kubernetes import client

from smartflow_operator.errors import ConfigurationError
from smartflow_operator.kube import KubeClient
from smartflow_operator.names import ANNOTATION_CONFIG_HASH
from smartflow_operator.reconcile import reconcile

from .conftest import EXAMPLES, Kubectl, children, condition, settled

SECRETS = """
apiVersion: v1
kind: Secret
metadata: {name: smartflow-database}
stringData: {dsn: "postgresql://smartflow:smartflow@127.0.0.1:9/smartflow"}
---
apiVersion: v1
kind: Secret
metadata: {name: smartflow-kafka}
stringData: {username: smartflow, password: first}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: kafka-ca}
data: {ca.crt: "-----BEGIN CERTIFICATE-----"}
---
apiVersion: v1
kind: Secret
metadata: {name: kafka-client}
type: kubernetes.io/tls
stringData: {tls.crt: cert, tls.key: key}
"""


def _runtime(kafka: dict[str, Any], *, database: dict[str, Any] | None = None, **spec: Any) -> str:
    body = {
        "apiVersion": "smartflow.io/v1alpha1",
        "kind": "SmartflowRuntime",
        "metadata": {"name": "secure"},
        "spec": {
            "image": "ghcr.io/smartflow/runtime:0.1.0",
            "database": {"dsnSecretRef": {"name": "smartflow-database", "key": "dsn"}, **(database or {})},
            "kafka": {"bootstrapServers": "kafka:9093", **kafka},
            "migrations": {"enabled": False},
            **spec,
        },
    }
    return json.dumps(body)


SASL_SSL = {
    "tls": {
        "caRef": {"kind": "ConfigMap", "name": "kafka-ca", "key": "ca.crt"},
        "clientCertificateRef": {"name": "kafka-client", "key": "tls.crt"},
        "clientKeyRef": {"name": "kafka-client", "key": "tls.key"},
    },
    "sasl": {
        "mechanism": "SCRAM-SHA-512",
        "usernameRef": {"name": "smartflow-kafka", "key": "username"},
        "passwordRef": {"name": "smartflow-kafka", "key": "password"},
    },
}
PASSWORD = {"name": "k", "key": "password"}


@pytest.mark.parametrize(
    ("kafka", "database", "expected"),
    [
        (
            {"tls": {"clientKeyRef": {"name": "c", "key": "tls.key"}}},
            None,
            ["spec.kafka.tls", "clientCertificateRef and clientKeyRef go together"],
        ),
        (
            {"sasl": {"mechanism": "PLAIN", "username": "u", "passwordRef": PASSWORD}},
            None,
            ["spec.kafka", "PLAIN without tls would send the password in clear text"],
        ),
        (
            {"sasl": {"mechanism": "PLAIN", "username": "u", "passwordRef": PASSWORD},
             "tls": {"enabled": False}},
            None,
            ["spec.kafka", "PLAIN without tls would send the password in clear text"],
        ),
        (
            {"sasl": {"mechanism": "SCRAM-SHA-512", "username": "u", "usernameRef": PASSWORD,
                      "passwordRef": PASSWORD}},
            None,
            ["spec.kafka.sasl", "set exactly one of username and usernameRef"],
        ),
        (
            {"sasl": {"mechanism": "SCRAM-SHA-1", "username": "u", "passwordRef": PASSWORD}},
            None,
            ["spec.kafka.sasl.mechanism", 'Unsupported value: "SCRAM-SHA-1"'],
        ),
        ({"sasl": {"mechanism": "PLAIN", "username": "u"}}, None,
         ["spec.kafka.sasl.passwordRef", "Required"]),
        (
            {"tls": {"enabled": False, "caRef": {"name": "c", "key": "ca.crt"}}},
            None,
            ["spec.kafka.tls", "caRef, clientCertificateRef and clientKeyRef need enabled: true"],
        ),
        (
            {},
            {"tls": {"mode": "verify-full", "clientCertificateRef": {"name": "c", "key": "tls.crt"}}},
            ["spec.database.tls", "clientCertificateRef and clientKeyRef go together"],
        ),
        ({}, {"tls": {"mode": "prefer"}}, ["spec.database.tls.mode", 'Unsupported value: "prefer"']),
    ],
    ids=[
        "kafka-key-without-cert", "plain-without-tls", "plain-with-tls-off", "two-usernames",
        "unknown-mechanism", "no-password", "refs-with-tls-off", "db-cert-without-key", "db-mode-prefer",
    ],
)  # fmt: skip
def test_admission_refuses_contradictions_naming_the_field(
    kubectl: Kubectl,
    namespace: str,
    kafka: dict[str, Any],
    database: dict[str, Any] | None,
    expected: list[str],
) -> None:
    manifest = _runtime(kafka, database=database)
    result = kubectl("-n", namespace, "apply", "-f", "-", stdin=manifest, check=False)
    assert result.returncode != 0, result.stdout
    for fragment in expected:
        assert fragment in result.stderr, result.stderr


def test_admission_accepts_plain_over_plaintext_only_with_the_opt_in_and_a_peerless_rule_never(
    kubectl: Kubectl, namespace: str
) -> None:
    sasl = {"mechanism": "PLAIN", "username": "u", "passwordRef": PASSWORD}
    kubectl.apply(namespace, _runtime({"sasl": sasl, "allowPlaintextPassword": True}))
    kubectl.apply(namespace, _runtime({"sasl": sasl, "tls": {}}))  # tls.enabled defaults to true: SASL_SSL
    stored = kubectl.json("-n", namespace, "get", "sfr", "secure")["spec"]["kafka"]
    assert stored["tls"] == {"enabled": True, "checkHostname": True}  # the CRD's defaults
    refused = kubectl(
        "-n", namespace, "apply", "-f", "-", check=False,
        stdin=_runtime({}, networkPolicy={"enabled": True, "apiFrom": [{}]}),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "spec.networkPolicy.apiFrom[0]" in refused.stderr
    assert "set podSelector, namespaceSelector or ipBlock" in refused.stderr


def _deployments(kubectl: Kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    return {key: obj for key, obj in children(kubectl, namespace).items() if key.startswith("Deployment/")}


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


async def test_sasl_ssl_runtime_reaches_every_role_and_a_rotated_password_rolls_them(
    kubectl: Kubectl, namespace: str, kube: KubeClient, admin_api: client.ApiClient
) -> None:
    kubectl.apply(namespace, SECRETS)
    kubectl.apply(namespace, _runtime(SASL_SSL))
    await reconcile(namespace, "secure", kube=kube)

    deployments = _deployments(kubectl, namespace)
    assert len(deployments) == 4
    # Pod Security enforces `restricted` on Pods: each role's pod, TLS volumes and all, is admitted.
    kubectl("-n", namespace, "create", "serviceaccount", "default", check=False)
    for key, deployment in deployments.items():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"probe-{key.split('/')[1]}"}}
        pod["spec"] = deployment["spec"]["template"]["spec"]
        admitted = kubectl("-n", namespace, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
        assert "Warning" not in admitted.stderr, admitted.stderr
    for key, deployment in deployments.items():
        env = _env(deployment)
        assert env["SMARTFLOW_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", key
        assert env["SMARTFLOW_KAFKA_SASL_PASSWORD"] == {
            "secretKeyRef": {"name": "smartflow-kafka", "key": "password"}
        }
        assert env["SMARTFLOW_KAFKA_SSL_KEYFILE"] == "/etc/smartflow/tls/kafka/tls.key"
        pod = deployment["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "kafka-tls")
        assert volume["projected"]["defaultMode"] == 0o440
        assert "first" not in json.dumps(deployment)  # the password is never in the pod spec
    hashes = {key: d["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH]
              for key, d in deployments.items()}  # fmt: skip

    # Once the deployment controller has caught up, a pass over the same state writes nothing.
    await settled(kubectl, namespace, "secure", kube=kube, api=admin_api)
    writes = kube.writes
    await reconcile(namespace, "secure", kube=kube)
    assert kube.writes == writes

    rotated = base64.b64encode(b"second").decode()
    kubectl(
        "-n", namespace, "patch", "secret", "smartflow-kafka", "-p", f'{{"data":{{"password":"{rotated}"}}}}'
    )
    await reconcile(namespace, "secure", kube=kube)
    after = {key: d["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH]
             for key, d in _deployments(kubectl, namespace).items()}  # fmt: skip
    assert set(after) == set(hashes)
    assert all(after[key] != hashes[key] for key in hashes), (hashes, after)


async def test_the_migration_job_gets_the_same_security(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    kubectl.apply(namespace, SECRETS)
    database = {
        "tls": {"mode": "verify-ca", "caRef": {"kind": "ConfigMap", "name": "kafka-ca", "key": "ca.crt"}}
    }
    body = json.loads(_runtime(SASL_SSL, database=database))
    body["spec"]["migrations"] = {"enabled": True}
    kubectl.apply(namespace, json.dumps(body))
    await reconcile(namespace, "secure", kube=kube)
    jobs = kubectl.json("-n", namespace, "get", "jobs")["items"]
    assert len(jobs) == 1  # accepted by the apiserver in a namespace enforcing `restricted`
    pod = jobs[0]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
    assert env["SMARTFLOW_KAFKA_SASL_USERNAME"] == {
        "secretKeyRef": {"name": "smartflow-kafka", "key": "username"}
    }
    assert env["SMARTFLOW_DATABASE_SSLMODE"] == "verify-ca"
    assert env["SMARTFLOW_DATABASE_SSLROOTCERT"] == "/etc/smartflow/tls/database/ca.crt"
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["database-tls"] == {
        "name": "database-tls", "mountPath": "/etc/smartflow/tls/database", "readOnly": True
    }  # fmt: skip


async def test_a_missing_password_key_is_degraded_naming_the_field(
    kubectl: Kubectl, namespace: str, kube: KubeClient, admin_api: client.ApiClient
) -> None:
    kubectl.apply(namespace, SECRETS)
    kubectl.apply(namespace, _runtime(SASL_SSL))
    await reconcile(namespace, "secure", kube=kube)
    await settled(kubectl, namespace, "secure", kube=kube, api=admin_api)  # the Deployment controller is done
    before = {key: obj["metadata"]["resourceVersion"] for key, obj in children(kubectl, namespace).items()}

    kubectl("-n", namespace, "patch", "secret", "smartflow-kafka", "--type=json",
            "-p", '[{"op":"remove","path":"/data/password"}]')  # fmt: skip
    with pytest.raises(ConfigurationError) as raised:
        await reconcile(namespace, "secure", kube=kube)
    assert raised.value.reason == "SecretKeyNotFound"
    degraded = condition(kubectl.json("-n", namespace, "get", "sfr", "secure"), "Degraded")
    assert degraded is not None and degraded["status"] == "True"
    assert degraded["message"] == (
        f"Secret {namespace}/smartflow-kafka has no key 'password' (from spec.kafka.sasl.passwordRef)"
    )
    after = {key: obj["metadata"]["resourceVersion"] for key, obj in children(kubectl, namespace).items()}
    assert after == before  # the running roles are left alone


async def test_a_missing_ca_config_map_is_degraded_naming_the_field(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    kubectl.apply(namespace, SECRETS)
    kubectl("-n", namespace, "delete", "configmap", "kafka-ca")
    kubectl.apply(namespace, _runtime(SASL_SSL))
    with pytest.raises(ConfigurationError) as raised:
        await reconcile(namespace, "secure", kube=kube)
    assert raised.value.reason == "ConfigMapNotFound"
    degraded = condition(kubectl.json("-n", namespace, "get", "sfr", "secure"), "Degraded")
    assert degraded is not None
    assert degraded["message"] == f"ConfigMap {namespace}/kafka-ca (from spec.kafka.tls.caRef) does not exist"
    assert _deployments(kubectl, namespace) == {}


async def test_a_dsn_sslmode_contradicting_the_spec_is_degraded_before_any_pod_would_crash(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    kubectl.apply(namespace, SECRETS)
    dsn = base64.b64encode(b"postgresql://smartflow:smartflow@127.0.0.1:9/smartflow?sslmode=require").decode()
    kubectl("-n", namespace, "patch", "secret", "smartflow-database", "-p", f'{{"data":{{"dsn":"{dsn}"}}}}')
    kubectl.apply(namespace, _runtime({}, database={"tls": {"mode": "verify-full"}}))
    with pytest.raises(ConfigurationError) as raised:
        await reconcile(namespace, "secure", kube=kube)
    assert raised.value.reason == "DatabaseTLSConflict"
    degraded = condition(kubectl.json("-n", namespace, "get", "sfr", "secure"), "Degraded")
    assert degraded is not None and degraded["message"].startswith(
        "spec.database.tls.mode: sets sslmode=verify-full, but the DSN in Secret"
    )
    assert _deployments(kubectl, namespace) == {}  # the runtime would refuse this config: nothing rolls


async def test_the_network_policy_follows_the_spec_and_is_pruned_when_disabled(
    kubectl: Kubectl, namespace: str, kube: KubeClient, admin_api: client.ApiClient
) -> None:
    kubectl.apply(namespace, SECRETS)
    policy = {
        "enabled": True,
        "apiFrom": [{"podSelector": {"matchLabels": {"app": "frontend"}}}],
        "monitoringFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
    }
    kubectl.apply(namespace, _runtime({}, networkPolicy=policy))
    await reconcile(namespace, "secure", kube=kube)
    found = kubectl.json("-n", namespace, "get", "networkpolicies")["items"]
    assert [p["metadata"]["name"] for p in found] == ["secure"]
    spec = found[0]["spec"]
    assert spec["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "smartflow", "app.kubernetes.io/instance": "secure"
    }  # fmt: skip
    assert spec["policyTypes"] == ["Ingress"]
    assert [(rule["ports"], rule["from"]) for rule in spec["ingress"]] == [
        ([{"protocol": "TCP", "port": "http"}], policy["apiFrom"]),
        ([{"protocol": "TCP", "port": "admin"}], policy["monitoringFrom"]),
    ]
    assert found[0]["metadata"]["ownerReferences"][0]["name"] == "secure"

    await settled(kubectl, namespace, "secure", kube=kube, api=admin_api)
    writes = kube.writes
    await reconcile(namespace, "secure", kube=kube)
    assert kube.writes == writes  # an unchanged policy is not applied again

    kubectl(
        "-n",
        namespace,
        "patch",
        "sfr",
        "secure",
        "--type=merge",
        "-p",
        '{"spec":{"networkPolicy":{"enabled":false}}}',
    )
    result = await reconcile(namespace, "secure", kube=kube)
    assert result.pruned == ["NetworkPolicy/secure"]
    assert kubectl.json("-n", namespace, "get", "networkpolicies")["items"] == []
    assert len(_deployments(kubectl, namespace)) == 4  # nothing else went with it


def test_every_example_applies_as_it_is(kubectl: Kubectl, namespace: str) -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        result = kubectl("-n", namespace, "apply", "--dry-run=server", "-f", str(path), check=False)
        assert result.returncode == 0, f"{path.name}: {result.stderr}"
        assert result.stdout.count("(server dry run)") == len(documents), result.stdout
