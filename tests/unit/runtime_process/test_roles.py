"""The role table: what each role builds, in which order it starts and stops."""

from __future__ import annotations

import pytest

from smartflow_runtime.config import Role
from smartflow_runtime.roles import (
    ROLE_COMPONENTS,
    Component,
    components_for,
    deregistration_delay,
    joins_consumer_group,
    stop_order,
    uses_kafka,
)


def test_every_role_has_components() -> None:
    assert set(ROLE_COMPONENTS) == set(Role)
    assert all(ROLE_COMPONENTS[role] for role in Role)


def test_api_builds_only_the_http_app_and_never_joins_the_group() -> None:
    assert components_for(Role.API) == (Component.HTTP_API,)
    assert not joins_consumer_group(Role.API)
    assert not uses_kafka(Role.API)


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (Role.RELAY, {Component.RELAY}),
        (Role.CONSUMER, {Component.CONSUMER}),
        (Role.MEMORY_WORKER, {Component.MEMORY_WORKER}),
        (Role.WORKER, {Component.RELAY, Component.CONSUMER, Component.MEMORY_WORKER}),
        (Role.ALL, set(Component)),
    ],
)
def test_single_and_combined_roles(role: Role, expected: set[Component]) -> None:
    assert set(components_for(role)) == expected
    assert len(components_for(role)) == len(expected)


def test_only_consuming_roles_join_the_group() -> None:
    assert {r for r in Role if joins_consumer_group(r)} == {Role.CONSUMER, Role.WORKER, Role.ALL}
    assert {r for r in Role if uses_kafka(r)} == {Role.RELAY, Role.CONSUMER, Role.WORKER, Role.ALL}


def test_drain_stops_producers_of_work_before_their_consumers() -> None:
    order = stop_order(Role.ALL)
    assert order[0] is Component.HTTP_API
    assert order.index(Component.HTTP_API) < order.index(Component.RELAY) < order.index(Component.CONSUMER)
    assert stop_order(Role.WORKER) == tuple(reversed(components_for(Role.WORKER)))


def test_deregistration_delay_is_a_small_share_of_the_grace_period() -> None:
    assert deregistration_delay(25) == 2.5
    assert deregistration_delay(120) == 3.0
    assert deregistration_delay(1) == 0.1
