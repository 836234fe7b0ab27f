"""The tuning settings (relay, outbox retries, consumer, memory worker, topic partitions): defaults
that match the services, validation in the one-message style, and the wiring in roles.py."""

from __future__ import annotations

import argparse
import inspect
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from smartflow_runtime.cli import build_parser, parse_duration
from smartflow_runtime.config import ConfigError, Need, Settings, load_settings
from smartflow_runtime.memory.worker import MemoryWorker
from smartflow_runtime.metrics import RuntimeMetrics
from smartflow_runtime.outbox.consumer import Consumer
from smartflow_runtime.outbox.model import DEFAULT_MAX_ATTEMPTS, BackoffPolicy
from smartflow_runtime.outbox.relay import Relay
from smartflow_runtime.roles import Component, Dependencies, build_component

DSN = "postgresql://app:pw@127.0.0.1:5432/smartflow"
BASE = {"SMARTFLOW_DATABASE_DSN": DSN, "SMARTFLOW_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"}


def _default(callable_: Any, name: str) -> Any:
    return inspect.signature(callable_).parameters[name].default


def _problems(environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, **environ}, needs=[Need.DATABASE])
    return caught.value.problems


def test_defaults_are_the_services_own_defaults() -> None:
    settings = load_settings(BASE, needs=[Need.DATABASE])
    assert settings.kafka_topic_partitions == 12
    assert settings.relay_batch_size == _default(Relay, "batch_size") == 500
    assert settings.relay_lease_seconds == _default(Relay, "lease_seconds") == 15
    assert settings.relay_poll_interval_seconds == _default(Relay, "poll_interval_seconds") == 2
    assert settings.relay_listen_notify is _default(Relay, "listen_notify") is True
    assert settings.outbox_max_attempts == DEFAULT_MAX_ATTEMPTS == 20
    assert settings.backoff_seconds == (BackoffPolicy().base_seconds, BackoffPolicy().cap_seconds) == (1, 32)
    assert settings.consumer_max_poll_records == _default(Consumer, "max_poll_records") == 500
    assert settings.consumer_commit_interval_seconds == _default(Consumer, "commit_interval_seconds") == 0.1
    assert settings.memory_worker_concurrency == _default(MemoryWorker, "concurrency") == 1
    assert settings.memory_worker_lease_seconds == _default(MemoryWorker, "lease_seconds") == 30


def test_values_are_read_from_the_environment() -> None:
    settings = load_settings(
        {
            **BASE,
            "SMARTFLOW_KAFKA_TOPIC_PARTITIONS": "24",
            "SMARTFLOW_RELAY_BATCH_SIZE": "50",
            "SMARTFLOW_RELAY_LEASE_SECONDS": "6",
            "SMARTFLOW_RELAY_POLL_INTERVAL_SECONDS": "0.25",
            "SMARTFLOW_RELAY_LISTEN_NOTIFY": " FALSE ",
            "SMARTFLOW_OUTBOX_MAX_ATTEMPTS": "5",
            "SMARTFLOW_OUTBOX_BACKOFF_BASE_SECONDS": "0.5",
            "SMARTFLOW_OUTBOX_BACKOFF_CAP_SECONDS": "10",
            "SMARTFLOW_CONSUMER_MAX_POLL_RECORDS": "100",
            "SMARTFLOW_CONSUMER_COMMIT_INTERVAL_SECONDS": "0",
            "SMARTFLOW_MEMORY_WORKER_CONCURRENCY": "4",
            "SMARTFLOW_MEMORY_WORKER_LEASE_SECONDS": "60",
        },
        needs=[Need.DATABASE],
    )
    assert settings.kafka_topic_partitions == 24
    assert (settings.relay_batch_size, settings.relay_lease_seconds) == (50, 6.0)
    assert (settings.relay_poll_interval_seconds, settings.relay_listen_notify) == (0.25, False)
    assert (settings.outbox_max_attempts, settings.backoff_seconds) == (5, (0.5, 10.0))
    assert settings.consumer_max_poll_records == 100
    assert settings.consumer_commit_interval_seconds == 0
    assert (settings.memory_worker_concurrency, settings.memory_worker_lease_seconds) == (4, 60.0)


