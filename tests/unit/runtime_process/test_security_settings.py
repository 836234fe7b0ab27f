"""Kafka SASL/TLS and PostgreSQL TLS settings (issue 14): the contract's defaults, and every
contradiction reported in load_settings' one message, naming each bad variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartflow_runtime.config import ConfigError, DatabaseTls, Need, Role, Settings, load_settings

DSN = "postgresql://app:pw@db.example:5432/smartflow"
SASL = {
    "SMARTFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "SMARTFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "SMARTFLOW_KAFKA_SASL_USERNAME": "relay",
    "SMARTFLOW_KAFKA_SASL_PASSWORD": "s3cret-pw",
}


def _settings(**environ: str) -> Settings:
    return load_settings({"SMARTFLOW_DATABASE_DSN": DSN, **environ}, needs=[Need.DATABASE])


def _problems(environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings({"SMARTFLOW_DATABASE_DSN": DSN, **environ}, needs=[Need.DATABASE])
    return caught.value.problems


def test_defaults_are_plaintext_kafka_and_the_dsns_own_tls() -> None:
    settings = load_settings({"SMARTFLOW_DATABASE_DSN": DSN}, needs=[Need.DATABASE])
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert (settings.kafka_uses_sasl, settings.kafka_uses_tls) == (False, False)
    assert settings.kafka_ssl_check_hostname is True
    assert settings.kafka_allow_plaintext_password is False
    assert settings.database_sslmode is None
    assert settings.database_tls is None  # nothing set: asyncpg reads the DSN as before


def test_sasl_ssl_settings_are_read_and_the_password_is_never_shown() -> None:
    settings = load_settings(
        {
            "SMARTFLOW_DATABASE_DSN": DSN,
            **SASL,
            "SMARTFLOW_KAFKA_SECURITY_PROTOCOL": " sasl_ssl ",
            "SMARTFLOW_KAFKA_SASL_MECHANISM": "scram-sha-256",
            "SMARTFLOW_KAFKA_SSL_CAFILE": "/etc/smartflow/tls/kafka/ca.crt",
            "SMARTFLOW_KAFKA_SSL_CHECK_HOSTNAME": "FALSE",
        },
        needs=[Need.DATABASE],
    )
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    assert (settings.kafka_uses_sasl, settings.kafka_uses_tls) == (True, True)
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "s3cret-pw"
    assert settings.kafka_ssl_check_hostname is False
    assert "s3cret-pw" not in repr(settings) and "s3cret-pw" not in str(settings)


def test_sasl_protocols_need_mechanism_user_and_password_each_named() -> None:
    problems = _problems({"SMARTFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    assert problems == [
        "SMARTFLOW_KAFKA_SASL_MECHANISM: missing (required with SMARTFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL)",
        "SMARTFLOW_KAFKA_SASL_USERNAME: missing (required with SMARTFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL)",
        "SMARTFLOW_KAFKA_SASL_PASSWORD: missing (required with SMARTFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL)",
    ]


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_sasl_settings_without_a_sasl_protocol_are_rejected(protocol: str) -> None:
    problems = _problems({**SASL, "SMARTFLOW_KAFKA_SECURITY_PROTOCOL": protocol})
    suffix = f"only used with SASL_PLAINTEXT or SASL_SSL, but SMARTFLOW_KAFKA_SECURITY_PROTOCOL={protocol}"
    assert problems == [
        f"SMARTFLOW_KAFKA_SASL_MECHANISM: {suffix}",
        f"SMARTFLOW_KAFKA_SASL_USERNAME: {suffix}",
        f"SMARTFLOW_KAFKA_SASL_PASSWORD: {suffix}",
    ]


def test_sasl_settings_without_any_protocol_mean_plaintext_and_are_rejected() -> None:
    problems = _problems({"SMARTFLOW_KAFKA_SASL_USERNAME": "relay"})
    assert problems == [
        "SMARTFLOW_KAFKA_SASL_USERNAME: only used with SASL_PLAINTEXT or SASL_SSL, "
        "but SMARTFLOW_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"
    ]


def test_plain_over_sasl_plaintext_needs_the_explicit_opt_in() -> None:
    cleartext = {
        **SASL,
        "SMARTFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SMARTFLOW_KAFKA_SASL_MECHANISM": "PLAIN",
    }
    assert _problems(cleartext) == [
        "SMARTFLOW_KAFKA_SASL_MECHANISM: PLAIN over SASL_PLAINTEXT sends the password in the clear; use "
        "SASL_SSL (or a SCRAM mechanism), or set SMARTFLOW_KAFKA_ALLOW_PLAINTEXT_PASSWORD=true"
    ]
    allowed = load_settings(
        {"SMARTFLOW_DATABASE_DSN": DSN, **cleartext, "SMARTFLOW_KAFKA_ALLOW_PLAINTEXT_PASSWORD": "true"},
        needs=[Need.DATABASE],
    )
    assert (allowed.kafka_uses_sasl, allowed.kafka_uses_tls) == (True, False)
    # SCRAM never sends the password, so it needs no opt-in over SASL_PLAINTEXT.
    scram = _settings(**{**SASL, "SMARTFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    assert scram.kafka_sasl_mechanism == "SCRAM-SHA-512"


def test_kafka_certificate_and_key_go_together() -> None:
    assert _problems({"SMARTFLOW_KAFKA_SECURITY_PROTOCOL": "SSL", "SMARTFLOW_KAFKA_SSL_KEYFILE": "/k"}) == [
        "SMARTFLOW_KAFKA_SSL_CERTFILE: missing (required with SMARTFLOW_KAFKA_SSL_KEYFILE)"
    ]
    assert _problems({"SMARTFLOW_KAFKA_SECURITY_PROTOCOL": "SSL", "SMARTFLOW_KAFKA_SSL_CERTFILE": "/c"}) == [
        "SMARTFLOW_KAFKA_SSL_KEYFILE: missing (required with SMARTFLOW_KAFKA_SSL_CERTFILE)"
    ]


def test_kafka_tls_files_without_a_tls_protocol_are_rejected() -> None:
    assert _problems({"SMARTFLOW_KAFKA_SSL_CAFILE": "/ca.crt"}) == [
        "SMARTFLOW_KAFKA_SSL_CAFILE: only used with SSL or SASL_SSL, "
        "but SMARTFLOW_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"
    ]


def test_bad_values_are_named_with_what_is_expected() -> None:
    problems = _problems(
        {
            "SMARTFLOW_KAFKA_SECURITY_PROTOCOL": "TLS",
            "SMARTFLOW_KAFKA_SASL_MECHANISM": "GSSAPI",
            "SMARTFLOW_KAFKA_SSL_CHECK_HOSTNAME": "maybe",
            "SMARTFLOW_KAFKA_ALLOW_PLAINTEXT_PASSWORD": "1",
            "SMARTFLOW_DATABASE_SSLMODE": "on",
        }
    )
    assert problems == [
        "SMARTFLOW_KAFKA_SECURITY_PROTOCOL: must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, "
        "got 'TLS'",
        "SMARTFLOW_KAFKA_SASL_MECHANISM: must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, got 'GSSAPI'",
        "SMARTFLOW_KAFKA_SSL_CHECK_HOSTNAME: must be true or false, got 'maybe'",
        "SMARTFLOW_KAFKA_ALLOW_PLAINTEXT_PASSWORD: must be true or false, got '1'",
        "SMARTFLOW_DATABASE_SSLMODE: must be one of disable, prefer, require, verify-ca, verify-full, "
        "got 'on'",
    ]


def test_security_problems_come_in_the_same_message_as_the_others() -> None:
    problems = _problems(
        {
            "SMARTFLOW_ADMIN_PORT": "x",
            "SMARTFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "SMARTFLOW_DATABASE_SSLKEY": "/k",
        }
    )
    assert [p.split(":")[0] for p in problems] == [
        "SMARTFLOW_ADMIN_PORT",
        "SMARTFLOW_KAFKA_SASL_MECHANISM",
        "SMARTFLOW_KAFKA_SASL_USERNAME",
        "SMARTFLOW_KAFKA_SASL_PASSWORD",
        "SMARTFLOW_DATABASE_SSLCERT",
    ]


def test_a_sasl_password_in_a_problem_is_masked() -> None:
    # A password given where none is used: the message names the variable, never its value.
    problems = _problems({"SMARTFLOW_KAFKA_SASL_PASSWORD": "hunter2-secret"})
    assert problems[0].startswith("SMARTFLOW_KAFKA_SASL_PASSWORD: only used with SASL_")
    assert all("hunter2" not in p for p in problems)


# --- PostgreSQL ---------------------------------------------------------------------------------


def test_database_tls_merges_the_variables_with_the_dsns_own_parameters() -> None:
    settings = load_settings(
        {
            "SMARTFLOW_DATABASE_DSN": DSN + "?sslmode=verify-full&application_name=x",
            "SMARTFLOW_DATABASE_SSLROOTCERT": "/etc/smartflow/tls/database/ca.crt",
        },
        needs=[Need.DATABASE],
    )
    assert settings.database_tls == DatabaseTls(
        sslmode="verify-full", rootcert="/etc/smartflow/tls/database/ca.crt", cert=None, key=None
    )
    both = load_settings(
        {
            "SMARTFLOW_DATABASE_DSN": DSN + "?sslmode=verify-ca",
            "SMARTFLOW_DATABASE_SSLMODE": "VERIFY-CA",
            "SMARTFLOW_DATABASE_SSLCERT": "/tls.crt",
            "SMARTFLOW_DATABASE_SSLKEY": "/tls.key",
        },
        needs=[Need.DATABASE],
    )
    assert both.database_tls == DatabaseTls(
        sslmode="verify-ca", rootcert=None, cert="/tls.crt", key="/tls.key"
    )


def test_a_variable_contradicting_the_dsn_is_rejected_naming_both() -> None:
    problems = _problems(
        {
            "SMARTFLOW_DATABASE_DSN": DSN + "?sslmode=disable&sslrootcert=/other/ca.crt",
            "SMARTFLOW_DATABASE_SSLMODE": "verify-full",
            "SMARTFLOW_DATABASE_SSLROOTCERT": "/etc/ca.crt",
        }
    )
    assert problems == [
        "SMARTFLOW_DATABASE_SSLMODE: 'verify-full' contradicts sslmode='disable' in SMARTFLOW_DATABASE_DSN; "
        "set it in one place",
        "SMARTFLOW_DATABASE_SSLROOTCERT: '/etc/ca.crt' contradicts sslrootcert='/other/ca.crt' in "
        "SMARTFLOW_DATABASE_DSN; set it in one place",
    ]


def test_verifying_modes_without_a_root_certificate_use_the_system_store() -> None:
    for mode in ("verify-ca", "verify-full", "require"):
        settings = _settings(SMARTFLOW_DATABASE_SSLMODE=mode)
        assert settings.database_tls == DatabaseTls(sslmode=mode, rootcert=None, cert=None, key=None)


def test_database_certificate_and_key_go_together() -> None:
    assert _problems({"SMARTFLOW_DATABASE_SSLMODE": "verify-full", "SMARTFLOW_DATABASE_SSLCERT": "/c"}) == [
        "SMARTFLOW_DATABASE_SSLKEY: missing (required with SMARTFLOW_DATABASE_SSLCERT)"
    ]


@pytest.mark.parametrize("mode", ["disable", "prefer", None])
def test_certificates_with_a_mode_that_never_uses_them_are_rejected(mode: str | None) -> None:
    environ = {"SMARTFLOW_DATABASE_SSLROOTCERT": "/ca.crt"}
    if mode is not None:
        environ["SMARTFLOW_DATABASE_SSLMODE"] = mode
    assert _problems(environ) == [
        "SMARTFLOW_DATABASE_SSLROOTCERT: only used with sslmode require, verify-ca or verify-full, but the "
        f"sslmode is {mode or 'prefer'} (set SMARTFLOW_DATABASE_SSLMODE)"
    ]


def test_run_and_migrate_exit_3_naming_an_unreadable_certificate_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from smartflow_runtime.cli import EXIT_CONFIG, main

    environ = {
        "SMARTFLOW_DATABASE_DSN": DSN,
        "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9093",
        "SMARTFLOW_KAFKA_SECURITY_PROTOCOL": "SSL",
        "SMARTFLOW_KAFKA_SSL_CAFILE": f"{tmp_path}/no-such-ca.crt",
    }
    assert main(["run", "--role", "relay"], environ) == EXIT_CONFIG
    assert "SMARTFLOW_KAFKA_SSL_CAFILE: cannot load CA certificates" in capsys.readouterr().err
    assert main(["migrate"], environ) == EXIT_CONFIG
    assert "no-such-ca.crt" in capsys.readouterr().err
    # The api role and `migrate --skip-topic` make no Kafka client, so Kafka's files are not read.
    from smartflow_runtime.roles import uses_kafka
    from smartflow_runtime.security import load_client_security

    settings = load_settings(environ, needs=[Need.DATABASE])
    assert not uses_kafka(Role.API)
    assert load_client_security(settings, kafka=False).kafka == {"security_protocol": "PLAINTEXT"}
