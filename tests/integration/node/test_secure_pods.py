"""Issue 14 on real pods: a runtime whose Kafka is SASL_SSL (SCRAM-SHA-512, the CA from a
ConfigMap, hostname checked) and whose PostgreSQL role only accepts TLS (verify-full, a client
certificate), every role a pod under ``restricted`` reading the mounted files as uid 10001.

The operator (in-process) reads the same Secrets for its migration Job and probes; the pods reach
the stack's secured listeners through the node (certificates name ``10.88.0.2``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from smartflow_devstack import kafka, kube, postgres
from tests.integration.autoscaling.operator_harness import Cluster, eventually

from .conftest import runtime_on_node
from .load import api_base_url, effects, send_messages
from .pods import kubectl, ready_pods

NAME = "secure"
MESSAGES = 150


@pytest.fixture(scope="module")
def tls_database(postgres_server: postgres.PostgresInfo) -> tuple[str, str]:
    """An empty database owned by the TLS-only role: (admin DSN from the host, TLS DSN from a pod)."""
    name = f"node_secure_{uuid.uuid4().hex[:6]}"

    async def create() -> None:
        conn = await asyncpg.connect(postgres_server.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" OWNER {postgres.TLS_USER}')
        finally:
            await conn.close()

    asyncio.run(create())
    return postgres.dsn_for(postgres_server.port, name), postgres_server.pod_tls_dsn(name)


@pytest.fixture(scope="module")
def runtime(
    node_cluster: Cluster,
    node_images: dict[str, str],
    tls_database: tuple[str, str],
    kafka_server: kafka.KafkaInfo,
    postgres_server: postgres.PostgresInfo,
    kube_server: kube.KubeInfo,
) -> Iterator[Cluster]:
    cluster = node_cluster
    user = f"node-{uuid.uuid4().hex[:6]}"
    kafka.set_scram_password(kafka_server, user, "pod-scram-secret")
    cluster.create_secret("kafka-login", {"username": user, "password": "pod-scram-secret"})
    cluster.core.create_namespaced_config_map(
        cluster.namespace,
        {"metadata": {"name": "kafka-ca"}, "data": {"ca.crt": Path(kafka_server.ca_file).read_text()}},
    )
    cluster.create_secret(
        "db-tls",
        {
            "ca.crt": Path(postgres_server.ca_file).read_text(),
            "tls.crt": Path(postgres_server.client_cert_file).read_text(),
            "tls.key": Path(postgres_server.client_key_file).read_text(),
        },
    )

    def secured(body: dict[str, Any]) -> None:
        spec = body["spec"]
        spec["kafka"]["tls"] = {"caRef": {"kind": "ConfigMap", "name": "kafka-ca", "key": "ca.crt"}}
        spec["kafka"]["sasl"] = {
            "mechanism": "SCRAM-SHA-512",
            "usernameRef": {"name": "kafka-login", "key": "username"},
            "passwordRef": {"name": "kafka-login", "key": "password"},
        }
        spec["database"]["tls"] = {
            "mode": "verify-full",
            "caRef": {"name": "db-tls", "key": "ca.crt"},
            "clientCertificateRef": {"name": "db-tls", "key": "tls.crt"},
            "clientKeyRef": {"name": "db-tls", "key": "tls.key"},
        }

    with runtime_on_node(
        cluster,
        name=NAME,
        image=node_images["runtime"],
        pod_dsn=tls_database[1],
        bootstrap=kafka_server.pod_sasl_ssl_bootstrap_servers,
        kubeconfig=kube_server.kubeconfig,
        ready={"api": 1, "relay": 1, "consumer": 1, "memory-worker": 1},
        customize=secured,
    ) as ready:
        yield ready


def test_roles_on_sasl_ssl_and_tls_postgres_deliver_each_event_once(
    runtime: Cluster, tls_database: tuple[str, str], kube_server: kube.KubeInfo
) -> None:
    # The pods really use TLS to PostgreSQL: every backend of the TLS role is encrypted.
    async def tls_backends() -> list[bool]:
        conn = await asyncpg.connect(tls_database[0])
        try:
            rows = await conn.fetch(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = $1",
                postgres.TLS_USER,
            )
        finally:
            await conn.close()
        return [row["ssl"] for row in rows]

    backends = asyncio.run(tls_backends())
    assert backends and all(backends), backends

    user = f"secure-{uuid.uuid4().hex[:6]}"
    accepted = asyncio.run(
        send_messages(api_base_url(runtime.core, runtime.namespace, NAME), MESSAGES, user=user)
    )
    assert accepted == MESSAGES

    def drained() -> dict[str, int] | None:
        counts = asyncio.run(effects(tls_database[0], user))
        return counts if counts["unfinished"] == 0 and counts["token_adjustments"] >= MESSAGES else None

    counts = eventually(drained, timeout=180, what="every event consumed over SASL_SSL", interval=2)
    assert counts == {"messages": MESSAGES, "token_adjustments": MESSAGES, "unfinished": 0, "dead": 0}

    # The mounted key is readable by the container's user and by nobody else but its group.
    relay = ready_pods(runtime.core, runtime.namespace, NAME, "relay")[0]
    key = "/etc/smartflow/tls/database/tls.key"
    listing = kubectl(
        kube_server.kubeconfig, "-n", runtime.namespace, "exec", relay.metadata.name, "--",
        "sh", "-c", f"id -u; stat -L -c '%a' {key}; head -c 27 {key}",
    )  # fmt: skip
    uid, mode, head = listing.stdout.split("\n")[:3]
    assert (uid, mode, head) == ("10001", "440", "-----BEGIN PRIVATE KEY-----")
