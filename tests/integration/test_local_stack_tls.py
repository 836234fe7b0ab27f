"""The local stack's secured listeners are real: Kafka SASL_SSL (SCRAM-SHA-512/256, PLAIN) and
mutual TLS, PostgreSQL ``ssl=on`` with a TLS-only role, all chained to the stack's CA.

These are the servers issue 14's runtime and operator tests connect to; what a wrong password,
a missing client certificate or a plaintext connection gets from them is asserted here once.
"""

from __future__ import annotations

import ssl
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from aiokafka.helpers import create_ssl_context

from smartflow_devstack import kafka, pki, postgres


async def _produce(topic: str, **settings: object) -> int:
    producer = AIOKafkaProducer(request_timeout_ms=10_000, **settings)  # type: ignore[arg-type]
    await producer.start()
    try:
        return (await producer.send_and_wait(topic, b"hello", key=b"k")).offset
    finally:
        await producer.stop()


def _sasl(info: kafka.KafkaInfo, mechanism: str, user: str, password: str) -> dict[str, object]:
    return {
        "bootstrap_servers": info.sasl_ssl_bootstrap_servers,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": user,
        "sasl_plain_password": password,
        "ssl_context": create_ssl_context(cafile=info.ca_file),
    }


@pytest.mark.parametrize(
    ("mechanism", "user", "password"),
    [
        ("SCRAM-SHA-512", kafka.SCRAM_USER, kafka.SCRAM_PASSWORD),
        ("SCRAM-SHA-256", kafka.SCRAM_USER, kafka.SCRAM_PASSWORD),
        ("PLAIN", kafka.PLAIN_USER, kafka.PLAIN_PASSWORD),
    ],
)
async def test_kafka_sasl_ssl_accepts_each_mechanism(
    kafka_server: kafka.KafkaInfo, unique_name: str, mechanism: str, user: str, password: str
) -> None:
    topic = f"tls-{unique_name}"
    first = await _produce(topic, **_sasl(kafka_server, mechanism, user, password))
    second = await _produce(topic, **_sasl(kafka_server, mechanism, user, password))
    assert second == first + 1


async def test_kafka_sasl_ssl_refuses_a_wrong_password_and_takes_a_new_one(
    kafka_server: kafka.KafkaInfo, unique_name: str
) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    kafka.set_scram_password(kafka_server, user, "first-password")
    topic = f"tls-{unique_name}"
    assert await _produce(topic, **_sasl(kafka_server, "SCRAM-SHA-512", user, "first-password")) == 0
    with pytest.raises(KafkaConnectionError):
        await _produce(topic, **_sasl(kafka_server, "SCRAM-SHA-512", user, "wrong-password"))
    kafka.set_scram_password(kafka_server, user, "second-password")
    assert await _produce(topic, **_sasl(kafka_server, "SCRAM-SHA-512", user, "second-password")) == 1


async def test_kafka_ssl_listener_requires_a_client_certificate(
    kafka_server: kafka.KafkaInfo, unique_name: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    topic = f"mtls-{unique_name}"
    tls = kafka_server.tls
    with_cert = create_ssl_context(
        cafile=tls.ca_file, certfile=tls.client_cert_file, keyfile=tls.client_key_file
    )
    offset = await _produce(
        topic,
        bootstrap_servers=kafka_server.ssl_bootstrap_servers,
        security_protocol="SSL",
        ssl_context=with_cert,
    )
    assert offset == 0
    without_cert = create_ssl_context(cafile=tls.ca_file)
    with pytest.raises(KafkaConnectionError):
        await _produce(
            topic,
            bootstrap_servers=kafka_server.ssl_bootstrap_servers,
            security_protocol="SSL",
            ssl_context=without_cert,
        )
    # A client trusting another CA refuses the broker's certificate.
    foreign = create_ssl_context(cafile=str(pki.foreign_authority(tmp_path)))
    with pytest.raises(KafkaConnectionError):
        await _produce(
            topic,
            **{
                **_sasl(kafka_server, "PLAIN", kafka.PLAIN_USER, kafka.PLAIN_PASSWORD),
                "ssl_context": foreign,
            },
        )


async def test_postgres_tls_role_verify_full_and_no_plaintext(
    postgres_server: postgres.PostgresInfo, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    verify_full = ssl.create_default_context(cafile=postgres_server.ca_file)
    verify_full.load_cert_chain(postgres_server.client_cert_file, postgres_server.client_key_file)
    conn = await asyncpg.connect(postgres_server.tls_dsn(), ssl=verify_full)
    try:
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
        assert await conn.fetchval("SELECT current_user") == postgres.TLS_USER
    finally:
        await conn.close()
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await asyncpg.connect(postgres_server.tls_dsn(), ssl=False)
    foreign = ssl.create_default_context(cafile=str(pki.foreign_authority(tmp_path)))
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg.connect(postgres_server.tls_dsn(), ssl=foreign)
    # The admin role keeps working without TLS (every other test uses it).
    plain = await asyncpg.connect(postgres_server.dsn, ssl=False)
    await plain.close()
