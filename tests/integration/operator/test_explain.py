"""`kubectl explain` teaches the API from the CRD's descriptions."""

from __future__ import annotations

import json

from .conftest import EXAMPLES, Kubectl


def test_explain_consumer_role_prints_descriptions(kubectl: Kubectl, crd: str) -> None:
    out = kubectl("explain", "smartflowruntime.spec.roles.consumer").stdout
    assert "The Kafka consumer group (mode split): runs the event handlers." in out
    assert "autoscaling" in out and "Scale this role from outbox lag" in out
    assert "replicas" in out and "Pod count." in out


def test_explain_autoscaling_bounds(kubectl: Kubectl, crd: str) -> None:
    out = kubectl("explain", "smartflowruntime.spec.roles.relay.autoscaling.maxReplicas").stdout
    assert "Upper bound." in out


def test_short_name(kubectl: Kubectl, crd: str) -> None:
    resources = kubectl("api-resources", "--api-group=smartflow.io").stdout
    assert "sfr" in resources and "SmartflowRuntime" in resources


def test_explain_migrations_teaches_the_opt_out(kubectl: Kubectl, crd: str) -> None:
    out = kubectl("explain", "smartflowruntime.spec.migrations").stdout
    assert "The schema migration Job run before the roles roll" in out
    for field in (
        "enabled",
        "outboxShards",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ):
        assert field in out, field
    enabled = " ".join(kubectl("explain", "smartflowruntime.spec.migrations.enabled").stdout.split())
    assert "never create the Job (migrate in your own pipeline)" in enabled
    schema = kubectl("explain", "smartflowruntime.status.schema").stdout
    assert "migratedHash" in schema and "version" in schema


def test_kubectl_get_prints_mode_roles_lag_and_ready(kubectl: Kubectl, namespace: str) -> None:
    """The printer columns read, as ``kubectl get sfr`` prints them, from a status as the operator
    writes it."""
    kubectl.apply(namespace, EXAMPLES / "runtime-split.yaml")
    status = {
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "RolesNotReady",
                    "message": "relay 1/3 ready",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
            "roles": {
                "api": {"replicas": "2/2", "lag": None},
                # The autoscaler writes both: the number and how it reads (`800+` when capped).
                "relay": {"replicas": "1/3", "lag": 250, "lagReading": "250"},
                "consumer": {"replicas": "4/4", "lag": 1200},
                "memoryWorker": {"replicas": "1/1"},
            },
        }
    }
    kubectl(
        "-n",
        namespace,
        "patch",
        "sfr",
        "demo",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    lines = kubectl("-n", namespace, "get", "sfr", "demo").stdout.splitlines()
    printed = _columns(lines[0], lines[1])
    assert list(printed)[:11] == [
        "NAME", "MODE", "READY", "API", "RELAY", "CONSUMER", "MEMORY", "ALL", "SCHEMA", "RELAY-LAG",
        "CONSUMER-LAG",
    ]  # fmt: skip
    assert (printed["NAME"], printed["MODE"], printed["READY"]) == ("demo", "split", "False")
    assert (printed["API"], printed["RELAY"], printed["CONSUMER"], printed["MEMORY"]) == (
        "2/2",
        "1/3",
        "4/4",
        "1/1",
    )
    assert printed["ALL"] == ""  # no all role in split mode
    assert (printed["RELAY-LAG"], printed["CONSUMER-LAG"]) == ("250", "1200")


def _columns(header: str, row: str) -> dict[str, str]:
    """A ``kubectl get`` row cut at its header's column starts (empty cells print as blanks)."""
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = [*starts[1:], None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, bounds, strict=True)}


def test_explain_teaches_tls_sasl_and_the_network_policy(kubectl: Kubectl, crd: str) -> None:
    def explain(path: str) -> str:
        return " ".join(kubectl("explain", f"smartflowruntime.spec.{path}").stdout.split())

    assert "SASL authentication (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)" in explain("kafka.sasl")
    assert "never as a literal in the pod spec" in explain("kafka.sasl.passwordRef")
    assert "Mounted at /etc/smartflow/tls/kafka/tls.key" in explain("kafka.tls.clientKeyRef")
    assert "the image's system trust store" in explain("kafka.tls.caRef")
    assert "Secret (default) or ConfigMap" in explain("kafka.tls.caRef.kind")
    assert "password sent in clear text" in explain("kafka.allowPlaintextPassword")
    mode = explain("database.tls.mode")
    assert "verify-full (default)" in mode and "require" in mode and "verify-ca" in mode
    assert "Needs a CNI that enforces NetworkPolicy" in explain("networkPolicy.enabled")
    assert "Who may reach the api's HTTP port" in explain("networkPolicy.apiFrom")