def test_every_bad_tuning_variable_is_named_in_one_error() -> None:
    problems = _problems(
        {
            "SMARTFLOW_KAFKA_TOPIC_PARTITIONS": "0",
            "SMARTFLOW_RELAY_BATCH_SIZE": "lots",
            "SMARTFLOW_RELAY_LEASE_SECONDS": "0.5",
            "SMARTFLOW_RELAY_POLL_INTERVAL_SECONDS": "0",
            "SMARTFLOW_RELAY_LISTEN_NOTIFY": "yes",
            "SMARTFLOW_OUTBOX_MAX_ATTEMPTS": "0",
            "SMARTFLOW_OUTBOX_BACKOFF_BASE_SECONDS": "-1",
            "SMARTFLOW_CONSUMER_MAX_POLL_RECORDS": "20000",
            "SMARTFLOW_CONSUMER_COMMIT_INTERVAL_SECONDS": "-0.1",
            "SMARTFLOW_MEMORY_WORKER_CONCURRENCY": "1.5",
            "SMARTFLOW_MEMORY_WORKER_LEASE_SECONDS": "x",
        }
    )
    assert problems == [
        "SMARTFLOW_KAFKA_TOPIC_PARTITIONS: must be an integer 1..10000, got '0'",
        "SMARTFLOW_RELAY_BATCH_SIZE: must be an integer 1..10000, got 'lots'",
        "SMARTFLOW_RELAY_LEASE_SECONDS: must be a number of seconds 1..3600, got '0.5'",
        "SMARTFLOW_RELAY_POLL_INTERVAL_SECONDS: must be a number of seconds > 0 and <= 300, got '0'",
        "SMARTFLOW_RELAY_LISTEN_NOTIFY: must be true or false, got 'yes'",
        "SMARTFLOW_OUTBOX_MAX_ATTEMPTS: must be an integer 1..1000, got '0'",
        "SMARTFLOW_OUTBOX_BACKOFF_BASE_SECONDS: must be a number of seconds >= 0 and <= 3600, got '-1'",
        "SMARTFLOW_CONSUMER_MAX_POLL_RECORDS: must be an integer 1..10000, got '20000'",
        "SMARTFLOW_CONSUMER_COMMIT_INTERVAL_SECONDS: must be a number of seconds >= 0 and <= 10, got '-0.1'",
        "SMARTFLOW_MEMORY_WORKER_CONCURRENCY: must be an integer 1..64, got '1.5'",
        "SMARTFLOW_MEMORY_WORKER_LEASE_SECONDS: must be a number of seconds 1..3600, got 'x'",
    ]


def test_backoff_cap_below_base_is_reported_with_both_names() -> None:
    problems = _problems(
        {"SMARTFLOW_OUTBOX_BACKOFF_BASE_SECONDS": "10", "SMARTFLOW_OUTBOX_BACKOFF_CAP_SECONDS": "5"}
    )
    assert problems == [
        "SMARTFLOW_OUTBOX_BACKOFF_CAP_SECONDS: must be >= SMARTFLOW_OUTBOX_BACKOFF_BASE_SECONDS (10), got 5"
    ]


def test_cross_field_rule_is_reported_together_with_other_problems() -> None:
    problems = _problems(
        {
            "SMARTFLOW_ADMIN_PORT": "abc",
            "SMARTFLOW_OUTBOX_BACKOFF_BASE_SECONDS": "10",
            "SMARTFLOW_OUTBOX_BACKOFF_CAP_SECONDS": "5",
        }
    )
    assert [p.split(":")[0] for p in problems] == [
        "SMARTFLOW_ADMIN_PORT",
        "SMARTFLOW_OUTBOX_BACKOFF_CAP_SECONDS",
    ]


def test_migrate_topic_partitions_option_overrides_the_environment() -> None:
    settings = load_settings(
        {**BASE, "SMARTFLOW_KAFKA_TOPIC_PARTITIONS": "3"},
        needs=[Need.DATABASE],
        overrides={"kafka_topic_partitions": 8},
    )
    assert settings.kafka_topic_partitions == 8
    args = build_parser().parse_args(["migrate", "--topic-partitions", "8", "--skip-topic"])
    assert (args.topic_partitions, args.skip_topic) == (8, True)
    assert build_parser().parse_args(["migrate"]).topic_partitions is None


# --- wiring: what roles.py builds from the settings ----------------------------------------------


def _deps(**environ: str) -> Dependencies:
    registry = CollectorRegistry()
    return Dependencies(
        settings=load_settings({**BASE, **environ}, needs=[Need.DATABASE]),
        pool=object(),  # constructors do no I/O
        registry=registry,
        metrics=RuntimeMetrics(registry),
    )


