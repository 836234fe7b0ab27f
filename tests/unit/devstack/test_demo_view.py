"""The demo's live line: per-role ready pods / desired, and backlog readings that say when capped."""

from __future__ import annotations

from smartflow_devstack.demo.view import Observation, format_line


def _observation(**overrides: object) -> Observation:
    values: dict[str, object] = {
        "at": 3.0,
        "desired": {"api": 2, "relay": 4, "consumer": 1, "memory-worker": 1},
        "ready": {"api": 2, "relay": 1, "consumer": 1, "memory-worker": 1},
        "relay_backlog": 120,
        "consumer_lag": 40,
        "unfinished_events": 900,
        "sent": 300,
    }
    values.update(overrides)
    return Observation(**values)  # type: ignore[arg-type]


def test_line_shows_ready_pods_over_desired_per_role() -> None:
    line = format_line(_observation())
    assert "api 2/2" in line and "relay 1/4" in line and "consumer 1/1" in line and "memory 1/1" in line
    assert "consumer lag     40" in line and "sent    300" in line


def test_a_backlog_at_the_probe_cap_reads_as_capped_with_the_true_due_count() -> None:
    line = format_line(_observation(relay_backlog=800, relay_backlog_cap=800, due_rows=7000))
    assert "relay backlog 800+ (due 7000)" in line


def test_a_backlog_below_the_cap_is_shown_as_measured() -> None:
    line = format_line(_observation(relay_backlog=120, relay_backlog_cap=800, due_rows=120))
    assert "relay backlog 120 (due 120)" in line
    assert "+" not in line.split("relay backlog")[1].split("consumer")[0]


def test_unknown_readings_are_question_marks() -> None:
    line = format_line(_observation(relay_backlog=None, consumer_lag=None))
    assert "relay backlog      ?" in line and "consumer lag      ?" in line
