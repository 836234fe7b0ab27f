"""Settings validation: one message naming every bad or missing SMARTFLOW_* variable, per role."""

from __future__ import annotations

import pytest

from smartflow_runtime.config import ConfigError, Need, Role, load_settings, role_needs

DSN = "postgresql://app:pw@127.0.0.1:5432/smartflow"


def _problems(environ: dict[str, str], *needs: Need, **overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ, needs=needs, overrides=overrides)
    return caught.value.problems


def test_defaults_match_the_contract() -> None:
    settings = load_settings({"SMARTFLOW_DATABASE_DSN": DSN}, needs=[Need.DATABASE])
    assert settings.kafka_topic == "smartflow.agent.outbox"
    assert settings.kafka_consumer_group == "smartflow-agent-outbox-consumer"
    assert (settings.admin_port, settings.http_port) == (9090, 8080)
    assert settings.shutdown_grace_seconds == 25
    assert (settings.log_level, settings.log_format) == ("INFO", "json")
    assert settings.role is None


def test_every_bad_field_is_named_in_one_error() -> None:
    problems = _problems(
        {
            "SMARTFLOW_ROLE": "relay",
            "SMARTFLOW_ADMIN_PORT": "abc",
            "SMARTFLOW_HTTP_PORT": "70000",
            "SMARTFLOW_SHUTDOWN_GRACE_SECONDS": "-1",
            "SMARTFLOW_LOG_FORMAT": "xml",
            "SMARTFLOW_LOG_LEVEL": "chatty",
        },
        Need.ROLE,
    )
    assert problems == [
        "SMARTFLOW_DATABASE_DSN: missing",
        "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS: missing",
        "SMARTFLOW_ADMIN_PORT: must be a port 1..65535, got 'abc'",
        "SMARTFLOW_HTTP_PORT: must be a port 1..65535, got '70000'",
        "SMARTFLOW_SHUTDOWN_GRACE_SECONDS: must be a number of seconds > 0, got '-1'",
        "SMARTFLOW_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'chatty'",
        "SMARTFLOW_LOG_FORMAT: must be json or text, got 'xml'",
    ]


def test_the_message_joins_all_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"SMARTFLOW_ADMIN_PORT": "abc"}, needs=[Need.DATABASE])
    assert str(caught.value) == (
        "invalid configuration: SMARTFLOW_DATABASE_DSN: missing; "
        "SMARTFLOW_ADMIN_PORT: must be a port 1..65535, got 'abc'"
    )


def test_api_role_needs_no_kafka() -> None:
    settings = load_settings({"SMARTFLOW_ROLE": "api", "SMARTFLOW_DATABASE_DSN": DSN}, needs=[Need.ROLE])
    assert settings.role is Role.API
    assert settings.kafka_bootstrap_servers is None


@pytest.mark.parametrize("role", ["relay", "consumer", "worker", "all"])
def test_kafka_roles_require_bootstrap_servers(role: str) -> None:
    problems = _problems({"SMARTFLOW_ROLE": role, "SMARTFLOW_DATABASE_DSN": DSN}, Need.ROLE)
    assert problems == ["SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS: missing"]


def test_memory_worker_needs_only_the_database() -> None:
    assert role_needs(Role.MEMORY_WORKER) == {Need.DATABASE, Need.ROLE}
    problems = _problems({}, Need.ROLE, role="memory-worker")
    assert problems == ["SMARTFLOW_DATABASE_DSN: missing"]


def test_missing_role_is_reported_with_what_every_role_needs() -> None:
    assert _problems({}, Need.ROLE) == [
        "SMARTFLOW_ROLE: missing (or pass --role)",
        "SMARTFLOW_DATABASE_DSN: missing",
    ]


def test_unknown_role_lists_the_valid_ones() -> None:
    problems = _problems({"SMARTFLOW_ROLE": "scheduler", "SMARTFLOW_DATABASE_DSN": DSN}, Need.ROLE)
    assert problems == [
        "SMARTFLOW_ROLE: must be one of api, relay, consumer, memory-worker, worker, all, got 'scheduler'"
    ]


def test_cli_role_overrides_the_environment() -> None:
    settings = load_settings(
        {"SMARTFLOW_ROLE": "relay", "SMARTFLOW_DATABASE_DSN": DSN},
        needs=[Need.ROLE],
        overrides={"role": "api"},
    )
    assert settings.role is Role.API


def test_dsn_and_bootstrap_shapes_are_checked_and_passwords_not_echoed() -> None:
    problems = _problems(
        {
            "SMARTFLOW_DATABASE_DSN": "mysql://app:s3cret@db/x",
            "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2",
        },
        Need.DATABASE,
        Need.KAFKA,
    )
    assert problems == [
        "SMARTFLOW_DATABASE_DSN: must be a PostgreSQL DSN like postgresql://user:pw@host:5432/db, "
        "got 'mysql://app:***@db/x'",
        "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS: must be comma-separated host:port pairs, got 'k1:9092,k2'",
    ]
    assert "s3cret" not in str(problems)


def test_values_are_normalised() -> None:
    settings = load_settings(
        {
            "SMARTFLOW_DATABASE_DSN": DSN,
            "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS": " a:1 , b:2 ",
            "SMARTFLOW_LOG_LEVEL": "debug",
            "SMARTFLOW_LOG_FORMAT": "TEXT",
            "SMARTFLOW_ROLE": "Memory-Worker",
        },
        needs=[Need.ROLE],
    )
    assert settings.bootstrap_server_list == ["a:1", "b:2"]
    assert (settings.log_level, settings.log_format, settings.role) == ("DEBUG", "text", Role.MEMORY_WORKER)


def test_blank_values_count_as_missing_and_unrelated_variables_are_ignored() -> None:
    problems = _problems(
        {"SMARTFLOW_DATABASE_DSN": "  ", "PATH": "/bin", "SMARTFLOW_FUTURE": "x"}, Need.DATABASE
    )
    assert problems == ["SMARTFLOW_DATABASE_DSN: missing"]
