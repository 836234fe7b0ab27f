"""Readiness bookkeeping, the outage retry pause, driver-error classification, idempotency keys
and the consumer's assignment strategies: pure logic, no servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from smartflow_runtime.admin import Readiness
from smartflow_runtime.domain.idempotency import request_fingerprint, validate_key
from smartflow_runtime.errors import DatabaseError, DatabaseUnavailableError
from smartflow_runtime.outbox.consumer import _assignors
from smartflow_runtime.outbox.model import outage_retry_seconds
from smartflow_runtime.outbox.store import wrap_driver_error
from smartflow_runtime.readiness import DependencyStatus, Unready, merge

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class TestDependencyStatus:
    def test_an_outage_keeps_its_first_since_and_its_latest_reason(self) -> None:
        clock = Clock()
        status = DependencyStatus(clock=clock)
        status.down("kafka", "refused")
        clock.now = T0 + timedelta(seconds=5)
        status.down("kafka", "timed out")
        assert status.unready() == (Unready("kafka", "timed out", T0),)

    def test_up_ends_the_outage_and_a_new_one_starts_a_new_since(self) -> None:
        clock = Clock()
        status = DependencyStatus(clock=clock)
        status.down("database", "refused")
        status.up("database")
        assert status.unready() == () and not status.is_down("database")
        clock.now = T0 + timedelta(seconds=9)
        status.down("database", "refused")
        assert status.unready()[0].since == T0 + timedelta(seconds=9)

    def test_merge_keeps_one_entry_per_dependency_with_the_earliest_since(self) -> None:
        later = Unready("database", "from the relay", T0 + timedelta(seconds=3))
        first = Unready("database", "from the monitor", T0)
        kafka = Unready("kafka", "refused", T0 + timedelta(seconds=1))
        assert merge([later, kafka, first]) == (first, kafka)


def test_the_readyz_body_names_the_dependency_since_when_and_for_how_long() -> None:
    state = Readiness(
        checks={"running": True, "database": False}, unready=(Unready("database", "refused", T0),)
    )
    assert not state.ready
    assert state.body(T0 + timedelta(seconds=12.34)) == {
        "ready": False,
        "checks": {"running": True, "database": False},
        "unready": [
            {"dependency": "database", "reason": "refused", "since": T0.isoformat(), "for_seconds": 12.3}
        ],
    }
    assert Readiness(checks={"running": True}).body(T0) == {"ready": True, "checks": {"running": True}}


@pytest.mark.parametrize(("failures", "pause"), [(1, 0.2), (2, 0.4), (3, 0.8), (4, 1.6), (5, 2.0), (50, 2.0)])
def test_the_outage_retry_pause_doubles_from_200ms_to_2s(failures: int, pause: float) -> None:
    assert outage_retry_seconds(failures) == pytest.approx(pause)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.InternalClientError("cannot switch to state 12"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.TooManyConnectionsError("too many clients"),
        asyncpg.InterfaceError("connection has been released back to the pool"),
    ],
)
def test_unreachable_database_errors_are_classified_by_type(error: BaseException) -> None:
    wrapped = wrap_driver_error("op", error)
    assert isinstance(wrapped, DatabaseUnavailableError) and wrapped.retriable
    assert str(wrapped).startswith(f"op: {type(error).__name__}")


def test_other_database_errors_stay_plain_database_errors() -> None:
    wrapped = wrap_driver_error("op", asyncpg.exceptions.UndefinedTableError('relation "x" does not exist'))
    assert type(wrapped) is DatabaseError


class TestIdempotencyKeys:
    @pytest.mark.parametrize("key", ["a", "order-42", "k" * 200, "0b8f2c3e-0000-4000-8000-000000000000"])
    def test_usable_keys(self, key: str) -> None:
        assert validate_key(key) is None

    @pytest.mark.parametrize(
        ("key", "problem"), [("", "1..200"), ("k" * 201, "1..200"), ("a\nb", "printable"), ("é", "ASCII")]
    )
    def test_unusable_keys_say_why(self, key: str, problem: str) -> None:
        assert problem in (validate_key(key) or "")

    def test_the_fingerprint_tells_method_path_and_body_apart(self) -> None:
        base = request_fingerprint("POST", "/v1/a", b"{}")
        assert base == request_fingerprint("POST", "/v1/a", b"{}")
        assert (
            len(
                {
                    base,
                    request_fingerprint("PUT", "/v1/a", b"{}"),
                    request_fingerprint("POST", "/v1/b", b"{}"),
                    request_fingerprint("POST", "/v1/a", b"{ }"),
                }
            )
            == 4
        )


def test_the_consumer_offers_exactly_one_assignment_strategy() -> None:
    # aiokafka 0.14 sends one JoinGroup per strategy on every rejoin; a second one with other
    # metadata restarts the rebalance (the livelock of issue 13). One strategy, one JoinGroup.
    (strategy,) = _assignors()
    assert strategy.name == "sticky"
    other = _assignors()[0]
    assert other is not strategy, "sticky state is private to one consumer"