def test_relay_is_built_from_the_settings() -> None:
    relay = build_component(
        Component.RELAY,
        _deps(
            SMARTFLOW_RELAY_BATCH_SIZE="7",
            SMARTFLOW_RELAY_LEASE_SECONDS="9",
            SMARTFLOW_RELAY_POLL_INTERVAL_SECONDS="0.5",
            SMARTFLOW_RELAY_LISTEN_NOTIFY="false",
            SMARTFLOW_OUTBOX_BACKOFF_BASE_SECONDS="0.5",
            SMARTFLOW_OUTBOX_BACKOFF_CAP_SECONDS="4",
        ),
    )
    assert isinstance(relay, Relay)
    assert relay._batch_size == 7
    assert relay._lease == timedelta(seconds=9)
    assert relay._poll_seconds == 0.5
    assert relay._listen_notify is False
    assert relay._backoff == BackoffPolicy(0.5, 4.0)


def test_consumer_and_memory_worker_are_built_from_the_settings() -> None:
    deps = _deps(
        SMARTFLOW_CONSUMER_MAX_POLL_RECORDS="3",
        SMARTFLOW_OUTBOX_BACKOFF_BASE_SECONDS="2",
        SMARTFLOW_OUTBOX_BACKOFF_CAP_SECONDS="8",
        SMARTFLOW_MEMORY_WORKER_CONCURRENCY="4",
        SMARTFLOW_MEMORY_WORKER_LEASE_SECONDS="45",
    )
    consumer = build_component(Component.CONSUMER, deps)
    assert isinstance(consumer, Consumer)
    assert (consumer._max_poll_records, consumer._backoff) == (3, BackoffPolicy(2.0, 8.0))
    worker = build_component(Component.MEMORY_WORKER, deps)
    assert isinstance(worker, MemoryWorker)
    assert (worker._concurrency, worker._lease) == (4, timedelta(seconds=45))


def test_every_settings_field_is_documented() -> None:
    """docs/contracts.md and docs/runtime.md must name every variable the runtime reads."""
    from smartflow_devstack.versions import REPO_ROOT

    contracts = (REPO_ROOT / "docs" / "contracts.md").read_text()
    runtime = (REPO_ROOT / "docs" / "runtime.md").read_text()
    for field in Settings.model_fields:
        variable = f"SMARTFLOW_{field.upper()}"
        assert variable in contracts, variable
        assert variable in runtime, variable


# --- CLI values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("30s", timedelta(seconds=30)),
        ("1w", timedelta(weeks=1)),
        ("1d12h", timedelta(days=1, hours=12)),
        (" 2D ", timedelta(days=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "7y", "-1d", "0s", "1d 2h", "1.5h"])
def test_bad_durations_are_rejected(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_prune_arguments() -> None:
    parser = build_parser()
    args = parser.parse_args(["outbox", "prune", "--older-than", "7d"])
    assert (args.older_than, args.dry_run, args.batch) == (timedelta(days=7), False, 1000)
    args = parser.parse_args(["outbox", "prune", "--older-than", "1h", "--dry-run", "--batch", "50"])
    assert (args.older_than, args.dry_run, args.batch) == (timedelta(hours=1), True, 50)


@pytest.mark.parametrize(
    "argv",
    [
        ["outbox", "prune"],
        ["outbox", "prune", "--older-than", "soon"],
        ["outbox", "prune", "--older-than", "1d", "--batch", "0"],
        ["outbox", "prune", "--older-than", "1d", "--batch", "100001"],
    ],
)
def test_bad_prune_arguments_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2


def test_relay_lanes_and_event_loop_are_read_validated_and_wired() -> None:
    defaults = load_settings(BASE, needs=[Need.DATABASE])
    # The role runs 4 lanes; the Relay class alone stays at one batch at a time.
    assert (defaults.relay_lanes, _default(Relay, "lanes")) == (4, 1)
    assert defaults.event_loop == "uvloop"
    relay = build_component(Component.RELAY, _deps(SMARTFLOW_RELAY_LANES="3"))
    assert isinstance(relay, Relay) and relay._lanes == 3
    assert load_settings({**BASE, "SMARTFLOW_EVENT_LOOP": " AsyncIO "}, needs=[]).event_loop == "asyncio"
    assert _problems({"SMARTFLOW_RELAY_LANES": "0", "SMARTFLOW_EVENT_LOOP": "trio"}) == [
        "SMARTFLOW_EVENT_LOOP: must be uvloop or asyncio, got 'trio'",
        "SMARTFLOW_RELAY_LANES: must be an integer 1..16, got '0'",
    ]


def test_event_loop_factory_follows_the_setting() -> None:
    import uvloop

    from smartflow_runtime.cli import event_loop_factory

    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    assert event_loop_factory("asyncio") is None
