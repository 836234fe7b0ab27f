"""Command-line parsing, help texts and the config-error exit path (no servers needed)."""

from __future__ import annotations

import pytest

from smartflow_runtime.cli import EXIT_CONFIG, EXIT_USAGE, build_parser, main


def test_run_takes_every_role() -> None:
    parser = build_parser()
    for role in ("api", "relay", "consumer", "memory-worker", "worker", "all"):
        args = parser.parse_args(["run", "--role", role])
        assert (args.command, args.role) == ("run", role)


def test_run_role_is_optional_so_the_environment_can_supply_it() -> None:
    assert build_parser().parse_args(["run"]).role is None


def test_unknown_role_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", "--role", "scheduler"])
    assert exited.value.code == EXIT_USAGE
    assert "invalid choice: 'scheduler'" in capsys.readouterr().err


def test_outbox_stats_json_flag() -> None:
    parser = build_parser()
    assert parser.parse_args(["outbox", "stats", "--json"]).json is True
    assert parser.parse_args(["outbox", "stats"]).json is False


def test_replay_selectors() -> None:
    parser = build_parser()
    by_id = parser.parse_args(["outbox", "replay", "--id", "7", "--id", "9", "--dry-run"])
    assert (by_id.ids, by_id.dry_run, by_id.all, by_id.event_type) == ([7, 9], True, False, None)
    by_type = parser.parse_args(["outbox", "replay", "--type", "chat.history.persist.requested"])
    assert (by_type.event_type, by_type.ids, by_type.dry_run) == (
        "chat.history.persist.requested",
        None,
        False,
    )
    assert parser.parse_args(["outbox", "replay", "--all"]).all is True


@pytest.mark.parametrize(
    "argv",
    [
        ["outbox", "replay"],
        ["outbox", "replay", "--all", "--type", "x"],
        ["outbox", "replay", "--id", "1", "--all"],
        ["outbox"],
        [],
    ],
)
def test_replay_needs_exactly_one_selector_and_commands_are_required(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == EXIT_USAGE


@pytest.mark.parametrize(
    ("argv", "phrases"),
    [
        ([], ["run", "migrate", "outbox", "exit codes", "SMARTFLOW_DATABASE_DSN"]),
        (["run"], ["--role", "never creates a Kafka consumer", "SMARTFLOW_SHUTDOWN_GRACE_SECONDS"]),
        (["migrate"], ["Idempotent", "no-op"]),
        (["outbox", "stats"], ["--json", "oldest due"]),
        (["outbox", "replay"], ["--id", "--type", "--all", "--dry-run"]),
        (["outbox", "prune"], ["--older-than", "--dry-run", "--batch", "never deleted"]),
        (["migrate"], ["--topic-partitions", "--skip-topic", "SMARTFLOW_KAFKA_TOPIC_PARTITIONS"]),
    ],
)
def test_help_explains_each_command(
    argv: list[str], phrases: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*argv, "--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for phrase in phrases:
        assert phrase in out


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--role", "relay"],
        ["migrate"],
        ["outbox", "stats"],
        ["outbox", "replay", "--all"],
        ["outbox", "prune", "--older-than", "7d"],
    ],
)
def test_invalid_config_exits_with_config_code_before_starting(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv, environ={"SMARTFLOW_ADMIN_PORT": "abc"})
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG
    assert "SMARTFLOW_DATABASE_DSN: missing" in err
    assert "SMARTFLOW_ADMIN_PORT: must be a port 1..65535, got 'abc'" in err
    assert err.count("\n") == 1, "one message, one line"
