"""What the operator's own connections take from the spec and the fetched Secrets/ConfigMaps, and
the SSL contexts the probes build from it. Pure (the contexts need no server)."""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from smartflow_operator.autoscaling.tls import database_ssl_context, kafka_client_options
from smartflow_operator.connection_security import (
    DatabaseSecurity,
    KafkaSecurity,
    check_dsn_agrees,
    database_dsn,
    database_security,
    kafka_security,
)
from smartflow_operator.errors import ConfigurationError

from .conftest import make_runtime
from .test_security_builders import FETCHED, SASL_SSL


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class TestFromSecrets:
    def test_kafka_values_are_decoded_and_the_config_map_ca_is_taken_as_text(self) -> None:
        security = kafka_security(make_runtime(SASL_SSL).spec, FETCHED, namespace="team")
        assert security == KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            username="user",
            password="pw",
            ca_pem="-----BEGIN CERTIFICATE-----",
            cert_pem="cert",
            key_pem="key",
            check_hostname=True,
        )
        assert repr(security) == (
            "KafkaSecurity(protocol='SASL_SSL', sasl_mechanism='SCRAM-SHA-512', username='user', "
            "check_hostname=True)"
        )  # no password, no key

    def test_database_values_and_dsn(self) -> None:
        spec = make_runtime(SASL_SSL).spec
        assert database_dsn(spec, FETCHED, namespace="team") == "dsn"
        assert database_security(spec, FETCHED, namespace="team") == DatabaseSecurity(
            mode="verify-full", ca_pem="CA", cert_pem="CERT", key_pem="KEY"
        )

    def test_plaintext_needs_nothing(self) -> None:
        spec = make_runtime().spec
        assert kafka_security(spec, {}, namespace="team") is None
        assert database_security(spec, {}, namespace="team") is None

    def test_a_missing_key_names_the_field(self) -> None:
        fetched = {**FETCHED, ("Secret", "kafka-client"): {"tls.crt": _b64("cert")}}
        with pytest.raises(
            ConfigurationError, match=r"has no key 'tls.key' \(from spec.kafka.tls.clientKeyRef\)"
        ):
            kafka_security(make_runtime(SASL_SSL).spec, fetched, namespace="team")

    def test_a_value_that_is_not_base64_text_names_the_field(self) -> None:
        fetched = {**FETCHED, ("Secret", "kafka-user"): {"username": _b64("user"), "password": "%%%"}}
        with pytest.raises(ConfigurationError, match=r"\(from spec.kafka.sasl.passwordRef\) is not text"):
            kafka_security(make_runtime(SASL_SSL).spec, fetched, namespace="team")

    def test_equal_values_share_a_probe_and_a_rotated_password_does_not(self) -> None:
        spec = make_runtime(SASL_SSL).spec
        first = kafka_security(spec, FETCHED, namespace="team")
        rotated = {**FETCHED, ("Secret", "kafka-user"): {"username": _b64("user"), "password": _b64("new")}}
        assert first == kafka_security(spec, dict(FETCHED), namespace="team")
        assert hash(first) == hash(kafka_security(spec, dict(FETCHED), namespace="team"))
        assert first != kafka_security(spec, rotated, namespace="team")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA and a client certificate signed by it, made with openssl (PEM texts)."""
    directory = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-subj", "/CN=test-ca", "-days", "1")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr",
            "-subj", "/CN=client")  # fmt: skip
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "client.crt", "-days", "1")  # fmt: skip
    return {name: (directory / name).read_text() for name in ("ca.crt", "client.crt", "client.key")}


class TestSslContexts:
    def test_verify_full_trusts_the_given_ca_from_memory_and_checks_the_host(
        self, pki: dict[str, str]
    ) -> None:
        context = database_ssl_context(DatabaseSecurity("verify-full", ca_pem=pki["ca.crt"]))
        assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname is True
        assert [cert["subject"] for cert in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]

    def test_verify_ca_and_require(self, pki: dict[str, str]) -> None:
        verify_ca = database_ssl_context(DatabaseSecurity("verify-ca", ca_pem=pki["ca.crt"]))
        assert (verify_ca.verify_mode, verify_ca.check_hostname) == (ssl.CERT_REQUIRED, False)
        require = database_ssl_context(DatabaseSecurity("require"))
        assert (require.verify_mode, require.check_hostname) == (ssl.CERT_NONE, False)
        require_with_ca = database_ssl_context(DatabaseSecurity("require", ca_pem=pki["ca.crt"]))
        assert require_with_ca.verify_mode is ssl.CERT_REQUIRED  # libpq: a root cert makes require verify

    def test_the_client_pair_leaves_no_file_behind(
        self, pki: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        opened: list[tuple[str, int]] = []
        real_open = os.open

        def recording_open(path: str, flags: int, mode: int = 0o777, **options: Any) -> int:
            opened.append((str(path), mode))
            return real_open(path, flags, mode, **options)

        monkeypatch.setattr(os, "open", recording_open)
        security = KafkaSecurity(
            "SSL", ca_pem=pki["ca.crt"], cert_pem=pki["client.crt"], key_pem=pki["client.key"]
        )
        options = kafka_client_options(security)
        assert options["security_protocol"] == "SSL"
        assert isinstance(options["ssl_context"], ssl.SSLContext)
        written = [(Path(path).name, mode) for path, mode in opened if path.endswith((".crt", ".key"))]
        assert written == [("tls.crt", 0o600), ("tls.key", 0o600)]
        assert all(path.startswith(str(tmp_path)) for path, _ in opened if path.endswith((".crt", ".key")))
        assert os.listdir(tmp_path) == []  # the key was on disk only while it was loaded

    def test_sasl_options(self, pki: dict[str, str]) -> None:
        options = kafka_client_options(
            KafkaSecurity("SASL_SSL", "SCRAM-SHA-256", "u", "p", ca_pem=pki["ca.crt"], check_hostname=False)
        )
        assert options["sasl_mechanism"] == "SCRAM-SHA-256"
        assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("u", "p")
        assert options["ssl_context"].check_hostname is False
        assert "ssl_context" not in kafka_client_options(KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "u", "p"))
        assert kafka_client_options(None) == {}

    def test_a_key_that_does_not_match_is_an_ssl_error(self, pki: dict[str, str]) -> None:
        with pytest.raises(ssl.SSLError):
            database_ssl_context(
                DatabaseSecurity("verify-full", cert_pem=pki["client.crt"], key_pem=pki["ca.crt"])
            )


class TestDsnAgrees:
    def _fetched(self, dsn: str) -> dict[tuple[str, str], dict[str, str] | None]:
        return {**FETCHED, ("Secret", "db"): {"dsn": _b64(dsn)}}

    def test_a_dsn_sslmode_that_contradicts_the_spec_names_both(self) -> None:
        spec = make_runtime(SASL_SSL).spec  # verify-full
        with pytest.raises(ConfigurationError) as raised:
            check_dsn_agrees(
                spec, self._fetched("postgresql://u:p@db:5432/x?sslmode=require"), namespace="team"
            )
        assert raised.value.reason == "DatabaseTLSConflict"
        assert raised.value.message == (
            "spec.database.tls.mode: sets sslmode=verify-full, but the DSN in Secret team/db key 'dsn' says "
            "sslmode=require; set it in one place"
        )

    def test_a_dsn_root_cert_elsewhere_contradicts_the_mounted_one(self) -> None:
        dsn = "postgresql://u:p@db/x?sslrootcert=/certs/root.pem"
        with pytest.raises(
            ConfigurationError, match=r"^spec.database.tls.caRef: sets sslrootcert=/etc/smartflow"
        ):
            check_dsn_agrees(make_runtime(SASL_SSL).spec, self._fetched(dsn), namespace="team")

    def test_agreeing_or_silent_dsns_and_specs_without_tls_pass(self) -> None:
        spec = make_runtime(SASL_SSL).spec
        for dsn in ("postgresql://u:p@db/x", "postgresql://u:p@db/x?sslmode=verify-full&application_name=a"):
            check_dsn_agrees(spec, self._fetched(dsn), namespace="team")
        check_dsn_agrees(
            make_runtime().spec, self._fetched("postgresql://u:p@db/x?sslmode=disable"), namespace="t"
        )
