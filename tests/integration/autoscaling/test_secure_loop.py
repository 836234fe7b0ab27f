"""The autoscaler of a runtime on SASL_SSL Kafka and TLS-only PostgreSQL: the operator (in-process,
real apiserver) reads the password and the CAs from the runtime's Secret and ConfigMap, measures
both lags over TLS, scales both roles; a wrong password in the Secret becomes a typed reason in
the consumer's condition while the replicas hold; the right one again, and it measures again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from smartflow_devstack import kafka, postgres

from .conftest import create_topic, insert_events, produce
from .operator_harness import Cluster, eventually, fast_autoscaling, running_operator, runtime_body

pytestmark = pytest.mark.timeout(240)

NAME = "secure"
RELAY, CONSUMER = f"{NAME}-relay", f"{NAME}-consumer"


def _pem(path: str) -> str:
    return Path(path).read_text()


async def test_both_lags_over_tls_scale_and_a_wrong_password_is_a_typed_reason(
    cluster: Cluster,
    kubeconfig: str,
    kafka_server: kafka.KafkaInfo,
    postgres_server: postgres.PostgresInfo,
    tls_outbox: str,
    names: Callable[[str], str],
) -> None:
    topic, group = names("outbox"), names("consumers")
    await create_topic(kafka_server.bootstrap_servers, topic, 4)
    ca = _pem(kafka_server.ca_file)
    cluster.create_secret("db", {"dsn": tls_outbox})  # no sslmode: spec.database.tls decides
    cluster.create_secret("kafka-user", {"username": kafka.SCRAM_USER, "password": kafka.SCRAM_PASSWORD})
    cluster.create_secret("stack-ca", {"ca.crt": ca})
    body = runtime_body(
        NAME,
        bootstrap_servers=kafka_server.sasl_ssl_bootstrap_servers,
        topic=topic,
        group=group,
        relay=fast_autoscaling(),
        consumer=fast_autoscaling(),
    )
    body["spec"]["kafka"]["tls"] = {"caRef": {"name": "stack-ca", "key": "ca.crt"}}
    body["spec"]["kafka"]["sasl"] = {
        "mechanism": "SCRAM-SHA-512",
        "usernameRef": {"name": "kafka-user", "key": "username"},
        "passwordRef": {"name": "kafka-user", "key": "password"},
    }
    body["spec"]["database"]["tls"] = {"mode": "verify-full", "caRef": {"name": "stack-ca", "key": "ca.crt"}}
    cluster.create_runtime(body)

    with running_operator(kubeconfig, cluster.namespace, config_check_seconds=1.0):
        eventually(lambda: cluster.replicas(RELAY) == 1, timeout=30, what="the roles are created")
        await insert_events(f"{tls_outbox}?sslmode=require", 35)
        await produce(kafka_server.bootstrap_servers, topic, {0: 10, 1: 10, 2: 10})
        eventually(lambda: cluster.replicas(RELAY) == 4, timeout=20, what="relay at ceil(35/10) over TLS")
        eventually(
            lambda: cluster.replicas(CONSUMER) == 3, timeout=20, what="consumer at ceil(30/10) over SASL_SSL"
        )

        def lags() -> tuple[object, object]:
            roles = cluster.runtime(NAME)["status"]["roles"]
            return roles["relay"].get("lag"), roles["consumer"].get("lag")

        eventually(lambda: lags() == (35, 30), timeout=10, what="both lags in the status")
        schema = cluster.runtime(NAME)["status"].get("schema") or {}
        assert schema.get("version", 0) >= 1  # read over TLS as the TLS-only role, too

        cluster.patch_secret("kafka-user", {"password": "wrong-password"})
        condition = eventually(
            lambda: (
                (c := cluster.condition(NAME, "ConsumerAutoscaling"))
                and "KafkaAuthenticationFailed" in c["message"]
                and c
            ),
            timeout=30,
            what="the condition names the refused login",
        )
        assert condition["status"] == "False" and "holding 3 replicas" in condition["message"]
        await asyncio.sleep(5)  # longer than the 3 s scale-down window: a failed login is not zero lag
        assert cluster.replicas(CONSUMER) == 3
        autoscaling = cluster.runtime(NAME)["status"]["roles"]["consumer"]["autoscaling"]
        assert autoscaling["probeError"]["reason"] == "KafkaAuthenticationFailed"
        assert cluster.events("KafkaAuthenticationFailed"), "a Warning Event names the failure"

        cluster.patch_secret("kafka-user", {"password": kafka.SCRAM_PASSWORD})
        eventually(
            lambda: "probeError" not in cluster.runtime(NAME)["status"]["roles"]["consumer"]["autoscaling"],
            timeout=30,
            what="the probe measures again with the restored password",
        )
