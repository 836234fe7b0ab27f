"""Handler wiring: one registration per type, dependencies checked, core types all present."""

from __future__ import annotations

from typing import Any

import pytest

from smartflow_runtime.domain import events as ev
from smartflow_runtime.errors import (
    DuplicateHandlerError,
    MissingDependencyError,
    PayloadError,
    UnknownEventTypeError,
    is_retriable,
)
from smartflow_runtime.handlers import (
    HandlerDependencies,
    HandlerRegistry,
    build_registry,
    register_core_handlers,
)
from smartflow_runtime.outbox.store import utcnow


async def noop(conn: Any, row: Any) -> None:
    return None


def test_registering_a_type_twice_raises_instead_of_overwriting() -> None:
    registry = HandlerRegistry()
    registry.register("a.b", noop)
    with pytest.raises(DuplicateHandlerError, match=r"a\.b"):
        registry.register("a.b", noop)
    assert registry.handler_for("a.b") is noop


def test_unknown_type_is_a_permanent_error() -> None:
    with pytest.raises(UnknownEventTypeError) as raised:
        HandlerRegistry().handler_for("nope")
    assert not is_retriable(raised.value)


def test_core_wiring_registers_the_six_types_in_the_original_order() -> None:
    registry = build_registry(HandlerDependencies(clock=utcnow))
    assert registry.event_types == (
        "chat.history.persist.requested",
        "task.urgency.promote.requested",
        "chat.token.usage.adjust.requested",
        "agent.state.snapshot.persist",
        "agent.timeline.persist.requested",
        "memory.extract.requested",
    )
    assert set(registry.event_types) == set(ev.CORE_EVENT_TYPES)


def test_wiring_twice_into_one_registry_is_an_error() -> None:
    registry = build_registry(HandlerDependencies(clock=utcnow))
    with pytest.raises(DuplicateHandlerError):
        register_core_handlers(registry, HandlerDependencies(clock=utcnow))


def test_wiring_names_every_bad_dependency() -> None:
    with pytest.raises(MissingDependencyError) as raised:
        build_registry(HandlerDependencies(clock=None, memory_job_max_attempts=0))  # type: ignore[arg-type]
    assert "clock" in str(raised.value) and "memory_job_max_attempts" in str(raised.value)


def test_payload_mismatch_is_permanent() -> None:
    with pytest.raises(PayloadError) as raised:
        ev.parse_payload(ev.TokenUsageAdjust, {"user_id": "u", "delta": "lots"})
    assert not is_retriable(raised.value)
    assert (
        ev.parse_payload(ev.TokenUsageAdjust, {"user_id": "u", "conversation_id": "c", "delta": 3}).delta == 3
    )


def test_unknown_exceptions_are_retried_and_kafka_flags_are_respected() -> None:
    class Flagged(Exception):
        retriable = False

    assert is_retriable(RuntimeError("x"))
    assert not is_retriable(Flagged())


async def bulk_noop(conn: Any, rows: Any) -> None:
    return None


def test_a_bulk_handler_is_optional_and_registered_with_its_type() -> None:
    registry = HandlerRegistry()
    registry.register("a.b", noop, bulk=bulk_noop)
    registry.register("c.d", noop)
    assert registry.bulk_handler_for("a.b") is bulk_noop
    assert registry.bulk_handler_for("c.d") is None
    assert registry.bulk_handler_for("not.registered") is None
    with pytest.raises(DuplicateHandlerError):
        registry.register("a.b", noop, bulk=bulk_noop)


def test_core_single_statement_handlers_have_bulk_forms_and_the_others_do_not() -> None:
    registry = build_registry(HandlerDependencies(clock=utcnow))
    with_bulk = {t for t in registry.event_types if registry.bulk_handler_for(t) is not None}
    assert with_bulk == {
        ev.CHAT_HISTORY_PERSIST,
        ev.TASK_URGENCY_PROMOTE,
        ev.CHAT_TOKEN_USAGE_ADJUST,
        ev.AGENT_STATE_SNAPSHOT,
    }
