"""The env the operator builds is the env the runtime understands: the migration Job's container
env for a runtime on SASL_SSL (SCRAM-SHA-512) Kafka and verify-full PostgreSQL with a client
certificate, resolved the way the kubelet would (``secretKeyRef`` from the Secrets' values, the
mount paths to the stack's certificate files), runs the runtime's real ``migrate`` against the
stack's secured listeners, and the consumer role's Deployment env makes a ready consumer. No pod:
the node test with images would build them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from smartflow_devstack import kafka, postgres
from smartflow_devstack.process import free_port
from smartflow_operator.builders.deployment import build_deployment
from smartflow_operator.builders.migration_job import build_migration_job
from smartflow_operator.builders.security import DATABASE_TLS_DIR, KAFKA_TLS_DIR
from smartflow_operator.names import Role
from smartflow_operator.resource import SmartflowRuntime

pytestmark = pytest.mark.timeout(180)


def _resolved_env(
    container: dict[str, Any], secrets: dict[tuple[str, str], str], files: dict[str, str]
) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            value = entry["value"]
            env[entry["name"]] = files.get(value, value)
    return env


async def test_the_operators_env_migrates_and_runs_a_role_over_sasl_ssl_and_verify_full(
    kafka_server: kafka.KafkaInfo, postgres_server: postgres.PostgresInfo, tls_database: str, unique_name: str
) -> None:
    topic = f"contract-{unique_name}"
    spec = {
        "image": "ghcr.io/smartflow/runtime:0.1.0",
        "database": {
            "dsnSecretRef": {"name": "db", "key": "dsn"},
            "tls": {
                "mode": "verify-full",
                "caRef": {"kind": "ConfigMap", "name": "stack-ca", "key": "ca.crt"},
                "clientCertificateRef": {"name": "db-client", "key": "tls.crt"},
                "clientKeyRef": {"name": "db-client", "key": "tls.key"},
            },
        },
        "kafka": {
            "bootstrapServers": kafka_server.sasl_ssl_bootstrap_servers,
            "topic": topic,
            "tls": {"caRef": {"kind": "ConfigMap", "name": "stack-ca", "key": "ca.crt"}},
            "sasl": {
                "mechanism": "SCRAM-SHA-512",
                "usernameRef": {"name": "kafka-user", "key": "username"},
                "passwordRef": {"name": "kafka-user", "key": "password"},
            },
        },
    }
    runtime = SmartflowRuntime.from_object(
        {"metadata": {"name": "secure", "namespace": "shop"}, "spec": spec}
    )
    container = build_migration_job(runtime, config_hash="h").manifest["spec"]["template"]["spec"][
        "containers"
    ][0]
    secrets = {
        ("db", "dsn"): tls_database,
        ("kafka-user", "username"): kafka.SCRAM_USER,
        ("kafka-user", "password"): kafka.SCRAM_PASSWORD,
    }
    files = {  # what the projected volumes hold in the pod, here the stack's own files
        f"{KAFKA_TLS_DIR}/ca.crt": kafka_server.ca_file,
        f"{DATABASE_TLS_DIR}/ca.crt": postgres_server.ca_file,
        f"{DATABASE_TLS_DIR}/tls.crt": postgres_server.client_cert_file,
        f"{DATABASE_TLS_DIR}/tls.key": postgres_server.client_key_file,
    }
    env = _resolved_env(container, secrets, files)
    assert (
        env["SMARTFLOW_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        and env["SMARTFLOW_DATABASE_SSLMODE"] == "verify-full"
    )

    cli = Path(sys.executable).with_name("smartflow-runtime")
    result = await asyncio.to_thread(
        subprocess.run,
        [str(cli), *container["args"]],
        env={"PATH": os.environ["PATH"], **env, "SMARTFLOW_LOG_FORMAT": "text"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"migrate with the operator's env failed:\n{result.stdout}{result.stderr}"

    admin = await asyncpg.connect(postgres.dsn_for(postgres_server.port, tls_database.rsplit("/", 1)[1]))
    try:
        assert await admin.fetchval("SELECT max(version) FROM schema_migrations") >= 1
        shards = await admin.fetchval("SELECT count(*) FROM outbox_shards")
        assert shards == runtime.spec.migrations.outbox_shards
        # It came over TLS as the TLS-only role (the only way that role can log in).
        assert await admin.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'outbox_events'") == (
            postgres.TLS_USER
        )
    finally:
        await admin.close()
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_server.bootstrap_servers)
    await client.start()
    try:
        assert topic in await client.list_topics()  # created over SASL_SSL by migrate
    finally:
        await client.close()

    # The consumer role from its Deployment's env: ready (database, schema, Kafka, group) over TLS.
    deployment = build_deployment(runtime, Role.CONSUMER, replicas=1, config_hash="h")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    role_env = {**_resolved_env(container, secrets, files), "SMARTFLOW_ADMIN_PORT": str(port)}
    role_env.update(SMARTFLOW_BIND_HOST="127.0.0.1", SMARTFLOW_LOG_FORMAT="text")
    process = _start([str(cli), *container["args"]], {"PATH": os.environ["PATH"], **role_env})
    try:
        ready = await asyncio.to_thread(_ready_within, f"http://127.0.0.1:{port}/readyz", 45.0)
        assert ready, f"the consumer never got ready with the operator's env: {ready}"
    finally:
        process.terminate()
        _, stderr = await asyncio.to_thread(process.communicate, timeout=40)
    assert process.returncode == 0, stderr[-2000:]


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _ready_within(url: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.5)
    return False
