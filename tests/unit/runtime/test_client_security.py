"""The settings as driver arguments (security.py), and SASL/TLS failures mapped by type.

The SSL contexts are checked by what they do: a TLS handshake in memory (``ssl.MemoryBIO``, no
socket) against a server context holding a certificate from a throwaway CA, so "verify-ca accepts
a hostname mismatch, verify-full refuses it" is asserted, not the flags that are meant to say so.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import asyncpg
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from smartflow_devstack import pki
from smartflow_runtime.config import ConfigError, DatabaseTls, Need, Settings, load_settings
from smartflow_runtime.errors import (
    DatabaseAuthenticationError,
    DatabaseCertificateError,
    DatabaseTlsError,
    KafkaAuthenticationError,
    KafkaCertificateError,
    KafkaTlsError,
    KafkaUnavailableError,
    is_retriable,
)
from smartflow_runtime.outbox.kafka import wrap_kafka_error
from smartflow_runtime.outbox.store import wrap_driver_error
from smartflow_runtime.security import (
    ClientSecurity,
    database_ssl,
    kafka_client_options,
    load_client_security,
)

DSN = "postgresql://app:pw@127.0.0.1:5432/smartflow"


class Pki:
    def __init__(self, root: Path) -> None:
        self.ca = str(pki.authority(root) / "ca.crt")
        self.server = pki.issue(
            root, root / "certs", "server", subject="/CN=server", sans=pki.SERVER_SANS, server=True
        )
        self.client = pki.issue(root, root / "certs", "client", subject="/CN=client", client=True)
        self.foreign_ca = str(pki.foreign_authority(root / "foreign"))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def _server(certs: Pki, *, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server.cert_file, certs.server.key_file)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=certs.ca)
    return context


def handshake(client: ssl.SSLContext, server: ssl.SSLContext, hostname: str) -> None:
    """A full TLS handshake in memory; raises what either side raises (the client's verification
    error, or the server's refusal of a missing client certificate)."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    tls_client = client.wrap_bio(client_in, client_out, server_hostname=hostname)
    tls_server = server.wrap_bio(server_in, server_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, tls, out, peer_in in (
            ("client", tls_client, client_out, server_in),
            ("server", tls_server, server_out, client_in),
        ):
            if not done[side]:
                try:
                    tls.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def _settings(**environ: str) -> Settings:
    return load_settings({"SMARTFLOW_DATABASE_DSN": DSN, **environ}, needs=[Need.DATABASE])


# --- Kafka --------------------------------------------------------------------------------------


def test_plaintext_kafka_gets_only_the_protocol() -> None:
    assert kafka_client_options(_settings()) == {"security_protocol": "PLAINTEXT"}
    assert ClientSecurity().kafka == {"security_protocol": "PLAINTEXT"}
    assert ClientSecurity().database == {}


def test_sasl_ssl_gets_mechanism_credentials_and_a_verifying_context(certs: Pki) -> None:
    options = kafka_client_options(
        _settings(
            SMARTFLOW_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
            SMARTFLOW_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
            SMARTFLOW_KAFKA_SASL_USERNAME="relay",
            SMARTFLOW_KAFKA_SASL_PASSWORD="pw",
            SMARTFLOW_KAFKA_SSL_CAFILE=certs.ca,
        )
    )
    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "relay",
        "sasl_plain_password": "pw",
    }
    handshake(context, _server(certs), "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(context, _server(certs), "broker.example")


def test_sasl_plaintext_gets_no_ssl_context() -> None:
    options = kafka_client_options(
        _settings(
            SMARTFLOW_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
            SMARTFLOW_KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
            SMARTFLOW_KAFKA_SASL_USERNAME="u",
            SMARTFLOW_KAFKA_SASL_PASSWORD="p",
        )
    )
    assert "ssl_context" not in options and options["sasl_mechanism"] == "SCRAM-SHA-256"


def test_kafka_ca_file_is_the_only_trust(certs: Pki) -> None:
    foreign = kafka_client_options(
        _settings(SMARTFLOW_KAFKA_SECURITY_PROTOCOL="SSL", SMARTFLOW_KAFKA_SSL_CAFILE=certs.foreign_ca)
    )["ssl_context"]
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        handshake(foreign, _server(certs), "127.0.0.1")


def test_kafka_hostname_check_can_be_switched_off_but_the_chain_is_still_verified(certs: Pki) -> None:
    unchecked = {"SMARTFLOW_KAFKA_SECURITY_PROTOCOL": "SSL", "SMARTFLOW_KAFKA_SSL_CHECK_HOSTNAME": "false"}
    context = kafka_client_options(_settings(**unchecked, SMARTFLOW_KAFKA_SSL_CAFILE=certs.ca))["ssl_context"]
    handshake(context, _server(certs), "broker.example")
    foreign = kafka_client_options(_settings(**unchecked, SMARTFLOW_KAFKA_SSL_CAFILE=certs.foreign_ca))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(foreign["ssl_context"], _server(certs), "broker.example")


def test_mutual_tls_presents_the_client_certificate(certs: Pki) -> None:
    mtls = _settings(
        SMARTFLOW_KAFKA_SECURITY_PROTOCOL="SSL",
        SMARTFLOW_KAFKA_SSL_CAFILE=certs.ca,
        SMARTFLOW_KAFKA_SSL_CERTFILE=certs.client.cert_file,
        SMARTFLOW_KAFKA_SSL_KEYFILE=certs.client.key_file,
    )
    handshake(
        kafka_client_options(mtls)["ssl_context"], _server(certs, require_client_cert=True), "127.0.0.1"
    )
    without = _settings(SMARTFLOW_KAFKA_SECURITY_PROTOCOL="SSL", SMARTFLOW_KAFKA_SSL_CAFILE=certs.ca)
    with pytest.raises(ssl.SSLError):
        handshake(
            kafka_client_options(without)["ssl_context"],
            _server(certs, require_client_cert=True),
            "127.0.0.1",
        )


# --- PostgreSQL ---------------------------------------------------------------------------------


def _tls(
    mode: str | None, rootcert: str | None = None, cert: str | None = None, key: str | None = None
) -> DatabaseTls:
    return DatabaseTls(sslmode=mode, rootcert=rootcert, cert=cert, key=key)


def test_no_database_variables_leave_the_dsn_to_asyncpg() -> None:
    assert load_client_security(_settings()).database == {}


def test_disable_and_prefer_are_asyncpgs_own() -> None:
    assert database_ssl(_tls("disable")) is False
    assert database_ssl(_tls("prefer")) == "prefer"
    assert database_ssl(_tls("allow")) == "allow"  # from a DSN: asyncpg handles it


def test_require_encrypts_without_verifying(certs: Pki) -> None:
    context = database_ssl(_tls("require"))
    assert isinstance(context, ssl.SSLContext)
    # An unknown CA and a foreign hostname both pass: encryption only.
    handshake(context, _server(certs), "db.example")


def test_require_with_a_root_certificate_verifies_the_chain_like_libpq(certs: Pki) -> None:
    trusted = database_ssl(_tls("require", certs.ca))
    assert isinstance(trusted, ssl.SSLContext)
    handshake(trusted, _server(certs), "db.example")  # the chain, not the hostname
    foreign = database_ssl(_tls("require", certs.foreign_ca))
    assert isinstance(foreign, ssl.SSLContext)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(foreign, _server(certs), "127.0.0.1")


def test_verify_ca_checks_the_chain_but_not_the_hostname(certs: Pki) -> None:
    context = database_ssl(_tls("verify-ca", certs.ca))
    assert isinstance(context, ssl.SSLContext)
    handshake(context, _server(certs), "db.example")
    foreign = database_ssl(_tls("verify-ca", certs.foreign_ca))
    assert isinstance(foreign, ssl.SSLContext)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        handshake(foreign, _server(certs), "127.0.0.1")


def test_verify_full_checks_the_chain_and_the_hostname(certs: Pki) -> None:
    context = database_ssl(_tls("verify-full", certs.ca))
    assert isinstance(context, ssl.SSLContext)
    handshake(context, _server(certs), "127.0.0.1")
    handshake(context, _server(certs), "localhost")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(context, _server(certs), "db.example")


def test_verify_full_without_a_root_certificate_trusts_the_system_store_only(certs: Pki) -> None:
    context = database_ssl(_tls("verify-full"))
    assert isinstance(context, ssl.SSLContext)
    with pytest.raises(ssl.SSLCertVerificationError):  # a private CA is not in the system store
        handshake(context, _server(certs), "127.0.0.1")


def test_database_client_certificate_is_presented(certs: Pki) -> None:
    with_cert = database_ssl(_tls("verify-full", certs.ca, certs.client.cert_file, certs.client.key_file))
    assert isinstance(with_cert, ssl.SSLContext)
    handshake(with_cert, _server(certs, require_client_cert=True), "127.0.0.1")
    without = database_ssl(_tls("verify-full", certs.ca))
    assert isinstance(without, ssl.SSLContext)
    with pytest.raises(ssl.SSLError):
        handshake(without, _server(certs, require_client_cert=True), "127.0.0.1")


def test_the_merged_dsn_parameters_reach_the_context(certs: Pki) -> None:
    settings = _settings(
        SMARTFLOW_DATABASE_DSN=f"{DSN}?sslmode=verify-full&sslrootcert={certs.ca}",
        SMARTFLOW_DATABASE_SSLCERT=certs.client.cert_file,
        SMARTFLOW_DATABASE_SSLKEY=certs.client.key_file,
    )
    context = load_client_security(settings).database["ssl"]
    handshake(context, _server(certs, require_client_cert=True), "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(context, _server(certs), "db.example")


# --- files that cannot be loaded: one ConfigError naming each variable ---------------------------


def test_unloadable_files_are_config_errors_naming_every_variable(tmp_path: Path, certs: Pki) -> None:
    not_pem = tmp_path / "garbage.crt"
    not_pem.write_text("not a certificate\n")
    settings = _settings(
        SMARTFLOW_KAFKA_SECURITY_PROTOCOL="SSL",
        SMARTFLOW_KAFKA_SSL_CAFILE=str(tmp_path / "missing.crt"),
        SMARTFLOW_DATABASE_SSLMODE="verify-full",
        SMARTFLOW_DATABASE_SSLROOTCERT=certs.ca,
        SMARTFLOW_DATABASE_SSLCERT=str(not_pem),
        SMARTFLOW_DATABASE_SSLKEY=certs.client.key_file,
    )
    with pytest.raises(ConfigError) as caught:
        load_client_security(settings)
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "SMARTFLOW_KAFKA_SSL_CAFILE",
        "SMARTFLOW_DATABASE_SSLCERT",
    ]
    assert "missing.crt" in caught.value.problems[0]
    assert "SMARTFLOW_DATABASE_SSLKEY" in caught.value.problems[1]
    # What a command does not use is not loaded (the api role has no Kafka client).
    assert load_client_security(
        _settings(SMARTFLOW_KAFKA_SECURITY_PROTOCOL="SSL", SMARTFLOW_KAFKA_SSL_CAFILE=str(tmp_path / "x")),
        kafka=False,
    ).kafka == {"security_protocol": "PLAINTEXT"}


# --- failures by type ---------------------------------------------------------------------------


def _verify_error(certs: Pki) -> ssl.SSLCertVerificationError:
    context = database_ssl(_tls("verify-full", certs.foreign_ca))
    assert isinstance(context, ssl.SSLContext)
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(context, _server(certs), "127.0.0.1")
    return caught.value


def test_kafka_sasl_and_tls_failures_map_to_retriable_errors_with_the_readiness_wording(certs: Pki) -> None:
    sasl = wrap_kafka_error(SaslAuthenticationFailed("Authentication failed: Invalid username or password"))
    assert isinstance(sasl, KafkaAuthenticationError) and is_retriable(sasl)
    assert str(sasl) == "SASL authentication failed: Authentication failed: Invalid username or password"
    mechanism = wrap_kafka_error(UnsupportedSaslMechanismError("broker enables PLAIN only"))
    assert isinstance(mechanism, KafkaAuthenticationError)
    verify = wrap_kafka_error(_verify_error(certs))
    assert isinstance(verify, KafkaCertificateError) and isinstance(verify, KafkaUnavailableError)
    assert str(verify).startswith("certificate verify failed: ")
    alert = wrap_kafka_error(
        ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate")
    )
    assert isinstance(alert, KafkaTlsError) and not isinstance(alert, KafkaCertificateError)
    assert is_retriable(alert) and str(alert).startswith("TLS handshake failed: ")
    # Not a security failure: stays the plain unavailable error it was.
    down = wrap_kafka_error(KafkaConnectionError("Unable to bootstrap"))
    assert type(down) is KafkaUnavailableError


def test_database_login_and_tls_failures_map_to_unavailable_subclasses(certs: Pki) -> None:
    password = wrap_driver_error(
        "ping", asyncpg.InvalidPasswordError('password authentication failed for user "u"')
    )
    assert isinstance(password, DatabaseAuthenticationError) and is_retriable(password)
    assert str(password) == 'ping: authentication failed: password authentication failed for user "u"'
    no_rule = wrap_driver_error(
        "ping", asyncpg.InvalidAuthorizationSpecificationError("no pg_hba.conf entry")
    )
    assert isinstance(no_rule, DatabaseAuthenticationError)
    verify = wrap_driver_error("ping", _verify_error(certs))
    assert isinstance(verify, DatabaseCertificateError)
    assert str(verify).startswith("ping: certificate verify failed: ")
    alert = wrap_driver_error("ping", ssl.SSLError(1, "tlsv13 alert certificate required"))
    assert isinstance(alert, DatabaseTlsError) and not isinstance(alert, DatabaseCertificateError)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_SSL"])
async def test_an_unreachable_broker_stays_a_plain_connection_error(protocol: str, certs: Pki) -> None:
    """Only SASL/TLS failures are re-raised by type; a refused port (nothing listens on 1) is not one."""
    from smartflow_runtime.outbox.kafka import build_producer

    environ = {"SMARTFLOW_KAFKA_SECURITY_PROTOCOL": protocol}
    if protocol == "SASL_SSL":
        environ |= {
            "SMARTFLOW_KAFKA_SASL_MECHANISM": "PLAIN",
            "SMARTFLOW_KAFKA_SASL_USERNAME": "u",
            "SMARTFLOW_KAFKA_SASL_PASSWORD": "p",
            "SMARTFLOW_KAFKA_SSL_CAFILE": certs.ca,
        }
    producer = build_producer("127.0.0.1:1", "test", kafka_client_options(_settings(**environ)))
    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        await producer.start()
    await producer.stop()
    assert type(wrap_kafka_error(KafkaConnectionError("Unable to bootstrap"))) is KafkaUnavailableError
