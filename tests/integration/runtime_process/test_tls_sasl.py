"""Issue 14 against the real servers: every role and ``migrate`` over Kafka SASL_SSL (SCRAM-SHA-512,
PLAIN) or mutual TLS and a PostgreSQL user that pg_hba admits only over TLS, verified with
``verify-full``; refused passwords and certificates make a role unready with the reason, never
end it, and a fixed password makes it ready again without a restart."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from smartflow_devstack import kafka, pki, postgres
from smartflow_runtime.config import load_settings
from smartflow_runtime.security import load_client_security

from .conftest import RuntimeProcess, Spawner, base_env, run_cli, wait_for


def database_env(server: postgres.PostgresInfo, dsn: str) -> dict[str, str]:
    return {
        "database_dsn": dsn,
        "database_sslmode": "verify-full",
        "database_sslrootcert": server.ca_file,
        "database_sslcert": server.client_cert_file,
        "database_sslkey": server.client_key_file,
    }


def kafka_env(server: kafka.KafkaInfo, mode: str) -> dict[str, str]:
    if mode == "mtls":
        return {
            "kafka_bootstrap_servers": server.ssl_bootstrap_servers,
            "kafka_security_protocol": "SSL",
            "kafka_ssl_cafile": server.tls.ca_file,
            "kafka_ssl_certfile": server.tls.client_cert_file,
            "kafka_ssl_keyfile": server.tls.client_key_file,
        }
    user, password = (
        (kafka.PLAIN_USER, kafka.PLAIN_PASSWORD)
        if mode == "PLAIN"
        else (kafka.SCRAM_USER, kafka.SCRAM_PASSWORD)
    )
    return {
        "kafka_bootstrap_servers": server.sasl_ssl_bootstrap_servers,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": mode,
        "kafka_sasl_username": user,
        "kafka_sasl_password": password,
        "kafka_ssl_cafile": server.tls.ca_file,
    }


def secured_env(
    postgres_server: postgres.PostgresInfo, kafka_server: kafka.KafkaInfo, dsn: str, mode: str, suffix: str
) -> dict[str, str]:
    """A runtime's settings on the TLS-only database and the broker's ``mode`` listener."""
    return {
        **database_env(postgres_server, dsn),
        **kafka_env(kafka_server, mode),
        "kafka_topic": f"outbox-{suffix}",
        "kafka_consumer_group": f"group-{suffix}",
    }


async def connect_as_the_runtime(env: dict[str, str]) -> asyncpg.Connection:
    """A connection made exactly as the runtime makes it (its settings and security module)."""
    settings = load_settings({f"SMARTFLOW_{k.upper()}": v for k, v in env.items()})
    security = load_client_security(settings, kafka=False)
    return await asyncpg.connect(env["database_dsn"], **security.database)


async def readyz(process: RuntimeProcess) -> tuple[int, dict[str, Any]]:
    status, text = await process.get(f"{process.admin}/readyz")
    return status, json.loads(text)


async def wait_unready_with(process: RuntimeProcess, dependency: str, words: str, within: float = 45) -> str:
    """Wait until ``/readyz`` is 503 naming ``dependency`` with ``words`` in its reason; the reason."""
    seen: list[str] = []

    async def named() -> bool:
        assert process.proc.returncode is None, f"{process.role} exited:\n{process.log_text()[-3000:]}"
        try:
            status, body = await readyz(process)
        except (aiohttp.ClientError, OSError):
            return False
        reasons = [u["reason"] for u in body.get("unready", []) if u["dependency"] == dependency]
        seen[:] = reasons
        return status == 503 and any(words in r for r in reasons)

    await wait_for(
        named, what=f"{process.role} unready: {dependency} '{words}' (last: {seen})", within=within
    )
    return seen[0]


@pytest.mark.parametrize("mode", ["SCRAM-SHA-512", "PLAIN", "mtls"])
async def test_events_have_exactly_one_effect_over_secured_kafka_and_tls_postgres(
    mode: str,
    postgres_server: postgres.PostgresInfo,
    kafka_server: kafka.KafkaInfo,
    tls_database: str,
    unique_name: str,
    spawn_runtime: Spawner,
) -> None:
    env = secured_env(postgres_server, kafka_server, tls_database, mode, unique_name)
    code, out, err = await run_cli(
        "migrate", "--shards", "8", "--topic-partitions", "3", env=base_env(**env), within=90
    )
    assert code == 0, err
    assert f"kafka topic outbox-{unique_name}: created with 3 partitions" in out

    api = await spawn_runtime("api", **env)
    relay = await spawn_runtime("relay", **env)
    consumer = await spawn_runtime("consumer", **env)
    messages = 6
    async with aiohttp.ClientSession() as session:
        for i in range(messages):
            async with session.post(
                f"{api.http}/v1/conversations/c1/messages",
                json={"user_id": "u1", "content": f"message {i}: I prefer morning meetings."},
            ) as response:
                assert response.status == 202, await response.text()

    conn = await connect_as_the_runtime(env)
    try:

        async def all_consumed() -> bool:
            counts = dict(await conn.fetch("SELECT status, count(*) FROM outbox_events GROUP BY status"))
            return counts == {"consumed": 3 * messages}

        await wait_for(all_consumed, what="every event consumed", within=60)
        usage = await conn.fetchrow("SELECT tokens, adjustments FROM token_usage WHERE user_id = 'u1'")
        assert usage["adjustments"] == messages  # one adjustment per event: a duplicate would show
        assert await conn.fetchval("SELECT count(*) FROM chat_messages") == messages
        # The runtime's sessions really are TLS (the role is hostssl-only anyway) and show the client cert.
        sessions = await conn.fetch(
            "SELECT s.ssl, s.client_dn FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
        )
        assert sessions and all(r["ssl"] and r["client_dn"] == f"/CN={postgres.TLS_USER}" for r in sessions)
    finally:
        await conn.close()
    for process in (api, relay, consumer):
        status, _ = await readyz(process)
        assert status == 200
        code, _ = await process.terminate()
        assert code == 0


async def test_memory_worker_worker_all_and_the_outbox_commands_on_tls_only_postgres(
    postgres_server: postgres.PostgresInfo,
    kafka_server: kafka.KafkaInfo,
    tls_database: str,
    unique_name: str,
    spawn_runtime: Spawner,
) -> None:
    env = secured_env(postgres_server, kafka_server, tls_database, "SCRAM-SHA-512", unique_name)
    code, out, err = await run_cli("migrate", "--shards", "8", "--topic-partitions", "2", env=base_env(**env))
    assert code == 0, err
    # Without the TLS variables the same DSN is refused by pg_hba (no encryption): TLS is what admits it.
    plain = {**env, "database_sslmode": "disable"}
    for key in ("database_sslrootcert", "database_sslcert", "database_sslkey"):
        plain.pop(key)
    code, _, err = await run_cli("outbox", "stats", env=base_env(**plain))
    assert code == 1 and "authentication failed" in err and "no encryption" in err, err
    code, out, err = await run_cli("outbox", "stats", "--json", env=base_env(**env))
    assert code == 0, err
    assert json.loads(out)["due_pending"] == 0
    for role in ("memory-worker", "worker", "all"):
        process = await spawn_runtime(role, **env)
        status, body = await readyz(process)
        assert status == 200 and body["ready"] is True
        code, _ = await process.terminate()
        assert code == 0, process.log_text()[-2000:]


async def test_a_wrong_scram_password_is_named_and_the_role_recovers_once_the_broker_accepts_it(
    postgres_server: postgres.PostgresInfo,
    kafka_server: kafka.KafkaInfo,
    tls_database: str,
    unique_name: str,
    spawn_runtime: Spawner,
) -> None:
    user = f"user-{unique_name}"
    kafka.set_scram_password(kafka_server, user, "the-old-password")
    env = {
        **secured_env(postgres_server, kafka_server, tls_database, "SCRAM-SHA-512", unique_name),
        "kafka_sasl_username": user,
        "kafka_sasl_password": "the-new-password",
    }
    code, _, err = await run_cli("migrate", "--shards", "8", "--topic-partitions", "2", env=base_env(**env))
    assert code == 1 and "SASL authentication failed" in err, err  # schema done, topic refused
    code, _, err = await run_cli("migrate", "--shards", "8", "--skip-topic", env=base_env(**env))
    assert code == 0, err
    relay = await spawn_runtime("relay", ready=False, **env)
    consumer = await spawn_runtime("consumer", ready=False, **env)
    for process in (relay, consumer):
        reason = await wait_unready_with(process, "kafka", "SASL authentication failed")
        assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in reason
        assert (await process.get(f"{process.admin}/healthz"))[0] == 200
    # The password rotated on the broker's side to what the pods already have: no restart needed.
    kafka.set_scram_password(kafka_server, user, "the-new-password")
    fixed = time.monotonic()
    for process in (relay, consumer):
        await process.wait_ready(within=30)
        assert process.proc.returncode is None
        print(f"{process.role} ready {time.monotonic() - fixed:.1f}s after the broker took the password")


async def test_unknown_cas_and_a_hostname_mismatch_are_named_and_the_role_stays_alive(
    postgres_server: postgres.PostgresInfo,
    kafka_server: kafka.KafkaInfo,
    tls_database: str,
    unique_name: str,
    spawn_runtime: Spawner,
    tmp_path: Path,
) -> None:
    foreign_ca = str(pki.foreign_authority(tmp_path / "foreign"))
    env = secured_env(postgres_server, kafka_server, tls_database, "PLAIN", unique_name)
    code, _, err = await run_cli("migrate", "--shards", "8", "--topic-partitions", "2", env=base_env(**env))
    assert code == 0, err

    relay = await spawn_runtime("relay", ready=False, **{**env, "kafka_ssl_cafile": foreign_ca})
    # 127.1 is 127.0.0.1, but not a name the broker's certificate carries.
    port = kafka_server.sasl_ssl_port
    consumer = await spawn_runtime(
        "consumer", ready=False, **{**env, "kafka_bootstrap_servers": f"127.1:{port}"}
    )
    api_foreign = await spawn_runtime("api", ready=False, **{**env, "database_sslrootcert": foreign_ca})
    mismatch_dsn = tls_database.replace("@127.0.0.1:", "@127.1:")
    api_mismatch = await spawn_runtime("api", ready=False, **{**env, "database_dsn": mismatch_dsn})

    assert "certificate verify failed" in await wait_unready_with(relay, "kafka", "certificate verify failed")
    reason = await wait_unready_with(consumer, "kafka", "certificate verify failed")
    assert "Hostname mismatch" in reason
    await wait_unready_with(api_foreign, "database", "certificate verify failed")
    reason = await wait_unready_with(api_mismatch, "database", "certificate verify failed")
    assert "Hostname mismatch" in reason
    # verify-ca checks the chain only: the same address is fine there.
    api_verify_ca = await spawn_runtime(
        "api", **{**env, "database_dsn": mismatch_dsn, "database_sslmode": "verify-ca"}
    )
    assert (await readyz(api_verify_ca))[0] == 200
    for process in (relay, consumer, api_foreign, api_mismatch):
        assert process.proc.returncode is None
        assert (await process.get(f"{process.admin}/healthz"))[0] == 200


async def test_a_wrong_postgres_password_is_named_and_the_role_recovers_once_the_server_accepts_it(
    postgres_server: postgres.PostgresInfo, spawn_runtime: Spawner
) -> None:
    role = f"tls_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_server.dsn)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'first-password'")
        await admin.execute(f'CREATE DATABASE "{role}" OWNER {role}')
        env = database_env(
            postgres_server, f"postgresql://{role}:second-password@127.0.0.1:{postgres_server.port}/{role}"
        )
        code, _, err = await run_cli("migrate", "--skip-topic", env=base_env(**env))
        assert code == 1 and "authentication failed" in err, err
        api = await spawn_runtime("api", ready=False, **env)
        reason = await wait_unready_with(api, "database", "authentication failed")
        assert f'password authentication failed for user "{role}"' in reason
        await admin.execute(f"ALTER ROLE {role} PASSWORD 'second-password'")
        code, _, err = await run_cli("migrate", "--skip-topic", env=base_env(**env))
        assert code == 0, err
        await api.wait_ready(within=30)
        assert api.proc.returncode is None
        code, _ = await api.terminate()
        assert code == 0
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{role}" WITH (FORCE)')
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


def tool_lag(output: str, topic: str) -> dict[int, int]:
    """Per-partition LAG as Kafka's consumer-groups tool prints it."""
    lines = [line.split() for line in output.splitlines() if line.strip()]
    header = next(cols for cols in lines if "PARTITION" in cols and "LAG" in cols)
    topic_at, partition_at, lag_at = header.index("TOPIC"), header.index("PARTITION"), header.index("LAG")
    return {
        int(cols[partition_at]): int(cols[lag_at])
        for cols in lines
        if len(cols) > lag_at and cols[topic_at] == topic
    }


