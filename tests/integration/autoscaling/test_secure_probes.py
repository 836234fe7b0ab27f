"""The lag probes over the stack's secured listeners: Kafka SASL_SSL (SCRAM-SHA-512, PLAIN) and
mutual TLS, PostgreSQL TLS with the TLS-only role. The CA is passed as PEM text (as the operator
reads it from a Secret), never as a file. Refused logins and failed certificate checks are typed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from smartflow_devstack import kafka, pki, postgres
from smartflow_operator.autoscaling.errors import (
    DatabaseAuthenticationFailed,
    DatabaseTLSFailed,
    KafkaAuthenticationFailed,
    KafkaTLSFailed,
)
from smartflow_operator.autoscaling.probes import ConsumerProbe, Probes, RelayProbe
from smartflow_operator.connection_security import DatabaseSecurity, KafkaSecurity

from .conftest import SHARDS, commit, create_topic, describe_group, insert_events, produce, tool_lag


def _pem(path: str | Path) -> str:
    return Path(path).read_text()


def _scram(
    info: kafka.KafkaInfo, *, password: str = kafka.SCRAM_PASSWORD, ca: str | None = None
) -> KafkaSecurity:
    return KafkaSecurity(
        protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        username=kafka.SCRAM_USER,
        password=password,
        ca_pem=ca if ca is not None else _pem(info.ca_file),
    )


def _mutual(info: kafka.KafkaInfo, *, with_certificate: bool = True) -> KafkaSecurity:
    tls = info.tls
    return KafkaSecurity(
        protocol="SSL",
        ca_pem=_pem(tls.ca_file),
        cert_pem=_pem(tls.client_cert_file) if with_certificate else None,
        key_pem=_pem(tls.client_key_file) if with_certificate else None,
    )


@pytest.fixture
async def lagging_group(
    bootstrap_servers: str, names: Callable[[str], str]
) -> tuple[str, str, dict[int, int | None]]:
    """A topic with a lagging group (set up over the plaintext listener of the same broker) and
    the lag Kafka's consumer-groups tool prints for it."""
    topic, group = names("secure"), names("group")
    await create_topic(bootstrap_servers, topic, 3)
    await produce(bootstrap_servers, topic, {0: 9, 1: 4, 2: 6})
    await commit(bootstrap_servers, topic, group, {0: 2, 1: 4, 2: 1})
    printed = tool_lag(await asyncio.to_thread(describe_group, bootstrap_servers, group), topic)
    assert printed == {0: 7, 1: 0, 2: 5}
    return topic, group, printed


async def test_lag_over_sasl_ssl_scram_equals_the_consumer_groups_tool(
    kafka_server: kafka.KafkaInfo, lagging_group: tuple[str, str, dict[int, int | None]]
) -> None:
    topic, group, printed = lagging_group
    async with ConsumerProbe(kafka_server.sasl_ssl_bootstrap_servers, security=_scram(kafka_server)) as probe:
        reading = await probe.read(topic=topic, group=group)
    assert {p.partition: p.lag for p in reading.partitions} == printed
    assert (reading.metric, reading.cap) == (12, 3)


async def test_lag_over_sasl_ssl_plain_and_over_mutual_tls(
    kafka_server: kafka.KafkaInfo, lagging_group: tuple[str, str, dict[int, int | None]]
) -> None:
    topic, group, printed = lagging_group
    plain = KafkaSecurity(
        protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        username=kafka.PLAIN_USER,
        password=kafka.PLAIN_PASSWORD,
        ca_pem=_pem(kafka_server.ca_file),
    )
    for bootstrap, security in (
        (kafka_server.sasl_ssl_bootstrap_servers, plain),
        (kafka_server.ssl_bootstrap_servers, _mutual(kafka_server)),
    ):
        async with ConsumerProbe(bootstrap, security=security) as probe:
            reading = await probe.read(topic=topic, group=group)
        assert {p.partition: p.lag for p in reading.partitions} == printed, security.protocol


async def test_a_wrong_password_is_a_typed_authentication_error(kafka_server: kafka.KafkaInfo) -> None:
    probe = ConsumerProbe(
        kafka_server.sasl_ssl_bootstrap_servers, security=_scram(kafka_server, password="wrong"), timeout=5.0
    )
    try:
        for _ in range(2):  # and again on the next poll: nothing half-started is kept
            with pytest.raises(KafkaAuthenticationFailed) as raised:
                await probe.read(topic="t", group="g")
    finally:
        await probe.stop()
    assert raised.value.reason == "KafkaAuthenticationFailed"
    assert "SASL authentication failed" in str(raised.value)
    assert probe.open_clients == 0