async def test_consumer_lag_read_over_sasl_ssl_equals_kafkas_own_tool(
    postgres_server: postgres.PostgresInfo,
    kafka_server: kafka.KafkaInfo,
    tls_database: str,
    unique_name: str,
    spawn_runtime: Spawner,
    tmp_path: Path,
) -> None:
    topic, group = f"outbox-{unique_name}", f"group-{unique_name}"
    env = secured_env(postgres_server, kafka_server, tls_database, "SCRAM-SHA-512", unique_name)
    code, _, err = await run_cli("migrate", "--shards", "8", "--topic-partitions", "3", env=base_env(**env))
    assert code == 0, err
    api = await spawn_runtime("api", **env)
    relay = await spawn_runtime("relay", **env)
    consumer = await spawn_runtime("consumer", **env)
    conn = await connect_as_the_runtime(env)

    async def post(n: int, offset: int) -> None:
        async with aiohttp.ClientSession() as session:
            for i in range(offset, offset + n):
                body = {"user_id": f"u{i}", "content": f"message {i}"}
                async with session.post(f"{api.http}/v1/conversations/c{i}/messages", json=body) as response:
                    assert response.status == 202

    async def statuses() -> dict[str, int]:
        return dict(await conn.fetch("SELECT status, count(*) FROM outbox_events GROUP BY status"))

    try:
        await post(4, 0)

        async def consumed() -> bool:
            return await statuses() == {"consumed": 12}

        await wait_for(consumed, what="the first events consumed", within=60)
        code, _ = await consumer.terminate()  # commits and leaves the group
        assert code == 0
        await post(3, 4)

        async def published() -> bool:
            return await statuses() == {"consumed": 12, "published": 9}

        await wait_for(published, what="the later events published, not consumed", within=60)
    finally:
        await conn.close()

    # The lag as the runtime's clients read it over SASL_SSL: committed offsets of the group
    # (admin client) and log end offsets (a consumer without a group), built with its security options.
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from smartflow_runtime.outbox.kafka import build_admin

    settings = load_settings({f"SMARTFLOW_{k.upper()}": v for k, v in env.items()})
    options = load_client_security(settings, database=False).kafka
    partitions = [TopicPartition(topic, p) for p in range(3)]
    admin = build_admin(kafka_server.sasl_ssl_bootstrap_servers, options)
    offsets = AIOKafkaConsumer(bootstrap_servers=kafka_server.sasl_ssl_bootstrap_servers, **options)
    await admin.start()
    await offsets.start()
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        ends = await offsets.end_offsets(partitions)
    finally:
        await admin.close()
        await offsets.stop()
    ours = {tp.partition: ends[tp] - committed[tp].offset for tp in partitions}
    assert sum(ours.values()) == 9

    properties = tmp_path / "client.properties"
    properties.write_text(
        "\n".join(
            [
                "security.protocol=SASL_SSL",
                "sasl.mechanism=SCRAM-SHA-512",
                "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{kafka.SCRAM_USER}" password="{kafka.SCRAM_PASSWORD}";',
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={kafka_server.tls.ca_file}",
            ]
        )
        + "\n"
    )
    described = await asyncio.to_thread(
        kafka.run_tool,
        kafka.CONSUMER_GROUPS_TOOL,
        "--bootstrap-server",
        kafka_server.sasl_ssl_bootstrap_servers,
        "--command-config",
        str(properties),
        "--describe",
        "--group",
        group,
    )
    assert tool_lag(described, topic) == ours, described
    for process in (api, relay):
        code, _ = await process.terminate()
        assert code == 0