async def test_an_unknown_ca_is_a_typed_tls_error(kafka_server: kafka.KafkaInfo, tmp_path: Path) -> None:
    foreign = _pem(pki.foreign_authority(tmp_path))
    security = _scram(kafka_server, ca=foreign)
    probe = ConsumerProbe(kafka_server.sasl_ssl_bootstrap_servers, security=security, timeout=5.0)
    try:
        with pytest.raises(KafkaTLSFailed) as raised:
            await probe.read(topic="t", group="g")
    finally:
        await probe.stop()
    assert raised.value.reason == "KafkaTLSFailed"
    assert "certificate verify failed" in str(raised.value)


async def test_mutual_tls_without_a_client_certificate_fails_typed(kafka_server: kafka.KafkaInfo) -> None:
    security = _mutual(kafka_server, with_certificate=False)
    probe = ConsumerProbe(kafka_server.ssl_bootstrap_servers, security=security, timeout=5.0)
    try:
        with pytest.raises(KafkaTLSFailed) as raised:
            await probe.read(topic="t", group="g")
    finally:
        await probe.stop()
    assert "bad certificate" in str(raised.value), raised.value  # the broker's TLS alert


async def test_probes_are_shared_by_security_and_a_rotation_closes_the_old_one(
    kafka_server: kafka.KafkaInfo, lagging_group: tuple[str, str, dict[int, int | None]]
) -> None:
    topic, group, _ = lagging_group
    bootstrap = kafka_server.sasl_ssl_bootstrap_servers
    user = f"rotating-{uuid.uuid4().hex[:8]}"
    kafka.set_scram_password(kafka_server, user, "first-password")
    first = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", user, "first-password", _pem(kafka_server.ca_file))
    probes = Probes(timeout=5.0)
    try:
        probe = probes.consumer(bootstrap, user="ns/a", security=first)
        assert probes.consumer(bootstrap, user="ns/b", security=first) is probe  # equal security: shared
        assert probes.consumer(bootstrap, user="ns/c", security=_scram(kafka_server)) is not probe
        assert (await probe.read(topic=topic, group=group)).metric == 12

        kafka.set_scram_password(kafka_server, user, "second-password")
        second = KafkaSecurity(
            "SASL_SSL", "SCRAM-SHA-512", user, "second-password", _pem(kafka_server.ca_file)
        )
        for runtime in ("ns/a", "ns/b"):
            rotated = probes.consumer(bootstrap, user=runtime, security=second)
        assert rotated is not probe
        await probes.close_unused()
        assert probe.open_clients == 0  # nobody uses the old credentials: closed
        assert (await rotated.read(topic=topic, group=group)).metric == 12
        assert probes.open_count == 2  # the rotated one and ns/c's
    finally:
        await probes.close()


# -- PostgreSQL ------------------------------------------------------------------------------------


def _database(
    info: postgres.PostgresInfo, mode: str = "verify-full", **changes: str | None
) -> DatabaseSecurity:
    values: dict[str, str | None] = {
        "ca_pem": _pem(info.ca_file),
        "cert_pem": _pem(info.client_cert_file),
        "key_pem": _pem(info.client_key_file),
        **changes,
    }
    return DatabaseSecurity(mode=mode, **values)


async def test_relay_lag_over_tls_verify_full_as_the_tls_only_role(
    postgres_server: postgres.PostgresInfo, tls_outbox: str
) -> None:
    await insert_events(f"{tls_outbox}?sslmode=require", 6)
    for mode in ("verify-full", "verify-ca", "require"):
        async with RelayProbe(tls_outbox, security=_database(postgres_server, mode)) as probe:
            reading = await probe.read(limit=100)
            assert (reading.metric, reading.cap) == (6, SHARDS), mode
            assert await probe.schema_version() >= 1


async def test_the_tls_only_role_without_tls_is_a_typed_authentication_error(
    postgres_server: postgres.PostgresInfo, tls_outbox: str
) -> None:
    async with RelayProbe(f"{tls_outbox}?sslmode=disable") as probe:
        with pytest.raises(DatabaseAuthenticationFailed) as raised:
            await probe.read(limit=10)
    assert "no encryption" in str(raised.value)
    wrong = tls_outbox.replace(postgres.TLS_PASSWORD, "wrong-password")
    async with RelayProbe(wrong, security=_database(postgres_server)) as probe:
        with pytest.raises(DatabaseAuthenticationFailed, match="password authentication failed"):
            await probe.read(limit=10)


async def test_an_unknown_ca_is_a_typed_database_tls_error(
    postgres_server: postgres.PostgresInfo, tls_outbox: str, tmp_path: Path
) -> None:
    foreign = _database(postgres_server, ca_pem=_pem(pki.foreign_authority(tmp_path)))
    async with RelayProbe(tls_outbox, security=foreign) as probe:
        with pytest.raises(DatabaseTLSFailed, match="certificate verify failed"):
            await probe.read(limit=10)
